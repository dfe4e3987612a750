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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from sbert_retrieval.errors import ModelMismatchError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.filters import FilterLike

__all__ = ["Record", "ScoredRecord", "VectorStore", "check_spec", "validate_queries"]


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
