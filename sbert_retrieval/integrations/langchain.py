"""LangChain adapter: our encoder as ``Embeddings``, our stores as a ``VectorStore``.

Install with ``pip install 'sbert-retrieval[langchain]'`` (langchain-core only)::

    from sbert_retrieval import BiEncoder, HnswStore
    from sbert_retrieval.integrations.langchain import SbertVectorStore
    from sbert_retrieval.reranking import CrossEncoderReranker

    encoder = BiEncoder()
    store = SbertVectorStore(HnswStore("my-index"), encoder)      # e.g. built by the CLI
    retriever = store.as_retriever(
        search_kwargs={"k": 5, "filter": {"lang": "en"}},
        reranker=CrossEncoderReranker("default"),
    )
    docs = retriever.invoke("how do cats purr?")

Retrieval modes
    Every search runs through :class:`~sbert_retrieval.retrieval.Retriever`, the query path
    the CLI and the HTTP service use. ``search_type`` keeps LangChain's meaning
    (``similarity``, ``similarity_score_threshold``, ``mmr``); the mode goes in
    ``search_kwargs`` (or as keyword arguments of ``similarity_search``), as the other
    retrieval settings do::

        hybrid = store.as_retriever(
            search_kwargs={"k": 5, "mode": "hybrid", "fusion": "weighted", "alpha": 0.7}
        )

    ``mode`` is ``dense`` (default), ``lexical`` (BM25; the store needs a lexical index) or
    ``hybrid``; ``fusion`` (``rrf`` or ``weighted``), ``alpha``, ``rrf_k`` and ``candidates``
    are :class:`~sbert_retrieval.retrieval.Retriever`'s. ``mmr`` is dense only.

Payloads and ids
    Points are written exactly as :class:`~sbert_retrieval.pipeline.IngestionPipeline` writes
    them (payload keys ``doc_id``, ``chunk_index``, ``text``, ``start``, ``end``,
    ``metadata``), so an index built by ``sbert-retrieval ingest`` is searchable here and texts
    added here are found by ``sbert-retrieval search`` and the HTTP service.

    A text added through LangChain is a document of one chunk: its LangChain id is its
    ``doc_id``, and its point id is :func:`to_point_id` of that id (UUIDs pass through in
    canonical form, any other string maps to a deterministic UUID5, as Qdrant needs UUIDs).
    Without an id, the id is a UUID5 of the text and metadata, so adding the same text twice
    stores it once. A returned :class:`~langchain_core.documents.Document` carries the id it was
    added with, or, for a chunk written by the ingestion pipeline, the chunk's point id; either
    is accepted by :meth:`SbertVectorStore.delete` and :meth:`SbertVectorStore.get_by_ids`.
    A LangChain id equal to the id of an ingested document adds a chunk to that document (and
    re-ingesting the document replaces it); :meth:`SbertVectorStore.delete_documents` removes
    whole documents.

Scores
    ``similarity_search_with_score`` returns the hit's score, higher is better: the store's
    similarity (cosine, or inner product) in ``dense`` mode, BM25 in ``lexical`` mode, the
    fused score in ``hybrid`` mode. Relevance scores (and ``similarity_score_threshold``) map
    a dense similarity to ``[0, 1]`` as ``(1 + s) / 2`` and take ``weighted`` hybrid scores
    (already in ``[0, 1]``) as they are; BM25 and RRF scores have no such scale and are refused.

Filters
    The ``filter`` argument uses :mod:`sbert_retrieval.stores.filters` on every backend:
    ``{"lang": "en"}``, ``{"year": {"$gte": 2020}}``, ``{"doc_id": "a.md"}``; other keys name
    metadata fields. Filters run inside the store's search.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import numpy as np

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
    from pydantic import Field, field_validator, model_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sbert_retrieval.integrations.langchain needs langchain-core:"
        " pip install 'sbert-retrieval[langchain]'"
    ) from exc

from sbert_retrieval.documents import Document as SourceDocument
from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.fusion import DEFAULT_ALPHA, DEFAULT_RRF_K, check_fusion
from sbert_retrieval.models import DEFAULT_MODEL, EmbeddingSpec, default_prefixes
from sbert_retrieval.pipeline import chunk_payload, whole_chunk
from sbert_retrieval.retrieval import Hit, Reranker, Retriever, check_mode, rerank_hits
from sbert_retrieval.stores.base import Record, ScoredRecord, check_spec
from sbert_retrieval.stores.base import VectorStore as Store
from sbert_retrieval.stores.factory import StoreConfig, open_store
from sbert_retrieval.stores.filters import FilterLike, parse_filter
from sbert_retrieval.stores.hnsw import HnswStore

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "SbertEmbeddings",
    "SbertRetriever",
    "SbertVectorStore",
    "embeddings_spec",
    "to_point_id",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Threads of the shared executor that async methods offload blocking work to.
DEFAULT_MAX_WORKERS = 4
# Namespace of the UUID5 point ids of LangChain ids that are not UUIDs themselves.
_LANGCHAIN_NAMESPACE = uuid.UUID("0b6c5a52-3f8e-4d5e-9c1a-7e2f4b9d8a61")
_MODE_KWARGS = ("mode", "fusion", "alpha", "rrf_k", "candidates")
_SEARCH_KWARGS = ("filter", "doc_level", *_MODE_KWARGS)

_executor_lock = threading.Lock()
_shared_executor: list[ThreadPoolExecutor] = []  # at most one, created on first use


def _default_executor() -> ThreadPoolExecutor:
    """The process-wide bounded executor of the async methods (created on first use)."""
    with _executor_lock:
        if not _shared_executor:
            _shared_executor.append(
                ThreadPoolExecutor(
                    max_workers=DEFAULT_MAX_WORKERS,
                    thread_name_prefix="sbert-retrieval-langchain",
                )
            )
        return _shared_executor[0]


async def _offload(
    executor: Executor | None, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run blocking ``fn`` on ``executor`` (default: the shared one), keeping context vars."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await loop.run_in_executor(executor or _default_executor(), call)


def to_point_id(langchain_id: str) -> str:
    """The store point id of a LangChain id.

    A UUID string passes through in canonical form (lowercase, hyphenated); any other string
    maps to a deterministic UUID5, so ``"1"`` is the same point on every backend and every run.

    Raises:
        ValueError: ``langchain_id`` is not a non-empty string.

    Thread safety: a pure function.
    """
    if not isinstance(langchain_id, str) or not langchain_id:
        raise ValueError(f"ids must be non-empty strings, got {langchain_id!r}")
    try:
        return str(uuid.UUID(langchain_id))
    except ValueError:
        return str(uuid.uuid5(_LANGCHAIN_NAMESPACE, langchain_id))


def _content_id(text: str, metadata: Mapping[str, Any], position: int) -> str:
    try:
        key = json.dumps(
            {"text": text, "metadata": metadata},
            sort_keys=True,
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata of text {position} is not JSON-serializable ({exc})") from exc
    return str(uuid.uuid5(_LANGCHAIN_NAMESPACE, key))


def _langchain_id(point_id: str, doc_id: str) -> str:
    if doc_id and to_point_id(doc_id) == point_id:
        return doc_id
    return point_id


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _dense_relevance(score: float) -> float:
    """Similarity in ``[-1, 1]`` (cosine; inner product of unit vectors) → ``[0, 1]``."""
    return min(1.0, max(0.0, (1.0 + score) / 2.0))


def _unit_relevance(score: float) -> float:
    return min(1.0, max(0.0, score))


def _relevance_fn(mode: str, fusion: str) -> Callable[[float], float]:
    """How a hit's score maps to a relevance in ``[0, 1]`` in this mode.

    Raises:
        ValueError: Unknown mode or fusion, or a mode whose scores have no ``[0, 1]`` scale.
    """
    check_mode(mode)
    if mode == "dense":
        return _dense_relevance
    check_fusion(fusion, alpha=DEFAULT_ALPHA, rrf_k=DEFAULT_RRF_K)
    if mode == "hybrid" and fusion == "weighted":
        return _unit_relevance
    raise ValueError(
        f"relevance scores (similarity_score_threshold) need mode 'dense' (cosine) or mode"
        f" 'hybrid' with fusion 'weighted' (scores in [0, 1]); got mode {mode!r}, fusion"
        f" {fusion!r}, whose scores (BM25, RRF) have no such scale"
    )


def embeddings_spec(
    embeddings: Embeddings, dimension: int, *, name: str | None = None
) -> EmbeddingSpec:
    """An :class:`EmbeddingSpec` for a store of vectors made by any LangChain ``Embeddings``.

    Such a store cannot be checked against the weights that made it (there is no
    fingerprint to read), so the spec records the class name; a :class:`BiEncoder` opening it
    later is refused with :class:`~sbert_retrieval.errors.ModelMismatchError`.

    Args:
        embeddings: The embeddings model.
        dimension: Width of its vectors.
        name: Recorded as the model name (default ``langchain:<module>.<class>``).

    Raises:
        ValueError: ``dimension < 1``.

    Thread safety: a pure function.
    """
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, got {dimension}")
    kind = type(embeddings)
    model = name or f"langchain:{kind.__module__}.{kind.__qualname__}"
    return EmbeddingSpec(
        model=model,
        dimension=int(dimension),
        pooling="external",
        normalize=False,
        max_seq_length=0,
        fingerprint=hashlib.sha256(model.encode("utf-8")).hexdigest()[:16],
    )


class SbertEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a :class:`~sbert_retrieval.encoding.BiEncoder`.

    Documents are encoded with the passage prefix and queries with the query prefix, as the
    ingestion pipeline and the retriever do, so vectors match an index built by the CLI.

    Args:
        model: Hub id or local directory (default: ``all-MiniLM-L6-v2``); ignored when
            ``encoder`` is given.
        encoder: An existing encoder to share (one per process is plenty).
        query_prefix: Text put before each query (default: the model's ``query`` prompt, or
            ``""``).
        passage_prefix: Text put before each document (default: the model's ``passage`` or
            ``document`` prompt, or ``""``).
        device: ``cpu``, ``cuda``, ``auto`` (default: CUDA when available); with ``model``.
        dtype: ``float32``, ``float16``, ``bfloat16`` or ``auto``; with ``model``.
        batch_size: Texts per forward pass (default 32); with ``model``.
        executor: Where the async methods run the encoder (default: a shared pool of
            :data:`DEFAULT_MAX_WORKERS` threads).

    Thread safety: every method may be called from several threads; the encoder serializes
    its forward passes.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        encoder: BiEncoder | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        executor: Executor | None = None,
    ) -> None:
        if encoder is None:
            encoder = BiEncoder(
                model or DEFAULT_MODEL, device=device, dtype=dtype, batch_size=batch_size
            )
        self.encoder = encoder
        self.query_prefix, self.passage_prefix = default_prefixes(
            encoder.prompts, query_prefix, passage_prefix
        )
        self.executor = executor

    @classmethod
    def for_store(
        cls, encoder: BiEncoder, store: Store, *, executor: Executor | None = None
    ) -> SbertEmbeddings:
        """Embeddings with the prefixes ``store`` was built with, checked against its spec.

        Raises:
            ModelMismatchError: ``encoder`` is not the model the store was built with.

        Thread safety: safe.
        """
        embeddings = cls(
            encoder=encoder,
            query_prefix=store.spec.query_prefix,
            passage_prefix=store.spec.passage_prefix,
            executor=executor,
        )
        check_spec(store.spec, embeddings.spec(), "the store")
        return embeddings

    def spec(self) -> EmbeddingSpec:
        """The identity of these vectors (model fingerprint and prefixes), as stores record it.

        Thread safety: safe.
        """
        return self.encoder.spec(query_prefix=self.query_prefix, passage_prefix=self.passage_prefix)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` float32 vectors of documents (passage prefix applied).

        Texts longer than the encoder's ``max_seq_length`` (tokens, prefix included) are
        truncated and a warning is logged.

        Thread safety: safe; forward passes are serialized by the encoder.
        """
        tokenized = self.encoder.tokenize(list(texts), prefix=self.passage_prefix)
        if tokenized.truncated:
            logger.warning(
                "%d of %d texts exceed %d tokens and were truncated for encoding; split long"
                " texts (e.g. with a LangChain text splitter) or ingest them with the pipeline",
                tokenized.truncated,
                len(tokenized),
                self.encoder.max_seq_length,
            )
        return self.encoder.encode_tokenized(tokenized)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` float32 vectors of queries (query prefix applied).

        Thread safety: safe; forward passes are serialized by the encoder.
        """
        return self.encoder.encode(list(texts), prefix=self.query_prefix)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with the passage prefix; one list of ``dimension`` floats each.

        Thread safety: safe.
        """
        rows: list[list[float]] = self.encode_documents(texts).tolist()
        return rows

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the query prefix; ``dimension`` floats.

        Thread safety: safe.
        """
        row: list[float] = self.encode_queries([text])[0].tolist()
        return row

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.embed_query, text)


class SbertVectorStore(VectorStore):
    """LangChain ``VectorStore`` over one of our stores (HNSW, exact or Qdrant).

    Args:
        store: The store; it keeps its own spec (model, prefixes) and this adapter checks the
            embedding against it.
        embedding: Preferably a :class:`BiEncoder` (the store's prefixes are applied) or a
            :class:`SbertEmbeddings` (its prefixes must equal the store's). Any other LangChain
            ``Embeddings`` works too (its vectors are used as given; only the width is checked,
            by the store); build its store with :func:`embeddings_spec`.
        auto_flush: Make the store durable after every add/delete call (default True). Turn it
            off for many small writes to a disk store and call :meth:`flush` or :meth:`close`.
        chunk_fields: Also put the chunk's ``doc_id``, ``chunk_index``, ``start`` and ``end``
            into each returned document's metadata (default False: metadata as stored).
        executor: Where async methods run blocking work (default: a shared pool of
            :data:`DEFAULT_MAX_WORKERS` threads).

    Raises:
        ModelMismatchError: The encoder (or its prefixes) differs from the store's.

    Thread safety: every method may be called from several threads and event loops at once;
    searches run concurrently, writes through this adapter are serialized. :meth:`close` must
    not race with other calls.
    """

    def __init__(
        self,
        store: Store,
        embedding: BiEncoder | Embeddings,
        *,
        auto_flush: bool = True,
        chunk_fields: bool = False,
        executor: Executor | None = None,
    ) -> None:
        if isinstance(embedding, BiEncoder):
            embedding = SbertEmbeddings.for_store(embedding, store, executor=executor)
        elif isinstance(embedding, SbertEmbeddings):
            check_spec(store.spec, embedding.spec(), "the store")
        elif not isinstance(embedding, Embeddings):
            raise TypeError(
                "embedding must be a BiEncoder, SbertEmbeddings or LangChain Embeddings, got"
                f" {type(embedding).__name__}"
            )
        self.store = store
        self.embedding: Embeddings = embedding
        self.auto_flush = auto_flush
        self.chunk_fields = chunk_fields
        self.executor = executor
        self._write_lock = threading.Lock()

    # -- encoding --------------------------------------------------------------------------
    @property
    def embeddings(self) -> Embeddings:
        """The embeddings model (a :class:`SbertEmbeddings` on the main path).

        Thread safety: safe.
        """
        return self.embedding

    def _embed_documents(self, texts: list[str]) -> np.ndarray:
        if isinstance(self.embedding, SbertEmbeddings):
            return self.embedding.encode_documents(texts)
        vectors: np.ndarray = np.asarray(self.embedding.embed_documents(texts), dtype=np.float32)
        return vectors

    def _embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray
        if isinstance(self.embedding, SbertEmbeddings):
            vector = self.embedding.encode_queries([text])[0]
        else:
            vector = np.asarray(self.embedding.embed_query(text), dtype=np.float32)
        return vector

    # -- writing ---------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode and store texts, one point each; an existing id is replaced.

        Args:
            texts: The texts (each is one chunk; long ones are truncated for encoding).
            metadatas: One JSON-serializable dict per text (default: empty).
            ids: One id per text; ``None`` entries get a deterministic UUID of the text and
                metadata.

        Returns:
            The ids, in input order.

        Raises:
            ValueError: Lengths differ, an id is not a string, metadata is not
                JSON-serializable, or an unknown keyword argument is given.

        Thread safety: safe; concurrent writes through this adapter are serialized, and
        searches keep running.
        """
        if kwargs:
            raise ValueError(f"unknown argument(s) {sorted(kwargs)}; valid: metadatas, ids")
        text_list = list(texts)
        if any(not isinstance(t, str) for t in text_list):
            raise ValueError("texts must be strings")
        metas: list[dict[str, Any]] = (
            [{} for _ in text_list] if metadatas is None else [dict(m) for m in metadatas]
        )
        if len(metas) != len(text_list):
            raise ValueError(f"got {len(text_list)} texts but {len(metas)} metadatas")
        given: list[str | None] = [None] * len(text_list) if ids is None else list(ids)
        if len(given) != len(text_list):
            raise ValueError(f"got {len(text_list)} texts but {len(given)} ids")
        final_ids = [
            i if i else _content_id(t, m, n)
            for n, (i, t, m) in enumerate(zip(given, text_list, metas, strict=True))
        ]
        if not text_list:
            return []
        point_ids = [to_point_id(i) for i in final_ids]
        vectors = self._embed_documents(text_list)
        # One chunk per text, with the payload the ingestion pipeline writes.
        records = [
            Record(pid, vectors[n], chunk_payload(whole_chunk(SourceDocument(lc_id, text, meta))))
            for n, (pid, lc_id, text, meta) in enumerate(
                zip(point_ids, final_ids, text_list, metas, strict=True)
            )
        ]
        with self._write_lock:
            self.store.upsert(records)
            if self.auto_flush:
                self.store.flush()
        return final_ids

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(
            self.executor, self.add_texts, list(texts), metadatas, ids=ids, **kwargs
        )

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete points by id (as returned by add or search); unknown ids are ignored.

        Args:
            ids: LangChain ids or point ids. ``None`` is refused rather than deleting
                everything.

        Returns:
            True once the points are gone.

        Raises:
            ValueError: ``ids`` is ``None`` or an unknown keyword argument is given.

        Thread safety: safe; serialized with other writes.
        """
        if kwargs:
            raise ValueError(f"unknown argument(s) {sorted(kwargs)}; valid: ids")
        if ids is None:
            raise ValueError(
                "delete needs the ids to delete (deleting everything is not supported); use"
                " delete_documents(doc_ids) to remove whole ingested documents"
            )
        point_ids = [to_point_id(i) for i in ids]
        with self._write_lock:
            self.store.delete(point_ids)
            if self.auto_flush:
                self.store.flush()
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Async :meth:`delete`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.delete, ids, **kwargs)

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete every chunk of these documents (ingested by the pipeline or added here).

        Returns:
            How many points were deleted.

        Thread safety: safe; serialized with other writes.
        """
        with self._write_lock:
            deleted = self.store.delete_documents(list(doc_ids))
            if self.auto_flush and deleted:
                self.store.flush()
        return deleted

    async def adelete_documents(self, doc_ids: Iterable[str]) -> int:
        """Async :meth:`delete_documents`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.delete_documents, list(doc_ids))

    def flush(self) -> None:
        """Make every write so far durable (see ``auto_flush``).

        Thread safety: safe.
        """
        with self._write_lock:
            self.store.flush()

    def close(self) -> None:
        """Flush and close the underlying store. Idempotent.

        Thread safety: call once no other call is running.
        """
        self.store.close()

    def __enter__(self) -> SbertVectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def _document(self, hit: Hit) -> Document:
        """A hit as a LangChain document (``rerank_score`` in its metadata when reranked)."""
        metadata = dict(hit.metadata)
        if self.chunk_fields:
            metadata.update(
                doc_id=hit.doc_id, chunk_index=hit.chunk_index, start=hit.start, end=hit.end
            )
        if hit.rerank_score is not None:
            metadata["rerank_score"] = hit.rerank_score
        return Document(
            page_content=hit.text,
            metadata=metadata,
            id=_langchain_id(hit.point_id, hit.doc_id),
        )

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents for these ids, in the given order; unknown ids are left out.

        Thread safety: safe, concurrent with searches and writes.
        """
        records = self.store.get([to_point_id(i) for i in ids])
        return [
            self._document(Hit.from_record(ScoredRecord(r.id, 0.0, r.payload))) for r in records
        ]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Async :meth:`get_by_ids`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.get_by_ids, list(ids))

    def search_hits(
        self,
        query: str,
        k: int = 4,
        *,
        filter: FilterLike | None = None,
        doc_level: bool = False,
        mode: str = "dense",
        fusion: str = "rrf",
        alpha: float = DEFAULT_ALPHA,
        rrf_k: int = DEFAULT_RRF_K,
        candidates: int | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int = 100,
    ) -> list[Hit]:
        """Top-``k`` hits for ``query`` through :class:`~sbert_retrieval.retrieval.Retriever`.

        The query path every LangChain search here takes; the hits are those
        ``sbert-retrieval search`` and the HTTP service return for the same settings.

        Args:
            query: The query text (the query prefix is applied for the dense branch).
            k: Hits, >= 1 (default 4).
            filter: Metadata filter in :mod:`sbert_retrieval.stores.filters` syntax.
            doc_level: One hit per document (its best chunk).
            mode / fusion / alpha / rrf_k / candidates: As
                :class:`~sbert_retrieval.retrieval.Retriever` (default dense; ``lexical`` and
                ``hybrid`` need a store with a lexical index).
            reranker: Reorders the top ``rerank_depth`` hits.
            rerank_depth: Hits reranked (default 100).

        Raises:
            ValueError: ``k < 1``, or an unknown mode or fusion, or a setting out of range (the
                message lists the valid choices).
            InvalidFilterError: A malformed filter.
            StoreError: ``lexical``/``hybrid`` on a store without a lexical index.

        Thread safety: safe; searches run concurrently.
        """
        retriever = self._retriever(
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            rrf_k=rrf_k,
            candidates=candidates,
            reranker=reranker,
            rerank_depth=rerank_depth,
        )
        vector = None if mode == "lexical" else self._embed_query(query)
        return self._hits(retriever, query, vector, k, filter=filter, doc_level=doc_level)

    def _retriever(self, **settings: Any) -> Retriever:
        encoder = self.embedding.encoder if isinstance(self.embedding, SbertEmbeddings) else None
        return Retriever(encoder, self.store, **settings)

    def _hits(
        self,
        retriever: Retriever,
        query: str,
        vector: np.ndarray | None,
        k: int,
        *,
        filter: FilterLike | None,
        doc_level: bool,
    ) -> list[Hit]:
        _check_k(k)
        vectors = None if vector is None else vector.reshape(1, -1)
        return retriever.search_by_vectors(
            [query], vectors, k, filter=parse_filter(filter), doc_level=doc_level
        )[0]

    @staticmethod
    def _check_search_kwargs(kwargs: Mapping[str, Any], allowed: Sequence[str]) -> None:
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            valid = ("filter", "doc_level", *allowed)
            raise ValueError(f"unknown search argument(s) {unknown}; valid: k, {', '.join(valid)}")

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: FilterLike | None = None,
        *,
        doc_level: bool = False,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Top-``k`` documents for ``query`` with their score, best first.

        Args:
            query: The query text (the query prefix is applied).
            k: Results, >= 1 (default 4); fewer when fewer points match.
            filter: Metadata filter in :mod:`sbert_retrieval.stores.filters` syntax.
            doc_level: One result per document (its best chunk).
            **kwargs: ``mode`` (``dense``, ``lexical``, ``hybrid``), ``fusion``, ``alpha``,
                ``rrf_k``, ``candidates``: see :meth:`search_hits`.

        Raises:
            ValueError: ``k < 1``, an unknown keyword argument, mode or fusion.
            InvalidFilterError: A malformed filter (the message names the problem).

        Thread safety: safe; searches run concurrently.
        """
        self._check_search_kwargs(kwargs, _MODE_KWARGS)
        hits = self.search_hits(query, k, filter=filter, doc_level=doc_level, **kwargs)
        return [(self._document(h), h.score) for h in hits]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with relevance in ``[0, 1]`` (see the module's *Scores*)."""
        relevance = _relevance_fn(kwargs.get("mode", "dense"), kwargs.get("fusion", "rrf"))
        pairs = self.similarity_search_with_score(query, k, **kwargs)
        return [(doc, relevance(score)) for doc, score in pairs]

    def similarity_search_with_score_by_vector(
        self,
        embedding: Sequence[float] | np.ndarray,
        k: int = 4,
        filter: FilterLike | None = None,
        *,
        doc_level: bool = False,
    ) -> list[tuple[Document, float]]:
        """As :meth:`similarity_search_with_score` (dense) for a query vector of width
        ``dimension``.

        Thread safety: safe.
        """
        vector = np.asarray(embedding, dtype=np.float32)
        hits = self._hits(self._retriever(), "", vector, k, filter=filter, doc_level=doc_level)
        return [(self._document(h), h.score) for h in hits]

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: FilterLike | None = None,
        *,
        doc_level: bool = False,
        **kwargs: Any,
    ) -> list[Document]:
        """Top-``k`` documents for ``query``; see :meth:`similarity_search_with_score`.

        Thread safety: safe; searches run concurrently.
        """
        pairs = self.similarity_search_with_score(query, k, filter, doc_level=doc_level, **kwargs)
        return [doc for doc, _ in pairs]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: FilterLike | None = None,
        *,
        doc_level: bool = False,
        **kwargs: Any,
    ) -> list[Document]:
        """Top-``k`` documents for a query vector; see :meth:`similarity_search_with_score`.

        Thread safety: safe.
        """
        self._check_search_kwargs(kwargs, ())
        pairs = self.similarity_search_with_score_by_vector(
            embedding, k, filter, doc_level=doc_level
        )
        return [doc for doc, _ in pairs]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.similarity_search_with_score, query, k, **kwargs)

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """Async :meth:`similarity_search`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(self.executor, self.similarity_search, query, k, **kwargs)

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`similarity_search_by_vector`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(
            self.executor, self.similarity_search_by_vector, embedding, k, **kwargs
        )

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Similarity in ``[-1, 1]`` (cosine; inner product of unit vectors) → ``[0, 1]``."""
        return _dense_relevance

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: FilterLike | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents balancing similarity and diversity among the ``fetch_k`` nearest.

        Args:
            embedding: The query vector.
            k: Results (default 4).
            fetch_k: Candidates fetched first (default 20; at least ``k`` are fetched).
            lambda_mult: 1 = similarity only, 0 = diversity only (default 0.5).
            filter: Metadata filter.

        Thread safety: safe.
        """
        hits = self._mmr_hits(embedding, k, fetch_k, lambda_mult, filter=filter, kwargs=kwargs)
        return [self._document(h) for h in hits]

    def _mmr_hits(
        self,
        embedding: Sequence[float] | np.ndarray,
        k: int,
        fetch_k: int,
        lambda_mult: float,
        *,
        filter: FilterLike | None,
        kwargs: Mapping[str, Any],
    ) -> list[Hit]:
        if kwargs:
            raise ValueError(
                f"unknown argument(s) {sorted(kwargs)}; valid: k, fetch_k, lambda_mult, filter"
                " (mmr is dense only: no mode)"
            )
        if not 0.0 <= lambda_mult <= 1.0:
            raise ValueError(f"lambda_mult must be in [0, 1], got {lambda_mult}")
        _check_k(k)
        query = np.asarray(embedding, dtype=np.float32)
        candidates = self._hits(
            self._retriever(), "", query, max(fetch_k, k), filter=filter, doc_level=False
        )
        if not candidates:
            return []
        stored = {r.id: r.vector for r in self.store.get([h.point_id for h in candidates])}
        candidates = [h for h in candidates if h.point_id in stored]  # deleted meanwhile
        picks = maximal_marginal_relevance(
            query,
            [np.asarray(stored[h.point_id], dtype=np.float32).tolist() for h in candidates],
            lambda_mult=lambda_mult,
            k=k,
        )
        return [candidates[i] for i in picks]

    def reranked_search(
        self,
        query: str,
        reranker: Reranker,
        *,
        search_type: str = "similarity",
        rerank_depth: int = 100,
        **search_kwargs: Any,
    ) -> list[Document]:
        """What :class:`SbertRetriever` returns with a reranker: ``k`` documents, reranked.

        ``max(k, rerank_depth)`` candidates are fetched by ``search_type`` (``similarity``,
        ``similarity_score_threshold`` or ``mmr``) and reordered by ``reranker``; each returned
        document carries ``metadata["rerank_score"]`` (stored documents are unchanged).

        Args:
            query: The query text.
            reranker: Anything with ``score(query, passages) -> list[float]``.
            search_type: As LangChain's ``VectorStoreRetriever``.
            rerank_depth: Candidates reranked (default 100; at least ``k``).
            **search_kwargs: ``k`` (default 4) and the search type's own: ``filter``,
                ``doc_level`` and the mode settings (see :meth:`search_hits`),
                ``score_threshold``; for ``mmr``, ``fetch_k``, ``lambda_mult`` and ``filter``.

        Raises:
            ValueError: An unknown search type or argument, or a setting out of range.

        Thread safety: safe.
        """
        options = dict(search_kwargs)
        k = options.pop("k", 4)
        _check_k(k)
        depth = max(k, rerank_depth)
        if search_type == "mmr":
            fetch_k = max(int(options.pop("fetch_k", 20)), depth)
            lambda_mult = float(options.pop("lambda_mult", 0.5))
            filter = options.pop("filter", None)
            picks = self._mmr_hits(
                self._embed_query(query), depth, fetch_k, lambda_mult, filter=filter, kwargs=options
            )
            hits = rerank_hits(reranker, query, picks, depth)
        elif search_type in ("similarity", "similarity_score_threshold"):
            threshold = options.pop("score_threshold", None)
            filter = options.pop("filter", None)
            doc_level = bool(options.pop("doc_level", False))
            self._check_search_kwargs(options, _MODE_KWARGS)
            hits = self.search_hits(
                query,
                depth,
                filter=filter,
                doc_level=doc_level,
                reranker=reranker,
                rerank_depth=depth,
                **options,
            )
            if search_type == "similarity_score_threshold" and threshold is not None:
                relevance = _relevance_fn(
                    options.get("mode", "dense"), options.get("fusion", "rrf")
                )
                hits = [
                    h
                    for h in hits
                    if relevance(
                        h.first_stage_score if h.first_stage_score is not None else h.score
                    )
                    >= threshold
                ]
        else:
            raise ValueError(
                f"unknown search_type {search_type!r}; valid: similarity,"
                " similarity_score_threshold, mmr"
            )
        return [self._document(h) for h in hits[:k]]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: FilterLike | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR search for a query text; see :meth:`max_marginal_relevance_search_by_vector`.

        Thread safety: safe.
        """
        return self.max_marginal_relevance_search_by_vector(
            self._embed_query(query).tolist(), k, fetch_k, lambda_mult, filter, **kwargs
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search`, run on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(
            self.executor,
            self.max_marginal_relevance_search,
            query,
            k,
            fetch_k,
            lambda_mult,
            **kwargs,
        )

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search_by_vector` on the bounded executor.

        Thread safety: safe.
        """
        return await _offload(
            self.executor,
            self.max_marginal_relevance_search_by_vector,
            embedding,
            k,
            fetch_k,
            lambda_mult,
            **kwargs,
        )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: BiEncoder | Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        store: Store | None = None,
        store_config: StoreConfig | None = None,
        **kwargs: Any,
    ) -> SbertVectorStore:
        """Create a vector store holding ``texts``.

        Args:
            texts: Texts to add.
            embedding: See the class; a :class:`BiEncoder` uses the model's prompts as
                prefixes when a new store is created.
            metadatas: One dict per text.
            ids: One id per text (default: deterministic UUIDs).
            store: Add to this store (its spec must match ``embedding``).
            store_config: Otherwise open or create this store (``hnsw``, ``exact`` or
                ``qdrant``); default: a new in-memory HNSW store.
            **kwargs: ``auto_flush``, ``chunk_fields``, ``executor`` (see the class).

        Raises:
            ValueError: Both ``store`` and ``store_config`` given, or a bad argument.
            ModelMismatchError: An existing store was built with another model.

        Thread safety: safe (creates a new adapter).
        """
        if store is not None and store_config is not None:
            raise ValueError("give store or store_config, not both")
        valid = {"auto_flush", "chunk_fields", "executor"}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown}; valid: {', '.join(sorted(valid))}")
        if isinstance(embedding, BiEncoder):
            embedding = SbertEmbeddings(encoder=embedding, executor=kwargs.get("executor"))
        if store is None:
            if isinstance(embedding, SbertEmbeddings):
                spec = embedding.spec()
            else:
                dimension = len(embedding.embed_query("dimension probe"))
                spec = embeddings_spec(embedding, dimension)
            store = open_store(store_config, spec) if store_config else HnswStore(None, spec)
        vector_store = cls(store, embedding, **kwargs)
        vector_store.add_texts(texts, metadatas, ids=list(ids) if ids is not None else None)
        return vector_store

    def as_retriever(
        self,
        *,
        reranker: Reranker | None = None,
        rerank_depth: int = 100,
        **kwargs: Any,
    ) -> SbertRetriever:
        """A LangChain retriever over this store, optionally reranked by a cross-encoder.

        Args:
            reranker: Anything with ``score(query, passages) -> list[float]`` (higher is
                better), e.g. :class:`~sbert_retrieval.reranking.CrossEncoderReranker`.
            rerank_depth: Candidates fetched and reranked (default 100; at least ``k``).
            **kwargs: As ``VectorStore.as_retriever``: ``search_type`` (``similarity``,
                ``similarity_score_threshold``, ``mmr``), ``search_kwargs`` (``k``,
                ``filter``, ``doc_level``, ``mode``, ``fusion``, ``alpha``, ``rrf_k``,
                ``candidates``; ``score_threshold``; ``fetch_k``, ``lambda_mult``), ``tags``,
                ``metadata``.

        Thread safety: safe; the retriever may be shared across threads.
        """
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return SbertRetriever(
            vectorstore=self,
            tags=tags,
            reranker=reranker,
            rerank_depth=rerank_depth,
            **kwargs,
        )


class SbertRetriever(VectorStoreRetriever):
    """A vector-store retriever that can rerank its candidates with a cross-encoder.

    Without a reranker it behaves as LangChain's ``VectorStoreRetriever``. With one, it fetches
    ``max(k, rerank_depth)`` candidates by the configured search, scores them with
    ``reranker.score(query, texts)``, and returns the best ``k`` with the score in
    ``metadata["rerank_score"]`` (on copies; stored documents are unchanged).

    Thread safety: safe to share; the async path runs the reranker on the bounded executor.
    """

    reranker: Any = None
    """Anything with ``score(query, passages) -> list[float]``, or ``None``."""
    rerank_depth: int = Field(default=100, ge=1)
    """Candidates fetched and reranked."""

    @field_validator("reranker")
    @classmethod
    def _check_reranker(cls, value: Any) -> Any:
        if value is not None and not callable(getattr(value, "score", None)):
            raise ValueError(
                "reranker must have a score(query, passages) -> list[float] method, e.g."
                " sbert_retrieval.reranking.CrossEncoderReranker"
            )
        return value

    @model_validator(mode="after")
    def _check_settings(self) -> SbertRetriever:
        if self.reranker is not None and not isinstance(self.vectorstore, SbertVectorStore):
            raise ValueError(
                "a reranker needs an SbertVectorStore (use SbertVectorStore.as_retriever)"
            )
        mode = self.search_kwargs.get("mode", "dense")
        check_mode(mode)
        if mode == "hybrid":
            check_fusion(
                self.search_kwargs.get("fusion", "rrf"),
                alpha=self.search_kwargs.get("alpha", DEFAULT_ALPHA),
                rrf_k=self.search_kwargs.get("rrf_k", DEFAULT_RRF_K),
            )
        return self

    def _reranked(self, query: str, kwargs: Mapping[str, Any]) -> list[Document]:
        store = self.vectorstore
        assert isinstance(store, SbertVectorStore)
        return store.reranked_search(
            query,
            self.reranker,
            search_type=self.search_type,
            rerank_depth=self.rerank_depth,
            **{**self.search_kwargs, **kwargs},
        )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.reranker is None:
            return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)
        return self._reranked(query, kwargs)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        if self.reranker is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)
        executor = getattr(self.vectorstore, "executor", None)
        return await _offload(executor, self._reranked, query, kwargs)
