"""The overlapped encoding engine: texts stream in, normalized vectors stream out.

On a GPU the forward pass of a small encoder outruns a single tokenizer call several times over
(all-MiniLM-L6-v2 on an H100: ~32k abstracts/s forward, ~2.3k/s from one tokenizer call), so a
loop that tokenizes, then pads, then runs the model leaves the GPU idle most of the time. The
engine runs the stages side by side:

1. **Tokenizer workers** (threads or processes) tokenize chunks of ``chunk_size`` texts with the
   Rust tokenizer directly, returning flat ``int32`` ids and lengths (cheap to move between
   processes, no per-text Python objects kept).
2. **A collator thread** sorts each chunk by length, cuts it into batches under the token budget
   and pads them into (pinned, on CUDA) host tensors with vectorized numpy.
3. **The caller's thread** copies each batch to the device without blocking, runs the model,
   pools and normalizes on the device and starts an asynchronous copy of the vectors back into
   pinned memory; it only waits for a batch's vectors a few batches later, so copies and
   forwards overlap. Vectors go back to the caller chunk by chunk, in input order.

Memory is bounded: at most ``prefetch`` tokenized chunks wait ahead of the model, whatever the
length of the input stream. On CPU the same code runs with ordinary memory and synchronous
copies, and gives the same vectors as :meth:`BiEncoder.encode` (same batches, same forward).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from sbert_retrieval.encoding.batching import batch_bounds, longest_first
from sbert_retrieval.encoding.encoder_model import EncoderModel
from sbert_retrieval.encoding.tokens import pad_into, rust_tokenizer

__all__ = ["WORKER_TYPES", "EncodedChunk", "EncodingEngine", "EngineConfig", "EngineSource"]

WORKER_TYPES = ("thread", "process")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the overlapped engine.

    Attributes:
        tokenizer_workers: Parallel tokenizer workers (default 0: auto, ``min(8, cpus - 1)`` on
            CUDA and 1 on CPU, where the forward pass already uses every core).
        worker_type: ``"thread"`` (default; the Rust tokenizer releases the GIL) or
            ``"process"`` (no GIL at all, at the cost of pickling ids back).
        chunk_size: Texts tokenized and length-sorted together, and the granularity of the
            output stream (default 4,096). Larger chunks pad less; smaller ones stream sooner.
        prefetch: Tokenized chunks allowed to wait ahead of the model (default 4).
        inflight_batches: Batches whose vectors are still being copied back before the engine
            waits for the oldest (default 3; CUDA only).
        devices: Devices for bulk encoding, one worker process each (see
            :class:`~sbert_retrieval.encoding.multi_device.MultiDeviceEncoder`). Default ``()``:
            every visible GPU when the encoder was given ``device="cuda"`` (or ``"auto"``) and
            more than one is visible, otherwise the encoder's own device, in this process.
    """

    tokenizer_workers: int = 0
    worker_type: str = "thread"
    chunk_size: int = 4096
    prefetch: int = 4
    inflight_batches: int = 3
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.worker_type not in WORKER_TYPES:
            raise ValueError(
                f"unknown worker_type {self.worker_type!r}; valid: {', '.join(WORKER_TYPES)}"
            )
        for name in ("chunk_size", "prefetch", "inflight_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tokenizer_workers < 0:
            raise ValueError(f"tokenizer_workers must be >= 0, got {self.tokenizer_workers}")


@dataclass(frozen=True)
class EncodedChunk:
    """One chunk of the output stream.

    Attributes:
        vectors: ``(n, dimension)`` float32, in the order the texts came in.
        truncated: How many of these ``n`` texts lost tokens to ``max_seq_length``.
    """

    vectors: np.ndarray
    truncated: int


@dataclass(frozen=True)
class _TokenizedChunk:
    flat_ids: np.ndarray  # int32, every text's ids back to back
    lengths: np.ndarray  # int32, tokens per text
    truncated: int


@dataclass
class _Batch:
    rows: np.ndarray  # positions in the chunk
    input_ids: torch.Tensor  # (n, width) int32, padded, host (pinned on CUDA)
    lengths: torch.Tensor  # (n,) int32, host


@dataclass
class _CollatedChunk:
    size: int
    truncated: int
    batches: list[_Batch]


@dataclass
class _PendingChunk:
    out: np.ndarray
    truncated: int
    remaining: int


@dataclass
class _Inflight:
    chunk: _PendingChunk
    rows: np.ndarray
    host: torch.Tensor
    done: torch.cuda.Event | None = field(default=None)


# -- tokenizer workers ------------------------------------------------------------------------
# Module-level so a process pool can pickle the task. Each worker thread or process builds its
# own copy of the Rust tokenizer once, in the pool's initializer (configured once, never mutated
# afterwards): a task carries only its texts, not the tokenizer's JSON (~0.7 MB for MiniLM).
_local = threading.local()


def _init_worker(tokenizer_json: str, max_length: int, direction: str) -> None:
    _local.backend = rust_tokenizer(tokenizer_json, max_length, direction)


def _tokenize_chunk(texts: Sequence[str]) -> _TokenizedChunk:
    backend = _local.backend
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    encodings = encode(list(texts))
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int32, count=len(encodings))
    flat = np.fromiter(
        itertools.chain.from_iterable(e.ids for e in encodings),
        dtype=np.int32,
        count=int(lengths.sum()),
    )
    # Truncation keeps what it cut as overflow: a non-empty overflow means the text was cut.
    truncated = sum(1 for e in encodings if e.overflowing)
    return _TokenizedChunk(flat, lengths, truncated)


class EngineSource(Protocol):
    """What the engine runs: an encoder's core, tokenizer settings and batching limits
    (:class:`~sbert_retrieval.encoding.bi_encoder.BiEncoder` is one)."""

    @property
    def core(self) -> EncoderModel: ...

    @property
    def tokenizer_settings(self) -> tuple[str, int, str]: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def max_batch_tokens(self) -> int | None: ...


class _Stop(Exception):
    """Raised inside the collator when the consumer has gone away."""


class EncodingEngine:
    """Overlapped tokenization, collation, forward and copy-back for one encoder.

    Args:
        encoder: The model's core, its tokenizer settings, batch size and token budget
            (:class:`EngineSource`, e.g. a ``BiEncoder``).
        config: See :class:`EngineConfig`.

    Thread safety: safe; each :meth:`stream` has its own workers, and every forward pass takes
    the encoder's lock, so concurrent streams and plain ``encode`` calls (a query during a long
    ingest) interleave batch by batch.
    """

    def __init__(self, encoder: EngineSource, config: EngineConfig | None = None) -> None:
        self.encoder = encoder
        self.core = encoder.core
        self.config = config or EngineConfig()
        self._cuda = self.core.device.type == "cuda"
        workers = self.config.tokenizer_workers
        if workers == 0:
            workers = max(1, min(8, (os.cpu_count() or 2) - 1)) if self._cuda else 1
        self.tokenizer_workers = workers

    # -- public -----------------------------------------------------------------------------
    def encode(
        self, texts: Sequence[str], *, prefix: str = "", batch_size: int | None = None
    ) -> tuple[np.ndarray, int]:
        """All vectors at once: ``(len(texts), dimension)`` float32 and the truncated count."""
        parts = list(self.stream(texts, prefix=prefix, batch_size=batch_size))
        if not parts:
            return np.empty((0, self.core.dimension), dtype=np.float32), 0
        return np.concatenate([p.vectors for p in parts]), sum(p.truncated for p in parts)

    def stream(
        self, texts: Iterable[str], *, prefix: str = "", batch_size: int | None = None
    ) -> Iterator[EncodedChunk]:
        """Encode a stream of texts, yielding one :class:`EncodedChunk` per ``chunk_size`` texts.

        Args:
            texts: Any iterable of strings, read lazily.
            prefix: Prepended to every text.
            batch_size: Texts per forward pass at most (default: the encoder's); the encoder's
                ``max_batch_tokens`` still caps each batch.

        The input is consumed lazily (at most ``prefetch`` chunks ahead of the output), so a
        corpus larger than memory can be piped through. Closing the generator early stops the
        workers.
        """
        collated: queue.Queue[_CollatedChunk | BaseException | None] = queue.Queue(
            maxsize=self.config.prefetch
        )
        stop = threading.Event()
        collator = threading.Thread(
            target=self._collate_loop,
            args=(texts, prefix, batch_size or self.encoder.batch_size, collated, stop),
            name="sbert-engine-collator",
            daemon=True,
        )
        collator.start()
        try:
            yield from self._consume(collated)
        finally:
            stop.set()
            # Unblock a collator waiting on a full queue, then wait for it to see `stop`.
            while collator.is_alive():
                with contextlib.suppress(queue.Empty):
                    collated.get(timeout=0.05)
            collator.join()

    # -- stage 1 + 2: tokenize in workers, collate in this thread -----------------------------
    def _executor(self) -> Executor:
        setup = self.encoder.tokenizer_settings
        if self.config.worker_type == "process":
            import multiprocessing

            # spawn, never fork: the parent holds torch (and maybe CUDA) state.
            return ProcessPoolExecutor(
                self.tokenizer_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=setup,
            )
        return ThreadPoolExecutor(
            self.tokenizer_workers,
            thread_name_prefix="sbert-tokenizer",
            initializer=_init_worker,
            initargs=setup,
        )

    def _collate_loop(
        self,
        texts: Iterable[str],
        prefix: str,
        batch_size: int,
        out: queue.Queue[_CollatedChunk | BaseException | None],
        stop: threading.Event,
    ) -> None:
        def put(item: _CollatedChunk | BaseException | None) -> None:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    return
                except queue.Full:
                    continue
            raise _Stop

        try:
            with self._executor() as pool:
                pending: deque[Future[_TokenizedChunk]] = deque()
                # Enough tasks in flight to keep every worker busy, and no more (memory).
                depth = self.tokenizer_workers + 1
                iterator = iter(texts)
                while not stop.is_set():
                    chunk = list(itertools.islice(iterator, self.config.chunk_size))
                    if chunk:
                        if prefix:
                            chunk = [prefix + text for text in chunk]
                        pending.append(pool.submit(_tokenize_chunk, chunk))
                    if pending and (len(pending) >= depth or not chunk):
                        put(self._collate(pending.popleft().result(), batch_size))
                    if not chunk and not pending:
                        break
                if stop.is_set():
                    for future in pending:
                        future.cancel()
                    return
            put(None)
        except _Stop:
            return
        except BaseException as error:  # handed to the consumer, which re-raises it
            try:
                put(error)
            except _Stop:
                return

    def _collate(self, tokenized: _TokenizedChunk, batch_size: int) -> _CollatedChunk:
        lengths = tokenized.lengths
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype(np.int64)
        order = longest_first(lengths)
        bounds = batch_bounds(
            lengths[order].astype(np.int64),
            self.core.oom.size(batch_size),
            self.encoder.max_batch_tokens,
        )
        batches = []
        pad_id = self.core.pad_id
        for start, end in bounds:
            rows = order[start:end]
            width = int(lengths[rows[0]]) if len(rows) else 0
            ids = torch.empty((len(rows), width), dtype=torch.int32, pin_memory=self._cuda)
            view = ids.numpy()
            view.fill(pad_id)
            pad_into(tokenized.flat_ids, offsets[rows], lengths[rows], view)
            batch_lengths = torch.from_numpy(lengths[rows].copy())
            if self._cuda:
                batch_lengths = batch_lengths.pin_memory()
            batches.append(_Batch(rows, ids, batch_lengths))
        return _CollatedChunk(len(lengths), tokenized.truncated, batches)

    # -- stage 3: forward and copy back ------------------------------------------------------
    def _consume(
        self, collated: queue.Queue[_CollatedChunk | BaseException | None]
    ) -> Iterator[EncodedChunk]:
        chunks: deque[_PendingChunk] = deque()
        inflight: deque[_Inflight] = deque()
        dimension = self.core.dimension
        # On CPU the vectors are ready when the forward returns: nothing to overlap.
        depth = self.config.inflight_batches if self._cuda else 0
        with torch.inference_mode():
            while True:
                item = collated.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                chunk = _PendingChunk(
                    np.empty((item.size, dimension), dtype=np.float32),
                    item.truncated,
                    len(item.batches),
                )
                chunks.append(chunk)
                for batch in item.batches:
                    inflight.extend(self._launch(chunk, batch.rows, batch.input_ids, batch.lengths))
                    while len(inflight) > depth:
                        self._land(inflight.popleft())
                    yield from self._ready(chunks)
                yield from self._ready(chunks)
            while inflight:
                self._land(inflight.popleft())
            yield from self._ready(chunks)

    @staticmethod
    def _ready(chunks: deque[_PendingChunk]) -> Iterator[EncodedChunk]:
        while chunks and chunks[0].remaining == 0:
            done = chunks.popleft()
            yield EncodedChunk(done.out, done.truncated)

    @staticmethod
    def _land(item: _Inflight) -> None:
        if item.done is not None:
            item.done.synchronize()
        item.chunk.out[item.rows] = item.host.numpy()
        item.chunk.remaining -= 1

    def _launch(
        self, chunk: _PendingChunk, rows: np.ndarray, ids: torch.Tensor, lengths: torch.Tensor
    ) -> list[_Inflight]:
        """Start one batch; on out-of-memory, its halves (recursively) rather than fail."""

        def forward(start: int, end: int) -> list[_Inflight]:
            width = int(lengths[start:end].max())
            part = rows[start:end], ids[start:end, :width], lengths[start:end]
            return [self._launch_one(chunk, *part)]

        def split() -> None:
            chunk.remaining += 1  # two halves replace one batch: the chunk waits for one more

        return self.core.oom.run(0, len(rows), forward, split)

    def _launch_one(
        self, chunk: _PendingChunk, rows: np.ndarray, ids: torch.Tensor, lengths: torch.Tensor
    ) -> _Inflight:
        core = self.core
        with core.lock:
            device_ids = ids.to(core.device, non_blocking=True)
            device_lengths = lengths.to(core.device, non_blocking=True)
            width = device_ids.shape[1]
            mask = torch.arange(width, device=core.device)[None, :] < device_lengths[:, None]
            pooled = core.forward(device_ids.long(), mask.long())
            if not self._cuda:
                return _Inflight(chunk, rows, pooled)
            host = torch.empty(pooled.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(pooled, non_blocking=True)
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            # On the stream the copy was queued on (the encoder's device), not the current
            # device's: on cuda:N != current, vectors could be read before they land.
            done.record(torch.cuda.current_stream(core.device))
            return _Inflight(chunk, rows, host, done)
