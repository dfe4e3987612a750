"""Text → vectors: the bi-encoder (facade), its encoding core, and SBERT pooling."""

from __future__ import annotations

from sbert_retrieval.encoding.bi_encoder import BiEncoder, TokenizedBatch
from sbert_retrieval.encoding.encoder_model import EncoderModel
from sbert_retrieval.encoding.engine import EncodedChunk, EncodingEngine, EngineConfig
from sbert_retrieval.encoding.pooling import pool

__all__ = [
    "BiEncoder",
    "EncodedChunk",
    "EncoderModel",
    "EncodingEngine",
    "EngineConfig",
    "TokenizedBatch",
    "pool",
]
