"""QdrantStore against qdrant-client's real local mode (no server, no mocks of Qdrant).

Faults are injected by subclasses of :class:`QdrantClient` that raise the errors a real server
or network produces (timeouts, resets, 503, 429 with Retry-After) before delegating to the real
local implementation.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from sbert_retrieval.errors import (
    InvalidFilterError,
    ModelMismatchError,
    StoreError,
    StoreLockedError,
)
from sbert_retrieval.fusion import reciprocal_rank_fusion
from sbert_retrieval.lexical import BM25Params, analyze
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores import qdrant as qdrant_module
from sbert_retrieval.stores.base import Record
from sbert_retrieval.stores.filters import parse_filter
from sbert_retrieval.stores.qdrant import (
    QdrantStore,
    RetryConfig,
    is_transient_error,
    retry_after_seconds,
    to_qdrant_filter,
)
from tests.bm25_reference import reference_bm25
from tests.stores.contract import OpenStore, StoreContract

DIM = 8
FAST_RETRY = RetryConfig(
    max_attempts=6, initial_backoff=0.001, max_backoff=0.004, max_total_seconds=5
)


def make_spec(dimension: int = DIM, fingerprint: str = "fp-1", **changes: Any) -> EmbeddingSpec:
    return EmbeddingSpec(
        model="test/model",
        dimension=dimension,
        pooling="mean",
        normalize=True,
        max_seq_length=128,
        fingerprint=fingerprint,
        **changes,
    )


def point_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"point-{i}"))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def make_records(
    n: int,
    *,
    dim: int = DIM,
    seed: int = 0,
    start: int = 0,
    payload: Callable[[int], dict[str, Any]] | None = None,
) -> list[Record]:
    rng = np.random.default_rng(seed)
    vectors = unit(rng.normal(size=(n, dim)))
    records = []
    for row, i in enumerate(range(start, start + n)):
        body = (
            payload(i) if payload else {"doc_id": f"doc-{i % 7}", "chunk_index": i, "metadata": {}}
        )
        records.append(Record(point_id(i), vectors[row], body))
    return records


def memory_store(**kwargs: Any) -> QdrantStore:
    kwargs.setdefault("retry", FAST_RETRY)
    return QdrantStore("test", make_spec(), location=":memory:", **kwargs)


# -- the shared contract -------------------------------------------------------------------------


class TestQdrantMemoryContract(StoreContract):
    """The VectorStore contract, in local mode in memory (a reopen is a new store, same client)."""

    @pytest.fixture
    def open_store(self) -> Iterator[OpenStore]:
        client = QdrantClient(location=":memory:")
        yield lambda spec: QdrantStore("contract", spec, client=client, retry=FAST_RETRY)
        client.close()


class TestQdrantPathContract(StoreContract):
    """The VectorStore contract, in local mode on disk: a reopen is a new client on the folder.

    Slow-ish (local mode commits every point to SQLite): about a minute for the suite.
    """

    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda spec: QdrantStore(
            "contract", spec, path=str(tmp_path / "qdrant"), retry=FAST_RETRY
        )


# -- basics ------------------------------------------------------------------------------------


def test_create_upsert_get_count_delete() -> None:
    with memory_store() as store:
        assert store.count() == 0
        assert store.dimension == DIM
        records = make_records(20)
        store.upsert(records)
        assert store.count() == 20
        wanted = [records[5].id, str(uuid.uuid4()), records[2].id, "not-a-uuid", records[5].id]
        got = store.get(wanted)
        assert [r.id for r in got] == [records[5].id, records[2].id, records[5].id]
        for record in got:
            original = next(r for r in records if r.id == record.id)
            assert record.vector.dtype == np.float32
            np.testing.assert_allclose(record.vector, original.vector, atol=1e-6)
            assert dict(record.payload) == dict(original.payload)
        assert (
            store.delete([records[0].id, records[0].id, records[1].id, str(uuid.uuid4()), "x"]) == 2
        )
        assert store.count() == 18
        assert store.get([records[0].id]) == []
        assert store.delete([]) == 0


def test_upsert_replaces_and_last_duplicate_wins() -> None:
    with memory_store() as store:
        first = make_records(3)
        store.upsert(first)
        changed = Record(first[1].id, first[0].vector, {"doc_id": "new", "metadata": {"v": 1}})
        twice = Record(first[2].id, first[2].vector, {"doc_id": "final", "metadata": {}})
        earlier = Record(first[2].id, first[0].vector, {"doc_id": "dropped", "metadata": {}})
        store.upsert([changed, earlier, twice])
        assert store.count() == 3
        assert store.get([first[1].id])[0].payload["doc_id"] == "new"
        assert store.get([first[2].id])[0].payload["doc_id"] == "final"
        assert "dropped" not in store.ids_by_document(["dropped", "final"])


def test_uuid_ids_come_back_canonical() -> None:
    with memory_store() as store:
        raw = uuid.uuid4()
        vector = unit(np.ones(DIM))
        store.upsert([Record(raw.hex.upper(), vector, {"doc_id": "d"})])
        assert [r.id for r in store.get([str(raw)])] == [str(raw)]
        assert store.search(vector, 1)[0][0].id == str(raw)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (Record(point_id(0), np.zeros(DIM + 1, np.float32), {"doc_id": "d"}), "shape"),
        (Record(point_id(0), np.full(DIM, np.nan, np.float32), {"doc_id": "d"}), "NaN"),
        (Record(point_id(0), np.ones(DIM, np.float32), {"metadata": {}}), "doc_id"),
        (Record(point_id(0), np.ones(DIM, np.float32), {"doc_id": 3}), "doc_id"),
        (Record("doc-1#0", np.ones(DIM, np.float32), {"doc_id": "d"}), "UUID"),
        (Record(point_id(0), np.ones(DIM, np.float32), {"doc_id": "d", "x": object()}), "JSON"),
    ],
)
def test_upsert_rejects_bad_records_before_sending_any(record: Record, message: str) -> None:
    with memory_store() as store:
        good = make_records(3, start=10)
        with pytest.raises(ValueError, match=message):
            store.upsert([*good, record])
        assert store.count() == 0


def test_ids_by_document() -> None:
    with memory_store() as store:
        records = make_records(30)
        store.upsert(records)
        expected: dict[str, set[str]] = {}
        for r in records:
            expected.setdefault(r.payload["doc_id"], set()).add(r.id)
        assert store.ids_by_document(["doc-1", "doc-3", "missing"]) == {
            "doc-1": expected["doc-1"],
            "doc-3": expected["doc-3"],
        }
        assert store.ids_by_document([]) == {}
        assert store.delete_documents(["doc-1"]) == len(expected["doc-1"])
        assert store.count() == 30 - len(expected["doc-1"])


def test_ids_by_document_pages_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qdrant_module, "_SCROLL_PAGE", 7)
    monkeypatch.setattr(qdrant_module, "_DOC_ID_CHUNK", 3)
    with memory_store() as store:
        records = make_records(100, payload=lambda i: {"doc_id": f"doc-{i % 10}"})
        store.upsert(records)
        found = store.ids_by_document([f"doc-{d}" for d in range(12)])
        assert set(found) == {f"doc-{d}" for d in range(10)}
        assert all(len(ids) == 10 for ids in found.values())
        assert set().union(*found.values()) == {r.id for r in records}


def test_persistence_across_reopen_and_mismatch(tmp_path: Any) -> None:
    path = tmp_path / "qdrant"
    records = make_records(25)
    with QdrantStore("docs", make_spec(), path=path) as store:
        store.upsert(records)
        store.flush()
    # Same spec: reopened with its points.
    with QdrantStore("docs", make_spec(), path=path) as store:
        assert store.count() == 25
        assert store.get([records[3].id])[0].payload == records[3].payload
    # No spec: the stored one is adopted.
    with QdrantStore("docs", path=str(path)) as store:
        assert store.spec == make_spec()
        assert store.search(records[4].vector, 1)[0][0].id == records[4].id
    # Another model: refused, and the local lock is released so the next open works.
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        QdrantStore("docs", make_spec(fingerprint="other"), path=path)
    with pytest.raises(ModelMismatchError, match="dimension"):
        QdrantStore("docs", make_spec(dimension=DIM * 2), path=path)
    with pytest.raises(ModelMismatchError, match="query_prefix"):
        QdrantStore("docs", make_spec(query_prefix="query: "), path=path)
    # ``model`` is informational: another path to the same weights is fine.
    same_weights = EmbeddingSpec(**{**make_spec().to_dict(), "model": "/models/copy"})
    with QdrantStore("docs", same_weights, path=path) as store:
        assert store.spec.model == "test/model"


def test_spec_required_for_new_collection() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        QdrantStore("nothing", location=":memory:")


def test_connection_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        QdrantStore("x", make_spec())
    with pytest.raises(ValueError, match="exactly one"):
        QdrantStore("x", make_spec(), location=":memory:", path="/tmp/x")
    with pytest.raises(ValueError, match="distance"):
        QdrantStore("x", make_spec(), location=":memory:", distance="euclid")
    with pytest.raises(ValueError, match="index type"):
        QdrantStore("x", make_spec(), location=":memory:", indexed_fields={"a": "text"})


def test_path_is_locked_while_open(tmp_path: Any) -> None:
    with QdrantStore("docs", make_spec(), path=tmp_path), pytest.raises(StoreLockedError):
        QdrantStore("docs", make_spec(), path=tmp_path)


def test_distance_is_stored_and_checked() -> None:
    client = QdrantClient(location=":memory:")
    with QdrantStore("dot", make_spec(), client=client, distance="dot") as store:
        assert store.distance == "dot"
    with QdrantStore("dot", client=client) as store:
        assert store.distance == "dot"
    with pytest.raises(ModelMismatchError, match=r"[Dd]ot"):
        QdrantStore("dot", client=client, distance="cosine")
    client.close()


def test_foreign_collection() -> None:
    client = QdrantClient(location=":memory:")
    params = models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    client.create_collection("foreign", vectors_config=params)
    client.upsert("foreign", points=[models.PointStruct(id=point_id(1), vector=[1.0] * DIM)])
    with pytest.raises(StoreError, match="not created by this package"):
        QdrantStore("foreign", make_spec(), client=client)
    # An empty collection that fits is adopted, and the spec is written into its metadata.
    client.create_collection("empty", vectors_config=params)
    with pytest.raises(StoreError, match="no sbert-retrieval embedding spec"):
        QdrantStore("empty", client=client)
    with QdrantStore("empty", make_spec(), client=client):
        pass
    with QdrantStore("empty", client=client) as store:
        assert store.spec == make_spec()
    client.create_collection("named", vectors_config={"dense": params})
    with pytest.raises(StoreError, match="named vectors"):
        QdrantStore("named", make_spec(), client=client)
    client.close()


def test_spec_lives_in_collection_metadata() -> None:
    client = QdrantClient(location=":memory:")
    with QdrantStore("meta", make_spec(), client=client) as store:
        store.upsert(make_records(4))
        assert store.count() == 4  # no reserved point anywhere
    metadata = client.get_collection("meta").config.metadata
    assert metadata is not None
    assert metadata["sbert_retrieval"]["embedding_spec"] == make_spec().to_dict()
    client.close()


def test_close_is_idempotent_and_keeps_a_given_client_open() -> None:
    client = QdrantClient(location=":memory:")
    store = QdrantStore("c", make_spec(), client=client)
    store.close()
    store.close()
    assert client.collection_exists("c")  # still usable
    with pytest.raises(StoreError, match="closed"):
        store.count()
    store.flush()  # nothing pending, never fails
    client.close()


def test_payload_indexes_do_not_fail_in_local_mode(recwarn: pytest.WarningsRecorder) -> None:
    with memory_store(
        indexed_fields={"lang": "keyword", "year": "integer", "author.name": "keyword"}
    ):
        pass
    assert not [w for w in recwarn if "Payload indexes" in str(w.message)]


class RecordingIndexClient(QdrantClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.indexed: list[tuple[str, Any]] = []

    def create_payload_index(
        self, collection_name: str, field_name: str, field_schema: Any = None, **kwargs: Any
    ) -> Any:  # type: ignore[override]
        self.indexed.append((field_name, field_schema))
        return super().create_payload_index(collection_name, field_name, field_schema, **kwargs)


def test_payload_indexes_requested_for_doc_id_and_declared_fields() -> None:
    client = RecordingIndexClient(location=":memory:")
    with QdrantStore(
        "ix", make_spec(), client=client, indexed_fields=["lang", "author.name", "odd key"]
    ):
        pass
    keys = [key for key, _ in client.indexed]
    assert keys == ["doc_id", "metadata.lang", "metadata.author.name", 'metadata."odd key"']
    assert client.indexed[0][1] == models.PayloadSchemaType.KEYWORD
    client.close()


# -- search ------------------------------------------------------------------------------------


def brute_force(
    vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> list[list[tuple[str, float]]]:
    scores = queries @ vectors.T
    if mask is not None:
        scores = np.where(mask[None, :], scores, -np.inf)
    results = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        results.append([(ids[i], float(row[i])) for i in order if np.isfinite(row[i])])
    return results


@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_top_k_matches_numpy_brute_force(distance: str) -> None:
    rng = np.random.default_rng(7)
    n, dim = 400, 16
    vectors = unit(rng.normal(size=(n, dim)))
    if distance == "dot":
        vectors = vectors * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)
    ids = [point_id(i) for i in range(n)]
    records = [Record(ids[i], vectors[i], {"doc_id": f"d{i}"}) for i in range(n)]
    queries = unit(rng.normal(size=(12, dim)))
    with QdrantStore(
        "knn", make_spec(dimension=dim), location=":memory:", distance=distance, batch_points=64
    ) as store:
        store.upsert(records)
        got = store.search(queries, 10)
        expected = brute_force(vectors, ids, queries, 10)
        assert len(got) == 12
        for hits, want in zip(got, expected, strict=True):
            assert [h.id for h in hits] == [i for i, _ in want]
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], atol=1e-5)
            assert hits[0].payload["doc_id"] == f"d{ids.index(hits[0].id)}"
        # One query as a 1-D vector, and k above the number of points.
        single = store.search(queries[0], n + 50)
        assert len(single) == 1 and len(single[0]) == n
        huge = store.search(queries[:2], 10**9)
        assert [len(h) for h in huge] == [n, n]


def test_search_argument_errors() -> None:
    with memory_store() as store:
        store.upsert(make_records(3))
        query = np.ones(DIM, np.float32)
        with pytest.raises(ValueError, match="k must"):
            store.search(query, 0)
        with pytest.raises(ValueError, match="shape"):
            store.search(np.ones(DIM + 1, np.float32), 1)
        with pytest.raises(ValueError, match="NaN"):
            store.search(np.full(DIM, np.nan, np.float32), 1)
        with pytest.raises(InvalidFilterError):
            store.search(query, 1, filter={"lang": {"$regex": "e.*"}})
        with pytest.raises(InvalidFilterError):
            store.search(query, 1, filter={'bad"key': 1})
        assert store.search(np.zeros((0, DIM), np.float32), 3) == []


def test_search_on_empty_store() -> None:
    with memory_store() as store:
        assert store.search(np.ones((2, DIM), np.float32), 5) == [[], []]


def filter_payload(i: int) -> dict[str, Any]:
    langs = ["en", "de", "fr"]
    metadata: dict[str, Any] = {
        "lang": langs[i % 3],
        "year": 2010 + i % 15,
        "score": round((i * 37 % 100) / 10, 1),
        "tags": [f"t{i % 4}", f"t{(i // 4) % 5}"] if i % 6 else [],
        "flag": i % 5 == 0,
        "num": i % 4 if i % 7 else True,
        "author": {"name": ["ann", "bob", "cy"][i % 3], "age": 20 + i % 30},
        "odd key": {"x-y": i % 2},
    }
    if i % 9 == 0:
        del metadata["lang"]
    return {"doc_id": f"doc-{i % 11}", "chunk_index": i, "text": f"t {i}", "metadata": metadata}


FILTERS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"$eq": "de"}},
    {"lang": {"$in": ["en", "fr"]}},
    {"year": {"$gte": 2015, "$lt": 2020}},
    {"year": {"$gt": 2023}},
    {"score": {"$lte": 2.5}},
    {"year": 2012},
    {"doc_id": "doc-3"},
    {"doc_id": {"$in": ["doc-1", "doc-2", "nope"]}},
    {"tags": "t1"},
    {"tags": {"$in": ["t0", "t4"]}},
    {"flag": True},
    {"flag": False, "lang": "en"},
    {"num": 1},  # True must not match 1
    {"num": True},
    {"num": {"$in": [True, 3]}},
    {"num": {"$gte": 1}},  # a bool is not a number
    {"author.name": "bob"},
    {"author.age": {"$gt": 40}, "lang": {"$in": ["de"]}},
    {"odd key.x-y": 1},
    {"missing": "x"},
    {"lang": "en", "year": {"$gte": 2020}, "tags": {"$in": ["t2", "t3"]}},
    {"chunk_index": {"$gte": 0}},  # a metadata field, not the top-level chunk_index
]


@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filters_match_brute_force(spec: dict[str, Any]) -> None:
    n = 150
    records = make_records(n, dim=DIM, seed=3, payload=filter_payload)
    vectors = np.stack([r.vector for r in records])
    ids = [r.id for r in records]
    parsed = parse_filter(spec)
    assert parsed is not None
    mask = np.array([parsed.matches(r.payload) for r in records])
    queries = unit(np.random.default_rng(5).normal(size=(3, DIM)))
    with memory_store() as store:
        store.upsert(records)
        got = store.search(queries, n, filter=spec)
        got_k = store.search(queries, 5, filter=spec)
    for hits, hits_k, want in zip(
        got, got_k, brute_force(vectors, ids, queries, n, mask), strict=True
    ):
        assert {h.id for h in hits} == {i for i, _ in want}
        assert [h.id for h in hits_k] == [i for i, _ in want[:5]]
        assert all(parsed.matches(h.payload) for h in hits)


def test_filter_translation() -> None:
    converted = to_qdrant_filter({"author.name": {"$in": ["a", "b"]}, "year": {"$gte": 2000}})
    assert converted is not None and converted.must is not None
    first, second = converted.must
    assert isinstance(first, models.FieldCondition) and first.key == "metadata.author.name"
    assert isinstance(first.match, models.MatchAny) and first.match.any == ["a", "b"]
    assert isinstance(second, models.FieldCondition) and second.key == "metadata.year"
    assert second.range == models.Range(gte=2000.0)
    assert to_qdrant_filter(None) is None and to_qdrant_filter({}) is None
    doc = to_qdrant_filter({"doc_id": "a.md"})
    assert doc is not None and doc.must is not None
    assert isinstance(doc.must[0], models.FieldCondition) and doc.must[0].key == "doc_id"


# -- batching ----------------------------------------------------------------------------------


class CountingClient(QdrantClient):
    """A real local client that records the points of every upsert request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upserts: list[list[models.PointStruct]] = []

    def upsert(self, collection_name: str, points: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.upserts.append(list(points))
        return super().upsert(collection_name, points, **kwargs)


def request_bytes(points: list[models.PointStruct]) -> int:
    return len(json.dumps([p.model_dump() for p in points]).encode())


def test_upsert_batches_by_bytes() -> None:
    client = CountingClient(location=":memory:")
    text = "x" * 200_000  # ~200 kB per point
    records = make_records(
        30, payload=lambda i: {"doc_id": f"d{i}", "text": f"{i} {text}", "metadata": {}}
    )
    with QdrantStore("big", make_spec(), client=client, batch_bytes=1_000_000) as store:
        store.upsert(records)
        assert store.count() == 30
    assert len(client.upserts) >= 7  # 30 points of ~200 kB in requests of <= 1 MB
    assert sum(len(points) for points in client.upserts) == 30
    assert all(request_bytes(points) <= 1_000_000 for points in client.upserts)
    client.close()


def test_upsert_batches_by_count_and_sends_an_oversized_point_alone() -> None:
    client = CountingClient(location=":memory:")
    with QdrantStore(
        "small", make_spec(), client=client, batch_points=4, batch_bytes=50_000
    ) as store:
        store.upsert(make_records(10))
        assert [len(p) for p in client.upserts] == [4, 4, 2]
        client.upserts.clear()
        huge = make_records(
            3,
            start=100,
            payload=lambda i: {"doc_id": "d", "text": "y" * (100_000 if i == 101 else 10)},
        )
        store.upsert(huge)
        assert [len(p) for p in client.upserts] == [1, 1, 1]
        assert store.count() == 13
    client.close()


# -- fault injection ---------------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):
    """What grpc raises on a failed unary call (``code()``, ``details()``, trailers)."""

    def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code.name)
        self._code = code
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


def http_error(
    status: int, reason: str, headers: dict[str, str] | None = None
) -> UnexpectedResponse:
    return UnexpectedResponse(
        status, reason, b'{"status":{"error":"injected"}}', httpx.Headers(headers or {})
    )


FAULTS: dict[str, Callable[[], BaseException]] = {
    "rest-timeout": lambda: ResponseHandlingException(httpx.ReadTimeout("timed out")),
    "timeout": lambda: TimeoutError("timed out"),
    "grpc-deadline": lambda: FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED),
    "connection-reset": lambda: ConnectionResetError(104, "Connection reset by peer"),
    "rest-connect-error": lambda: ResponseHandlingException(
        httpx.ConnectError("[Errno 104] reset")
    ),
    "remote-protocol": lambda: ResponseHandlingException(httpx.RemoteProtocolError("peer closed")),
    "grpc-unavailable": lambda: FakeRpcError(grpc.StatusCode.UNAVAILABLE),
    "http-503": lambda: http_error(503, "Service Unavailable"),
    "http-502": lambda: http_error(502, "Bad Gateway"),
    "http-429-retry-after": lambda: http_error(429, "Too Many Requests", {"Retry-After": "1"}),
    "client-429-retry-after": lambda: ResourceExhaustedResponse("rate limited", 1),
    "grpc-exhausted": lambda: FakeRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after", "1"),)
    ),
}


class FlakyClient(QdrantClient):
    """A real local client whose upsert/query calls fail as scripted.

    ``failures[method]`` is consumed one entry per call: ``None`` lets the call through, an
    exception fails it. With ``applied=True`` the failing upsert is applied first and its
    response "lost", as when a timeout hits after the server committed.
    """

    def __init__(
        self, failures: dict[str, Iterator[BaseException | None]], applied: bool = False
    ) -> None:
        super().__init__(location=":memory:")
        self.failures = failures
        self.applied = applied
        self.calls: dict[str, int] = {"upsert": 0, "query_batch_points": 0}

    def _maybe_fail(self, method: str, run: Callable[[], Any]) -> Any:
        self.calls[method] += 1
        fault = next(self.failures.get(method, iter(())), None)
        if fault is None:
            return run()
        if self.applied and method == "upsert":
            run()
        raise fault

    def upsert(self, collection_name: str, points: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._maybe_fail(
            "upsert", lambda: super(FlakyClient, self).upsert(collection_name, points, **kwargs)
        )

    def query_batch_points(self, collection_name: str, requests: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._maybe_fail(
            "query_batch_points",
            lambda: super(FlakyClient, self).query_batch_points(
                collection_name, requests, **kwargs
            ),
        )


def script(*steps: BaseException | None) -> Iterator[BaseException | None]:
    return iter(steps)


class SleepRecorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.mark.parametrize("applied", [False, True], ids=["lost-request", "lost-response"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_transient_faults_are_retried_and_every_point_stored_once(
    fault: str, applied: bool
) -> None:
    make = FAULTS[fault]
    # Batch 1 fails twice, batch 3 once; searches fail twice.
    upserts = script(make(), make(), None, None, make(), None)
    queries = script(make(), make())
    client = FlakyClient({"upsert": upserts, "query_batch_points": queries}, applied=applied)
    sleeper = SleepRecorder()
    records = make_records(250)
    with QdrantStore(
        "flaky", make_spec(), client=client, batch_points=100, retry=FAST_RETRY, sleep=sleeper
    ) as store:
        store.upsert(records)
        assert client.calls["upsert"] == 6
        assert store.count() == 250
        assert set().union(*store.ids_by_document([f"doc-{d}" for d in range(7)]).values()) == {
            r.id for r in records
        }
        hits = store.search(records[17].vector, 3)
        assert hits[0][0].id == records[17].id
        assert client.calls["query_batch_points"] == 3
    assert len(sleeper.sleeps) == 5
    if "retry-after" in fault or fault == "grpc-exhausted":
        assert all(s >= 1.0 for s in sleeper.sleeps)  # the server's Retry-After was honoured
    else:
        assert all(0 < s <= FAST_RETRY.max_backoff for s in sleeper.sleeps)
    client.close()


def test_retry_after_is_honoured_exactly() -> None:
    upserts = script(
        http_error(429, "Too Many Requests", {"Retry-After": "3"}),
        http_error(503, "Service Unavailable", {"Retry-After": "2"}),
        ResourceExhaustedResponse("slow down", 4),
        http_error(429, "Too Many Requests"),  # no header: plain backoff
    )
    client = FlakyClient({"upsert": upserts})
    sleeper = SleepRecorder()
    retry = RetryConfig(
        max_attempts=5, initial_backoff=0.01, max_backoff=0.01, max_total_seconds=60
    )
    with QdrantStore("ra", make_spec(), client=client, retry=retry, sleep=sleeper) as store:
        store.upsert(make_records(5))
        assert store.count() == 5
    assert sleeper.sleeps[:3] == [3.0, 2.0, 4.0]
    assert 0.005 <= sleeper.sleeps[3] <= 0.01
    client.close()


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    failures = script(*[http_error(503, "Service Unavailable") for _ in range(7)])
    client = FlakyClient({"upsert": failures})
    sleeper = SleepRecorder()
    retry = RetryConfig(
        max_attempts=8, initial_backoff=1.0, max_backoff=8.0, max_total_seconds=1000
    )
    with QdrantStore("bo", make_spec(), client=client, retry=retry, sleep=sleeper) as store:
        store.upsert(make_records(2))
    bases = [1, 2, 4, 8, 8, 8, 8]
    assert len(sleeper.sleeps) == 7
    for slept, base in zip(sleeper.sleeps, bases, strict=True):
        assert base / 2 <= slept <= base
    client.close()


def test_permanent_failure_names_the_batch_and_is_bounded_in_time() -> None:
    # Batch 1 succeeds, then the server never recovers.
    upserts = itertools.chain([None], iter(lambda: http_error(503, "Service Unavailable"), None))
    client = FlakyClient({"upsert": upserts})
    retry = RetryConfig(max_attempts=4, initial_backoff=0.01, max_backoff=0.02, max_total_seconds=2)
    records = make_records(300)
    with QdrantStore("down", make_spec(), client=client, batch_points=100, retry=retry) as store:
        started = time.monotonic()
        with pytest.raises(
            StoreError, match=r"upsert batch 2/3 \(points 100-199\) failed after 4 attempts"
        ) as info:
            store.upsert(records)
        assert time.monotonic() - started < 0.5
        assert isinstance(info.value.__cause__, UnexpectedResponse)
        assert "503" in str(info.value)
        assert client.calls["upsert"] == 1 + 4
        assert store.count() == 100  # batch 1 stayed
        # The server is back: re-running the same upsert finishes the job, no duplicates.
        client.failures["upsert"] = iter(())
        store.upsert(records)
        assert store.count() == 300
    client.close()


def test_total_time_budget_stops_retrying_early() -> None:
    upserts = iter(lambda: FakeRpcError(grpc.StatusCode.UNAVAILABLE), None)
    client = FlakyClient({"upsert": upserts})
    retry = RetryConfig(
        max_attempts=1000, initial_backoff=0.02, max_backoff=0.05, max_total_seconds=0.3
    )
    with QdrantStore("budget", make_spec(), client=client, retry=retry) as store:
        started = time.monotonic()
        with pytest.raises(
            StoreError, match=r"upsert batch 1/1 \(points 0-2\) failed after \d+ attempts.*budget"
        ) as info:
            store.upsert(make_records(3))
        elapsed = time.monotonic() - started
        assert elapsed < 0.3 + 0.2
        assert isinstance(info.value.__cause__, grpc.RpcError)
        assert client.calls["upsert"] < 1000
    client.close()


def test_retry_after_beyond_the_budget_gives_up_without_sleeping() -> None:
    upserts = script(http_error(429, "Too Many Requests", {"Retry-After": "600"}))
    client = FlakyClient({"upsert": upserts})
    sleeper = SleepRecorder()
    store = QdrantStore("long", make_spec(), client=client, retry=FAST_RETRY, sleep=sleeper)
    with store, pytest.raises(StoreError, match="asked to wait 600 s"):
        store.upsert(make_records(2))
    assert sleeper.sleeps == []
    client.close()


def test_permanent_errors_are_not_retried() -> None:
    upserts = script(http_error(400, "Bad Request"))
    client = FlakyClient({"upsert": upserts})
    sleeper = SleepRecorder()
    store = QdrantStore("bad", make_spec(), client=client, retry=FAST_RETRY, sleep=sleeper)
    expected = r"upsert batch 1/1 \(points 0-1\) failed: UnexpectedResponse.*400"
    with store, pytest.raises(StoreError, match=expected):
        store.upsert(make_records(2))
    assert client.calls["upsert"] == 1
    assert sleeper.sleeps == []
    client.close()


def test_search_fails_with_store_error_when_server_stays_down() -> None:
    queries = iter(lambda: ResponseHandlingException(httpx.ConnectError("refused")), None)
    client = FlakyClient({"query_batch_points": queries})
    with QdrantStore(
        "s", make_spec(), client=client, retry=FAST_RETRY, sleep=SleepRecorder()
    ) as store:
        store.upsert(make_records(3))
        with pytest.raises(StoreError, match=r"search of queries 0-1 failed after 6 attempts"):
            store.search(np.ones((2, DIM), np.float32), 2)
    client.close()


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (http_error(500, "Internal Server Error"), True),
        (http_error(504, "Gateway Timeout"), True),
        (http_error(408, "Request Timeout"), True),
        (http_error(404, "Not Found"), False),
        (http_error(409, "Conflict"), False),
        (ResponseHandlingException(httpx.PoolTimeout("pool")), True),
        (ResponseHandlingException(ValueError("bad json")), False),
        (httpx.ConnectTimeout("t"), True),
        (httpx.UnsupportedProtocol("ftp"), False),
        (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT), False),
        (FakeRpcError(grpc.StatusCode.NOT_FOUND), False),
        (ConnectionRefusedError(), True),
        (BrokenPipeError(), True),
        (ValueError("x"), False),
        (RuntimeError("x"), False),
    ],
)
def test_is_transient_error(error: BaseException, transient: bool) -> None:
    assert is_transient_error(error) is transient


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(http_error(429, "x", {"Retry-After": "2.5"})) == 2.5
    assert retry_after_seconds(http_error(429, "x", {"Retry-After": "soon"})) is None
    assert retry_after_seconds(http_error(429, "x")) is None
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_seconds(http_error(503, "x", {"Retry-After": past})) == 0.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    hinted = retry_after_seconds(http_error(503, "x", {"Retry-After": future}))
    assert hinted is not None and 25 <= hinted <= 31
    assert retry_after_seconds(ResourceExhaustedResponse("x", 7)) == 7.0
    assert (
        retry_after_seconds(
            FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after", "5"),))
        )
        == 5.0
    )


def test_retry_config_is_validated() -> None:
    with pytest.raises(ValueError):
        RetryConfig(max_attempts=0)
    with pytest.raises(ValueError):
        RetryConfig(max_total_seconds=0)
    with pytest.raises(ValueError):
        RetryConfig(initial_backoff=-1)


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_reads_alongside_one_writer(tmp_path: Any) -> None:
    records = make_records(60)  # local mode on disk commits every point to SQLite: keep it small
    errors: list[BaseException] = []
    with QdrantStore("conc", make_spec(), path=tmp_path, batch_points=10) as store:
        store.upsert(records[:20])
        done = threading.Event()

        def read() -> None:
            try:
                while not done.is_set():
                    store.search(records[3].vector, 5, filter={"doc_id": "doc-3"})
                    store.count()
                    store.get([records[1].id])
                    store.ids_by_document(["doc-1"])
                    time.sleep(0.001)  # let the writer in: a plain lock is not fair
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        try:
            store.upsert(records[20:])
            store.delete([r.id for r in records[:10]])
        finally:
            done.set()
            for thread in readers:
                thread.join()
        assert errors == []
        assert store.count() == 50


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
@pytest.mark.parametrize("prefer_grpc", [False, True], ids=["rest", "grpc"])
def test_real_connection_refused_is_retried_then_reported(prefer_grpc: bool) -> None:
    # A real qdrant-client talking to a port nobody listens on: its own exceptions must be
    # classified as transient, retried, and reported as a StoreError within the bound.
    port = closed_port()
    retry = RetryConfig(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, max_total_seconds=5)
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=r"checking Qdrant collection 'x' at .* failed after 3 attempts"
    ) as info:
        QdrantStore(
            "x",
            make_spec(),
            url=f"http://127.0.0.1:{port}",
            grpc_port=port,
            prefer_grpc=prefer_grpc,
            timeout=2,
            retry=retry,
        )
    assert time.monotonic() - started < 3
    # qdrant-client checks the server's version from a thread of its own; wait for it here, under
    # this test's warning filter, or its "Failed to obtain server version" lands in a later test.
    for thread in set(threading.enumerate()) - threads_before:
        if "_check_compatibility" in thread.name:  # Python names a thread after its target
            thread.join(timeout=10)
    assert info.value.__cause__ is not None and is_transient_error(info.value.__cause__)


class ReadOnlyIndexClient(QdrantClient):
    """A client whose API key may read but not create payload indexes."""

    def create_payload_index(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise http_error(403, "Forbidden")


def test_failing_index_creation_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    client = ReadOnlyIndexClient(location=":memory:")
    with QdrantStore("ro", make_spec(), client=client, retry=FAST_RETRY) as store:
        store.upsert(make_records(3))
        assert store.count() == 3
    assert "payload index on 'doc_id'" in caplog.text and "403" in caplog.text
    client.close()


class LostCreateClient(QdrantClient):
    """The first create_collection is applied, but its response is lost (a timeout)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.creates = 0

    def create_collection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.creates += 1
        result = super().create_collection(*args, **kwargs)
        if self.creates == 1:
            raise ResponseHandlingException(httpx.ReadTimeout("timed out"))
        return result


def test_create_whose_response_was_lost_still_opens() -> None:
    client = LostCreateClient(location=":memory:")
    store = QdrantStore("lost", make_spec(), client=client, retry=FAST_RETRY, sleep=SleepRecorder())
    with store:
        assert store.spec == make_spec()
        store.upsert(make_records(2))
        assert store.count() == 2
    assert client.creates == 2  # retried once, found the collection there
    client.close()


# -- lexical (BM25) and hybrid search ------------------------------------------------------------

CORPUS = [
    "Cats purr and cats sleep all day in the sun.",
    "Dogs bark; the dog runs after cats.",
    "Stocks fell on inflation fears, bonds rallied.",
    "Running water cools the old grey stone bridge.",
    "The runner ran past sleeping dogs and a purring cat.",
    'Inflation: prices rise, savers lose; "bonds" fall again.',
    "Mäuse laufen über die Brücke in der Sonne.",
    "",
    "Sun, sun, sun: the cat sleeps in the sun all day long while the dogs run.",
]
QUERIES = ["sleeping cats", "inflation bonds", "the sun", "running dogs", "brucke mause"]
HOSTILE = ['cats AND "NEAR(', "\x00 * : ^ -", "x" * 50_000, "", "((", "word " * 10_000]


def text_records(texts: list[str] = CORPUS, seed: int = 3) -> list[Record]:
    return make_records(
        len(texts),
        seed=seed,
        payload=lambda i: {"doc_id": f"d{i}", "text": texts[i], "metadata": {"group": i % 2}},
    )


@pytest.mark.parametrize("params", [BM25Params(), BM25Params(k1=0.9, b=0.4)], ids=str)
def test_lexical_scores_are_reference_bm25(params: BM25Params) -> None:
    records = text_records()
    with memory_store(bm25=params) as store:
        store.upsert(records)
        got = store.lexical_search(QUERIES, 20)
    for query, row in zip(QUERIES, got, strict=True):
        expected = reference_bm25(CORPUS, query, params.k1, params.b)
        assert expected, query  # every query matches something: the test can fail
        assert {r.id: r.score for r in row} == pytest.approx(
            {records[i].id: s for i, s in expected.items()}, rel=1e-5
        )
        assert [r.score for r in row] == sorted((r.score for r in row), reverse=True)
        assert all(r.payload["text"] for r in row)


def test_lexical_filter_keeps_collection_idf_and_k_cuts() -> None:
    records = text_records()
    with memory_store() as store:
        store.upsert(records)
        [row] = store.lexical_search(["the sun"], 10, filter={"group": 0})
        [top] = store.lexical_search(["the sun"], 1)
    expected = reference_bm25(CORPUS, "the sun")
    wanted = {records[i].id: s for i, s in expected.items() if i % 2 == 0}
    assert {r.id: r.score for r in row} == pytest.approx(wanted, rel=1e-5)
    assert [r.id for r in top] == [records[max(expected, key=expected.__getitem__)].id]


def test_avgdl_is_measured_once_and_stored() -> None:
    client = QdrantClient(location=":memory:")
    with QdrantStore("avg", make_spec(), client=client) as store:
        store.upsert(text_records(CORPUS[:4]))
        store.upsert(text_records(CORPUS, seed=4)[4:])  # later documents: same avgdl
    stored = client.get_collection("avg").config.metadata["sbert_retrieval"]["lexical"]  # type: ignore[index]
    assert stored["avgdl"] == pytest.approx(sum(len(analyze(t)) for t in CORPUS[:4]) / 4)
    assert stored["k1"] == 1.2 and stored["b"] == 0.75 and stored["vector"] == "bm25"
    with QdrantStore("avg", client=client) as store:  # reopened: the stored settings
        [row] = store.lexical_search(["bridge"], 3)
        assert [r.payload["doc_id"] for r in row] == ["d3"]
    client.close()


def test_hostile_query_text_is_answered_not_raised() -> None:
    records = text_records()
    with memory_store() as store:
        store.upsert(records)
        vectors = unit(np.random.default_rng(5).normal(size=(len(HOSTILE), DIM)))
        lexical = store.lexical_search(HOSTILE, 5)
        hybrid = store.hybrid_search(vectors, HOSTILE, 5, candidates=9)
    assert [len(row) for row in lexical] == [4, 0, 0, 0, 0, 0]  # 'cats': d0, d1, d4, d8
    assert all(len(row) == 5 for row in hybrid)  # the dense branch answers every query


def test_hybrid_is_one_fused_query_with_the_filter_and_limit_in_both_prefetches() -> None:
    class Recording(QdrantClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.requests: list[models.QueryRequest] = []

        def query_batch_points(self, collection_name: str, requests: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            self.requests.extend(requests)
            return super().query_batch_points(collection_name, requests, **kwargs)

    client = Recording(location=":memory:")
    with QdrantStore("h", make_spec(), client=client) as store:
        store.upsert(text_records())
        client.requests.clear()
        vectors = unit(np.random.default_rng(6).normal(size=(2, DIM)))
        store.hybrid_search(vectors, ["cats", "bonds"], 3, filter={"group": 1}, candidates=7)
    assert len(client.requests) == 2
    expected_filter = to_qdrant_filter({"group": 1})
    for request in client.requests:
        assert isinstance(request.query, models.RrfQuery) and request.query.rrf.k == 61
        assert request.limit == 3
        dense, sparse = request.prefetch  # type: ignore[misc]
        assert dense.using is None and sparse.using == "bm25"
        assert dense.filter == sparse.filter == expected_filter
        assert dense.limit == sparse.limit == 7
    client.close()


def rrf_reference(
    dense: list[str], lexical: list[str], k: int, rrf_k: int = 60
) -> list[tuple[str, float]]:
    fused = reciprocal_rank_fusion(
        [[(i, 0.0) for i in dense], [(i, 0.0) for i in lexical]], rrf_k=rrf_k
    )
    return [(f.key, f.score) for f in fused[:k]]


@pytest.mark.parametrize("flt", [None, {"group": 0}, {"doc_id": {"$in": ["d1", "d4", "d8"]}}])
@pytest.mark.parametrize("rrf_k", [60, 0])
def test_hybrid_equals_rrf_of_the_exact_filtered_branches(flt: Any, rrf_k: int) -> None:
    records = text_records()
    parsed = parse_filter(flt)
    kept = [(i, r) for i, r in enumerate(records) if parsed is None or parsed.matches(r.payload)]
    vectors = unit(np.random.default_rng(7).normal(size=(len(QUERIES), DIM)))
    with memory_store() as store:
        store.upsert(records)
        got = store.hybrid_search(vectors, QUERIES, 3, filter=flt, candidates=4, rrf_k=rrf_k)
    for q, query in enumerate(QUERIES):
        dense = sorted(kept, key=lambda item: -float(item[1].vector @ vectors[q]))
        bm25 = reference_bm25(CORPUS, query)
        lexical = sorted((item for item in kept if item[0] in bm25), key=lambda x: -bm25[x[0]])
        assert len(set(bm25.values())) == len(bm25)  # no ties: one right order
        expected = rrf_reference(
            [r.id for _, r in dense[:4]], [r.id for _, r in lexical[:4]], 3, rrf_k
        )
        assert [(r.id, r.score) for r in got[q]] == [
            (i, pytest.approx(s, rel=1e-6)) for i, s in expected
        ], (query, flt)
        assert all(r.dense_rank is None and r.lexical_rank is None for r in got[q])


def test_a_collection_without_the_sparse_vector_names_the_fix() -> None:
    client = QdrantClient(location=":memory:")
    spec = make_spec()
    # What the previous release created: one dense vector, format 1 metadata, no sparse vector.
    client.create_collection(
        "old",
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        metadata={"sbert_retrieval": {"format": 1, "embedding_spec": spec.to_dict()}},
    )
    records = text_records()
    with QdrantStore("old", spec, client=client) as store:
        store.upsert(records)  # dense only, as before
        assert store.count() == len(records)
        assert store.search(records[0].vector, 1)[0][0].id == records[0].id
        assert store.get([records[0].id])[0].payload["text"] == CORPUS[0]
        for call in (
            lambda: store.lexical_search(["cats"], 3),
            lambda: store.hybrid_search(records[0].vector, ["cats"], 3),
        ):
            with pytest.raises(StoreError, match=r"no BM25 sparse vector.*[Rr]e-ingest.*new"):
                call()
    client.close()


def test_vectors_round_trip_with_the_sparse_vector(tmp_path: Path) -> None:
    records = text_records()
    with QdrantStore("p", make_spec(), path=str(tmp_path / "q")) as store:
        store.upsert(records)
    with QdrantStore("p", make_spec(), path=str(tmp_path / "q")) as store:
        got = store.get([r.id for r in records])
        np.testing.assert_allclose(
            np.stack([r.vector for r in got]), np.stack([r.vector for r in records]), atol=1e-6
        )
        [row] = store.lexical_search(["inflation"], 5)
        assert {r.payload["doc_id"] for r in row} == {"d2", "d5"}


def test_new_text_by_set_payloads_is_searchable() -> None:
    records = text_records()
    with memory_store() as store:
        store.upsert(records)
        assert store.lexical_search(["zebra"], 3) == [[]]
        store.set_payloads({records[2].id: {**records[2].payload, "text": "a zebra crossing"}})
        [row] = store.lexical_search(["zebras", "inflation"], 3)[:1]
        assert [r.id for r in row] == [records[2].id]
        store.delete([records[2].id])
        assert store.lexical_search(["zebra"], 3) == [[]]
