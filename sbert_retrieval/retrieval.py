"""Retrieval: encode the query, search the store, optionally rerank, return hits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.stores.base import ScoredRecord, VectorStore, check_spec
from sbert_retrieval.stores.filters import FilterLike, parse_filter

__all__ = ["Hit", "Reranker", "Retriever", "rerank_hits", "search_records"]


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        doc_id: The document the chunk belongs to.
        score: The final score (the rerank score when reranked), higher is better.
        text: The chunk's text.
        start: Character offset of the chunk in its document.
        end: Character offset after the chunk's end.
        chunk_index: Position of the chunk in its document.
        metadata: The document's metadata.
        point_id: The store's id of the chunk.
        first_stage_score: The vector similarity, kept when a reranker reorders hits.
        rerank_score: The cross-encoder score, or ``None`` without reranking.
    """

    doc_id: str
    score: float
    text: str
    start: int
    end: int
    chunk_index: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    point_id: str = ""
    first_stage_score: float | None = None
    rerank_score: float | None = None

    @classmethod
    def from_record(cls, record: ScoredRecord) -> Hit:
        """A hit from a store result with a pipeline payload."""
        payload = record.payload
        return cls(
            doc_id=str(payload["doc_id"]),
            score=record.score,
            text=str(payload.get("text", "")),
            start=int(payload.get("start", 0)),
            end=int(payload.get("end", 0)),
            chunk_index=int(payload.get("chunk_index", 0)),
            metadata=payload.get("metadata") or {},
            point_id=record.id,
            first_stage_score=record.score,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data = asdict(self)
        data["metadata"] = dict(self.metadata)
        return data


class Reranker(Protocol):
    """Anything that scores (query, passage) pairs, higher = more relevant."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage."""
        ...


def search_records(
    store: VectorStore,
    vectors: np.ndarray,
    k: int,
    *,
    filter: FilterLike | None = None,
    doc_level: bool = False,
) -> list[list[ScoredRecord]]:
    """Top-``k`` store records for each (already encoded) query vector, best first.

    Args:
        store: The store to search.
        vectors: ``(n, dimension)`` or ``(dimension,)`` query vectors, prefixes already applied.
        k: Results per query, ≥ 1.
        filter: Metadata filter.
        doc_level: One record per document (its best chunk); fetches more chunks until ``k``
            documents are found or the store is exhausted.

    Thread safety: as the store's ``search`` (concurrent searches allowed).
    """
    if not doc_level:
        return store.search(vectors, k, filter=filter)
    total = store.count()
    fetch = min(max(4 * k, k + 50), max(total, 1))
    while True:
        rows = store.search(vectors, fetch, filter=filter)
        grouped: list[list[ScoredRecord]] = []
        short = False
        for row in rows:
            best: dict[str, ScoredRecord] = {}
            for record in row:
                best.setdefault(str(record.payload.get("doc_id")), record)
            grouped.append(list(best.values())[:k])
            short = short or (len(best) < k and len(row) == fetch)
        if not short or fetch >= total:
            return grouped
        fetch = min(fetch * 4, total)


def rerank_hits(reranker: Reranker, query: str, hits: list[Hit], depth: int) -> list[Hit]:
    """Reorder the first ``depth`` hits by ``reranker`` scores; the rest keep their order after.

    Each reranked hit's ``score`` and ``rerank_score`` become the reranker's score; its
    ``first_stage_score`` keeps the vector similarity.

    Raises:
        ValueError: The reranker returned a different number of scores.

    Thread safety: as ``reranker.score``.
    """
    if not hits:
        return hits
    candidates = hits[:depth]
    scores = reranker.score(query, [h.text for h in candidates])
    if len(scores) != len(candidates):
        raise ValueError(
            f"the reranker returned {len(scores)} scores for {len(candidates)} passages"
        )
    reranked = [
        replace(h, score=float(s), rerank_score=float(s))
        for h, s in zip(candidates, scores, strict=True)
    ]
    reranked.sort(key=lambda h: h.score, reverse=True)
    return reranked + hits[depth:]


class Retriever:
    """Dense retrieval over a store, with an optional second-stage reranker.

    Args:
        encoder: The passage encoder the store was built with (checked against its spec).
        store: The vector store.
        query_encoder: A separate query tower (asymmetric two-tower models); default ``encoder``.
        reranker: Reorders the top ``rerank_depth`` candidates.
        rerank_depth: Candidates passed to the reranker (default 100).

    Raises:
        ModelMismatchError: The encoder is not the one the store was built with.

    Thread safety: safe to share across threads; concurrent searches are allowed.
    """

    def __init__(
        self,
        encoder: BiEncoder,
        store: VectorStore,
        *,
        query_encoder: BiEncoder | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int = 100,
    ) -> None:
        spec = store.spec
        check_spec(
            spec,
            encoder.spec(
                query_prefix=spec.query_prefix,
                passage_prefix=spec.passage_prefix,
                query_encoder=query_encoder,
            ),
            "the store",
        )
        if rerank_depth < 1:
            raise ValueError(f"rerank_depth must be >= 1, got {rerank_depth}")
        self.encoder = encoder
        self.query_encoder = query_encoder or encoder
        self.store = store
        self.reranker = reranker
        self.rerank_depth = rerank_depth

    def search(
        self, query: str, k: int = 10, *, filter: FilterLike | None = None, doc_level: bool = False
    ) -> list[Hit]:
        """Top-``k`` hits for one query; see :meth:`search_batch`."""
        return self.search_batch([query], k, filter=filter, doc_level=doc_level)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        filter: FilterLike | None = None,
        doc_level: bool = False,
    ) -> list[list[Hit]]:
        """Top-``k`` hits for each query, best first.

        Args:
            queries: Query texts (the store's query prefix is prepended).
            k: Hits per query, ≥ 1.
            filter: Metadata filter (see :mod:`sbert_retrieval.stores.filters`).
            doc_level: One hit per document (its best chunk) instead of one per chunk.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        parsed = parse_filter(filter)
        if not queries:
            return []
        vectors = self.query_encoder.encode(list(queries), prefix=self.store.spec.query_prefix)
        return self.search_by_vectors(queries, vectors, k, filter=parsed, doc_level=doc_level)

    def search_by_vectors(
        self,
        queries: Sequence[str],
        vectors: np.ndarray,
        k: int = 10,
        *,
        filter: FilterLike | None = None,
        doc_level: bool = False,
    ) -> list[list[Hit]]:
        """As :meth:`search_batch`, for queries already encoded (prefix applied).

        ``queries`` are still needed when a reranker is set (it reads the text); pass the texts
        the vectors came from. Thread safety: as :meth:`search_batch`.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        depth = max(k, self.rerank_depth) if self.reranker is not None else k
        rows = search_records(self.store, vectors, depth, filter=filter, doc_level=doc_level)
        results = [[Hit.from_record(r) for r in row] for row in rows]
        if self.reranker is not None:
            results = [
                rerank_hits(self.reranker, q, hits, self.rerank_depth)
                for q, hits in zip(queries, results, strict=True)
            ]
        return [hits[:k] for hits in results]
