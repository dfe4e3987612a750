"""The vector store interface every backend implements (local HNSW, exact, Qdrant).

A store knows vectors, ids and payloads; it never loads a model. Each store records the
:class:`~sbert_retrieval.models.EmbeddingSpec` of the vectors it holds and refuses to open with
another (:class:`~sbert_retrieval.errors.ModelMismatchError`).

Payloads written by the ingestion pipeline have the keys ``doc_id`` (str), ``chunk_index`` (int),
``text`` (str), ``start`` / ``end`` (character offsets) and ``metadata`` (dict); stores rely only
on ``doc_id`` (for :meth:`VectorStore.ids_by_document`) and ``metadata`` (for filters).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from sbert_retrieval.errors import ModelMismatchError, StoreError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.filters import FilterLike

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Record",
    "ScoredRecord",
    "ValidRecord",
    "VectorStore",
    "check_spec",
    "validate_payload",
    "validate_queries",
    "validate_records",
]

#: The largest payload a store accepts, as UTF-8 JSON (8 MiB): far above any chunk, and a bound
#: on what one bad record can make a backend hold in memory or send in one request.
MAX_PAYLOAD_BYTES = 8 << 20


@dataclass(frozen=True)
class Record:
    """A vector with its id and payload.

    Attributes:
        id: The point id, a UUID string (see :func:`sbert_retrieval.pipeline.point_id`).
        vector: ``(dimension,)`` float32.
        payload: JSON-serializable; must contain ``doc_id``.
    """

    id: str
    vector: np.ndarray
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredRecord:
    """A search result: higher ``score`` is more similar (cosine or inner product)."""

    id: str
    score: float
    payload: Mapping[str, Any]


def check_spec(stored: EmbeddingSpec, given: EmbeddingSpec | None, where: str) -> None:
    """Raise :class:`ModelMismatchError` when ``given`` cannot share an index with ``stored``."""
    if given is None:
        return
    problems = stored.incompatibilities(given)
    if problems:
        raise ModelMismatchError(
            f"{where} was built with model {stored.model!r}, which differs from the encoder"
            f" given ({given.model!r}): {'; '.join(problems)}. Open it with the same model and"
            " settings, or ingest into a new index."
        )


def validate_queries(vectors: np.ndarray, dimension: int) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous ``(n, dimension)`` float32 array, or raise ValueError.

    hnswlib does not check query widths (a wrong width can crash the process), so every store
    validates here first.
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dimension:
        raise ValueError(f"query vectors must have shape (n, {dimension}), got {np.shape(vectors)}")
    if not np.isfinite(array).all():
        raise ValueError("query vectors contain NaN or infinity")
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class ValidRecord:
    """A record that passed :func:`validate_records`.

    Attributes:
        id: The point id.
        vector: ``(dimension,)`` float32, finite.
        payload: A plain ``dict`` copy of the record's payload.
        payload_json: The payload as compact UTF-8 JSON: what a store writes.
    """

    id: str
    vector: np.ndarray
    payload: dict[str, Any]
    payload_json: bytes


def validate_payload(point_id: str, payload: Any) -> tuple[dict[str, Any], bytes]:
    """Check one payload; return a deep copy of it and its compact UTF-8 JSON.

    Raises:
        ValueError: Naming the point: no string ``doc_id``, not strict JSON (NaN, values json
            cannot encode, lone surrogates such as ``"\\ud800"`` that UTF-8 cannot encode), or over
            :data:`MAX_PAYLOAD_BYTES`.
    """
    doc_id = payload.get("doc_id") if isinstance(payload, Mapping) else None
    where = f"record {point_id!r}" + (f" (document {doc_id!r})" if isinstance(doc_id, str) else "")
    if not isinstance(doc_id, str):
        raise ValueError(f"{where}: payload needs a string 'doc_id'")
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        encoded = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: payload is not valid JSON ({exc})") from exc
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"{where}: payload is {len(encoded):,} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte"
            " limit; split the document into smaller records"
        )
    # A deep copy through JSON: nothing the caller mutates later reaches the store.
    return json.loads(text), encoded


def validate_records(records: Sequence[Record], dimension: int) -> list[ValidRecord]:
    """Check every record before a store writes any of them; the last of a repeated id wins.

    Every backend calls this first, so one bad record is refused with its id and reason and
    nothing of the batch is written (nothing refused can block later writes either).

    Raises:
        ValueError: Naming the record: an id that is not a non-empty string, a vector of the
            wrong shape or with NaN/infinity, a payload without a string ``doc_id``, a payload
            that is not strict JSON (NaN, values json cannot encode, lone surrogates such as
            ``"\\ud800"`` that UTF-8 cannot encode), or one over :data:`MAX_PAYLOAD_BYTES`.
    """
    latest: dict[str, ValidRecord] = {}
    for record in records:
        where = f"record {record.id!r}"
        if not isinstance(record.id, str) or not record.id:
            raise ValueError(f"{where}: the id must be a non-empty string")
        vector = np.asarray(record.vector, dtype=np.float32)
        if vector.shape != (dimension,):
            raise ValueError(
                f"{where}: vector must have shape ({dimension},), got {np.shape(record.vector)}"
            )
        if not np.isfinite(vector).all():
            raise ValueError(f"{where}: vector contains NaN or infinity")
        payload, encoded = validate_payload(record.id, record.payload)
        latest.pop(record.id, None)  # keep the order of the last occurrence
        # A deep copy through JSON: nothing the caller mutates later reaches the store.
        latest[record.id] = ValidRecord(record.id, np.ascontiguousarray(vector), payload, encoded)
    return list(latest.values())


class VectorStore(abc.ABC):
    """Interface of a vector store. Use as a context manager to close it.

    Thread safety: every implementation allows concurrent :meth:`search`, :meth:`count`,
    :meth:`get` and :meth:`ids_by_document` calls alongside one writer.
    """

    spec: EmbeddingSpec

    @property
    def dimension(self) -> int:
        """Vector width."""
        return self.spec.dimension

    @abc.abstractmethod
    def upsert(self, records: Sequence[Record]) -> None:
        """Insert records, replacing any with the same id. Not durable until :meth:`flush`.

        Raises:
            ValueError: A vector of the wrong width, or a payload without ``doc_id``.
        """

    @abc.abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Delete points by id; unknown ids are ignored. Returns how many were deleted."""

    @abc.abstractmethod
    def get(self, ids: Iterable[str]) -> list[Record]:
        """The stored records for these ids, in the given order; unknown ids are left out."""

    @abc.abstractmethod
    def ids_by_document(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """Point ids stored for each document id (documents with none are left out)."""

    @abc.abstractmethod
    def search(
        self, vectors: np.ndarray, k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """Top-``k`` most similar points for each query, best first.

        Args:
            vectors: ``(n, dimension)`` or ``(dimension,)`` queries.
            k: Results per query, ≥ 1; fewer come back when fewer points (match the filter).
            filter: See :mod:`sbert_retrieval.stores.filters`.

        Raises:
            ValueError: Wrong query width, ``k < 1``.
            InvalidFilterError: A malformed filter.
        """

    def get_payloads(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored payloads of these ids (copies); unknown ids are left out."""
        return {record.id: dict(record.payload) for record in self.get(ids)}

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> int:
        """Replace the payloads of existing points, keeping their vectors; no re-encoding.

        Unknown ids are ignored. Returns how many points were updated. Validated like
        :meth:`upsert` (the payload must keep a string ``doc_id``).
        """
        records = [
            Record(record.id, record.vector, payloads[record.id])
            for record in self.get(list(payloads))
        ]
        self.upsert(records)
        return len(records)

    def lexical_search(
        self, queries: Sequence[str], k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """Top-``k`` points by BM25 over the payload's ``text`` for each query, best first.

        Query text is analysed as the index analyses it; any characters are accepted (no
        query syntax is interpreted). Scores are BM25 (higher is better). Queries with no
        indexed term get no hits.

        Raises:
            StoreError: This backend keeps no lexical index.
        """
        raise StoreError(f"{type(self).__name__} keeps no lexical (BM25) index")

    def refresh(self) -> None:  # noqa: B027 (a no-op by default, not abstract)
        """Make a reader see writes committed since it opened (a no-op where reads are live)."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of live points."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every write so far durable (on disk, or acknowledged by the server)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release resources (files, locks, connections). Idempotent."""

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete every point of these documents; returns how many points were deleted."""
        ids = [pid for pids in self.ids_by_document(doc_ids).values() for pid in pids]
        return self.delete(ids) if ids else 0

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
