"""Retrieval, the one query path: encode → search branches → fuse → rerank → hits.

Modes (:data:`MODES`): ``dense`` (vector similarity, the default), ``lexical`` (BM25 over the
chunk text, from the store's lexical index) and ``hybrid`` (both branches, each ``candidates``
deep with the same filter inside it, fused by :mod:`sbert_retrieval.fusion`). The CLI, the HTTP
service, LangChain and BEIR evaluation all search through :class:`Retriever`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import numpy as np

from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.fusion import DEFAULT_ALPHA, DEFAULT_RRF_K, check_fusion, interpolate_scores
from sbert_retrieval.stores.base import (
    FusedRecord,
    ScoredRecord,
    VectorStore,
    check_spec,
    fuse_records,
)
from sbert_retrieval.stores.filters import FilterLike, parse_filter

__all__ = [
    "MODES",
    "Hit",
    "Reranker",
    "Retriever",
    "check_mode",
    "default_candidates",
    "lexical_records",
    "rerank_hits",
    "rerank_weight_after",
    "search_records",
]

MODES = ("dense", "lexical", "hybrid")
"""Retrieval modes, for ``mode=`` arguments and ``--mode``."""


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
        first_stage_score: The first stage's score (the vector similarity in dense mode, BM25
            in lexical mode, the fused score in hybrid mode), kept when a reranker reorders hits.
        rerank_score: The cross-encoder score, or ``None`` without reranking.
        dense_score / dense_rank: The vector similarity and 1-based rank in the dense branch;
            ``None`` where that branch did not return the hit (or did not run, or the store
            fused the branches itself and reports only the fused score: Qdrant's RRF).
        lexical_score / lexical_rank: The BM25 score and 1-based rank in the lexical branch;
            ``None`` where that branch did not return the hit (or did not run, or the store
            fused the branches itself).
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
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None

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
        """JSON-ready: every field by name, ``metadata`` as a plain dict (not deep-copied).

        The one hit serializer: the CLI's ``search --json``, the HTTP ``/search`` response and
        anything else that emits hits call it, so they share one shape.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["metadata"] = dict(self.metadata)
        return data


class Reranker(Protocol):
    """Anything that scores (query, passage) pairs, higher = more relevant.

    A reranker may also carry ``rerank_weight`` (a float in (0, 1]): the share of its score in
    the final one, interpolated with the first stage's (see :func:`rerank_hits`), and
    ``rerank_weight_for(first_stage)``, that share for one first stage (``dense``, ``lexical``,
    ``hybrid``: their scores are spread differently); without either the order is the
    reranker's alone.
    """

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
    """Top-``k`` store records by vector similarity for each query vector, best first.

    Args:
        store: The store to search.
        vectors: ``(n, dimension)`` or ``(dimension,)`` query vectors, prefixes already applied.
        k: Results per query, ≥ 1.
        filter: Metadata filter.
        doc_level: One record per document (its best chunk); fetches more chunks until ``k``
            documents are found or the store is exhausted.

    Thread safety: as the store's ``search`` (concurrent searches allowed).
    """
    return _by_document(
        lambda depth: store.search(vectors, depth, filter=filter), store, k, doc_level
    )


def lexical_records(
    store: VectorStore,
    queries: Sequence[str],
    k: int,
    *,
    filter: FilterLike | None = None,
    doc_level: bool = False,
) -> list[list[ScoredRecord]]:
    """Top-``k`` store records by BM25 for each query text, best first (as :func:`search_records`).

    Raises:
        StoreError: The store keeps no lexical index.

    Thread safety: as the store's ``lexical_search``.
    """
    return _by_document(
        lambda depth: store.lexical_search(list(queries), depth, filter=filter),
        store,
        k,
        doc_level,
    )


def _by_document(
    search: Callable[[int], list[list[ScoredRecord]]],
    store: VectorStore,
    k: int,
    doc_level: bool,
) -> list[list[ScoredRecord]]:
    if not doc_level:
        return search(k)
    total = store.count()
    fetch = min(max(4 * k, k + 50), max(total, 1))
    while True:
        rows = search(fetch)
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


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` naming the valid modes if ``mode`` is not one."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")


def default_candidates(k: int) -> int:
    """Each hybrid branch's default depth for ``k`` hits: max(100, 4k)."""
    return max(100, 4 * k)


def rerank_weight_after(reranker: Reranker, first_stage: str = "dense") -> float:
    """The reranker's share of the final score after ``first_stage`` (see :class:`Reranker`):
    its ``rerank_weight_for(first_stage)``, else its ``rerank_weight``, else 1."""
    weight_for = getattr(reranker, "rerank_weight_for", None)
    if callable(weight_for):
        return float(weight_for(first_stage))
    return float(getattr(reranker, "rerank_weight", 1.0))


def rerank_hits(
    reranker: Reranker, query: str, hits: list[Hit], depth: int, *, first_stage: str = "dense"
) -> list[Hit]:
    """Reorder the first ``depth`` hits by ``reranker`` scores; the rest keep their order after.

    Each reranked hit's ``rerank_score`` becomes the reranker's score and its ``score`` the
    final one: the reranker's score itself, or, when the reranker's weight w after
    ``first_stage`` (:func:`rerank_weight_after`; ``dense``, ``lexical`` or ``hybrid``, default
    ``dense``) is below 1, ``w × min-max(rerank scores) + (1 − w) × min-max(first-stage
    scores)`` over the reranked candidates (so in [0, 1]). ``first_stage_score`` keeps the
    first stage's score.

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
    final = [float(s) for s in scores]
    weight = rerank_weight_after(reranker, first_stage)
    if weight < 1:
        final = interpolate_scores([h.score for h in candidates], final, weight)
    reranked = [
        replace(h, score=f, rerank_score=float(s))
        for h, s, f in zip(candidates, scores, final, strict=True)
    ]
    reranked.sort(key=lambda h: h.score, reverse=True)
    return reranked + hits[depth:]


class Retriever:
    """Dense, lexical or hybrid retrieval over a store, with an optional reranker.

    Args:
        encoder: The passage encoder the store was built with (checked against its spec);
            ``None`` where queries arrive as vectors made by an encoder this package cannot
            check (e.g. a LangChain ``Embeddings``): :meth:`search_by_vectors` then, and
            :meth:`search` / :meth:`search_batch` only in ``lexical`` mode.
        store: The store (``lexical`` and ``hybrid`` need one with a lexical index).
        query_encoder: A separate query tower (asymmetric two-tower models); default ``encoder``.
        reranker: Reorders the top ``rerank_depth`` candidates of any mode.
        rerank_depth: Candidates passed to the reranker (default 100).
        mode: ``dense`` (default), ``lexical`` or ``hybrid``.
        fusion: How hybrid fuses its branches: ``rrf`` (default; the store's
            :meth:`~sbert_retrieval.stores.base.VectorStore.hybrid_search`, which Qdrant runs
            as one Query API request, except at document level) or ``weighted`` (fused here).
        alpha: The dense weight of ``weighted`` fusion, in [0, 1] (default 0.5).
        rrf_k: The constant of ``rrf`` fusion (default 60).
        candidates: Each hybrid branch's depth; default max(100, 4k) and never below the hits
            a search needs (``k``, or ``rerank_depth`` when reranking).

    Raises:
        ModelMismatchError: The encoder is not the one the store was built with.
        ValueError: An unknown mode or fusion, or a setting out of range (the message lists the
            valid choices).

    Thread safety: safe to share across threads; concurrent searches are allowed.
    """

    def __init__(
        self,
        encoder: BiEncoder | None,
        store: VectorStore,
        *,
        query_encoder: BiEncoder | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int = 100,
        mode: str = "dense",
        fusion: str = "rrf",
        alpha: float = DEFAULT_ALPHA,
        rrf_k: int = DEFAULT_RRF_K,
        candidates: int | None = None,
    ) -> None:
        spec = store.spec
        if encoder is not None:
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
        check_mode(mode)
        check_fusion(fusion, alpha=alpha, rrf_k=rrf_k)
        if candidates is not None and candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.encoder = encoder
        self.query_encoder = query_encoder or encoder
        self.store = store
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.mode = mode
        self.fusion = fusion
        self.alpha = alpha
        self.rrf_k = rrf_k
        self.candidates = candidates

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
            queries: Query texts (the store's query prefix is prepended for the dense branch;
                the lexical branch reads the text as typed).
            k: Hits per query, ≥ 1.
            filter: Metadata filter (see :mod:`sbert_retrieval.stores.filters`), applied inside
                every branch.
            doc_level: One hit per document (its best chunk) instead of one per chunk.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if isinstance(queries, str):
            raise ValueError("queries must be a sequence of strings, not one string")
        parsed = parse_filter(filter)
        if not queries:
            return []
        vectors = None
        if self.mode != "lexical":
            if self.query_encoder is None:
                raise ValueError(
                    f"{self.mode} mode needs an encoder for query texts: pass encoder=, or"
                    " encode the queries yourself and call search_by_vectors"
                )
            vectors = self.query_encoder.encode(list(queries), prefix=self.store.spec.query_prefix)
        return self.search_by_vectors(queries, vectors, k, filter=parsed, doc_level=doc_level)

    def search_by_vectors(
        self,
        queries: Sequence[str],
        vectors: np.ndarray | None,
        k: int = 10,
        *,
        filter: FilterLike | None = None,
        doc_level: bool = False,
    ) -> list[list[Hit]]:
        """As :meth:`search_batch`, for queries already encoded (prefix applied).

        ``queries`` are needed by the lexical branch and the reranker; pass the texts the
        vectors came from. ``vectors`` may be ``None`` in lexical mode.
        Thread safety: as :meth:`search_batch`.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        need = max(k, self.rerank_depth) if self.reranker is not None else k
        if self.mode != "lexical" and vectors is None:
            raise ValueError(f"{self.mode} mode needs the query vectors")
        if self.mode == "dense":
            assert vectors is not None
            rows = search_records(self.store, vectors, need, filter=filter, doc_level=doc_level)
            results = [_ranked(row, "dense") for row in rows]
        elif self.mode == "lexical":
            rows = lexical_records(self.store, queries, need, filter=filter, doc_level=doc_level)
            results = [_ranked(row, "lexical") for row in rows]
        elif self.fusion == "rrf" and not doc_level:
            # The store fuses (Qdrant: one Query API request; others: both branches + RRF).
            assert vectors is not None
            fused = self.store.hybrid_search(
                vectors,
                queries,
                need,
                filter=filter,
                candidates=self._depth(k, need),
                rrf_k=self.rrf_k,
            )
            results = [[_fused_hit(r) for r in row] for row in fused]
        else:
            assert vectors is not None
            depth = self._depth(k, need)
            dense = search_records(self.store, vectors, depth, filter=filter, doc_level=doc_level)
            lexical = lexical_records(
                self.store, queries, depth, filter=filter, doc_level=doc_level
            )
            if len(dense) != len(lexical):
                raise ValueError(f"{len(dense)} query vectors for {len(lexical)} queries")
            results = [
                [
                    _fused_hit(r)
                    for r in fuse_records(
                        d,
                        lx,
                        doc_level=doc_level,
                        fusion=self.fusion,
                        rrf_k=self.rrf_k,
                        alpha=self.alpha,
                    )[:need]
                ]
                for d, lx in zip(dense, lexical, strict=True)
            ]
        if self.reranker is not None:
            results = [
                rerank_hits(self.reranker, q, hits, self.rerank_depth, first_stage=self.mode)
                for q, hits in zip(queries, results, strict=True)
            ]
        return [hits[:k] for hits in results]

    def _depth(self, k: int, need: int) -> int:
        """Each hybrid branch's depth: ``candidates`` (default max(100, 4k)), at least ``need``."""
        return max(self.candidates or default_candidates(k), need)


def _fused_hit(record: FusedRecord) -> Hit:
    return replace(
        Hit.from_record(record),
        dense_score=record.dense_score,
        dense_rank=record.dense_rank,
        lexical_score=record.lexical_score,
        lexical_rank=record.lexical_rank,
    )


def _ranked(row: list[ScoredRecord], branch: str) -> list[Hit]:
    hits = []
    for rank, record in enumerate(row, start=1):
        hit = Hit.from_record(record)
        if branch == "dense":
            hits.append(replace(hit, dense_score=record.score, dense_rank=rank))
        else:
            hits.append(replace(hit, lexical_score=record.score, lexical_rank=rank))
    return hits
