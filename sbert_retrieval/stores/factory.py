"""Open a store by backend name: what the CLI and the HTTP service build from their flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.base import VectorStore
from sbert_retrieval.stores.exact import ExactStore
from sbert_retrieval.stores.hnsw import HnswParams, HnswStore
from sbert_retrieval.stores.local import stored_meta

__all__ = ["STORE_BACKENDS", "StoreConfig", "open_store", "stored_spec"]

STORE_BACKENDS = ("hnsw", "exact", "qdrant")


@dataclass(frozen=True)
class StoreConfig:
    """Where the vectors live.

    Attributes:
        backend: ``hnsw`` (default), ``exact`` or ``qdrant``.
        index: Directory of a local store (hnsw, exact).
        qdrant_url: URL of a Qdrant server (API key from ``QDRANT_API_KEY``).
        qdrant_path: Directory of an embedded Qdrant (local mode).
        collection: Qdrant collection name (default ``"sbert_retrieval"``).
        hnsw: Graph parameters for a new HNSW index.
    """

    backend: str = "hnsw"
    index: str | None = None
    qdrant_url: str | None = None
    qdrant_path: str | None = None
    collection: str = "sbert_retrieval"
    hnsw: HnswParams | None = None

    def __post_init__(self) -> None:
        if self.backend not in STORE_BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r}; valid: {', '.join(STORE_BACKENDS)}"
            )
        if self.backend == "qdrant":
            if (self.qdrant_url is None) == (self.qdrant_path is None):
                raise ValueError(
                    "the qdrant backend needs exactly one of --qdrant-url or --qdrant-path"
                )
        elif self.index is None:
            raise ValueError(f"the {self.backend} backend needs an index directory (--index DIR)")


def open_store(
    config: StoreConfig, spec: EmbeddingSpec | None = None, *, read_only: bool = False
) -> VectorStore:
    """Open (or create, when ``spec`` is given) the store ``config`` names.

    An existing local index keeps its own kind: a directory written by the exact store opens as
    one even when ``backend`` says ``hnsw``.
    """
    if config.backend == "qdrant":
        from sbert_retrieval.stores.qdrant import QdrantStore

        return QdrantStore(config.collection, spec, url=config.qdrant_url, path=config.qdrant_path)
    assert config.index is not None
    index = Path(config.index).expanduser()
    meta = stored_meta(index)
    kind = meta.get("format") if meta else None
    if kind == ExactStore.FORMAT or (kind is None and config.backend == "exact"):
        return ExactStore(index, spec, read_only=read_only)
    return HnswStore(index, spec, params=config.hnsw, read_only=read_only)


def stored_spec(config: StoreConfig) -> EmbeddingSpec | None:
    """The spec saved with an existing store, without taking its writer lock; ``None`` if new."""
    if config.backend == "qdrant":
        from sbert_retrieval.stores.qdrant import QdrantStore

        try:
            store = QdrantStore(
                config.collection, None, url=config.qdrant_url, path=config.qdrant_path
            )
        except ValueError:
            return None
        with store:
            return store.spec
    assert config.index is not None
    index = Path(config.index).expanduser()
    meta = stored_meta(index)
    return EmbeddingSpec.from_dict(meta["spec"]) if meta else None
