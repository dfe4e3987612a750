"""A :class:`~sbert_retrieval.stores.base.VectorStore` backed by a Qdrant collection.

One store is one Qdrant collection holding a single unnamed dense vector per point, compared
with cosine similarity (default) or the dot product, and a sparse named vector
(:data:`LEXICAL_VECTOR`) of BM25 weights for lexical and hybrid search. It talks to a Qdrant server
(``url="http://localhost:6333"``, gRPC preferred) or runs in qdrant-client's embedded "local
mode" (``location=":memory:"`` or ``path=DIR``), which needs no server and is what the unit tests
use.

Where the embedding spec lives
    The :class:`~sbert_retrieval.models.EmbeddingSpec` is kept in the *collection metadata*
    (``create_collection(metadata=...)``), under the key ``"sbert_retrieval"``::

        {"sbert_retrieval": {"format": 1, "embedding_spec": {...EmbeddingSpec.to_dict()...}}}

    qdrant-client 1.20 sends and reads that metadata over REST and gRPC, and its local mode
    persists it with the collection, so one code path serves every mode. The alternative, a
    reserved point, would have to be excluded from every count, search, scroll and filter and
    would show up in any other tool reading the collection; metadata has none of that. Collection
    metadata needs Qdrant server 1.16 or newer: when an older server drops it silently, the store
    deletes the collection it has just created and raises :class:`StoreError` saying so.
    A collection created by someone else (no spec in its metadata) is adopted only when it is
    empty and its vector configuration fits; otherwise opening it is refused.

Lexical (BM25) and hybrid search
    Every point whose payload has a string ``text`` gets a sparse vector of its BM25 document
    weights (:mod:`sbert_retrieval.lexical`: FTS5-like analysis, Porter stems, CRC-32 term ids,
    ``k1``/``b``/``avgdl`` of :class:`~sbert_retrieval.lexical.BM25Params`). The sparse vector
    is declared with ``Modifier.IDF``, so Qdrant multiplies each matched term by its IDF over
    the collection at query time and a query vector (weight 1 per distinct term) scores each
    point by exactly BM25. The BM25 settings, ``avgdl`` included, live in the collection
    metadata next to the spec (``"lexical"``); ``avgdl`` is estimated from the first batch
    upserted with text unless given, then kept, so no stored weight goes stale.
    :meth:`QdrantStore.hybrid_search` fuses a dense and a sparse ``prefetch`` (the same filter
    in both, each ``candidates`` deep) with Qdrant's Query API (``RrfQuery``), one request per
    query batch. A collection created before this (format 1, no sparse vector) still serves
    dense search; lexical and hybrid search on it raise :class:`StoreError` naming the fix
    (re-ingest into a new collection: Qdrant cannot add a sparse vector to a collection).

Ids and payloads
    Point ids are the pipeline's UUID strings, passed through as Qdrant ids (Qdrant returns
    them in canonical form, lowercase with hyphens: ``str(uuid.UUID(id))``). Payloads are
    stored as given. With cosine distance Qdrant stores vectors L2-normalized, so :meth:`get`
    returns unit vectors.

Retries
    Every request goes through :class:`RetryConfig`-bounded retries (exponential backoff with
    jitter, a ``Retry-After`` from the server honoured) for transient failures: connection
    errors, timeouts, HTTP 408/429/5xx, gRPC ``UNAVAILABLE``/``DEADLINE_EXCEEDED``/
    ``RESOURCE_EXHAUSTED``. Every write is idempotent (deterministic ids), so retrying a request
    whose response was lost, or re-running an ingestion after a :class:`StoreError`, never
    duplicates a point.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import httpx
import numpy as np
import pydantic
import tenacity
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
from qdrant_client.http.exceptions import (
    ApiException,
    ResponseHandlingException,
    UnexpectedResponse,
)
from qdrant_client.local.qdrant_local import QdrantLocal

from sbert_retrieval.errors import (
    InvalidFilterError,
    ModelMismatchError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
)
from sbert_retrieval.fusion import DEFAULT_RRF_K
from sbert_retrieval.lexical import BM25Params, document_vector, mean_length, query_vector
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.base import (
    FusedRecord,
    Record,
    ScoredRecord,
    VectorStore,
    check_hybrid_args,
    check_lexical_args,
    check_spec,
    validate_payload,
    validate_queries,
)
from sbert_retrieval.stores.filters import (
    AnyOf,
    Condition,
    Filter,
    FilterLike,
    Scalar,
    parse_filter,
)

__all__ = [
    "DISTANCES",
    "INDEX_TYPES",
    "LEXICAL_VECTOR",
    "METADATA_KEY",
    "QdrantStore",
    "RetryConfig",
    "is_transient_error",
    "payload_key",
    "retry_after_seconds",
    "to_qdrant_filter",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Supported distances; ``"ip"`` is accepted as an alias of ``"dot"`` (the local stores' name).
DISTANCES: dict[str, models.Distance] = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "ip": models.Distance.DOT,
}
#: Payload index types accepted in ``indexed_fields``.
INDEX_TYPES: dict[str, models.PayloadSchemaType] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
}

METADATA_KEY = "sbert_retrieval"
#: The name of the sparse vector holding each point's BM25 document weights.
LEXICAL_VECTOR = "bm25"
# Format 2: collections created with the BM25 sparse vector (format 1 collections, without it,
# stay readable). An older sbert-retrieval refuses format 2 rather than writing points without
# their sparse vector.
_FORMAT = 2
_DENSE_VECTOR = ""  # the unnamed vector's name in a point's vector mapping
_RETRIEVE_CHUNK = 1_000  # ids per retrieve/delete request
_SCROLL_PAGE = 1_000  # points per scroll page
_DOC_ID_CHUNK = 256  # document ids per scroll filter
_QUERY_CHUNK = 64  # queries per query_batch_points request
_K_CLAMP_ABOVE = 1_000  # a larger k is clamped to the number of points (one extra count request)
# Request-size estimate per point: JSON floats take up to ~22 characters; id, keys, brackets.
_BYTES_PER_FLOAT = 24
_BYTES_PER_POINT = 128
_TRANSIENT_HTTP = frozenset({408, 429})  # and every 5xx
_TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class RetryConfig:
    """How transient failures of Qdrant requests are retried.

    The wait before retry ``n`` (1-based) is ``b/2 + uniform(0, b/2)`` with
    ``b = min(max_backoff, initial_backoff * 2**(n-1))``, or the server's ``Retry-After`` when
    that is longer. Retrying stops after ``max_attempts`` attempts, or as soon as the next wait
    would end more than ``max_total_seconds`` after the first attempt began; so one call takes
    at most ``max_total_seconds`` plus one request timeout.

    Attributes:
        max_attempts: Attempts per request, the first included (≥ 1). Default 6.
        initial_backoff: Seconds; the base of the first wait. Default 0.5.
        max_backoff: Seconds; cap of the exponential base (not of ``Retry-After``). Default 20.
        max_total_seconds: Seconds; retry budget of one request, waits included. Default 120.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 20.0
    max_total_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("initial_backoff and max_backoff must be >= 0")
        if self.max_total_seconds <= 0:
            raise ValueError(f"max_total_seconds must be > 0, got {self.max_total_seconds}")

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """The jittered wait in seconds before retry ``retry_number`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry_number - 1))
        return base / 2 + rng.uniform(0.0, base / 2)


# -- error classification ----------------------------------------------------------------------


def _grpc_code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        return code()
    except Exception:
        return None


def is_transient_error(exc: BaseException) -> bool:
    """Whether a failed Qdrant request is worth retrying (the server may answer next time).

    Transient: connection errors and timeouts (builtin, httpx, or wrapped by qdrant-client in
    ``ResponseHandlingException``), HTTP 408, 429 and 5xx (``UnexpectedResponse``), qdrant-client's
    ``ResourceExhaustedResponse`` (a 429 carrying ``Retry-After``), and gRPC errors with status
    ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` or ``RESOURCE_EXHAUSTED``.
    """
    if isinstance(exc, ResourceExhaustedResponse):
        return True
    if isinstance(exc, UnexpectedResponse):
        code = exc.status_code
        return code is not None and (code in _TRANSIENT_HTTP or 500 <= code <= 599)
    if isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None)
        if source is None or isinstance(source, pydantic.ValidationError):
            return source is None
        return is_transient_error(source)
    if isinstance(exc, grpc.RpcError):
        return _grpc_code(exc) in _TRANSIENT_GRPC
    if isinstance(exc, httpx.TransportError):
        return not isinstance(exc, httpx.UnsupportedProtocol)
    return isinstance(exc, (ConnectionError, TimeoutError))


def _is_request_error(exc: BaseException) -> bool:
    """Errors of a request to Qdrant (as opposed to programming errors), wrapped in StoreError."""
    return isinstance(exc, (ApiException, QdrantException, grpc.RpcError, httpx.HTTPError, OSError))


def _parse_retry_after(value: Any) -> float | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait the server asked for (``Retry-After`` header or gRPC trailer), or ``None``."""
    if isinstance(exc, ResourceExhaustedResponse):
        return float(exc.retry_after_s)
    if isinstance(exc, UnexpectedResponse):
        headers = getattr(exc, "headers", None)
        if headers is None:
            return None
        try:
            return _parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        except AttributeError:
            return None
    if isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None)
        return retry_after_seconds(source) if isinstance(source, BaseException) else None
    if isinstance(exc, grpc.RpcError):
        trailing = getattr(exc, "trailing_metadata", None)
        try:
            items = trailing() if callable(trailing) else ()
        except Exception:
            return None
        for item in items or ():
            key, value = (item.key, item.value) if hasattr(item, "key") else item
            if str(key).lower() == "retry-after":
                return _parse_retry_after(value)
    return None


def _describe(exc: BaseException, limit: int = 300) -> str:
    if isinstance(exc, grpc.RpcError) and _grpc_code(exc) is not None:
        details = getattr(exc, "details", None)
        text = details() if callable(details) else ""
        code = getattr(_grpc_code(exc), "name", _grpc_code(exc))
        return f"gRPC {code}: {' '.join(str(text or '').split())[:limit]}".rstrip(": ")
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- filters -----------------------------------------------------------------------------------


def payload_key(condition: Condition) -> str:
    """The Qdrant JSON path of a condition's field (``metadata.author.name``, ``doc_id``).

    Parts other than ``[A-Za-z0-9_-]+`` are double-quoted, as Qdrant's key syntax requires.

    Raises:
        InvalidFilterError: A part contains a double quote, which Qdrant keys cannot express.
    """
    parts: list[str] = []
    for part in condition.payload_path:
        if _PLAIN_KEY.match(part):
            parts.append(part)
        elif '"' in part:
            raise InvalidFilterError(
                f"filter on {condition.field!r}: Qdrant cannot address keys containing '\"'"
            )
        else:
            parts.append(f'"{part}"')
    return ".".join(parts)


def _match_any(key: str, values: Sequence[Scalar]) -> models.Condition:
    """A condition true when ``key`` equals one of ``values`` (str, int and bool kept apart)."""
    strings = [v for v in values if isinstance(v, str)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    bools = list(dict.fromkeys(v for v in values if isinstance(v, bool)))
    options: list[models.Condition] = []
    if len(strings) == 1:
        options.append(models.FieldCondition(key=key, match=models.MatchValue(value=strings[0])))
    elif strings:
        options.append(models.FieldCondition(key=key, match=models.MatchAny(any=strings)))
    if len(ints) == 1:
        options.append(models.FieldCondition(key=key, match=models.MatchValue(value=ints[0])))
    elif ints:
        options.append(models.FieldCondition(key=key, match=models.MatchAny(any=ints)))
    options.extend(models.FieldCondition(key=key, match=models.MatchValue(value=b)) for b in bools)
    if len(options) == 1:
        return options[0]
    return models.Filter(should=options)


_RANGE_ARGS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def _has_value(key: str) -> models.Condition:
    """True when ``key`` holds a non-null value (``$exists: true``).

    ``match: {"except": []}`` holds for every non-null value (of the list's elements, for a
    list), objects and nested lists included. Qdrant's ``is_empty`` is not used: it calls
    ``[null]`` non-empty, and this filter language says such a field holds no value.
    """
    return models.FieldCondition(key=key, match=models.MatchExcept.model_validate({"except": []}))


def _qdrant_condition(condition: Condition) -> tuple[models.Condition, bool]:
    """``(condition, negate)``: the positive Qdrant condition and whether it goes in must_not."""
    key = payload_key(condition)
    if condition.exists is not None:
        return _has_value(key), not condition.exists
    if condition.equals is not None:
        return _match_any(key, condition.equals), condition.negated
    bounds = {_RANGE_ARGS[op]: bound for op, bound in condition.range}
    return models.FieldCondition(key=key, range=models.Range(**bounds)), condition.negated


def _qdrant_filter(parsed: Filter) -> models.Filter:
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    for clause in parsed.conditions:
        if isinstance(clause, AnyOf):
            must.append(models.Filter(should=[_qdrant_option(f) for f in clause.filters]))
            continue
        translated, negate = _qdrant_condition(clause)
        (must_not if negate else must).append(translated)
    return models.Filter(must=must, must_not=must_not or None)


def _qdrant_option(parsed: Filter) -> models.Condition:
    """One alternative of a ``should``: a lone positive condition as itself, else a filter."""
    translated = _qdrant_filter(parsed)
    must = translated.must
    if translated.must_not is None and isinstance(must, list) and len(must) == 1:
        return must[0]
    return translated


def to_qdrant_filter(spec: FilterLike | None) -> models.Filter | None:
    """Translate a filter of :mod:`sbert_retrieval.stores.filters` into a Qdrant filter.

    Equality is ``match`` (``value``/``any``; str, int and bool kept apart), a range is
    ``range``, ``$ne``/``$nin`` the same ``match`` under ``must_not``, ``$exists`` a
    ``match: {"except": []}`` (under ``must_not`` for ``false``), ``$or`` a nested filter of
    ``should`` alternatives, ``$and`` the enclosing ``must``. Qdrant's local mode gives exactly
    :meth:`~sbert_retrieval.stores.filters.Filter.matches`' results (a property test checks it).

    Raises:
        InvalidFilterError: A malformed filter (see :func:`parse_filter`).
    """
    parsed: Filter | None = parse_filter(spec)
    if parsed is None:
        return None
    return _qdrant_filter(parsed)


# -- the store ---------------------------------------------------------------------------------


def _canonical_id(point_id: Any) -> str | None:
    """``str(uuid.UUID(point_id))``, or ``None`` when it is not a UUID string."""
    if not isinstance(point_id, str):
        return None
    try:
        return str(uuid.UUID(point_id))
    except ValueError:
        return None


def _sparse_query(text: str) -> models.SparseVector | None:
    """A query's BM25 sparse vector (weight 1 per distinct term); ``None`` without terms."""
    indices, values = query_vector(text)
    return models.SparseVector(indices=indices, values=values) if indices else None


def _has_text(payload: Mapping[str, Any]) -> bool:
    return isinstance(payload.get("text"), str)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class QdrantStore(VectorStore):
    """A vector store in one Qdrant collection (server, or qdrant-client's local mode).

    Opening: when the collection exists, its stored :class:`EmbeddingSpec` is read from the
    collection metadata and checked against ``spec`` (:class:`ModelMismatchError` on a
    difference; ``spec=None`` adopts the stored one). When it does not exist, it is created
    from ``spec`` (``size=spec.dimension``); without a spec that is a :class:`ValueError`.

    Give exactly one of ``client``, ``url``, ``path`` or ``location``.

    Args:
        collection: Collection name.
        spec: The encoder's embedding identity; required to create the collection.
        client: An existing client; the store never closes it.
        url: Qdrant server URL, e.g. ``"http://localhost:6333"``.
        path: Directory for local mode on disk (one process at a time).
        location: ``":memory:"`` for in-memory local mode, or a server URL.
        api_key: Server API key; defaults to the ``QDRANT_API_KEY`` environment variable.
            Ignored in local mode.
        prefer_grpc: Talk gRPC rather than REST to a server (the URL's host, ``grpc_port``).
            Default True.
        grpc_port: The server's gRPC port. Default 6334.
        timeout: Seconds per request to a server (rounded up to whole seconds). Default 30.
        distance: ``"cosine"`` or ``"dot"`` (alias ``"ip"``). ``None`` (default) means cosine
            for a new collection and whatever an existing one uses; a value that contradicts an
            existing collection raises :class:`ModelMismatchError`.
        indexed_fields: Filter fields to index on a server (``doc_id`` always is): a sequence
            of field names (keyword indexes) or a mapping of field name to one of
            :data:`INDEX_TYPES`; names use the filter syntax (``"lang"``, ``"author.name"``).
        batch_points: Most points per upsert request. Default 256.
        batch_bytes: Most estimated bytes per upsert request (a single larger point is sent
            alone). Default 5,000,000.
        retry: Retry policy for transient failures; default :class:`RetryConfig()`.
        sleep: Called with the seconds to wait between retries; default :func:`time.sleep`
            (tests pass a recorder).
        bm25: BM25 settings of a *new* collection (default :class:`BM25Params()`: k1 1.2,
            b 0.75, ``avgdl`` from the first batch with text). An existing collection keeps the
            settings stored with it; this argument is then ignored.

    Raises:
        ValueError: Bad arguments, or no spec for a collection that does not exist.
        ModelMismatchError: The collection was built with another model or distance.
        StoreLockedError: Local mode: another client holds ``path``.
        StoreError: The server failed (after retries), or the collection is not usable.

    Thread safety: every public method may be called from several threads at once (requests to a
    server run in parallel; local mode serializes them with a lock); :meth:`close` must not race
    with other calls.
    """

    def __init__(
        self,
        collection: str,
        spec: EmbeddingSpec | None = None,
        *,
        client: QdrantClient | None = None,
        url: str | None = None,
        path: str | os.PathLike[str] | None = None,
        location: str | None = None,
        api_key: str | None = None,
        prefer_grpc: bool = True,
        grpc_port: int = 6334,
        timeout: float = 30.0,
        distance: str | None = None,
        indexed_fields: Sequence[str] | Mapping[str, str] = (),
        batch_points: int = 256,
        batch_bytes: int = 5_000_000,
        retry: RetryConfig | None = None,
        sleep: Callable[[float], None] | None = None,
        bm25: BM25Params | None = None,
    ) -> None:
        if not isinstance(collection, str) or not collection:
            raise ValueError(f"collection must be a non-empty string, got {collection!r}")
        given = [
            n
            for n, v in (("client", client), ("url", url), ("path", path), ("location", location))
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of client, url, path or location (':memory:'), got "
                + (", ".join(given) or "none")
            )
        if distance is not None and distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; valid: cosine, dot")
        if batch_points < 1 or batch_bytes < 1:
            raise ValueError("batch_points and batch_bytes must be >= 1")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.collection = collection
        self.batch_points = int(batch_points)
        self.batch_bytes = int(batch_bytes)
        self.retry = retry if retry is not None else RetryConfig()
        self._sleep: Callable[[float], None] = sleep if sleep is not None else time.sleep
        self._rng = random.Random()
        self._indexed = self._index_plan(indexed_fields)
        self._new_bm25 = bm25 if bm25 is not None else BM25Params()
        # The collection's BM25 settings, or None with the reason lexical search is unavailable.
        self._bm25: BM25Params | None = None
        self._no_lexical = ""
        self._closed = False
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else self._connect(
                url,
                path=path,
                location=location,
                api_key=api_key,
                prefer_grpc=prefer_grpc,
                grpc_port=grpc_port,
                timeout=timeout,
            )
        )
        # Local mode is plain Python over shared dicts (and SQLite on disk): serialize its calls.
        self._local = isinstance(getattr(self._client, "_client", None), QdrantLocal)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._local else contextlib.nullcontext()
        )
        server = url if url is not None else location if location != ":memory:" else None
        self.where = f"Qdrant collection {collection!r}" + (f" at {server}" if server else "")
        try:
            self.spec, self.distance = self._open(spec, distance)
            self._ensure_indexes()
            self._bm25, self._no_lexical = self._lexical_settings(self._info())
        except BaseException:
            self._close_client()
            raise

    # -- opening -------------------------------------------------------------------------------
    @staticmethod
    def _connect(
        url: str | None,
        *,
        path: str | os.PathLike[str] | None,
        location: str | None,
        api_key: str | None,
        prefer_grpc: bool,
        grpc_port: int,
        timeout: float,
    ) -> QdrantClient:
        if path is not None:
            try:
                return QdrantClient(path=os.fspath(path), force_disable_check_same_thread=True)
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise StoreLockedError(
                        f"{os.fspath(path)} is open in another Qdrant local client (local mode"
                        " allows one at a time); close it, or use a Qdrant server"
                    ) from exc
                raise
        if location == ":memory:":
            return QdrantClient(location=":memory:", force_disable_check_same_thread=True)
        key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY") or None
        server = url if url is not None else location
        return QdrantClient(
            url=server,
            api_key=key,
            prefer_grpc=prefer_grpc,
            grpc_port=grpc_port,
            timeout=max(1, math.ceil(timeout)),
        )

    @staticmethod
    def _index_plan(
        indexed_fields: Sequence[str] | Mapping[str, str],
    ) -> dict[str, models.PayloadSchemaType]:
        if isinstance(indexed_fields, str):
            raise ValueError(
                "indexed_fields must be a sequence or mapping of field names, not a str"
            )
        fields: Mapping[str, str] = (
            indexed_fields
            if isinstance(indexed_fields, Mapping)
            else dict.fromkeys(indexed_fields, "keyword")
        )
        plan: dict[str, models.PayloadSchemaType] = {"doc_id": models.PayloadSchemaType.KEYWORD}
        for field, kind in fields.items():
            if not isinstance(field, str) or not field or field.startswith("$"):
                raise ValueError(f"indexed field names must be non-empty strings, got {field!r}")
            if kind not in INDEX_TYPES:
                raise ValueError(
                    f"indexed field {field!r}: unknown index type {kind!r};"
                    f" valid: {', '.join(INDEX_TYPES)}"
                )
            plan[payload_key(Condition(field))] = INDEX_TYPES[kind]
        return plan

    def _metadata(self, spec: EmbeddingSpec, bm25: BM25Params | None = None) -> dict[str, Any]:
        ours: dict[str, Any] = {"format": _FORMAT if bm25 else 1, "embedding_spec": spec.to_dict()}
        if bm25 is not None:
            ours["lexical"] = {"vector": LEXICAL_VECTOR, **bm25.to_dict()}
        return {METADATA_KEY: ours}

    def _lexical_settings(self, info: models.CollectionInfo) -> tuple[BM25Params | None, str]:
        """The collection's BM25 settings and ``""``, or ``None`` and why there are none."""
        sparse = (info.config.params.sparse_vectors or {}).get(LEXICAL_VECTOR)
        ours = (info.config.metadata or {}).get(METADATA_KEY)
        stored = ours.get("lexical") if isinstance(ours, Mapping) else None
        fix = (
            "; lexical and hybrid search need it. Re-ingest the documents into a new collection"
            " (e.g. --collection NAME-v2), which is created with it: Qdrant cannot add a sparse"
            " vector to an existing collection. Dense search keeps working on this one."
        )
        if sparse is None or not isinstance(stored, Mapping):
            return None, (
                f"{self.where} has no BM25 sparse vector {LEXICAL_VECTOR!r} (it was created"
                f" before sbert-retrieval kept one, or by another tool){fix}"
            )
        if sparse.modifier != models.Modifier.IDF:
            return None, (
                f"{self.where}: its sparse vector {LEXICAL_VECTOR!r} lacks Modifier.IDF{fix}"
            )
        try:
            return BM25Params.from_dict(stored), ""
        except (KeyError, TypeError, ValueError) as exc:
            return None, f"{self.where} holds unusable BM25 settings ({exc}){fix}"

    def _info(self) -> models.CollectionInfo:
        return self._call(
            f"reading {self.where}",
            functools.partial(self._client.get_collection, self.collection),
        )

    def _open(self, spec: EmbeddingSpec | None, distance: str | None) -> tuple[EmbeddingSpec, str]:
        exists = self._call(
            f"checking {self.where}",
            functools.partial(self._client.collection_exists, self.collection),
        )
        if not exists:
            if spec is None:
                raise ValueError(
                    f"{self.where} does not exist and no embedding spec was given to create it;"
                    " pass the encoder's spec (or ingest into it first)"
                )
            created = self._create(spec, distance or "cosine")
            if created:
                return spec, "dot" if distance in ("dot", "ip") else "cosine"
            # Someone else created it meanwhile: open it like any existing collection.
        info = self._info()
        actual = self._check_vectors(info)
        if distance is not None and DISTANCES[distance] != DISTANCES[actual]:
            raise ModelMismatchError(
                f"{self.where} compares vectors by {actual}, not {distance}; open it without"
                " distance= (or with the same one), or ingest into a new collection"
            )
        stored = self._stored_spec(info)
        if stored is None:
            stored = self._adopt(info, spec)
        check_spec(stored, spec, self.where)
        vectors = info.config.params.vectors
        assert isinstance(vectors, models.VectorParams)
        if vectors.size != stored.dimension:
            raise StoreCorruptedError(
                f"{self.where} holds {vectors.size}-dimensional vectors but its stored spec says"
                f" {stored.dimension}; delete the collection and re-ingest"
            )
        return stored, actual

    def _create(self, spec: EmbeddingSpec, distance: str) -> bool:
        """Create the collection; False when another client created it first."""
        try:
            self._call(
                f"creating {self.where}",
                functools.partial(
                    self._client.create_collection,
                    self.collection,
                    vectors_config=models.VectorParams(
                        size=spec.dimension, distance=DISTANCES[distance]
                    ),
                    sparse_vectors_config={
                        LEXICAL_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                    metadata=self._metadata(spec, self._new_bm25),
                ),
            )
        except (StoreError, ValueError):
            # A retried create whose first attempt succeeded, or a concurrent creator.
            if self._call(
                f"checking {self.where}",
                functools.partial(self._client.collection_exists, self.collection),
            ):
                return False
            raise
        if self._stored_spec(self._info()) is None:
            with contextlib.suppress(StoreError):
                self._call(
                    f"deleting {self.where}",
                    functools.partial(self._client.delete_collection, self.collection),
                )
            raise StoreError(
                f"the Qdrant server did not keep the metadata of {self.where}, where the"
                " embedding spec is stored; collection metadata needs Qdrant 1.16 or newer"
            )
        return True

    def _check_vectors(self, info: models.CollectionInfo) -> str:
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise StoreError(
                f"{self.where} uses named vectors ({', '.join(vectors or {})}); this store needs"
                " a collection with one unnamed dense vector"
            )
        for name, value in DISTANCES.items():
            if value == vectors.distance:
                return name
        raise StoreError(
            f"{self.where} uses {vectors.distance} distance; this store supports Cosine and Dot"
        )

    def _stored_spec(self, info: models.CollectionInfo) -> EmbeddingSpec | None:
        ours = (info.config.metadata or {}).get(METADATA_KEY)
        if not isinstance(ours, Mapping) or "embedding_spec" not in ours:
            return None
        try:
            newer = int(ours.get("format", 0)) > _FORMAT
            spec = None if newer else EmbeddingSpec.from_dict(dict(ours["embedding_spec"]))
        except (TypeError, ValueError) as exc:
            raise StoreCorruptedError(
                f"{self.where} holds an unreadable embedding spec in its metadata ({exc})"
            ) from exc
        if spec is None:
            raise StoreError(f"{self.where} was written by a newer sbert-retrieval; upgrade it")
        return spec

    def _adopt(self, info: models.CollectionInfo, spec: EmbeddingSpec | None) -> EmbeddingSpec:
        """Write ``spec`` into a foreign collection's metadata when it is empty and fits."""
        vectors = info.config.params.vectors
        assert isinstance(vectors, models.VectorParams)
        points = info.points_count
        if points is None:
            points = self._count()
        if spec is None or points > 0 or vectors.size != spec.dimension:
            raise StoreError(
                f"{self.where} exists but holds no sbert-retrieval embedding spec in its metadata"
                f" ({points} points of dimension {vectors.size}); it was not created by this"
                " package. Use another collection name, or delete it."
            )
        self._call(
            f"writing the embedding spec of {self.where}",
            functools.partial(
                self._client.update_collection, self.collection, metadata=self._metadata(spec)
            ),
        )
        return spec

    def _ensure_indexes(self) -> None:
        """Create the missing payload indexes; a failure is logged, not raised.

        Indexes only speed up filtering, and a reader with a read-only API key must still be
        able to open a collection whose indexes it cannot create.
        """
        existing = self._info().payload_schema or {}
        for key, schema in self._indexed.items():
            if key in existing:
                if existing[key].data_type != schema:
                    logger.warning(
                        "%s: payload index on %r is %s, not %s; leaving it as it is",
                        self.where,
                        key,
                        existing[key].data_type,
                        schema,
                    )
                continue
            with warnings.catch_warnings():
                # Local mode warns that payload indexes do nothing there; that is expected.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                try:
                    self._call(
                        f"creating the payload index on {key!r} of {self.where}",
                        functools.partial(
                            self._client.create_payload_index,
                            self.collection,
                            field_name=key,
                            field_schema=schema,
                            wait=True,
                        ),
                    )
                except StoreError as exc:
                    logger.warning("%s; filters on %r will run unindexed", exc, key)

    # -- requests ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store of {self.where} is closed")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        delay = self.retry.backoff(state.attempt_number, self._rng)
        if state.outcome is not None and state.outcome.failed:
            exc = state.outcome.exception()
            hint = retry_after_seconds(exc) if exc is not None else None
            if hint is not None:
                delay = max(delay, hint)
        return delay

    def _before_sleep(self, what: str) -> Callable[[tenacity.RetryCallState], None]:
        def log(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                what,
                state.attempt_number,
                self.retry.max_attempts,
                _describe(exc) if exc is not None else "?",
                state.upcoming_sleep,
            )

        return log

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """Run ``request`` with retries; wrap a final request failure in :class:`StoreError`.

        Args:
            what: Names the request in messages, e.g. ``"upsert batch 3/10 (points 512-767)"``.
            request: One request to Qdrant.
        """
        self._check_open()

        def attempt() -> T:
            with self._lock:
                return request()

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient_error),
            stop=tenacity.stop_after_attempt(self.retry.max_attempts)
            | tenacity.stop_before_delay(self.retry.max_total_seconds),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep(what),
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(attempt)
        except Exception as exc:
            if not _is_request_error(exc):
                raise
            if not is_transient_error(exc):
                raise StoreError(f"{what} failed: {_describe(exc)}") from exc
            attempts = int(retrying.statistics.get("attempt_number", 1))
            elapsed = time.monotonic() - started
            reason = ""
            if attempts < self.retry.max_attempts:
                reason = f"; the retry budget of {self.retry.max_total_seconds:g} s is spent"
                hint = retry_after_seconds(exc)
                if hint is not None:
                    reason += f" (the server asked to wait {hint:g} s more)"
            raise StoreError(
                f"{what} failed after {attempts} attempt{'s' if attempts != 1 else ''} in"
                f" {elapsed:.1f} s{reason}: {_describe(exc)}"
            ) from exc

    # -- VectorStore ---------------------------------------------------------------------------
    def upsert(self, records: Sequence[Record]) -> None:
        """Insert records, replacing any with the same id (see :meth:`VectorStore.upsert`).

        Every record is validated before anything is sent. Points go out in requests of at most
        ``batch_points`` points and about ``batch_bytes`` bytes, each acknowledged by the server
        once applied (``wait=True``), so they are durable on return. A repeated id within
        ``records``: the last one wins. A record whose payload has a string ``text`` also gets
        its BM25 sparse vector (where the collection has one); the first such upsert into a
        collection without a stored ``avgdl`` measures it on its texts and stores it.

        Raises:
            ValueError: A vector of the wrong width or with NaN/infinity, an id that is not a
                UUID string, or a payload without a string ``doc_id`` or not JSON-serializable.
            StoreError: A batch failed after retries; the message names it. Batches before it
                are stored; re-running the same upsert is safe and completes the job.

        Thread safety: safe alongside concurrent reads; run one writer at a time.
        """
        self._check_open()
        latest: dict[str, tuple[list[float], dict[str, Any], int]] = {}
        for record in records:
            point_id = _canonical_id(record.id)
            if point_id is None:
                raise ValueError(
                    f"record id {record.id!r} is not a UUID string (Qdrant needs UUIDs)"
                )
            vector = np.asarray(record.vector, dtype=np.float32)
            if vector.shape != (self.dimension,):
                raise ValueError(
                    f"record {record.id}: vector must have shape ({self.dimension},),"
                    f" got {vector.shape}"
                )
            if not np.isfinite(vector).all():
                raise ValueError(f"record {record.id}: vector contains NaN or infinity")
            # The same checks as every backend (strict UTF-8 JSON, size cap), record named.
            payload, encoded = validate_payload(record.id, record.payload)
            size = _BYTES_PER_POINT + self.dimension * _BYTES_PER_FLOAT + len(encoded)
            latest.pop(point_id, None)  # keep the order of the last occurrence
            latest[point_id] = (vector.tolist(), payload, size)
        if not latest:
            return
        bm25 = self._bm25
        if bm25 is not None and bm25.avgdl is None:
            bm25 = self._settle_avgdl([p["text"] for _, p, _ in latest.values() if _has_text(p)])
        entries: list[tuple[models.PointStruct, int]] = []
        for point_id, (dense, payload, size) in latest.items():
            vectors: Any = dense
            if bm25 is not None and _has_text(payload):
                indices, values = document_vector(payload["text"], bm25)
                sparse = models.SparseVector(indices=indices, values=values)
                vectors = {_DENSE_VECTOR: dense, LEXICAL_VECTOR: sparse}
                size += 2 * _BYTES_PER_FLOAT * len(indices)
            entries.append((models.PointStruct(id=point_id, vector=vectors, payload=payload), size))
        batches = list(self._plan_batches([size for _, size in entries]))
        for number, (start, end) in enumerate(batches, 1):
            points = [point for point, _ in entries[start:end]]
            self._call(
                f"upsert batch {number}/{len(batches)} (points {start}-{end - 1})",
                functools.partial(self._client.upsert, self.collection, points=points, wait=True),
            )

    def _settle_avgdl(self, texts: Sequence[str]) -> BM25Params | None:
        """Fix the collection's ``avgdl`` (the stored one, else the mean over ``texts``).

        Returns the settings to weight with; ``avgdl`` stays unset while no text has a term.
        """
        info = self._info()
        bm25, _ = self._lexical_settings(info)  # another writer may have stored it meanwhile
        if bm25 is None or bm25.avgdl is not None:
            self._bm25 = bm25
            return bm25
        avgdl = mean_length(list(texts))
        if avgdl is None:
            return bm25
        bm25 = replace(bm25, avgdl=avgdl)
        ours = dict((info.config.metadata or {})[METADATA_KEY])
        ours["lexical"] = {"vector": LEXICAL_VECTOR, **bm25.to_dict()}
        self._call(
            f"storing the BM25 average document length of {self.where}",
            functools.partial(
                self._client.update_collection, self.collection, metadata={METADATA_KEY: ours}
            ),
        )
        self._bm25 = bm25
        return bm25

    def _plan_batches(self, sizes: Sequence[int]) -> Iterator[tuple[int, int]]:
        """``(start, end)`` slices of at most ``batch_points`` points and ``batch_bytes`` bytes."""
        start, total = 0, 0
        for i, size in enumerate(sizes):
            full = i - start >= self.batch_points or total + size > self.batch_bytes
            if i > start and full:
                yield start, i
                start, total = i, 0
            total += size
        if start < len(sizes):
            yield start, len(sizes)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete points by id; unknown (or non-UUID) ids are ignored.

        Returns:
            How many of the ids were stored and are now deleted.

        Raises:
            StoreError: A request failed after retries.

        Thread safety: safe alongside concurrent reads; run one writer at a time.
        """
        self._check_open()
        wanted = list(dict.fromkeys(c for c in map(_canonical_id, ids) if c is not None))
        existing = [str(p.id) for p in self._retrieve(wanted, vectors=False, payload=False)]
        chunks = list(_chunks(existing, _RETRIEVE_CHUNK))
        for number, chunk in enumerate(chunks, 1):
            self._call(
                f"delete batch {number}/{len(chunks)} ({len(chunk)} points)",
                functools.partial(
                    self._client.delete,
                    self.collection,
                    points_selector=models.PointIdsList(points=list(chunk)),
                    wait=True,
                ),
            )
        return len(existing)

    def _retrieve(self, ids: Sequence[str], *, vectors: bool, payload: bool) -> list[models.Record]:
        found: list[models.Record] = []
        chunks = list(_chunks(ids, _RETRIEVE_CHUNK))
        for number, chunk in enumerate(chunks, 1):
            found.extend(
                self._call(
                    f"retrieve batch {number}/{len(chunks)} ({len(chunk)} ids)",
                    functools.partial(
                        self._client.retrieve,
                        self.collection,
                        ids=list(chunk),
                        with_payload=payload,
                        with_vectors=vectors,
                    ),
                )
            )
        return found

    def get(self, ids: Iterable[str]) -> list[Record]:
        """The stored records for these ids, in the given order; unknown ids are left out.

        Returned ids are canonical UUID strings; vectors are ``(dimension,)`` float32 (unit
        length under cosine distance, which Qdrant normalizes on insert).

        Raises:
            StoreError: A request failed after retries.

        Thread safety: safe to call concurrently with other reads and one writer.
        """
        self._check_open()
        order = [c for c in map(_canonical_id, ids) if c is not None]
        points = self._retrieve(list(dict.fromkeys(order)), vectors=True, payload=True)
        found: dict[str, Record] = {}
        for point in points:
            dense: Any = point.vector
            if isinstance(dense, Mapping):  # with its BM25 sparse vector
                dense = dense.get(_DENSE_VECTOR)
            if not isinstance(dense, list):
                raise StoreError(f"{self.where}: point {point.id} has no plain dense vector")
            found[str(point.id)] = Record(
                str(point.id), np.asarray(dense, dtype=np.float32), point.payload or {}
            )
        return [found[c] for c in order if c in found]

    def ids_by_document(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """Point ids stored for each document id (documents with none are left out).

        Scrolls the collection with a ``doc_id`` filter (keyword-indexed on a server).

        Raises:
            StoreError: A request failed after retries.

        Thread safety: safe to call concurrently with other reads and one writer.
        """
        self._check_open()
        wanted: list[str] = list(dict.fromkeys(doc_ids))
        result: dict[str, set[str]] = {}
        for chunk in _chunks(wanted, _DOC_ID_CHUNK):
            scroll_filter = models.Filter(must=[_match_any("doc_id", list(chunk))])
            offset: models.ExtendedPointId | None = None
            page = 0
            while True:
                page += 1
                points, offset = self._call(
                    f"scroll of document ids (page {page})",
                    functools.partial(
                        self._client.scroll,
                        self.collection,
                        scroll_filter=scroll_filter,
                        limit=_SCROLL_PAGE,
                        offset=offset,
                        with_payload=["doc_id"],
                        with_vectors=False,
                    ),
                )
                for point in points:
                    doc_id = (point.payload or {}).get("doc_id")
                    if isinstance(doc_id, str):
                        result.setdefault(doc_id, set()).add(str(point.id))
                if offset is None:
                    break
        return result

    def search(
        self, vectors: np.ndarray, k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """Top-``k`` most similar points for each query, best first.

        Scores are cosine similarities (cosine distance) or inner products (dot); higher is
        more similar. The filter runs inside Qdrant's search. A ``k`` above 1,000 is clamped to
        the number of points.

        Args:
            vectors: ``(n, dimension)`` or ``(dimension,)`` queries.
            k: Results per query, ≥ 1; fewer come back when fewer points match.
            filter: See :mod:`sbert_retrieval.stores.filters`.

        Raises:
            ValueError: Wrong query width, non-finite queries, ``k < 1``.
            InvalidFilterError: A malformed filter.
            StoreError: A request failed after retries.

        Thread safety: safe to call concurrently with other reads and one writer.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        queries = validate_queries(vectors, self.dimension)
        qdrant_filter = to_qdrant_filter(filter)
        self._check_open()
        [limit] = self._limits(k)
        results: list[list[ScoredRecord]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = queries[start : start + _QUERY_CHUNK]
            requests = [
                models.QueryRequest(
                    query=query.tolist(),
                    limit=limit,
                    filter=qdrant_filter,
                    with_payload=True,
                    with_vector=False,
                )
                for query in chunk
            ]
            results.extend(
                self._query(f"search of queries {start}-{start + len(chunk) - 1}", requests)
            )
        return results

    def _query(self, what: str, requests: list[models.QueryRequest]) -> list[list[ScoredRecord]]:
        """One ``query_batch_points`` request (none when ``requests`` is empty): each's points."""
        if not requests:
            return []
        responses = self._call(
            what,
            functools.partial(self._client.query_batch_points, self.collection, requests=requests),
        )
        return [
            [
                ScoredRecord(str(point.id), float(point.score), point.payload or {})
                for point in response.points
            ]
            for response in responses
        ]

    def _limits(self, *depths: int) -> list[int]:
        """Request limits for these depths: one above 1,000 is clamped to the number of points."""
        if all(depth <= _K_CLAMP_ABOVE for depth in depths):
            return [int(depth) for depth in depths]
        total = self._count()
        return [int(d) if d <= _K_CLAMP_ABOVE else max(1, min(int(d), total)) for d in depths]

    def _need_lexical(self) -> BM25Params:
        if self._bm25 is None:
            raise StoreError(self._no_lexical)
        return self._bm25

    def lexical_search(
        self, queries: Sequence[str], k: int, *, filter: FilterLike | None = None
    ) -> list[list[ScoredRecord]]:
        """Top-``k`` points by BM25 over the payloads' ``text`` for each query, best first.

        A query's distinct terms (analysed as the documents were, see
        :mod:`sbert_retrieval.lexical`) are a sparse query vector of weight 1 each; Qdrant sums
        ``idf · weight`` over the terms a point holds, so scores are BM25 (``k1``, ``b`` and
        ``avgdl`` stored with the collection; IDF ``ln(1 + (N - n + 0.5) / (n + 0.5))`` over
        the whole collection, as FTS5 also takes it over all rows whatever the filter). Any
        text is accepted and none of it is syntax; a query without terms gets no hits. Only
        points sharing a term with the query are returned. A ``k`` above 1,000 is clamped to
        the number of points.

        Raises:
            ValueError: ``k < 1``, or ``queries`` is one string.
            InvalidFilterError: A malformed filter.
            StoreError: The collection has no BM25 sparse vector (the message names the fix),
                or a request failed after retries.

        Thread safety: safe to call concurrently with other reads and one writer.
        """
        texts = check_lexical_args(queries, k)
        qdrant_filter = to_qdrant_filter(filter)
        self._check_open()
        self._need_lexical()
        [limit] = self._limits(k)
        results: list[list[ScoredRecord]] = []
        for start in range(0, len(texts), _QUERY_CHUNK):
            sparse = [_sparse_query(text) for text in texts[start : start + _QUERY_CHUNK]]
            requests = [
                models.QueryRequest(
                    query=vector,
                    using=LEXICAL_VECTOR,
                    limit=limit,
                    filter=qdrant_filter,
                    with_payload=True,
                    with_vector=False,
                )
                for vector in sparse
                if vector is not None
            ]
            what = f"lexical search of queries {start}-{start + len(sparse) - 1}"
            rows = iter(self._query(what, requests))
            results.extend([] if v is None else next(rows) for v in sparse)
        return results

    def hybrid_search(
        self,
        vectors: np.ndarray,
        queries: Sequence[str],
        k: int,
        *,
        filter: FilterLike | None = None,
        candidates: int | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[list[FusedRecord]]:
        """Dense and BM25 branches fused by reciprocal rank inside Qdrant, best first.

        One Query API request per query: a dense ``prefetch`` and a sparse (BM25, see
        :meth:`lexical_search`) ``prefetch``, each with the same filter and an explicit limit
        of ``candidates``, fused by ``RrfQuery``. Scores are ``Σ 1 / (rrf_k + rank)`` over the
        branches that returned the point, ``rank`` 1-based: the same as
        :func:`sbert_retrieval.fusion.reciprocal_rank_fusion` (Qdrant's own ``k`` counts ranks
        from 0, so it is sent as ``rrf_k + 1``). Qdrant returns only the fused score: the
        records' per-branch scores and ranks are ``None``. A query without terms is fused from
        its dense branch alone.

        Args:
            vectors: ``(n, dimension)`` or ``(dimension,)`` query vectors, prefixes applied.
            queries: The ``n`` query texts.
            k: Results per query, ≥ 1.
            filter: See :mod:`sbert_retrieval.stores.filters`; inside both branches.
            candidates: Each branch's depth (default and minimum ``k``; above 1,000 clamped to
                the number of points).
            rrf_k: The RRF constant, ≥ 0 (default 60).

        Raises:
            ValueError: Wrong query width or count, non-finite vectors, ``k``, ``candidates``
                or ``rrf_k`` out of range.
            InvalidFilterError: A malformed filter.
            StoreError: The collection has no BM25 sparse vector (the message names the fix),
                or a request failed after retries.

        Thread safety: safe to call concurrently with other reads and one writer.
        """
        array, texts, depth = check_hybrid_args(
            vectors, queries, k, self.dimension, candidates=candidates, rrf_k=rrf_k
        )
        qdrant_filter = to_qdrant_filter(filter)
        self._check_open()
        self._need_lexical()
        limit, depth = self._limits(k, depth)
        fusion = models.RrfQuery(rrf=models.Rrf(k=rrf_k + 1))
        results: list[list[FusedRecord]] = []
        for start in range(0, len(texts), _QUERY_CHUNK):
            requests = []
            end = start + _QUERY_CHUNK
            for vector, text in zip(array[start:end], texts[start:end], strict=True):
                dense = models.Prefetch(query=vector.tolist(), filter=qdrant_filter, limit=depth)
                prefetch = [dense]
                sparse = _sparse_query(text)
                if sparse is not None:
                    prefetch.append(
                        models.Prefetch(
                            query=sparse, using=LEXICAL_VECTOR, filter=qdrant_filter, limit=depth
                        )
                    )
                requests.append(
                    models.QueryRequest(
                        prefetch=prefetch,
                        query=fusion,
                        limit=limit,
                        with_payload=True,
                        with_vector=False,
                    )
                )
            what = f"hybrid search of queries {start}-{start + len(requests) - 1}"
            results.extend(
                [FusedRecord(r.id, r.score, r.payload) for r in row]
                for row in self._query(what, requests)
            )
        return results

    def _count(self) -> int:
        result = self._call(
            f"count of {self.where}",
            functools.partial(self._client.count, self.collection, exact=True),
        )
        return int(result.count)

    def count(self) -> int:
        """Number of points (an exact count).

        Raises:
            StoreError: The request failed after retries.

        Thread safety: safe to call concurrently with other reads and one writer.
        """
        return self._count()

    def flush(self) -> None:
        """Nothing to do: every write was acknowledged by Qdrant (``wait=True``) before returning.

        Thread safety: safe to call from any thread, at any time.
        """

    def close(self) -> None:
        """Release the client if this store created it; a client passed in stays open. Idempotent.

        Thread safety: call once no other call on this store is running.
        """
        if self._closed:
            return
        self._closed = True
        self._close_client()

    def _close_client(self) -> None:
        if self._owns_client:
            with contextlib.suppress(Exception):
                self._client.close()

    def __repr__(self) -> str:
        return (
            f"QdrantStore({self.collection!r}, dimension={self.spec.dimension},"
            f" distance={self.distance!r})"
        )
