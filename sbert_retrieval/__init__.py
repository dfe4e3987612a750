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

from sbert_retrieval.chunking import ChunkingConfig, TokenChunker
from sbert_retrieval.documents import Chunk, Document, iter_documents
from sbert_retrieval.encoding import BiEncoder
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
