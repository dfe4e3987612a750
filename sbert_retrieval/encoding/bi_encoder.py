"""The bi-encoder: texts → float32 vectors with a transformers model and SBERT pooling."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbert_retrieval.encoding.batching import batch_bounds, longest_first
from sbert_retrieval.encoding.encoder_model import (
    CPU_BF16_ENV,
    DTYPES,
    ONNX_ENV,
    ONNX_SMALL_BATCH_TOKENS,
    EncoderModel,
    cpu_native_bf16,
    resolve_backend,
    resolve_device,
)
from sbert_retrieval.encoding.engine import EncodedChunk, EncodingEngine, EngineConfig
from sbert_retrieval.encoding.multi_device import MultiDeviceEncoder
from sbert_retrieval.encoding.tokens import rust_tokenizer, tokenizer_settings
from sbert_retrieval.models import (
    DEFAULT_MODEL,
    POOLING_MODES,
    EmbeddingSpec,
    default_prefixes,
    legacy_model_fingerprint,
    load_model_config,
    model_fingerprint,
    resolve_model_path,
)

# The core's choices are re-exported: callers import them with the encoder.
__all__ = [
    "CPU_BF16_ENV",
    "DTYPES",
    "ONNX_ENV",
    "ONNX_SMALL_BATCH_TOKENS",
    "BiEncoder",
    "TokenizedBatch",
    "cpu_native_bf16",
    "resolve_backend",
    "resolve_device",
]


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


class BiEncoder:
    """A Sentence-BERT bi-encoder on torch + transformers.

    Settings come from the checkpoint's sentence-transformers files; any argument given here
    overrides them. On CPU in float32 the vectors equal ``SentenceTransformer.encode``'s.

    A facade: the weights and the forward pass are its :attr:`core`
    (:class:`~sbert_retrieval.encoding.encoder_model.EncoderModel`); it adds the tokenizer,
    prompts, identity (:meth:`spec`) and picks a runner per call: the plain loop here, the
    overlapped :class:`EncodingEngine`, or one worker process per device.

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
            the rest through torch: see :func:`resolve_backend`), ``torch``, ``onnx`` (ONNX
            Runtime in float32 on CPU for every forward pass, the graph exported here on first
            use and cached; the ``[onnx]`` extra) or ``onnx-int8`` (that graph with int8
            weights: lossy, opt-in). The choice is :attr:`backend`; the torch
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
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pooling is not None and pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLING_MODES)}")
        self.model_name = str(model)
        self.path: Path = resolve_model_path(model)
        config = load_model_config(self.path)
        resolved_device = resolve_device(device)
        resolved_backend, resolved_dtype = resolve_backend(backend, resolved_device, dtype)
        self.prompts = dict(config.prompts)
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(self.path))
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.path} has no fast tokenizer (tokenizer.json); one is required")
        self.max_seq_length = int(max_seq_length or config.max_seq_length)
        #: The tokenizer's Rust settings (JSON, max length, truncation side), read once: the
        #: engine's tokenizer workers are set up from them.
        self.tokenizer_settings = tokenizer_settings(self.tokenizer, self.max_seq_length)
        self._rust_tokenizer = rust_tokenizer(*self.tokenizer_settings)
        #: The weights and the forward pass that every runner (plain loop, engine, trainer)
        #: shares.
        self.core = EncoderModel(
            self.path,
            device=resolved_device,
            backend=resolved_backend,
            dtype=resolved_dtype,
            pooling=pooling or config.pooling,
            normalize=config.normalize if normalize is None else normalize,
            input_names=tuple(self.tokenizer.model_input_names),
            pad_id=int(self.tokenizer.pad_token_id or 0),
        )
        self._fingerprint = model_fingerprint(self.path)
        self._legacy_fingerprint = legacy_model_fingerprint(self.path)
        self._engine_config = engine if isinstance(engine, EngineConfig) else EngineConfig()
        self._use_engine = self.device.type == "cuda" if engine is None else engine is not False
        self._engine: EncodingEngine | None = None
        self._requested_device = device
        self._multi_device: MultiDeviceEncoder | None = None
        # Two threads' first bulk encode must not start two engines or two worker pools.
        self._lazy_lock = threading.Lock()

    # -- the core's state ---------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The torch transformer (what training updates)."""
        return self.core.model

    @model.setter
    def model(self, model: Any) -> None:
        self.core.model = model

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return self.core.device

    @property
    def dtype(self) -> torch.dtype:
        """The torch model's compute dtype; outputs are float32 whatever it is."""
        return self.core.dtype

    @property
    def backend(self) -> str:
        """``torch``, ``onnx`` or ``torch+onnx`` (:func:`resolve_backend`)."""
        return self.core.backend

    @property
    def pooling(self) -> str:
        """The SBERT pooling mode."""
        return self.core.pooling

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalized."""
        return self.core.normalize

    @property
    def dimension(self) -> int:
        """The vectors' width."""
        return self.core.dimension

    @property
    def precision(self) -> str:
        """What the vectors are computed in (``int8``, ``float32``, ``bfloat16``, ...), as
        reports record it: :attr:`EncoderModel.precision`."""
        return self.core.precision

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
        with self.core.lock:
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
            make_encoder = functools.partial(
                BiEncoder,
                str(self.path),
                # The backend asked for (auto resolves alike in the workers), so an onnx or
                # onnx-int8 encoder's workers compute the same vectors as the encoder.
                backend="auto" if self.backend == "torch+onnx" else self.backend,
                dtype=str(self.dtype).removeprefix("torch."),
                batch_size=self.batch_size,
                max_batch_tokens=self.max_batch_tokens,
                max_seq_length=self.max_seq_length,
                pooling=self.pooling,
                normalize=self.normalize,
            )
            self._multi_device = MultiDeviceEncoder(
                make_encoder, self.bulk_devices, engine=self._engine_config
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
        size = self.core.oom.size(batch_size or self.batch_size)
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
                with self.core.lock:
                    vectors = self.core.forward_ids([input_ids[i] for i in batch_order])
                yield batch_order, vectors
