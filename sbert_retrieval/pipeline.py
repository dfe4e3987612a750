"""Ingestion: load → chunk → encode → upsert, idempotent and reported.

Point ids are UUIDs derived from (document id, chunk index, chunk text), so re-ingesting an
unchanged document computes the same ids and skips the encoder entirely, a changed document gets
new ids for its changed chunks and loses its stale ones, and a run killed half-way is finished by
running it again. Chunks whose ids are kept but whose payload would change (new metadata, shifted
offsets) get the new payload without being encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from sbert_retrieval.chunking import ChunkingConfig, TokenChunker
from sbert_retrieval.documents import Chunk, Document, LoadedRecord, iter_documents
from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.errors import InvalidRecordError
from sbert_retrieval.stores.base import Record, VectorStore, check_spec

__all__ = [
    "DOC_MODES",
    "IngestConfig",
    "IngestReport",
    "IngestionPipeline",
    "RecordFailure",
    "chunk_documents",
    "chunk_payload",
    "point_id",
    "whole_chunk",
]

DOC_MODES = ("chunk", "truncate")
# Batches each stage may run ahead of the next.
_QUEUE_DEPTH = 4
_NAMESPACE = uuid.UUID("6f0e3c1e-5b7a-4c1f-9a53-2d4b1c7e8a90")


def point_id(doc_id: str, chunk_index: int, text: str) -> str:
    """The deterministic id of a chunk: a UUID (Qdrant accepts it as is)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return str(uuid.uuid5(_NAMESPACE, f"{doc_id}\x1f{chunk_index}\x1f{digest}"))


def whole_chunk(document: Document) -> Chunk:
    """``document`` as one chunk (truncate mode; a LangChain text): index 0, all of its text.

    ``token_count`` is 0 (not counted); the encoder cuts the text at ``max_seq_length``.
    """
    return Chunk(document.id, 0, document.text, 0, len(document.text), 0, document.metadata)


def chunk_documents(
    documents: Sequence[Document], doc_mode: str, chunker: TokenChunker | None
) -> list[list[Chunk]]:
    """The chunks of each document: token windows (``chunk``) or the whole text (``truncate``).

    Args:
        documents: The documents.
        doc_mode: One of :data:`DOC_MODES`.
        chunker: The windowing of ``chunk`` mode (unused, and may be ``None``, in ``truncate``).

    Raises:
        ValueError: An unknown ``doc_mode`` (the message lists the valid ones), or ``chunk``
            mode without a chunker.
    """
    if doc_mode == "truncate":
        return [[whole_chunk(doc)] for doc in documents]
    if doc_mode != "chunk":
        raise ValueError(f"unknown doc_mode {doc_mode!r}; valid: {', '.join(DOC_MODES)}")
    if chunker is None:
        raise ValueError("doc_mode 'chunk' needs a chunker (TokenChunker.for_encoder)")
    return chunker.chunk_many(documents)


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The payload the pipeline stores with a chunk's vector.

    Keys: ``doc_id``, ``chunk_index``, ``text``, ``start`` / ``end`` (character offsets into
    the document's text) and ``metadata`` (a copy of the document's metadata).
    """
    return {
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.index,
        "text": chunk.text,
        "start": chunk.start,
        "end": chunk.end,
        "metadata": dict(chunk.metadata),
    }


def _as_stored(payload: dict[str, Any]) -> Any:
    """``payload`` as a store gives it back (through JSON: tuples become lists, and so on)."""
    try:
        return json.loads(json.dumps(payload, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return None  # never equal to a stored payload; the store names the problem on write


@dataclass(frozen=True)
class IngestConfig:
    """Settings of an ingestion run.

    Attributes:
        chunking: Window size and overlap (default: the encoder's full window, 32 overlap).
        doc_mode: ``"chunk"`` (default) cuts documents into windows; ``"truncate"`` encodes each
            document whole as one point, cut at ``max_seq_length`` (counted in ``truncated``),
            which is how BEIR/MTEB score models.
        doc_batch_size: Documents chunked and checked against the store together (default 64).
        encode_batch_size: Chunks per forward pass; ``None`` uses the encoder's.
        flush_every: Make the store durable after this many new chunks (default 10,000), so a
            killed run loses at most that much work.
        show_progress: Show a progress bar over documents.
    """

    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    doc_mode: str = "chunk"
    doc_batch_size: int = 64
    encode_batch_size: int | None = None
    flush_every: int = 10_000
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.doc_mode not in DOC_MODES:
            raise ValueError(f"unknown doc_mode {self.doc_mode!r}; valid: {', '.join(DOC_MODES)}")
        if self.doc_batch_size < 1 or self.flush_every < 1:
            raise ValueError("doc_batch_size and flush_every must be >= 1")


@dataclass(frozen=True)
class RecordFailure:
    """A record that was skipped: where it was and why."""

    source: str
    location: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.location}" if self.location else self.source
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class IngestReport:
    """What an ingestion run did.

    Attributes:
        added: Documents new to the store.
        updated: Documents whose chunks or payloads changed (stale chunks deleted, new ones
            added, kept chunks given their new payload, e.g. after a metadata-only edit).
        unchanged: Documents already stored exactly as given, payloads included (not re-encoded).
        failed: Records skipped; see ``failures``.
        chunks: Chunks encoded and written in this run.
        truncated: Chunks (or, in truncate mode, documents) cut at ``max_seq_length``.
        deleted: Stale chunks removed from updated documents.
        payloads_updated: Kept chunks whose payload was rewritten without re-encoding.
        seconds: Wall time of the run.
        failures: Each skipped record with its location and reason.
        precision: What the encoder computes in (``float32``, ``bfloat16``, ``int8``, ...).
        inference: The encoder's backend (``torch``, ``onnx``, ``torch+onnx``): with
            ``precision``, what ``auto`` chose on this machine.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0
    truncated: int = 0
    deleted: int = 0
    payloads_updated: int = 0
    seconds: float = 0.0
    failures: tuple[RecordFailure, ...] = ()
    precision: str = ""
    inference: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``failures`` as strings."""
        data = asdict(self)
        data["failures"] = [str(f) for f in self.failures]
        return data


@dataclass
class _Tally:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    truncated: int = 0
    deleted: int = 0
    payloads_updated: int = 0
    failures: list[RecordFailure] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """One batch of documents after chunking and diffing: the unit handed between stages."""

    documents: int
    to_write: list[tuple[str, Chunk]]
    stale: list[str]
    #: Kept points whose payload differs from the one stored: point id → new payload.
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Cancelled(Exception):
    """Raised in a stage waiting on a queue once another stage has failed."""


class _Flow:
    """Bounded hand-offs between the ingestion stages, and the first error any of them hit."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []

    def put(self, target: queue.Queue[Any], item: Any) -> None:
        while not self.stopped.is_set():
            try:
                target.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _Cancelled

    def get(self, source: queue.Queue[Any]) -> Any:
        while not self.stopped.is_set():
            try:
                return source.get(timeout=0.05)
            except queue.Empty:
                continue
        raise _Cancelled

    def guard(self, stage: Any) -> None:
        try:
            stage()
        except _Cancelled:
            pass
        except BaseException as error:  # re-raised in the caller's thread by raise_first
            self.errors.append(error)
            self.stopped.set()

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


class IngestionPipeline:
    """Loads, chunks, encodes and stores documents.

    Args:
        encoder: The passage encoder; must match the store's spec.
        store: Where the vectors go. Its spec's ``passage_prefix`` is applied to every chunk.
        config: See :class:`IngestConfig`.

    Raises:
        ModelMismatchError: The encoder is not the one the store was built with.

    Thread safety: one :meth:`ingest` at a time per pipeline; searches on the same store may run
    concurrently from other threads.
    """

    def __init__(
        self, encoder: BiEncoder, store: VectorStore, config: IngestConfig | None = None
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.config = config or IngestConfig()
        self.prefix = store.spec.passage_prefix
        # Ingestion encodes passages only: whatever query tower the index names is not checked.
        passage_spec = replace(
            encoder.spec(query_prefix=store.spec.query_prefix, passage_prefix=self.prefix),
            query_model=store.spec.query_model,
        )
        check_spec(store.spec, passage_spec, "the store")
        self.chunker = TokenChunker.for_encoder(encoder, self.config.chunking, prefix=self.prefix)

    def ingest(self, paths: Iterable[str | os.PathLike[str]]) -> IngestReport:
        """Ingest files and folders (see :func:`~sbert_retrieval.documents.iter_documents`)."""
        return self.ingest_records(iter_documents(paths))

    def ingest_records(self, records: Iterable[LoadedRecord]) -> IngestReport:
        """Ingest documents; :class:`InvalidRecordError` items are reported as failures.

        Three stages run side by side: a planner thread loads, chunks and diffs documents
        against the store; this thread encodes the chunks as one stream through the encoder's
        :class:`~sbert_retrieval.encoding.EncodingEngine`; a writer thread upserts and flushes.
        Each stage hands the next at most a few batches ahead, so memory stays bounded. Batches
        are written in input order, each one's upsert before its stale deletes. The first error
        in any stage stops the others and is raised here; what was written before stays.
        """
        started = time.perf_counter()
        tally = _Tally()
        progress = self._progress()
        flow = _Flow()
        plans: queue.Queue[_Plan | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        writes: queue.Queue[tuple[_Plan, np.ndarray] | None] = queue.Queue(maxsize=_QUEUE_DEPTH)

        def plan_stage() -> None:
            for batch in self._batches(records, tally, set()):
                flow.put(plans, self._plan(batch, tally))
            flow.put(plans, None)

        def write_stage() -> None:
            since_flush = 0
            while (item := flow.get(writes)) is not None:
                plan, vectors = item
                since_flush += self._write(plan, vectors, tally)
                if since_flush >= self.config.flush_every:
                    self.store.flush()
                    since_flush = 0
                if progress is not None:
                    progress.update(plan.documents)
            self.store.flush()

        threads = [
            threading.Thread(target=flow.guard, args=(plan_stage,), name="sbert-ingest-plan"),
            threading.Thread(target=flow.guard, args=(write_stage,), name="sbert-ingest-write"),
        ]
        for thread in threads:
            thread.start()
        try:
            flow.guard(lambda: self._encode_stage(flow, plans, writes, tally))
        finally:
            for thread in threads:
                thread.join()
            if progress is not None:
                progress.close()
        flow.raise_first()
        return IngestReport(
            added=tally.added,
            updated=tally.updated,
            unchanged=tally.unchanged,
            failed=len(tally.failures),
            chunks=tally.chunks,
            truncated=tally.truncated,
            deleted=tally.deleted,
            payloads_updated=tally.payloads_updated,
            seconds=time.perf_counter() - started,
            failures=tuple(tally.failures),
            precision=str(getattr(self.encoder, "precision", "")),
            inference=str(getattr(self.encoder, "backend", "")),
        )

    def _encode_stage(
        self,
        flow: _Flow,
        plans: queue.Queue[_Plan | None],
        writes: queue.Queue[tuple[_Plan, np.ndarray] | None],
        tally: _Tally,
    ) -> None:
        # Plans whose texts have entered the encoder, oldest first; appended by the engine's
        # reader thread (deque appends and pops are thread-safe) and released here in order.
        waiting: deque[_Plan] = deque()

        def texts() -> Iterator[str]:
            while (plan := flow.get(plans)) is not None:
                waiting.append(plan)
                yield from (chunk.text for _, chunk in plan.to_write)

        parts: list[np.ndarray] = []
        buffered = 0

        def release() -> None:
            nonlocal parts, buffered
            while waiting and len(waiting[0].to_write) <= buffered:
                plan = waiting.popleft()
                need = len(plan.to_write)
                pool = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else None
                vectors = pool[:need] if pool is not None else np.empty((0, 0), np.float32)
                rest = pool[need:] if pool is not None else None
                parts = [rest] if rest is not None and len(rest) else []
                buffered -= need
                flow.put(writes, (plan, vectors))

        for encoded in self.encoder.encode_stream(
            texts(), prefix=self.prefix, batch_size=self.config.encode_batch_size
        ):
            tally.truncated += encoded.truncated
            parts.append(encoded.vectors)
            buffered += len(encoded.vectors)
            release()
        release()  # plans with nothing to encode (unchanged documents, deletions only)
        flow.put(writes, None)

    def _progress(self) -> Any:
        if not self.config.show_progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(desc="Ingesting", unit="doc")

    def _batches(
        self, records: Iterable[LoadedRecord], tally: _Tally, seen: set[str]
    ) -> Iterator[list[Document]]:
        batch: list[Document] = []
        for record in records:
            if isinstance(record, InvalidRecordError):
                tally.failures.append(RecordFailure(record.source, record.location, record.reason))
                continue
            if record.id in seen:
                source = str(record.metadata.get("source", ""))
                tally.failures.append(
                    RecordFailure(
                        source or "input",
                        "",
                        f"duplicate document id {record.id!r} in this run; skipped",
                    )
                )
                continue
            seen.add(record.id)
            batch.append(record)
            if len(batch) >= self.config.doc_batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _chunk(self, documents: Sequence[Document]) -> list[list[Chunk]]:
        return chunk_documents(documents, self.config.doc_mode, self.chunker)

    def _plan(self, documents: list[Document], tally: _Tally) -> _Plan:
        """Chunk a batch and diff it against the store: what to encode, rewrite and delete.

        Reads the store only (writes are the writer stage's): the ids of each document, and the
        stored payloads of the chunks whose ids are kept, compared with what :func:`chunk_payload`
        gives now. A document counts as updated when any chunk is new or stale or any kept
        payload differs.
        """
        per_doc = self._chunk(documents)
        existing = self.store.ids_by_document(doc.id for doc in documents)
        to_write: list[tuple[str, Chunk]] = []
        stale: list[str] = []
        kept: list[tuple[list[tuple[str, Chunk]], bool]] = []
        for doc, chunks in zip(documents, per_doc, strict=True):
            if not chunks:
                source = str(doc.metadata.get("source", "input"))
                tally.failures.append(
                    RecordFailure(source, "", f"document {doc.id!r}: text has no tokens")
                )
                continue
            ids = [point_id(doc.id, c.index, c.text) for c in chunks]
            old = existing.get(doc.id, set())
            new = set(ids)
            if not old:
                tally.added += 1
            pairs = list(zip(ids, chunks, strict=True))
            to_write.extend((pid, chunk) for pid, chunk in pairs if pid not in old)
            stale.extend(old - new)
            if old:
                kept.append(([(p, c) for p, c in pairs if p in old], new != old))
        payloads = self._changed_payloads(kept, tally)
        return _Plan(len(documents), to_write, stale, payloads)

    def _changed_payloads(
        self, kept: list[tuple[list[tuple[str, Chunk]], bool]], tally: _Tally
    ) -> dict[str, dict[str, Any]]:
        """New payloads of kept chunks that differ from the stored ones; counts each document.

        ``kept`` holds, per document already in the store: its chunks whose point ids are
        stored (with those ids), and whether any of its chunks are new or stale.
        """
        stored = self.store.get_payloads(pid for pairs, _ in kept for pid, _ in pairs)
        changed: dict[str, dict[str, Any]] = {}
        for pairs, ids_changed in kept:
            differ = False
            for pid, chunk in pairs:
                payload = chunk_payload(chunk)
                if stored.get(pid) != _as_stored(payload):
                    changed[pid] = payload
                    differ = True
            if ids_changed or differ:
                tally.updated += 1
            else:
                tally.unchanged += 1
        return changed

    def _write(self, plan: _Plan, vectors: np.ndarray, tally: _Tally) -> int:
        """Store a plan's new chunks and payloads, then drop its stale chunks.

        Returns the points written (upserted or given a new payload), counted toward
        ``flush_every``.
        """
        if plan.to_write:
            # Upsert before deleting stale chunks: a crash in between leaves extra, never missing.
            self.store.upsert(
                [
                    Record(pid, vectors[i], chunk_payload(chunk))
                    for i, (pid, chunk) in enumerate(plan.to_write)
                ]
            )
            tally.chunks += len(plan.to_write)
        if plan.payloads:
            tally.payloads_updated += self.store.set_payloads(plan.payloads)
        if plan.stale:
            tally.deleted += self.store.delete(plan.stale)
        return len(plan.to_write) + len(plan.payloads)
