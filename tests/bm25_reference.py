"""BM25 computed here by its formula, the reference every backend's lexical scores are tested on."""

from __future__ import annotations

import math

from sbert_retrieval.lexical import analyze, query_terms


def reference_bm25(
    texts: list[str], query: str, k1: float = 1.2, b: float = 0.75
) -> dict[int, float]:
    """BM25 with Lucene's IDF ``ln(1 + (N - n + 0.5) / (n + 0.5))`` (tantivy's, and Qdrant's
    ``Modifier.IDF``) over :func:`~sbert_retrieval.lexical.analyze`'s terms, for the query's
    :func:`~sbert_retrieval.lexical.query_terms`: ``{text index: score}`` for the texts holding
    a query term."""
    docs = [analyze(text) for text in texts]
    n_docs = len(docs)
    avgdl = sum(len(d) for d in docs) / n_docs
    scores: dict[int, float] = {}
    for term in query_terms(query):
        df = sum(term in d for d in docs)
        idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        for i, doc in enumerate(docs):
            tf = doc.count(term)
            if tf:
                norm = tf + k1 * (1 - b + b * len(doc) / avgdl)
                scores[i] = scores.get(i, 0.0) + idf * tf * (k1 + 1) / norm
    return scores
