"""An HTTP search service over one index: FastAPI app factory and runner.

Install with ``pip install 'sbert-retrieval[server]'`` and start it with the CLI::

    SBERT_RETRIEVAL_API_KEY=secret sbert-retrieval serve --index my-index --port 8000

or from Python::

    from sbert_retrieval.integrations.server import ServerConfig, create_app
    from sbert_retrieval.stores.factory import StoreConfig

    app = create_app(ServerConfig(store=StoreConfig(index="my-index")))  # any ASGI server

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

* ``POST /ingest`` ``{"documents": [{"id": "a", "text": "...", "metadata": {...}}]}`` → the
  ingestion report (added, updated, unchanged, failed, chunks, ..., ``count``). Idempotent:
  unchanged documents are not re-encoded.
* ``POST /search`` ``{"query": "...", "k": 10, "filter": {...}, "doc_level": false,
  "rerank": false, "mode": "dense", "fusion": "rrf", "alpha": 0.5, "rrf_k": 60,
  "candidates": null}`` → ``{"hits": [...]}``, each hit as ``Hit.to_dict()`` (the CLI's
  ``search`` prints the same objects). Searches run through
  :class:`~sbert_retrieval.retrieval.Retriever` (filter syntax:
  :mod:`sbert_retrieval.stores.filters`; modes: :data:`~sbert_retrieval.retrieval.MODES`).
* ``DELETE /documents/{id}`` → ``{"doc_id", "deleted", "count"}``; 404 when unknown.
* ``GET /health`` → status, point count, model; never needs the API key.

Errors are JSON ``{"error": "<code>", "detail": "<message>"}`` (validation errors add
``"errors": [{"loc", "msg"}]``): 400 bad filter or malformed JSON, 401 missing/wrong API key,
403 write to a read-only service, 400 a ``lexical``/``hybrid`` search of a store without a
lexical index, 404, 413 body over ``max_body_bytes`` (checked from
``Content-Length`` before anything is read, and while streaming), 422 a body of the wrong shape,
503 the store failed.

Concurrency: one encoder per process. Concurrent queries are coalesced into batched forward
passes by one encoder thread; their store searches are coalesced likewise by one search thread
(requests with the same settings share one store search), which overlaps the next forward pass;
reranking runs on a bounded thread pool; writes (ingest, delete) run one at a time, on the pool,
while searches go on. The event loop never blocks on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import queue
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    MutableMapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, ParamSpec, TypeVar

import numpy as np

try:
    from fastapi import Depends, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sbert_retrieval.integrations.server needs FastAPI and uvicorn:"
        " pip install 'sbert-retrieval[server]'"
    ) from exc

from sbert_retrieval import __version__
from sbert_retrieval.documents import Document
from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.errors import InvalidFilterError, SbertRetrievalError, StoreError
from sbert_retrieval.fusion import DEFAULT_ALPHA, DEFAULT_RRF_K, FUSIONS, check_fusion
from sbert_retrieval.models import DEFAULT_MODEL, default_prefixes
from sbert_retrieval.pipeline import IngestConfig, IngestionPipeline
from sbert_retrieval.retrieval import MODES, Hit, Reranker, Retriever, check_mode
from sbert_retrieval.stores.base import VectorStore
from sbert_retrieval.stores.factory import StoreConfig, open_store, stored_spec
from sbert_retrieval.stores.filters import Filter, parse_filter

__all__ = [
    "API_KEY_ENV",
    "OPEN_PATHS",
    "Coalescer",
    "QueryBatcher",
    "ServerConfig",
    "create_app",
    "serve",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
J = TypeVar("J")
R = TypeVar("R")

#: Environment variable the API key is read from by default.
API_KEY_ENV = "SBERT_RETRIEVAL_API_KEY"
#: Paths served without the API key: health checks and the API description.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_MAX_K = 10_000


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the HTTP service.

    Attributes:
        store: Which index to serve (``hnsw``/``exact`` directory or a Qdrant collection); a
            missing local index is created on start (unless ``read_only``).
        model: Encoder hub id or local path (default: the model the index was built with, else
            all-MiniLM-L6-v2). Must be the index's weights.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default: CUDA when available).
        dtype: ``float32``, ``float16``, ``bfloat16`` or ``auto`` (default: auto).
        inference_backend: Backend of the encoder and reranker: ``auto`` (default), ``torch``,
            ``onnx`` or ``onnx-int8`` (the encoder only; see
            :func:`~sbert_retrieval.encoding.encoder_model.resolve_backend`).
        batch_size: Texts per forward pass when ingesting, and most queries coalesced into one
            forward pass when searching (default 32).
        query_prefix: Query prefix of a new index (default: the model's ``query`` prompt); an
            existing index keeps its own and a different value is refused.
        passage_prefix: Passage prefix of a new index, likewise.
        api_key: Key clients must send (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``);
            ``None`` reads the environment variable ``api_key_env``; unset or empty there means
            no authentication. Never shown in ``repr``.
        api_key_env: Environment variable holding the key (default ``SBERT_RETRIEVAL_API_KEY``).
        max_body_bytes: Largest request body accepted, in bytes (default 8 MiB); larger gets 413.
        max_k: Largest ``k`` a search may ask for (default 1,000).
        rerank_model: Cross-encoder (hub id or path) enabling ``"rerank": true`` (default none).
        rerank_depth: Candidates reranked per query (default 100).
        rerank_weight: The reranker's share of the final score (see
            :func:`~sbert_retrieval.retrieval.rerank_hits`); default: what the model recommends.
        read_only: Serve searches only: ingest and delete answer 403, and a local index is
            opened without the writer lock, so several processes can serve it.
        threads: Worker threads for reranked searches and writes (default 4).
        ingest: Chunking and batching of ``/ingest`` (default :class:`IngestConfig`).

    Raises:
        ValueError: A setting out of range (the message names it and the valid range).
    """

    store: StoreConfig
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    inference_backend: str = "auto"
    batch_size: int = 32
    query_prefix: str | None = None
    passage_prefix: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str = API_KEY_ENV
    max_body_bytes: int = 8 * 1024 * 1024
    max_k: int = 1_000
    rerank_model: str | None = None
    rerank_depth: int = 100
    rerank_weight: float | None = None
    read_only: bool = False
    threads: int = 4
    ingest: IngestConfig = field(default_factory=IngestConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.store, StoreConfig):
            raise ValueError(f"store must be a StoreConfig, got {type(self.store).__name__}")
        for name in ("batch_size", "max_body_bytes", "rerank_depth", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerConfig.{name} must be an integer >= 1, got {value!r}")
        if not 1 <= self.max_k <= _MAX_K:
            raise ValueError(f"ServerConfig.max_k must be in [1, {_MAX_K}], got {self.max_k}")
        if not self.api_key_env:
            raise ValueError("ServerConfig.api_key_env must name an environment variable")

    def resolved_api_key(self) -> str | None:
        """The key in force: ``api_key``, else the environment variable; ``None`` for none.

        Thread safety: safe (reads the environment).
        """
        key = self.api_key if self.api_key is not None else os.environ.get(self.api_key_env)
        return key or None


# -- request and response bodies ---------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestDocument(_Strict):
    """One document to ingest."""

    id: Annotated[StrictStr, Field(min_length=1)] | StrictInt = Field(
        description="Stable document id; re-ingesting an id replaces that document."
    )
    text: StrictStr = Field(min_length=1, description="Full text; chunked as the CLI does.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="JSON object carried onto every hit; filterable."
    )


class IngestRequest(_Strict):
    """Documents to ingest."""

    documents: list[IngestDocument] = Field(min_length=1)


class IngestResponse(BaseModel):
    """The ingestion report (see ``IngestReport``) and the point count after it."""

    added: int
    updated: int
    unchanged: int
    failed: int
    chunks: int
    truncated: int
    deleted: int
    seconds: float
    failures: list[str]
    count: int


class SearchRequest(_Strict):
    """A search."""

    query: StrictStr = Field(min_length=1, description="Query text (the query prefix is added).")
    k: StrictInt = Field(default=10, ge=1, le=_MAX_K, description="Hits to return.")
    filter: dict[str, Any] | None = Field(
        default=None,
        description='Metadata filter, e.g. {"lang": "en", "year": {"$gte": 2020}}.',
    )
    doc_level: bool = Field(default=False, description="One hit per document (its best chunk).")
    rerank: bool = Field(default=False, description="Rerank with the configured cross-encoder.")
    mode: StrictStr = Field(
        default="dense",
        description="dense (vectors), lexical (BM25) or hybrid (both, fused).",
        json_schema_extra={"enum": list(MODES)},
    )
    fusion: StrictStr = Field(
        default="rrf",
        description="How hybrid fuses its branches: rrf (reciprocal rank) or weighted.",
        json_schema_extra={"enum": list(FUSIONS)},
    )
    alpha: float = Field(
        default=DEFAULT_ALPHA, ge=0.0, le=1.0, description="Dense weight of weighted fusion."
    )
    rrf_k: StrictInt = Field(default=DEFAULT_RRF_K, ge=0, description="The RRF constant.")
    candidates: StrictInt | None = Field(
        default=None,
        ge=1,
        le=_MAX_K,
        description="Depth of each hybrid branch (default max(100, 4k), at least k).",
    )

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, value: str) -> str:
        check_mode(value)
        return value

    @field_validator("fusion")
    @classmethod
    def _check_fusion(cls, value: str) -> str:
        check_fusion(value, alpha=DEFAULT_ALPHA, rrf_k=DEFAULT_RRF_K)
        return value


class HitModel(BaseModel):
    """One hit (see ``sbert_retrieval.retrieval.Hit``)."""

    doc_id: str
    score: float
    text: str
    start: int
    end: int
    chunk_index: int
    metadata: dict[str, Any]
    point_id: str
    first_stage_score: float | None
    rerank_score: float | None
    dense_score: float | None
    dense_rank: int | None
    lexical_score: float | None
    lexical_rank: int | None


class SearchResponse(BaseModel):
    """Hits, best first."""

    hits: list[HitModel]


class DeleteResponse(BaseModel):
    """What a delete removed."""

    doc_id: str
    deleted: int
    count: int


class HealthResponse(BaseModel):
    """Liveness and what is served."""

    status: str
    version: str
    model: str
    dimension: int
    backend: str
    count: int
    rerank: bool
    modes: list[str]
    read_only: bool
    auth: bool


class ErrorResponse(BaseModel):
    """Every error body."""

    error: str
    detail: str
    errors: list[dict[str, Any]] | None = None


# -- query batching ------------------------------------------------------------------------------


class Coalescer(Generic[J, R]):
    """Runs concurrent submissions in batches on one thread of its own.

    Items submitted while a batch is being processed form the next batch (up to
    ``max_batch``), so a lone item is processed at once and a burst shares one call. A batch is
    split into groups of equal ``key`` (arrival order kept within each) and ``process`` is
    called once per group; an error fails that group's items only.

    Args:
        process: Answers one group: a list of items in, one result per item out, in order.
        max_batch: Most items per batch (>= 1).
        key: Items with different keys never share a call (default: all may).
        name: The thread's name.

    Thread safety: :meth:`submit` and :meth:`result` may be called from any thread or event
    loop; :meth:`close` once, at shutdown.
    """

    def __init__(
        self,
        process: Callable[[list[J]], Sequence[R]],
        max_batch: int,
        *,
        key: Callable[[J], Hashable] | None = None,
        name: str = "sbert-retrieval-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._process = process
        self._key = key
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[J, Future[R]] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: J) -> Future[R]:
        """Queue one item; the future resolves to its result.

        Raises:
            RuntimeError: The batcher is closed.

        Thread safety: safe.
        """
        if self._closed:
            raise RuntimeError(f"{self._thread.name} is shut down")
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    async def result(self, item: J) -> R:
        """Await the result of one item. Thread safety: safe from any event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            groups: dict[Hashable, list[tuple[J, Future[R]]]] = {}
            for item, future in batch:
                if future.set_running_or_notify_cancel():
                    key = None if self._key is None else self._key(item)
                    groups.setdefault(key, []).append((item, future))
            for group in groups.values():
                self._answer(group)
            if stop:
                return

    def _answer(self, group: list[tuple[J, Future[R]]]) -> None:
        try:
            results = self._process([item for item, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} items")
        except BaseException as exc:
            for _, future in group:
                future.set_exception(exc)
        else:
            for result, (_, future) in zip(results, group, strict=True):
                future.set_result(result)

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued items, then stop the thread (waits up to ``timeout`` seconds).

        Thread safety: call once.
        """
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)


class QueryBatcher(Coalescer[str, np.ndarray]):
    """Coalesces concurrent query encodings into batched forward passes on one thread.

    Args:
        encode: Encodes a list of texts into ``(n, dimension)`` rows.
        max_batch: Most queries per forward pass (>= 1).

    Thread safety: as :class:`Coalescer`.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_batch: int) -> None:
        super().__init__(
            lambda texts: list(encode(texts)), max_batch, name="sbert-retrieval-query-encoder"
        )

    async def encode(self, text: str) -> np.ndarray:
        """Await the ``(dimension,)`` vector of one query. Thread safety: safe."""
        return await self.result(text)


@dataclass(frozen=True)
class _SearchJob:
    """One search request, its query already encoded (``None`` in lexical mode).

    ``group``: requests with equal groups share one store search (same retriever settings, k,
    filter and doc_level).
    """

    retriever: Retriever
    query: str
    vector: np.ndarray | None
    k: int
    filter: Filter | None
    doc_level: bool
    group: Hashable


def _search_group(jobs: list[_SearchJob]) -> list[list[Hit]]:
    """Answers a group of equal-settings searches with one store search."""
    first = jobs[0]
    # One mode per group: every job has a vector, or (lexical) none has.
    rows = [job.vector for job in jobs if job.vector is not None]
    vectors = np.stack(rows) if rows else None
    return first.retriever.search_by_vectors(
        [job.query for job in jobs],
        vectors,
        first.k,
        filter=first.filter,
        doc_level=first.doc_level,
    )


# -- the service ---------------------------------------------------------------------------------


class _ApiError(HTTPException):
    """An HTTP error with a machine-readable code; rendered as ``ErrorResponse``."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.code = code


class _Service:
    """What the endpoints share: one encoder, one store, a bounded pool and a write lock."""

    def __init__(
        self,
        config: ServerConfig,
        encoder: BiEncoder | None,
        reranker: Reranker | None,
    ) -> None:
        self.config = config
        existing = stored_spec(config.store)
        if existing is None and config.read_only:
            raise StoreError(
                f"{_where(config.store)} holds no index; ingest into it first, or start the"
                " service without read_only"
            )
        model = config.model or (existing.model if existing is not None else DEFAULT_MODEL)
        self.encoder = encoder or BiEncoder(
            model,
            device=config.device,
            dtype=config.dtype,
            batch_size=config.batch_size,
            backend=config.inference_backend,
        )
        if existing is not None:
            query_prefix, passage_prefix = existing.query_prefix, existing.passage_prefix
            asked = (config.query_prefix, config.passage_prefix)
            if asked != (None, None) and (asked[0] or "", asked[1] or "") != (
                query_prefix,
                passage_prefix,
            ):
                raise ValueError(
                    f"the index uses query prefix {query_prefix!r} and passage prefix"
                    f" {passage_prefix!r}; prefixes cannot change once an index is built"
                )
        else:
            query_prefix, passage_prefix = default_prefixes(
                self.encoder.prompts, config.query_prefix, config.passage_prefix
            )
        spec = self.encoder.spec(query_prefix=query_prefix, passage_prefix=passage_prefix)
        local_read_only = config.read_only and config.store.backend != "qdrant"
        self.store: VectorStore = open_store(config.store, spec, read_only=local_read_only)
        try:
            self.pipeline = (
                None
                if config.read_only
                else IngestionPipeline(self.encoder, self.store, config.ingest)
            )
            if reranker is None and config.rerank_model:
                from sbert_retrieval.reranking import CrossEncoderReranker, reranker_backend

                reranker = CrossEncoderReranker(
                    config.rerank_model,
                    device=config.device,
                    dtype=config.dtype,
                    rerank_weight=config.rerank_weight,
                    backend=reranker_backend(config.inference_backend),
                )
        except BaseException:
            self.store.close()
            raise
        self.reranker = reranker
        self.api_key = config.resolved_api_key()
        self.pool = ThreadPoolExecutor(
            max_workers=config.threads, thread_name_prefix="sbert-retrieval-server"
        )
        prefix = self.store.spec.query_prefix
        self.batcher = QueryBatcher(
            lambda texts: self.encoder.encode(texts, prefix=prefix), config.batch_size
        )
        # Searches without reranking, coalesced like the encodings: concurrent requests with
        # the same settings share one store search (one graph query call, one SQLite read),
        # on a thread of its own so that it overlaps the next forward pass.
        self.searcher: Coalescer[_SearchJob, list[Hit]] = Coalescer(
            _search_group,
            max(config.batch_size, 64),
            key=lambda job: job.group,
            name="sbert-retrieval-searcher",
        )
        self.write_lock = asyncio.Lock()

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self.batcher.close()
        self.searcher.close()
        self.pool.shutdown(wait=True)
        self.store.close()

    # -- operations (blocking; run on the pool) --------------------------------------------
    def ingest(self, documents: list[Document]) -> dict[str, Any]:
        assert self.pipeline is not None
        report = self.pipeline.ingest_records(documents).to_dict()
        report["count"] = self.store.count()
        return report

    def modes(self) -> list[str]:
        """The retrieval modes this store answers: ``dense``, plus ``lexical`` and ``hybrid``
        where it keeps a lexical (BM25) index."""
        lexical = _overrides(self.store, "lexical_search")
        hybrid = lexical or _overrides(self.store, "hybrid_search")
        return [m for m in MODES if m == "dense" or (lexical if m == "lexical" else hybrid)]

    def retriever(self, request: SearchRequest) -> Retriever:
        """The :class:`Retriever` of one request (cheap: it holds settings, not state).

        Raises:
            _ApiError: 400 for a mode the store cannot answer, naming the ones it can.
        """
        modes = self.modes()
        if request.mode not in modes:
            raise _ApiError(
                400,
                "unsupported_mode",
                f"mode {request.mode!r} needs a store with a lexical (BM25) index, and this"
                f" {self.config.store.backend} store keeps none; valid here: {', '.join(modes)}",
            )
        return Retriever(
            self.encoder,
            self.store,
            reranker=self.reranker if request.rerank else None,
            rerank_depth=self.config.rerank_depth,
            mode=request.mode,
            fusion=request.fusion,
            alpha=request.alpha,
            rrf_k=request.rrf_k,
            candidates=request.candidates,
        )

    def delete(self, doc_id: str) -> tuple[int, int]:
        deleted = self.store.delete_documents([doc_id])
        if deleted:
            self.store.flush()
        return deleted, self.store.count()


def _overrides(store: VectorStore, method: str) -> bool:
    """Whether ``store``'s class implements ``method`` itself (the base one refuses)."""
    base = getattr(VectorStore, method, None)
    return base is not None and getattr(type(store), method, None) is not base


def _where(config: StoreConfig) -> str:
    if config.backend == "qdrant":
        return f"Qdrant collection {config.collection!r}"
    return f"index {config.index}"


def _error_body(code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> bytes:
    return (
        ErrorResponse(error=code, detail=detail, errors=errors)
        .model_dump_json(exclude_none=True)
        .encode("utf-8")
    )


def _authorized(headers: Headers, key: str) -> bool:
    """Whether ``X-API-Key`` or ``Authorization: Bearer`` carries ``key`` (constant-time)."""
    candidates: list[str] = []
    if "x-api-key" in headers:
        candidates.append(headers["x-api-key"])
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        candidates.append(credentials.strip())
    expected = key.encode("utf-8")
    return any(hmac.compare_digest(c.encode("utf-8"), expected) for c in candidates)


_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _BodyTooLarge(_ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"request body exceeds the limit of {limit} bytes; send fewer or smaller documents"
            " per request",
        )


class _GuardMiddleware:
    """API-key check and body size limit, both before the body is read or parsed."""

    def __init__(self, app: _ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if (
            self.api_key is not None
            and scope["path"] not in OPEN_PATHS
            and not _authorized(headers, self.api_key)
        ):
            given = "x-api-key" in headers or "authorization" in headers
            detail = (
                "the API key is wrong" if given else "an API key is required"
            ) + ": send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"
            await self._reply(send, 401, "unauthorized", detail, {"www-authenticate": "Bearer"})
            return
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._reply(send, 400, "bad_request", "Content-Length is not an integer")
                return
            if size > self.max_body_bytes:
                error = _BodyTooLarge(self.max_body_bytes)
                await self._reply(send, 413, error.code, error.detail, {"connection": "close"})
                return
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> _Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, so FastAPI renders it (413) instead of a parse error.
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    async def _reply(
        send: _Send, status: int, code: str, detail: str, extra: dict[str, str] | None = None
    ) -> None:
        body = _error_body(code, detail)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_body",
    500: "internal_error",
    503: "store_unavailable",
}


def _json_error(
    status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=code, detail=detail, errors=errors).model_dump(exclude_none=True),
        status_code=status,
    )


def _location(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "error")
        response = _json_error(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = list(exc.errors())
        for problem in problems:
            if problem.get("type") == "json_invalid":
                reason = (problem.get("ctx") or {}).get("error", "malformed JSON")
                position = problem.get("loc", ("body", "?"))[-1]
                return _json_error(
                    400,
                    "invalid_json",
                    f"request body is not valid JSON: {reason} (at character {position})",
                )
        media_type = request.headers.get("content-type", "")
        if "json" not in media_type.lower() and any(
            tuple(p.get("loc", ())) == ("body",) for p in problems
        ):
            return _json_error(
                415,
                "unsupported_media_type",
                f"send the body as JSON with 'Content-Type: application/json'"
                f" (got {media_type or 'no Content-Type'!r})",
            )
        errors = [
            {"loc": _location(p.get("loc", ())), "msg": str(p.get("msg", "invalid"))}
            for p in problems
        ]
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        return _json_error(422, "invalid_body", summary or "invalid request body", errors)

    @app.exception_handler(InvalidFilterError)
    async def filter_error(request: Request, exc: InvalidFilterError) -> JSONResponse:
        return _json_error(400, "invalid_filter", f"invalid filter: {exc}")

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        logger.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return _json_error(503, "store_unavailable", str(exc))

    @app.exception_handler(SbertRetrievalError)
    async def library_error(request: Request, exc: SbertRetrievalError) -> JSONResponse:
        return _json_error(400, "bad_request", str(exc))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return _json_error(400, "bad_request", str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json_error(500, "internal_error", "internal server error; see the service log")


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": code.replace("_", " ")}
    for status, code in _STATUS_CODES.items()
    if status in (400, 401, 413, 422, 503)
}


_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API key.")
_BEARER = HTTPBearer(auto_error=False, description="The service's API key as a bearer token.")


async def _declare_api_key(
    key: Annotated[str | None, Security(_KEY_HEADER)],
    token: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> None:
    """Declares the key in the OpenAPI schema (so ``/docs`` offers "Authorize").

    The check itself is :func:`_authorized`, run by :class:`_GuardMiddleware` on every
    request before its body is read; a request without the key never reaches this.
    """


def create_app(
    config: ServerConfig,
    *,
    encoder: BiEncoder | None = None,
    reranker: Reranker | None = None,
) -> FastAPI:
    """Build the FastAPI app serving ``config.store``; the model and store open right away.

    Args:
        config: See :class:`ServerConfig`.
        encoder: An encoder to use instead of loading ``config.model`` (must match the index).
        reranker: A reranker to use instead of loading ``config.rerank_model``.

    Returns:
        An ASGI app; its shutdown (lifespan) flushes and closes the store.

    Raises:
        ModelMismatchError: The model is not the one the index was built with.
        StoreError: The index cannot be opened (locked by another writer, corrupted, ...).
        ValueError: Conflicting prefixes, or a bad setting.

    Thread safety: call from one thread; the app handles concurrent requests.
    """
    service = _Service(config, encoder, reranker)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.close)

    app = FastAPI(
        title="sbert-retrieval",
        version=__version__,
        description="Dense retrieval over one index: ingest, search, delete.",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    app.state.service = service
    _install_error_handlers(app)
    app.add_middleware(
        _GuardMiddleware, api_key=service.api_key, max_body_bytes=config.max_body_bytes
    )
    # The middleware enforces the key (the one check); this dependency only declares it.
    protected: list[Any] = [Depends(_declare_api_key)] if service.api_key is not None else []

    def writable() -> None:
        if service.pipeline is None:
            raise _ApiError(
                403, "forbidden", "the service is read-only (started with read_only/--read-only)"
            )

    @app.post(
        "/ingest",
        response_model=IngestResponse,
        dependencies=protected,
        summary="Ingest documents (idempotent)",
    )
    async def ingest(request: IngestRequest) -> dict[str, Any]:
        writable()
        documents = [Document(str(d.id), d.text, d.metadata) for d in request.documents]
        async with service.write_lock:
            return await service.run(service.ingest, documents)

    @app.post(
        "/search",
        response_model=SearchResponse,
        dependencies=protected,
        summary="Search the index",
    )
    async def search(request: SearchRequest) -> JSONResponse:
        if request.k > config.max_k:
            raise _ApiError(400, "bad_request", f"k must be <= {config.max_k}, got {request.k}")
        if request.rerank and service.reranker is None:
            raise _ApiError(
                400,
                "bad_request",
                "reranking is not configured: start the service with a rerank model"
                " (--rerank MODEL)",
            )
        parsed = parse_filter(request.filter)
        retriever = service.retriever(request)
        # Encoded by the micro-batching encoder thread; the lexical branch needs no vector.
        vector = None
        if request.mode != "lexical":
            vector = await service.batcher.encode(request.query)
        if request.rerank:
            # Reranking takes long: on the pool, so that it never holds up other searches.
            [hits] = await service.run(
                retriever.search_by_vectors,
                [request.query],
                None if vector is None else vector.reshape(1, -1),
                request.k,
                filter=parsed,
                doc_level=request.doc_level,
            )
        else:
            group = (
                request.mode,
                request.fusion,
                request.alpha,
                request.rrf_k,
                request.candidates,
                request.k,
                request.doc_level,
                # The JSON text, not the parsed filter: True == 1 in Python, not in a filter.
                json.dumps(request.filter, sort_keys=True),
            )
            job = _SearchJob(
                retriever, request.query, vector, request.k, parsed, request.doc_level, group
            )
            hits = await service.searcher.result(job)
        # Returned as a response: no second validation against the response model, which
        # only documents the shape (Hit.to_dict, the one hit serializer).
        return JSONResponse({"hits": [h.to_dict() for h in hits]})

    @app.delete(
        "/documents/{doc_id:path}",
        response_model=DeleteResponse,
        dependencies=protected,
        responses={404: {"model": ErrorResponse, "description": "unknown document"}},
        summary="Delete a document (all its chunks)",
    )
    async def delete_document(doc_id: str) -> dict[str, Any]:
        writable()
        async with service.write_lock:
            deleted, count = await service.run(service.delete, doc_id)
        if not deleted:
            raise _ApiError(404, "not_found", f"document {doc_id!r} is not in the index")
        return {"doc_id": doc_id, "deleted": deleted, "count": count}

    @app.get("/health", response_model=HealthResponse, summary="Liveness and index facts")
    async def health() -> dict[str, Any]:
        count = await service.run(service.store.count)
        spec = service.store.spec
        return {
            "status": "ok",
            "version": __version__,
            "model": spec.model,
            "dimension": spec.dimension,
            "backend": config.store.backend,
            "count": count,
            "rerank": service.reranker is not None,
            "modes": service.modes(),
            "read_only": service.pipeline is None,
            "auth": service.api_key is not None,
        }

    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    config: ServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    access_log: bool = True,
    torch_threads: int | None = None,
) -> None:
    """Run the service with uvicorn until interrupted (SIGINT/SIGTERM flush and close it).

    Args:
        config: See :class:`ServerConfig`.
        host: Interface to bind (default loopback only).
        port: TCP port (default 8000; 0 picks a free one).
        log_level: uvicorn's ``critical``, ``error``, ``warning``, ``info``, ``debug``.
        access_log: Log one line per request.
        torch_threads: CPU threads per forward pass, process-wide (default: torch's choice,
            one per core). 1 is often faster on small or shared machines, where intra-op
            threads contend for the cores.

    Raises:
        ValueError: ``torch_threads < 1``.

    Thread safety: blocks the calling thread; call once per process.
    """
    import uvicorn

    if torch_threads is not None:
        if torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
        import torch

        torch.set_num_threads(torch_threads)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    started = time.perf_counter()
    app = create_app(config)
    service: _Service = app.state.service
    logger.info(
        "loaded %s (%d points) in %.1f s; starting on %s:%d (0: a free port)",
        service.store.spec.model,
        service.store.count(),
        time.perf_counter() - started,
        host,
        port,
    )
    if service.api_key is None and not _is_loopback(host):
        logger.warning(
            "serving on %s without an API key: anyone who can reach it may ingest and delete;"
            " set %s",
            host,
            config.api_key_env,
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
