"""Vector stores behind one interface: local HNSW (default), exact, and Qdrant."""

from __future__ import annotations

from sbert_retrieval.stores.base import Record, ScoredRecord, VectorStore
from sbert_retrieval.stores.exact import ExactStore
from sbert_retrieval.stores.filters import Filter, parse_filter
from sbert_retrieval.stores.hnsw import HnswParams, HnswStore

__all__ = [
    "ExactStore",
    "Filter",
    "HnswParams",
    "HnswStore",
    "Record",
    "ScoredRecord",
    "VectorStore",
    "parse_filter",
]
