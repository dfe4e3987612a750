"""Vector stores behind one interface: local HNSW (default), exact, and Qdrant.

``QdrantStore`` and ``RetryConfig`` are imported on first use, so the embedded stores never pay
for importing qdrant-client and gRPC.
"""

from __future__ import annotations

from typing import Any

from sbert_retrieval.stores.base import Record, ScoredRecord, VectorStore
from sbert_retrieval.stores.exact import ExactStore
from sbert_retrieval.stores.filters import Filter, parse_filter
from sbert_retrieval.stores.hnsw import HnswParams, HnswStore

__all__ = [
    "ExactStore",
    "Filter",
    "HnswParams",
    "HnswStore",
    "QdrantStore",
    "Record",
    "RetryConfig",
    "ScoredRecord",
    "VectorStore",
    "parse_filter",
]


def __getattr__(name: str) -> Any:
    if name in ("QdrantStore", "RetryConfig"):
        from sbert_retrieval.stores import qdrant

        return getattr(qdrant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
