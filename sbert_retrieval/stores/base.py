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
from sbert_retrieval.fusion import DEFAULT_ALPHA, DEFAULT_RRF_K, Fused, check_fusion, fuse
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.filters import FilterLike

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "FusedRecord",
    "Record",
    "ScoredRecord",
    "ValidRecord",
    "VectorStore",
    "check_hybrid_args",
    "check_lexical_args",
    "check_spec",
    "fuse_records",
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


@dataclass(frozen=True)
class FusedRecord(ScoredRecord):
    """A hybrid search result: ``score`` is the fused score (higher is better).

    Attributes:
        dense_score / dense_rank: The vector similarity and 1-based rank in the dense branch;
            ``None`` where that branch did not return the record, or where the backend fuses
            itself and reports only the fused score (Qdrant).
        lexical_score / lexical_rank: The same for the lexical (BM25) branch.
    """

    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None

    @classmethod
    def of(cls, item: Fused[Any], point_id: str, payload: Mapping[str, Any]) -> FusedRecord:
        """The record of one fused item (branch 0 dense, branch 1 lexical)."""
        return cls(
            point_id,
            item.score,
            payload,
            dense_score=item.scores[0],
            dense_rank=item.ranks[0],
            lexical_score=item.scores[1],
            lexical_rank=item.ranks[1],
        )


def fuse_records(
    dense: Sequence[ScoredRecord],
    lexical: Sequence[ScoredRecord],
    *,
    doc_level: bool = False,
    fusion: str = "rrf",
    rrf_k: int = DEFAULT_RRF_K,
    alpha: float = DEFAULT_ALPHA,
) -> list[FusedRecord]:
    """Fuse one query's dense and lexical results (see :func:`sbert_retrieval.fusion.fuse`).

    Args:
        dense / lexical: Each branch's records, best first.
        doc_level: Items are documents (``payload["doc_id"]``), each branch holding at most one
            record per document; a fused document keeps the dense branch's record (chunk) when
            that branch has one. Otherwise items are point ids.
        fusion / rrf_k / alpha: As :func:`~sbert_retrieval.fusion.fuse`.

    Raises:
        ValueError: Unknown ``fusion``, a setting out of range, or an item twice in a branch.
    """

    def key(record: ScoredRecord) -> str:
        return str(record.payload.get("doc_id")) if doc_level else record.id

    records = {key(r): r for r in lexical}
    records.update({key(r): r for r in dense})
    fused = fuse(
        [(key(r), r.score) for r in dense],
        [(key(r), r.score) for r in lexical],
        fusion=fusion,
        rrf_k=rrf_k,
        alpha=alpha,
    )
    return [FusedRecord.of(item, records[item.key].id, records[item.key].payload) for item in fused]


def _check_k(k: int, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")


def check_lexical_args(queries: Sequence[str], k: int) -> list[str]:
    """The query texts of a lexical search as a list, after checking ``k`` ≥ 1.

    Raises:
        ValueError: ``k`` is not an integer ≥ 1, or ``queries`` is one string.
    """
    _check_k(k)
    if isinstance(queries, str):
        raise ValueError("queries must be a sequence of strings, not one string")
    return [str(query) for query in queries]


def check_hybrid_args(
    vectors: np.ndarray,
    queries: Sequence[str],
    k: int,
    dimension: int,
    *,
    candidates: int | None,
    rrf_k: int,
) -> tuple[np.ndarray, list[str], int]:
    """``(vectors, texts, depth)`` of a hybrid search, checked.

    ``depth`` is each branch's depth: ``candidates``, raised to ``k`` when smaller (``k`` when
    ``None``).

    Raises:
        ValueError: Wrong vector width, NaN/infinity, a vector count unlike the query count,
            ``k`` or ``candidates`` below 1, ``rrf_k`` below 0, ``queries`` one string.
    """
    texts = check_lexical_args(queries, k)
    array = validate_queries(vectors, dimension)
    if len(array) != len(texts):
        raise ValueError(f"{len(array)} query vectors for {len(texts)} queries")
    if candidates is not None:
        _check_k(candidates, "candidates")
    check_fusion("rrf", alpha=DEFAULT_ALPHA, rrf_k=rrf_k)
    return array, texts, max(int(k), int(candidates or k))


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

    def hybrid_search(
        self,
        vectors: np.ndarray,
        queries: Sequence[str],
        k: int,
        *,
        filter: FilterLike | None = None,
        candidates: int | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[list[FusedRecord]]:
        """Top-``k`` points by reciprocal-rank fusion of a dense and a lexical branch, best first.

        This default runs :meth:`search` and :meth:`lexical_search`, each ``candidates`` deep
        with ``filter`` inside, and fuses them here (:func:`fuse_records`; each record carries
        both branches' scores and ranks). A backend that can fuse itself overrides it with one
        request (Qdrant's Query API); the scores are the same ``Σ 1 / (rrf_k + rank)``.

        Args:
            vectors: ``(n, dimension)`` or ``(dimension,)`` query vectors, prefixes applied.
            queries: The ``n`` query texts (read as plain words).
            k: Results per query, ≥ 1.
            filter: See :mod:`sbert_retrieval.stores.filters`; applied inside both branches.
            candidates: Each branch's depth (default and minimum ``k``).
            rrf_k: The RRF constant, ≥ 0 (default 60).

        Raises:
            ValueError: Wrong query width or count, ``k``/``candidates``/``rrf_k`` out of range.
            InvalidFilterError: A malformed filter.
            StoreError: This backend keeps no lexical index.
        """
        array, texts, depth = check_hybrid_args(
            vectors, queries, k, self.dimension, candidates=candidates, rrf_k=rrf_k
        )
        dense = self.search(array, depth, filter=filter)
        lexical = self.lexical_search(texts, depth, filter=filter)
        return [
            fuse_records(d, lx, fusion="rrf", rrf_k=rrf_k)[:k]
            for d, lx in zip(dense, lexical, strict=True)
        ]

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
