"""sbert_retrieval: Sentence-BERT retrieval — chunk, encode, index, retrieve, rerank, evaluate.

Quick start::

    from sbert_retrieval import BiEncoder, HnswStore, IngestionPipeline, Retriever

    encoder = BiEncoder()                        # all-MiniLM-L6-v2, offline from its package
    with HnswStore("my-index", encoder.spec()) as store:
        IngestionPipeline(encoder, store).ingest(["docs/"])
        for hit in Retriever(encoder, store).search("how do cats purr?", k=5):
            print(hit.score, hit.doc_id, hit.text[:80])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sbert_retrieval.errors import (
    InvalidFilterError,
    InvalidRecordError,
    ModelMismatchError,
    ModelNotFoundError,
    SbertRetrievalError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
)
from sbert_retrieval.models import DEFAULT_MODEL, EmbeddingSpec

if TYPE_CHECKING:
    from sbert_retrieval.chunking import ChunkingConfig, TokenChunker
    from sbert_retrieval.documents import Chunk, Document, iter_documents
    from sbert_retrieval.encoding import BiEncoder
    from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline, IngestReport
    from sbert_retrieval.retrieval import Hit, Retriever
    from sbert_retrieval.stores import (
        ExactStore,
        HnswParams,
        HnswStore,
        Record,
        ScoredRecord,
        VectorStore,
    )

# Imported on first use: torch and transformers take ~4 s and ~200 MiB, which a process that
# only opens a store (a search replica, the store benchmarks) never needs.
_LAZY = {
    "ChunkingConfig": "sbert_retrieval.chunking",
    "TokenChunker": "sbert_retrieval.chunking",
    "Chunk": "sbert_retrieval.documents",
    "Document": "sbert_retrieval.documents",
    "iter_documents": "sbert_retrieval.documents",
    "BiEncoder": "sbert_retrieval.encoding",
    "IngestConfig": "sbert_retrieval.pipeline",
    "IngestionPipeline": "sbert_retrieval.pipeline",
    "IngestReport": "sbert_retrieval.pipeline",
    "Hit": "sbert_retrieval.retrieval",
    "Retriever": "sbert_retrieval.retrieval",
    "ExactStore": "sbert_retrieval.stores",
    "HnswParams": "sbert_retrieval.stores",
    "HnswStore": "sbert_retrieval.stores",
    "Record": "sbert_retrieval.stores",
    "ScoredRecord": "sbert_retrieval.stores",
    "VectorStore": "sbert_retrieval.stores",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "BiEncoder",
    "Chunk",
    "ChunkingConfig",
    "Document",
    "EmbeddingSpec",
    "ExactStore",
    "Hit",
    "HnswParams",
    "HnswStore",
    "IngestConfig",
    "IngestReport",
    "IngestionPipeline",
    "InvalidFilterError",
    "InvalidRecordError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "Record",
    "Retriever",
    "SbertRetrievalError",
    "ScoredRecord",
    "StoreCorruptedError",
    "StoreError",
    "StoreLockedError",
    "TokenChunker",
    "VectorStore",
    "__version__",
    "iter_documents",
]
