"""BEIR-style retrieval evaluation, comparable to MTEB's published numbers.

As MTEB does: corpus title and text joined with one space, exact cosine search by default,
hits whose id equals the query id dropped, metrics as pytrec_eval computes them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbert_retrieval.chunking import ChunkingConfig, TokenChunker
from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.encoding.cache import EmbeddingCache
from sbert_retrieval.evaluation.data import BeirDataset
from sbert_retrieval.evaluation.metrics import RetrievalScores, evaluate
from sbert_retrieval.fusion import DEFAULT_ALPHA, DEFAULT_RRF_K
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.pipeline import DOC_MODES, chunk_documents, chunk_payload, point_id
from sbert_retrieval.retrieval import Hit, Reranker, Retriever, check_mode
from sbert_retrieval.stores.base import Record, VectorStore
from sbert_retrieval.stores.exact import ExactStore
from sbert_retrieval.stores.hnsw import HnswParams, HnswStore

__all__ = ["BACKENDS", "BeirResult", "evaluate_beir"]

BACKENDS = ("exact", "hnsw", "qdrant")
StoreFactory = Callable[[EmbeddingSpec], VectorStore]
_UPSERT_BATCH = 1_000


@dataclass(frozen=True)
class BeirResult:
    """The outcome of :func:`evaluate_beir`.

    Attributes:
        scores: All metrics (see :class:`RetrievalScores`).
        queries: Queries evaluated.
        docs: Corpus documents.
        chunks: Points indexed (``docs`` in truncate mode).
        truncated: Points cut at the encoder's ``max_seq_length``.
        seconds: Wall time of the whole evaluation.
        encode_seconds: Time spent encoding the corpus (≈0 when read from the cache).
        cached: Whether the corpus vectors came from the embedding cache.
        backend: ``exact``, ``hnsw`` or ``qdrant``.
        doc_mode: ``truncate`` or ``chunk``.
        reranked: Whether a cross-encoder reordered the top candidates.
        mode: ``dense``, ``lexical`` or ``hybrid``.
        fusion: The hybrid fusion (``rrf`` or ``weighted``); ``None`` outside hybrid mode.
        precision: What the passage encoder computes in (``float32``, ``bfloat16``, ``int8``,
            ...): what ``dtype="auto"`` chose on this machine.
        inference: The passage encoder's backend (``torch``, ``onnx`` or ``torch+onnx``):
            what ``backend="auto"`` chose.
    """

    scores: RetrievalScores
    queries: int
    docs: int
    chunks: int
    truncated: int
    seconds: float
    encode_seconds: float
    cached: bool
    backend: str
    doc_mode: str
    reranked: bool = False
    mode: str = "dense"
    fusion: str | None = None
    precision: str = "float32"
    inference: str = "torch"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON: the headline metrics first, then every metric and the run details."""
        headline = {
            key: self.scores.metrics[key] for key in ("ndcg@10", "mrr@10", "recall@100", "map@100")
        }
        return {
            **headline,
            "queries": self.queries,
            "docs": self.docs,
            "seconds": round(self.seconds, 3),
            "chunks": self.chunks,
            "truncated": self.truncated,
            "encode_seconds": round(self.encode_seconds, 3),
            "cached": self.cached,
            "backend": self.backend,
            "doc_mode": self.doc_mode,
            "reranked": self.reranked,
            "mode": self.mode,
            "fusion": self.fusion,
            "precision": self.precision,
            "inference": self.inference,
            "metrics": dict(self.scores.metrics),
            **self.extra,
        }


def _make_store(
    backend: str, spec: EmbeddingSpec, factory: StoreFactory | None, hnsw: HnswParams | None
) -> VectorStore:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if factory is not None:
        return factory(spec)
    if backend == "exact":
        return ExactStore(None, spec)
    if backend == "hnsw":
        return HnswStore(None, spec, params=hnsw)
    raise ValueError("the qdrant backend needs a store_factory (a QdrantStore for the collection)")


def evaluate_beir(
    dataset: BeirDataset,
    encoder: BiEncoder,
    *,
    backend: str = "exact",
    doc_mode: str = "truncate",
    store_factory: StoreFactory | None = None,
    query_encoder: BiEncoder | None = None,
    query_prefix: str = "",
    passage_prefix: str = "",
    chunking: ChunkingConfig | None = None,
    hnsw_params: HnswParams | None = None,
    top_k: int = 100,
    cache_dir: str | Path | None = None,
    reranker: Reranker | None = None,
    rerank_depth: int = 100,
    mode: str = "dense",
    fusion: str = "rrf",
    alpha: float = DEFAULT_ALPHA,
    rrf_k: int = DEFAULT_RRF_K,
    candidates: int | None = None,
    show_progress: bool = False,
) -> BeirResult:
    """Index a BEIR corpus, run its queries, and score the results.

    Args:
        dataset: From :func:`~sbert_retrieval.evaluation.data.load_beir_dataset`.
        encoder: Passage encoder (and query encoder unless ``query_encoder`` is given).
        backend: ``exact`` (MTEB's setting), ``hnsw`` or ``qdrant`` (needs ``store_factory``).
        doc_mode: ``truncate`` encodes each document whole, cut at ``max_seq_length`` (MTEB);
            ``chunk`` indexes token windows and scores a document by its best window.
        store_factory: Builds the store from the spec (overrides ``backend``'s default store).
        query_prefix / passage_prefix: Prefixes for asymmetric models.
        chunking: Window settings for chunk mode.
        hnsw_params: Graph settings for the hnsw backend.
        top_k: Documents retrieved per query (default 100, enough for every reported metric).
        cache_dir: Reuse corpus vectors encoded before by the same model and settings.
        reranker: Reorders each query's top ``rerank_depth`` documents.
        mode / fusion / alpha / rrf_k / candidates: As :class:`~sbert_retrieval.retrieval.Retriever`
            (``lexical`` and ``hybrid`` need a store with a lexical index: any backend but a
            Qdrant collection created before it had one).
        show_progress: Progress bars while encoding.
    """
    if doc_mode not in DOC_MODES:
        raise ValueError(f"unknown doc_mode {doc_mode!r}; valid: {', '.join(DOC_MODES)}")
    check_mode(mode)
    started = time.perf_counter()
    documents = list(dataset.corpus.values())
    chunker = (
        TokenChunker.for_encoder(encoder, chunking, prefix=passage_prefix)
        if doc_mode == "chunk"
        else None
    )
    chunks = [c for per_doc in chunk_documents(documents, doc_mode, chunker) for c in per_doc]
    texts = [c.text for c in chunks]
    # Tokenized once: the truncation count and, on a cache miss, the encoding both use it.
    tokenized = encoder.tokenize(texts, prefix=passage_prefix)
    encode_started = time.perf_counter()
    if cache_dir is not None:
        vectors, cached = EmbeddingCache(cache_dir).encode(
            encoder, texts, prefix=passage_prefix, show_progress=show_progress, tokenized=tokenized
        )
    else:
        vectors = encoder.encode_tokenized(tokenized, show_progress=show_progress)
        cached = False
    encode_seconds = time.perf_counter() - encode_started

    spec = encoder.spec(
        query_prefix=query_prefix, passage_prefix=passage_prefix, query_encoder=query_encoder
    )
    store = _make_store(backend, spec, store_factory, hnsw_params)
    try:
        for start in range(0, len(chunks), _UPSERT_BATCH):
            batch = chunks[start : start + _UPSERT_BATCH]
            store.upsert(
                [
                    Record(
                        point_id(c.doc_id, c.index, c.text),
                        vectors[start + i],
                        chunk_payload(c),
                    )
                    for i, c in enumerate(batch)
                ]
            )
        query_ids = list(dataset.queries)
        query_texts = [dataset.queries[q] for q in query_ids]
        retriever = Retriever(
            encoder,
            store,
            query_encoder=query_encoder,
            reranker=reranker,
            rerank_depth=rerank_depth,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            rrf_k=rrf_k,
            candidates=candidates,
        )
        # One extra hit per query covers the BEIR rule of dropping a hit whose id is the query's.
        results = retriever.search_batch(query_texts, top_k + 1, doc_level=doc_mode == "chunk")
    finally:
        store.close()

    run = {
        qid: _run_scores([h for h in hits if h.doc_id != qid][:top_k])
        for qid, hits in zip(query_ids, results, strict=True)
    }
    scores = evaluate(dataset.qrels, run, k_values=(1, 3, 5, 10, 100))
    return BeirResult(
        scores=scores,
        queries=scores.queries,
        docs=len(documents),
        chunks=len(chunks),
        truncated=tokenized.truncated,
        seconds=time.perf_counter() - started,
        encode_seconds=encode_seconds,
        cached=cached,
        backend=backend,
        doc_mode=doc_mode,
        reranked=reranker is not None,
        mode=mode,
        fusion=fusion if mode == "hybrid" else None,
        precision=encoder.precision,
        inference=encoder.backend,
    )


def _run_scores(hits: list[Hit]) -> dict[str, float]:
    """A run's document scores in the hits' order (the order is what every metric reads).

    The hits' own scores where they already descend (so ties score as they tie); otherwise, as
    after reranking the top ``rerank_depth`` of a longer list, scores from the rank.
    """
    scores = [h.score for h in hits]
    if all(a >= b for a, b in itertools.pairwise(scores)):
        return {h.doc_id: h.score for h in hits}
    return {h.doc_id: float(len(hits) - rank) for rank, h in enumerate(hits)}
