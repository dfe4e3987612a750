"""The HTTP service, started as a real process on loopback and driven with real HTTP requests.

``sbert-retrieval serve`` runs as a subprocess (``python -m sbert_retrieval.cli serve``) on
127.0.0.1 with ``--port 0``; the port it bound is read from its log. Features that need other
settings (a reranker, read-only mode) are checked in-process through the same app factory.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the [server] extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="needs the [server] extra (fastapi, uvicorn)")

import httpx

from sbert_retrieval.cli import main
from sbert_retrieval.encoding import BiEncoder
from sbert_retrieval.errors import ModelMismatchError
from sbert_retrieval.integrations.server import (
    Coalescer,
    QueryBatcher,
    ServerConfig,
    create_app,
)
from sbert_retrieval.stores import ExactStore
from sbert_retrieval.stores.factory import StoreConfig

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123"
MAX_BODY = 16 * 1024
STARTUP_TIMEOUT = 120.0
RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

DOCS = [
    {"id": "cats", "text": "Cats purr when they are content.", "metadata": {"lang": "en"}},
    {"id": "dogs", "text": "Dogs bark at the mail carrier.", "metadata": {"lang": "en"}},
    {"id": "katzen", "text": "Katzen schnurren gern.", "metadata": {"lang": "de", "year": 2020}},
]


class ServerProcess:
    """``sbert-retrieval serve`` in a subprocess, its log in a file."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        command = [sys.executable, "-m", "sbert_retrieval.cli", "serve", "--port", "0"]
        command += ["--host", "127.0.0.1", "--no-access-log", *args]
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})},
            )
        self.url = self._wait_for_port()

    def _wait_for_port(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            match = RUNNING.search(text)
            if match:
                return f"http://127.0.0.1:{match.group(1)}"
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited with {self.process.returncode}:\n{text}")
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the service did not start in {STARTUP_TIMEOUT} s:\n{self.log_text}")

    @property
    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> bool:
        """SIGTERM, then wait; whether it shut down cleanly (lifespan done: store closed).

        uvicorn re-raises the signal once shut down, so a clean exit is -SIGTERM (or 0).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return False
        return self.process.returncode in (0, -signal.SIGTERM) and (
            "Application shutdown complete" in self.log_text
        )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server")
    process = ServerProcess(
        root / "server.log",
        "--index", str(root / "index"),
        "--model", str(tiny_model_dir),
        "--max-body-bytes", str(MAX_BODY),
        env={"SBERT_RETRIEVAL_API_KEY": API_KEY},
    )  # fmt: skip
    try:
        yield process
    finally:
        assert process.stop(), process.log_text


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
        yield c


def count(client: httpx.Client) -> int:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def search(client: httpx.Client, query: str, **body: Any) -> list[dict[str, Any]]:
    response = client.post("/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def test_ingest_search_delete_search(client: httpx.Client) -> None:
    report = client.post("/ingest", json={"documents": DOCS})
    assert report.status_code == 200, report.text
    assert report.json() | {"seconds": 0} == {
        "added": 3, "updated": 0, "unchanged": 0, "failed": 0, "chunks": 3, "truncated": 0,
        "deleted": 0, "seconds": 0, "failures": [], "count": 3,
    }  # fmt: skip
    hits = search(client, DOCS[1]["text"], k=3)
    assert hits[0]["doc_id"] == "dogs" and hits[0]["text"] == DOCS[1]["text"]
    assert hits[0]["metadata"] == {"lang": "en"} and len(hits) == 3
    assert [h["doc_id"] for h in search(client, "x", k=3, filter={"lang": "de"})] == ["katzen"]
    assert [h["doc_id"] for h in search(client, "x", filter={"year": {"$gte": 2020}})] == ["katzen"]
    assert len(search(client, "x", k=10, doc_level=True)) == 3

    deleted = client.delete("/documents/dogs")
    assert deleted.status_code == 200 and deleted.json() == {
        "doc_id": "dogs",
        "deleted": 1,
        "count": 2,
    }
    after = search(client, DOCS[1]["text"], k=3)
    assert "dogs" not in {h["doc_id"] for h in after} and len(after) == 2
    missing = client.delete("/documents/dogs")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "dogs" in missing.json()["detail"]

    again = client.post("/ingest", json={"documents": DOCS}).json()  # idempotent
    assert (again["added"], again["unchanged"], again["count"]) == (1, 2, 3)
    slash = client.post("/ingest", json={"documents": [{"id": "notes/a.md", "text": "a note"}]})
    assert slash.status_code == 200
    assert client.delete("/documents/notes/a.md").json()["deleted"] == 1


def test_health_and_openapi_need_no_key(server: ServerProcess) -> None:
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["auth"] is True and health["dimension"] == 32
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert {"/ingest", "/search", "/documents/{doc_id}", "/health"} <= set(schema["paths"])
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    search_body = schema["components"]["schemas"]["SearchRequest"]["properties"]
    assert {
        "query", "k", "filter", "doc_level", "rerank", "mode", "fusion", "alpha", "rrf_k",
        "candidates",
    } == set(search_body)  # fmt: skip
    assert search_body["mode"]["enum"] == ["dense", "lexical", "hybrid"]
    assert search_body["fusion"]["enum"] == ["rrf", "weighted"]
    assert health["modes"] == ["dense", "lexical", "hybrid"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}],
    ids=["missing", "wrong-header", "wrong-bearer", "no-scheme"],
)
def test_wrong_api_key_is_401_and_changes_nothing(
    server: ServerProcess, client: httpx.Client, headers: dict[str, str]
) -> None:
    before = count(client)
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as anonymous:
        for response in (
            anonymous.post("/ingest", json={"documents": [{"id": "x", "text": "intruder"}]}),
            anonymous.post("/search", json={"query": "cats"}),
            anonymous.delete("/documents/cats"),
        ):
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthorized"
            assert "X-API-Key" in response.json()["detail"]
            assert response.headers["www-authenticate"] == "Bearer"
    assert count(client) == before
    bearer = httpx.post(
        f"{server.url}/search",
        json={"query": "cats"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert bearer.status_code == 200


def test_oversized_bodies_are_413_and_change_nothing(client: httpx.Client) -> None:
    before = count(client)
    big = {"documents": [{"id": f"big-{i}", "text": "word " * 200} for i in range(30)]}
    declared = client.post("/ingest", json=big)  # Content-Length over the limit
    assert declared.status_code == 413
    assert declared.json()["error"] == "payload_too_large"
    assert f"limit of {MAX_BODY} bytes" in declared.json()["detail"]

    payload = json.dumps(big).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]

    streamed = client.post(
        "/ingest", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"] == "payload_too_large"
    assert count(client) == before


@pytest.mark.parametrize(
    ("body", "status", "code", "detail"),
    [
        (b'{"documents": [{"id": "x", "text": ', 400, "invalid_json", "not valid JSON"),
        (b'{"documents": "x"}', 422, "invalid_body", "body.documents"),
        (b'{"documents": [{"id": "x"}]}', 422, "invalid_body", "body.documents.0.text"),
        (b'{"documents": [{"id": "", "text": "t"}]}', 422, "invalid_body", "body.documents.0.id"),
        (b'{"documents": []}', 422, "invalid_body", "at least 1 item"),
        (b'{"documents": [{"id": 1, "text": "t", "meta": {}}]}', 422, "invalid_body", "meta"),
        (b"[1, 2]", 422, "invalid_body", "body"),
    ],
    ids=["truncated", "not-a-list", "no-text", "empty-id", "empty", "unknown-key", "array"],
)
def test_malformed_ingest_is_4xx_with_a_clear_message(
    client: httpx.Client, body: bytes, status: int, code: str, detail: str
) -> None:
    before = count(client)
    response = client.post("/ingest", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert detail in response.json()["detail"]
    assert count(client) == before


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"query": "x", "filter": {"lang": {"$like": "e%"}}}, 400, "unknown operator(s) ['$like']"),
        ({"query": "x", "filter": {"year": {"$gt": "2020"}}}, 400, "$gt needs a number"),
        ({"query": "x", "k": 0}, 422, "body.k: Input should be greater than or equal to 1"),
        ({"query": "x", "k": 5000}, 400, "k must be <= 1000"),
        ({"query": ""}, 422, "body.query"),
        ({"query": "x", "rerank": True}, 400, "reranking is not configured"),
        ({"query": "x", "mode": "sparse"}, 422, "body.mode: Value error, unknown mode 'sparse';"
         " valid: dense, lexical, hybrid"),
        ({"query": "x", "mode": "hybrid", "fusion": "max"}, 422,
         "body.fusion: Value error, unknown fusion 'max'; valid: rrf, weighted"),
        ({"query": "x", "mode": "hybrid", "alpha": 1.5}, 422, "body.alpha: Input should be less"),
        ({"query": "x", "rrf_k": -1}, 422, "body.rrf_k: Input should be greater than or equal"),
        ({"query": "x", "candidates": 0}, 422, "body.candidates: Input should be greater"),
    ],
    ids=[
        "operator", "range-type", "k-zero", "k-too-big", "empty-query", "no-reranker",
        "unknown-mode", "unknown-fusion", "alpha-range", "rrf-k-range", "candidates-zero",
    ],
)  # fmt: skip
def test_bad_searches_name_the_problem(
    client: httpx.Client, body: dict[str, Any], status: int, detail: str
) -> None:
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_search_modes_through_the_retriever(client: httpx.Client) -> None:
    client.post("/ingest", json={"documents": DOCS})
    lexical = search(client, "mail carrier", k=3, mode="lexical")
    assert [h["doc_id"] for h in lexical] == ["dogs"]  # BM25: only that text has the words
    assert lexical[0]["lexical_rank"] == 1 and lexical[0]["dense_score"] is None
    assert lexical[0]["score"] == lexical[0]["lexical_score"] > 0
    dense = search(client, "mail carrier", k=3)
    assert {h["dense_rank"] for h in dense} == {1, 2, 3} and dense[0]["lexical_rank"] is None
    hybrid = search(client, "mail carrier", k=3, mode="hybrid", rrf_k=10)
    by_id = {h["doc_id"]: h for h in hybrid}
    assert len(hybrid) == 3 and by_id["dogs"]["lexical_rank"] == 1
    dense_rank = by_id["dogs"]["dense_rank"]
    assert by_id["dogs"]["score"] == pytest.approx(1 / 11 + 1 / (10 + dense_rank))
    weighted = search(
        client, "mail carrier", k=3, mode="hybrid", fusion="weighted", alpha=0.0, candidates=5
    )
    assert weighted[0]["doc_id"] == "dogs" and weighted[0]["score"] == pytest.approx(1.0)
    only_de = search(client, "Katzen", k=3, mode="hybrid", filter={"lang": "de"})
    assert [h["doc_id"] for h in only_de] == ["katzen"]


def test_non_json_body_is_415(client: httpx.Client) -> None:
    response = client.post("/search", content=b"query=x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.json()["detail"]


def test_concurrent_searches_match_sequential_ones(
    server: ServerProcess, client: httpx.Client
) -> None:
    client.post("/ingest", json={"documents": DOCS})
    # Settings mixed within one burst: requests that share a store search must share settings.
    variants: list[dict[str, Any]] = [
        {"k": 2},
        {"k": 1},
        {"k": 2, "filter": {"lang": "en"}},
        {"k": 3, "filter": {"lang": {"$ne": "en"}}},
        {"k": 2, "doc_level": True},
        {"k": 2, "mode": "lexical"},
        {"k": 2, "mode": "hybrid"},
    ]
    bodies = [
        {"query": f"{doc['text']} {i}", **variants[(i + n) % len(variants)]}
        for i in range(8)
        for n, doc in enumerate(DOCS)
    ]
    expected = [search(client, **body) for body in bodies]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=60
        ) as aclient:
            return await asyncio.gather(*(aclient.post("/search", json=body) for body in bodies))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    for got, want, body in zip(responses, expected, bodies, strict=True):
        hits = got.json()["hits"]
        assert [h["point_id"] for h in hits] == [h["point_id"] for h in want], body
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in want], abs=1e-5)
        assert len(hits) <= body["k"]


def test_sigterm_flushes_and_exits_cleanly(tmp_path: Path, tiny_model_dir: Path) -> None:
    index = tmp_path / "index"
    process = ServerProcess(
        tmp_path / "log",
        "--index",
        str(index),
        "--backend",
        "exact",
        "--model",
        str(tiny_model_dir),
    )
    try:
        response = httpx.post(f"{process.url}/ingest", json={"documents": DOCS}, timeout=60)
        assert response.status_code == 200 and response.json()["count"] == 3
        assert httpx.get(f"{process.url}/health", timeout=30).json()["auth"] is False
    finally:
        assert process.stop(), process.log_text
    with ExactStore(index, read_only=True) as store:
        assert store.count() == 3


# -- in-process: settings the shared server does not use ------------------------------------------


class FavourDogs:
    def score(self, query: str, passages: list[str]) -> list[float]:
        return [1.0 if "Dogs" in p else 0.0 for p in passages]


def test_rerank_and_read_only(tmp_path: Path, tiny_encoder: BiEncoder) -> None:
    from fastapi.testclient import TestClient

    store = StoreConfig(index=str(tmp_path / "index"))
    app = create_app(ServerConfig(store=store), encoder=tiny_encoder, reranker=FavourDogs())
    with TestClient(app) as http:
        assert http.post("/ingest", json={"documents": DOCS}).status_code == 200
        hits = http.post("/search", json={"query": DOCS[0]["text"], "k": 2, "rerank": True})
        first = hits.json()["hits"][0]
        assert first["doc_id"] == "dogs" and first["rerank_score"] == 1.0
        assert first["first_stage_score"] != first["score"]
        lexical = http.post(
            "/search", json={"query": "cats", "k": 2, "rerank": True, "mode": "lexical"}
        ).json()["hits"]
        assert lexical[0]["doc_id"] == "cats" and lexical[0]["rerank_score"] == 0.0
        plain = http.post("/search", json={"query": DOCS[0]["text"], "k": 2}).json()["hits"]
        assert plain[0]["rerank_score"] is None  # the reranker only when the request asks
        assert http.get("/health").json()["rerank"] is True
    read_only = create_app(ServerConfig(store=store, read_only=True), encoder=tiny_encoder)
    with TestClient(read_only) as http:
        assert http.post("/search", json={"query": "cats"}).status_code == 200
        for response in (
            http.post("/ingest", json={"documents": DOCS}),
            http.delete("/documents/cats"),
        ):
            assert response.status_code == 403 and "read-only" in response.json()["detail"]


def test_cli_and_http_hits_are_the_same_json(
    tmp_path: Path, tiny_encoder: BiEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from sbert_retrieval.documents import Document
    from sbert_retrieval.pipeline import IngestionPipeline
    from sbert_retrieval.stores import HnswStore

    index = tmp_path / "index"
    with HnswStore(index, tiny_encoder.spec()) as store:
        IngestionPipeline(tiny_encoder, store).ingest_records(
            [Document(d["id"], d["text"], d["metadata"]) for d in DOCS]
        )
    app = create_app(
        ServerConfig(store=StoreConfig(index=str(index)), read_only=True), encoder=tiny_encoder
    )
    with TestClient(app) as http:
        for mode in ("dense", "lexical", "hybrid"):
            argv = ["search", "--index", str(index), "cats purr", "-k", "3", "--mode", mode]
            assert main([*argv, "--json"]) == 0
            cli_hits = json.loads(capsys.readouterr().out)
            response = http.post("/search", json={"query": "cats purr", "k": 3, "mode": mode})
            http_hits = response.json()["hits"]
            assert http_hits and [set(h) for h in cli_hits] == [set(h) for h in http_hits]
            assert "point_id" in http_hits[0] and "lexical_rank" in http_hits[0]
            for cli_hit, http_hit in zip(cli_hits, http_hits, strict=True):
                floats = {k for k, v in http_hit.items() if isinstance(v, float)}
                assert {k: cli_hit[k] for k in floats} == pytest.approx(
                    {k: http_hit[k] for k in floats}, abs=1e-5
                )
                assert {k: v for k, v in cli_hit.items() if k not in floats} == {
                    k: v for k, v in http_hit.items() if k not in floats
                }


def test_lexical_modes_on_a_store_without_a_lexical_index_are_400(
    tmp_path: Path, tiny_encoder: BiEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from sbert_retrieval.stores.base import VectorStore as BaseStore

    for method in ("lexical_search", "hybrid_search"):  # as a store without a BM25 index
        if hasattr(BaseStore, method):
            monkeypatch.setattr(ExactStore, method, getattr(BaseStore, method))
    store = StoreConfig(backend="exact", index=str(tmp_path / "index"))
    with TestClient(create_app(ServerConfig(store=store), encoder=tiny_encoder)) as http:
        assert http.post("/ingest", json={"documents": DOCS}).status_code == 200
        assert http.get("/health").json()["modes"] == ["dense"]
        for mode in ("lexical", "hybrid"):
            response = http.post("/search", json={"query": "cats", "mode": mode})
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "unsupported_mode"
            assert "lexical (BM25) index" in response.json()["detail"]
            assert "valid here: dense" in response.json()["detail"]
        assert http.post("/search", json={"query": "cats"}).status_code == 200


def make_index(path: Path, encoder: BiEncoder, query_prefix: str = "") -> None:
    """An exact index holding one document (an empty store writes nothing to disk)."""
    from sbert_retrieval.documents import Document
    from sbert_retrieval.pipeline import IngestionPipeline

    with ExactStore(path, encoder.spec(query_prefix=query_prefix)) as store:
        IngestionPipeline(encoder, store).ingest_records([Document("d", "some text")])


def test_config_errors_are_actionable(tmp_path: Path, tiny_encoder: BiEncoder) -> None:
    store = StoreConfig(index=str(tmp_path / "index"))
    with pytest.raises(ValueError, match="max_body_bytes must be an integer >= 1"):
        ServerConfig(store=store, max_body_bytes=0)
    with pytest.raises(ValueError, match=r"max_k must be in \[1, 10000\]"):
        ServerConfig(store=store, max_k=0)
    assert "secret" not in repr(ServerConfig(store=store, api_key="secret"))
    os.environ.pop("MY_KEY_VAR", None)
    assert ServerConfig(store=store, api_key_env="MY_KEY_VAR").resolved_api_key() is None
    with pytest.raises(Exception, match="holds no index"):
        create_app(ServerConfig(store=store, read_only=True), encoder=tiny_encoder)
    make_index(tmp_path / "other", tiny_encoder, query_prefix="q: ")
    with pytest.raises(ValueError, match="prefixes cannot change"):
        create_app(
            ServerConfig(store=StoreConfig(index=str(tmp_path / "other")), query_prefix="x: "),
            encoder=tiny_encoder,
        )


def test_model_mismatch_is_refused(tmp_path: Path, tiny_encoder: BiEncoder) -> None:
    from tests.conftest import build_tiny_model

    other = BiEncoder(build_tiny_model(tmp_path / "other-model", seed=1), device="cpu")
    make_index(tmp_path / "index", other)
    with pytest.raises(ModelMismatchError):
        create_app(
            ServerConfig(store=StoreConfig(index=str(tmp_path / "index"))), encoder=tiny_encoder
        )


def test_query_batcher_coalesces_and_propagates_errors() -> None:
    import numpy as np

    sizes: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("encoder failed")
        time.sleep(0.05)
        return np.asarray([[len(t)] for t in texts], dtype=np.float32)

    batcher = QueryBatcher(encode, max_batch=4)
    try:
        futures = [batcher.submit("x" * i) for i in range(1, 10)]
        assert [f.result(timeout=10)[0] for f in futures] == list(range(1, 10))
        assert max(sizes) <= 4 and len(sizes) < 9  # some queries shared a forward pass
        with pytest.raises(RuntimeError, match="encoder failed"):
            batcher.submit("boom").result(timeout=10)
        assert batcher.submit("ok").result(timeout=10)[0] == 2  # still serving
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="shut down"):
        batcher.submit("late")


def test_coalescer_groups_by_key_and_fails_only_the_failing_group() -> None:
    calls: list[list[tuple[str, int]]] = []
    gate = threading.Event()

    def process(items: list[tuple[str, int]]) -> list[int]:
        gate.wait(10)  # hold the first call so that the rest queue up into one batch
        calls.append(items)
        if any(name == "bad" for name, _ in items):
            raise RuntimeError("this group failed")
        return [value * 10 for _, value in items]

    coalescer: Coalescer[tuple[str, int], int] = Coalescer(
        process, max_batch=16, key=lambda item: item[0]
    )
    try:
        first = coalescer.submit(("a", 0))
        time.sleep(0.1)  # the thread has taken the first item alone
        items = [("a", 1), ("b", 2), ("bad", 3), ("a", 4), ("b", 5)]
        futures = [coalescer.submit(item) for item in items]
        gate.set()
        assert first.result(timeout=10) == 0
        assert [f.result(timeout=10) for n, f in enumerate(futures) if n != 2] == [10, 20, 40, 50]
        with pytest.raises(RuntimeError, match="this group failed"):
            futures[2].result(timeout=10)
        # One call per key, arrival order kept within each; no call mixed two keys.
        assert calls[1:] == [[("a", 1), ("a", 4)], [("b", 2), ("b", 5)], [("bad", 3)]]
        assert coalescer.submit(("c", 6)).result(timeout=10) == 60  # still serving
    finally:
        coalescer.close()


def test_serve_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", "hnsw"]) == 1
    assert "--index DIR is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--index", "i", "--port", "70000"])
    assert exit_info.value.code == 2


def test_docker_image_command_is_a_valid_serve_invocation() -> None:
    from sbert_retrieval.cli import build_parser

    dockerfile = (REPO / "docker" / "Dockerfile").read_text(encoding="utf-8")

    def instruction(name: str) -> list[str]:
        match = re.search(rf"^{name} (\[.*\])$", dockerfile, re.MULTILINE)
        assert match is not None, f"no {name} in docker/Dockerfile"
        value: list[str] = json.loads(match.group(1))
        return value

    entrypoint, command = instruction("ENTRYPOINT"), instruction("CMD")
    assert entrypoint == ["sbert-retrieval"]
    args = build_parser().parse_args(command)
    assert (args.command, args.index, args.host, args.port) == ("serve", "/index", "0.0.0.0", 8000)
    assert '"/src[minilm,server]"' in dockerfile
