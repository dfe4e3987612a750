"""The encoding core: one SBERT encoder's weights and forward pass, and how they are chosen.

:class:`EncoderModel` holds the transformer on its device, the pooling and the normalization,
and runs a padded batch of token ids through torch or ONNX Runtime. Every way of encoding runs
on it: :class:`~sbert_retrieval.encoding.bi_encoder.BiEncoder`'s plain loop, the overlapped
:class:`~sbert_retrieval.encoding.engine.EncodingEngine`, the multi-device workers (one
encoder each) and the trainers (:meth:`EncoderModel.embed_tensors`, with gradients). Batching
(length order, token budget, out-of-memory halving) lives in
:mod:`~sbert_retrieval.encoding.batching`. :func:`resolve_backend` and :func:`resolve_device`
are the one choice of backend, device and precision, for the cross-encoder too.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbert_retrieval.encoding.batching import OutOfMemoryPolicy
from sbert_retrieval.encoding.onednn import use_onednn_linear
from sbert_retrieval.encoding.onnx_backend import OnnxModel
from sbert_retrieval.encoding.packed import packed_states, packs
from sbert_retrieval.encoding.pooling import pool
from sbert_retrieval.models import BACKENDS

__all__ = [
    "CPU_BF16_ENV",
    "DTYPES",
    "ONNX_BACKENDS",
    "ONNX_ENV",
    "ONNX_SMALL_BATCH_TOKENS",
    "EncoderModel",
    "cpu_native_bf16",
    "resolve_backend",
    "resolve_device",
]

logger = logging.getLogger(__name__)

#: ``0`` or ``1`` overrides :func:`cpu_native_bf16` (the test suite pins ``0``, so that its
#: numbers do not depend on the machine; a user can force either choice).
CPU_BF16_ENV = "SBERT_RETRIEVAL_CPU_BF16"
#: ``0`` keeps ``backend="auto"`` off ONNX Runtime even where it is installed (the test suite
#: pins it, so that its numbers do not depend on what is installed); ``backend="onnx"`` still
#: works.
ONNX_ENV = "SBERT_RETRIEVAL_ONNX"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | None) -> torch.device:
    """``device`` as a torch device; ``auto`` and ``None``: CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), as torch's CPU
    feature probe reports it; :data:`CPU_BF16_ENV` (``0``/``1``) overrides the probe.

    Measured with all-MiniLM-L6-v2 on a 2-core AMD EPYC with AVX512-BF16: bfloat16 encodes
    2.6× faster than float32 (min cosine to float32 0.99992); on AVX2-only CPUs it runs ~7×
    slower (emulated), hence the check.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    probe: Any = torch.cpu
    try:
        return bool(probe._is_avx512_bf16_supported() or probe._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: assume not
        return False


def _resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """The compute dtype for ``dtype`` on ``device``. ``auto`` (and ``None``): float16 on CUDA;
    on CPU bfloat16 where :func:`cpu_native_bf16` says so, else float32."""
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_native_bf16() else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; valid: auto, {', '.join(sorted(DTYPES))}"
        ) from None


#: Under ``auto``, a forward pass of at most this many tokens (texts × padded width) runs
#: through ONNX Runtime, larger ones through torch. Measured with all-MiniLM-L6-v2 on a 2-core
#: AMD EPYC (BENCHMARKS.md): one STSb sentence 3.4 ms (ONNX Runtime) against 5.6 (torch
#: bfloat16) and 10.1 (torch float32), four 10.2 against 12.3; eight 19.2 against 16.2, and
#: ONNX Runtime falls further behind as batches grow.
ONNX_SMALL_BATCH_TOKENS = 128


def resolve_backend(
    backend: str, device: torch.device, dtype: str | None
) -> tuple[str, torch.dtype]:
    """The backend and compute dtype that ``backend`` and ``dtype`` mean on ``device``.

    The backend is ``torch``, ``onnx`` (ONNX Runtime, float32, every forward pass) or
    ``torch+onnx``: what ``auto`` picks on CPU with ``dtype`` auto where ONNX Runtime is
    installed (and :data:`ONNX_ENV` is not ``0``): forward passes of at most
    :data:`ONNX_SMALL_BATCH_TOKENS` tokens (queries) through ONNX Runtime, larger ones through
    torch in bfloat16 where the CPU computes it natively, else float32. Otherwise ``auto`` is
    torch (float16 on CUDA); an explicit ``dtype`` keeps it on torch.

    Raises:
        ValueError: An unknown backend, or ``onnx`` off the CPU, in another dtype than
            float32, or without its extra installed.
    """
    from sbert_retrieval.encoding.onnx_backend import MISSING_EXTRA, onnx_runtime_available

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend in ONNX_BACKENDS:
        if device.type != "cpu":
            raise ValueError(
                f"the {backend} backend runs on CPU only, not {device}; use backend='torch'"
            )
        if dtype not in (None, "auto", "float32", "fp32"):
            raise ValueError(
                f"the {backend} backend computes float32, not {dtype}; use backend='torch'"
            )
        if not onnx_runtime_available():
            raise ValueError(MISSING_EXTRA)
        return backend, torch.float32
    resolved = _resolve_dtype(dtype, device)
    if (
        backend == "auto"
        and device.type == "cpu"
        and dtype in (None, "auto")
        and os.environ.get(ONNX_ENV, "").strip() != "0"
        and onnx_runtime_available()
    ):
        return "torch+onnx", resolved
    return "torch", resolved


#: The backends that run every forward pass through ONNX Runtime.
ONNX_BACKENDS = ("onnx", "onnx-int8")


class EncoderModel:
    """A transformer with SBERT pooling on one device: padded token ids → float32 vectors.

    Args:
        path: Local checkpoint directory (already resolved).
        device: Where the torch model lives.
        backend: ``torch``, ``onnx``, ``onnx-int8`` or ``torch+onnx`` (:func:`resolve_backend`).
        dtype: The torch model's compute dtype (:func:`resolve_backend`).
        pooling: An SBERT pooling mode (:data:`~sbert_retrieval.models.POOLING_MODES`).
        normalize: L2-normalize the pooled vectors.
        input_names: The inputs the tokenizer makes (``token_type_ids`` gets zeros).
        pad_id: The tokenizer's padding id.

    On CPU the torch model's linear layers run through oneDNN
    (:func:`~sbert_retrieval.encoding.onednn.use_onednn_linear`) outside training. ``onnx``
    (and ``onnx-int8``) makes its ONNX Runtime session now (a failed export is the caller's
    error); ``torch+onnx`` makes it on the first small forward pass, so bulk-only use
    (ingestion) never exports.

    Thread safety: :attr:`lock` serializes forward passes; :meth:`forward` and
    :meth:`forward_ids` expect the caller to hold it (every runner does, per batch).
    """

    def __init__(
        self,
        path: Path,
        *,
        device: torch.device,
        backend: str,
        dtype: torch.dtype,
        pooling: str,
        normalize: bool,
        input_names: tuple[str, ...],
        pad_id: int,
    ) -> None:
        from transformers import AutoModel

        self.path = path
        self.device = device
        self.backend = backend
        self.dtype = dtype
        self.pooling = pooling
        self.normalize = normalize
        self.input_names = input_names
        self.pad_id = pad_id
        self.model: Any = AutoModel.from_pretrained(str(path), dtype=dtype)
        self.model.to(device).eval()
        if device.type == "cpu":
            # oneDNN GEMMs for CPU inference; training and autocast still run nn.Linear.
            use_onednn_linear(self.model)
        self.dimension = int(self.model.config.hidden_size)
        self.onnx: OnnxModel | None = None
        if backend in ONNX_BACKENDS:
            self.onnx = OnnxModel(path, "feature-extraction", int8=backend == "onnx-int8")
        #: Lowers the batch size after an out-of-memory error (shared by every runner).
        self.oom = OutOfMemoryPolicy(device)
        #: Serializes forward passes (and the encoder's tokenizer, which is not re-entrant).
        self.lock = threading.Lock()

    @property
    def precision(self) -> str:
        """What the vectors are computed in: ``int8`` (``onnx-int8``), else the dtype's name
        (``float32``, ``bfloat16``, ``float16``). Reports record it."""
        return "int8" if self.backend == "onnx-int8" else str(self.dtype).removeprefix("torch.")

    def forward_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Vectors of token id lists (padded here), halved on out-of-memory
        (:class:`~sbert_retrieval.encoding.batching.OutOfMemoryPolicy`): ``(len(batch),
        dimension)`` float32. The caller holds :attr:`lock`."""
        parts = self.oom.run(0, len(batch), lambda start, end: [self._padded(batch[start:end])])
        return np.concatenate(parts)

    def _padded(self, batch: list[list[int]]) -> np.ndarray:
        result: np.ndarray = self.forward(*self.pad(batch)).cpu().numpy()
        return result

    def pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of token id lists, padded to the longest,
        ``(len(batch), width)`` int64 on the model's device."""
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        input_ids = torch.from_numpy(ids).to(self.device, non_blocking=True)
        attention_mask = torch.from_numpy(mask).to(self.device, non_blocking=True)
        return input_ids, attention_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled (and normalized) float32 vectors of padded ids, left on the model's device,
        through the backend's choice for this batch's size. ``input_ids`` and
        ``attention_mask``: ``(batch, width)`` int64. The caller holds :attr:`lock`."""
        onnx = self.onnx if self.backend in ONNX_BACKENDS else None
        if self.backend == "torch+onnx" and input_ids.numel() <= ONNX_SMALL_BATCH_TOKENS:
            onnx = self._small_batch_session()
        if onnx is None:
            return self.embed_tensors(input_ids, attention_mask)
        states = torch.from_numpy(onnx(input_ids.cpu().numpy(), attention_mask.cpu().numpy()))
        return self.pool(states, attention_mask)

    def _small_batch_session(self) -> OnnxModel | None:
        """``torch+onnx``'s session, made on first use; ``None``, after one warning, where this
        checkpoint cannot be exported: torch then runs it all."""
        if self.onnx is None and self.backend == "torch+onnx":
            try:
                self.onnx = OnnxModel(self.path, "feature-extraction")
            except Exception as exc:  # an architecture torch cannot export: auto must not fail
                logger.warning("%s: no ONNX export (%s); encoding with torch only", self.path, exc)
                self.backend = "torch"
        return self.onnx

    def embed_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The torch model's pooled (and normalized) float32 vectors of padded ids, on its
        device: the one torch forward pass that encoding and training share (the trainer calls
        it with gradients on). ``input_ids`` and ``attention_mask``: ``(batch, width)`` int64.

        Thread safety: not thread-safe by itself (runners call it under :attr:`lock`).
        """
        if packs(self.model, attention_mask):
            return self.pool(packed_states(self.model, input_ids, attention_mask), attention_mask)
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        return self.pool(self.model(**features).last_hidden_state, attention_mask)

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """SBERT pooling of token states (then L2 normalization, if set), as float32."""
        pooled = pool(states, attention_mask, self.pooling).float()
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled
