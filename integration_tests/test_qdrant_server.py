"""QdrantStore against a real Qdrant server, over gRPC and over REST.

How to run (see ``conftest.py``)::

    docker run --rm -p 6333:6333 -p 6334:6334 qdrant/qdrant:v1.20.0
    QDRANT_URL=http://localhost:6333 pytest integration_tests

Skipped when ``QDRANT_URL`` is unset.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from sbert_retrieval.errors import ModelMismatchError, StoreError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.base import Record
from sbert_retrieval.stores.filters import parse_filter
from sbert_retrieval.stores.qdrant import QdrantStore, RetryConfig

DIM = 16
RETRY = RetryConfig(max_attempts=4, initial_backoff=0.2, max_backoff=2.0, max_total_seconds=20)
TRANSPORTS = pytest.mark.parametrize("prefer_grpc", [True, False], ids=["grpc", "rest"])


def make_spec(**changes: Any) -> EmbeddingSpec:
    base = EmbeddingSpec(
        model="test/model",
        dimension=DIM,
        pooling="mean",
        normalize=True,
        max_seq_length=128,
        fingerprint="integration",
    )
    return EmbeddingSpec(**{**base.to_dict(), **changes})


def payload(i: int) -> dict[str, Any]:
    return {
        "doc_id": f"doc-{i % 13}",
        "chunk_index": i,
        "text": f"chunk {i}",
        "start": 0,
        "end": 10,
        "metadata": {
            "lang": ["en", "de", "fr"][i % 3],
            "year": 2010 + i % 12,
            "tags": [f"t{i % 4}", f"t{i % 5}"],
            "flag": i % 4 == 0,
            "author": {"name": ["ann", "bob"][i % 2]},
        },
    }


def make_records(n: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        Record(str(uuid.uuid5(uuid.NAMESPACE_URL, f"it-{i}")), vectors[i], payload(i))
        for i in range(n)
    ]


def open_store(url: str, collection: str, spec: EmbeddingSpec | None, **kwargs: Any) -> QdrantStore:
    return QdrantStore(
        collection,
        spec,
        url=url,
        grpc_port=int(os.environ.get("QDRANT_GRPC_PORT", "6334")),
        retry=RETRY,
        **kwargs,
    )


@TRANSPORTS
def test_upsert_search_filter_delete_reopen(
    qdrant_url: str, collection: str, admin_client: QdrantClient, prefer_grpc: bool
) -> None:
    records = make_records(600)
    vectors = np.stack([r.vector for r in records])
    ids = [r.id for r in records]
    queries = vectors[:5] + 0.05
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with open_store(
        qdrant_url,
        collection,
        make_spec(),
        prefer_grpc=prefer_grpc,
        indexed_fields={"lang": "keyword", "year": "integer"},
        batch_points=128,
    ) as store:
        store.upsert(records)
        assert store.count() == 600

        # Top-k equals exact search (a collection this small is searched exactly).
        hits = store.search(queries, 10)
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        for row, want in zip(hits, exact, strict=True):
            assert [h.id for h in row] == [ids[i] for i in want]

        # Filters agree with the shared filter language's own evaluation.
        for spec in (
            {"lang": "de"},
            {"year": {"$gte": 2015, "$lt": 2018}},
            {"tags": {"$in": ["t1", "t3"]}},
            {"author.name": "bob", "flag": True},
            {"doc_id": {"$in": ["doc-1", "doc-2"]}},
        ):
            parsed = parse_filter(spec)
            assert parsed is not None
            expected = {r.id for r in records if parsed.matches(r.payload)}
            found = store.search(queries[:1], 600, filter=spec)[0]
            assert {h.id for h in found} == expected, spec

        got = store.get([ids[3], str(uuid.uuid4()), ids[1]])
        assert [r.id for r in got] == [ids[3], ids[1]]
        assert got[0].payload == records[3].payload
        np.testing.assert_allclose(got[0].vector, records[3].vector, atol=1e-5)

        by_doc = store.ids_by_document(["doc-0", "nope"])
        assert set(by_doc) == {"doc-0"}
        assert by_doc["doc-0"] == {r.id for r in records if r.payload["doc_id"] == "doc-0"}

        assert store.delete([ids[0], ids[1], str(uuid.uuid4())]) == 2
        assert store.delete_documents(["doc-5"]) > 0
        remaining = store.count()

    info = admin_client.get_collection(collection)
    assert info.config.metadata is not None
    assert info.config.metadata["sbert_retrieval"]["embedding_spec"] == make_spec().to_dict()
    schema = info.payload_schema
    assert schema["doc_id"].data_type == models.PayloadSchemaType.KEYWORD
    assert schema["metadata.lang"].data_type == models.PayloadSchemaType.KEYWORD
    assert schema["metadata.year"].data_type == models.PayloadSchemaType.INTEGER

    # Reopen: without a spec the stored one is adopted; another model is refused.
    with open_store(qdrant_url, collection, None, prefer_grpc=prefer_grpc) as store:
        assert store.spec == make_spec()
        assert store.count() == remaining
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        open_store(qdrant_url, collection, make_spec(fingerprint="other"), prefer_grpc=prefer_grpc)
    with pytest.raises(ModelMismatchError, match="dimension"):
        open_store(qdrant_url, collection, make_spec(dimension=DIM * 2), prefer_grpc=prefer_grpc)


@TRANSPORTS
def test_upsert_is_idempotent_and_batched_by_bytes(
    qdrant_url: str, collection: str, prefer_grpc: bool
) -> None:
    text = "x" * 300_000
    records = [
        Record(r.id, r.vector, {**r.payload, "text": text}) for r in make_records(40, seed=1)
    ]
    with open_store(
        qdrant_url, collection, make_spec(), prefer_grpc=prefer_grpc, batch_bytes=2_000_000
    ) as store:
        store.upsert(records)
        store.upsert(records)  # a re-run (deterministic ids) never duplicates
        assert store.count() == 40


def test_missing_collection_without_spec(qdrant_url: str, collection: str) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        open_store(qdrant_url, collection, None)


def test_foreign_collection_is_refused(
    qdrant_url: str, collection: str, admin_client: QdrantClient
) -> None:
    admin_client.create_collection(
        collection, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    admin_client.upsert(
        collection, points=[models.PointStruct(id=str(uuid.uuid4()), vector=[1.0] * DIM)]
    )
    with pytest.raises(StoreError, match="not created by this package"):
        open_store(qdrant_url, collection, make_spec())


def text_records(n: int = 200) -> list[Record]:
    """Records with words of skewed frequencies and distinct lengths (no BM25 ties)."""
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "light",
        "green",
        "table",
        "music",
        "paper",
        "glass",
        "north",
        "winter",
    ]
    rng = np.random.default_rng(7)
    weights = 1.0 / np.arange(1, len(words) + 1)
    return [
        Record(
            r.id,
            r.vector,
            # The first text has no term: its point gets an empty sparse vector.
            {
                **r.payload,
                "text": " ".join(rng.choice(words, i and 3 + i, p=weights / weights.sum())),
            },
        )
        for i, r in enumerate(make_records(n, seed=2))
    ]


@TRANSPORTS
def test_lexical_and_hybrid_equal_local_mode(
    qdrant_url: str, collection: str, admin_client: QdrantClient, prefer_grpc: bool
) -> None:
    """BM25 (sparse vector, Modifier.IDF) and Query API fusion give local mode's answers."""
    records = text_records()
    queries = ["apple river", "winter glass", "north", '((\x00 "', "x" * 50_000]
    vectors = np.stack([r.vector for r in records[:5]]) + 0.1
    flt = {"lang": {"$in": ["en", "fr"]}}
    spec = make_spec()
    with QdrantStore("reference", spec, location=":memory:") as local:
        local.upsert(records)
        want_lexical = local.lexical_search(queries, 50, filter=flt)
        want_hybrid = local.hybrid_search(vectors, queries, 60, filter=flt, candidates=30)
    with open_store(qdrant_url, collection, spec, prefer_grpc=prefer_grpc) as store:
        store.upsert(records)
        got_lexical = store.lexical_search(queries, 50, filter=flt)
        got_hybrid = store.hybrid_search(vectors, queries, 60, filter=flt, candidates=30)
    assert any(want_lexical) and all(want_hybrid)
    for got, want in zip(got_lexical, want_lexical, strict=True):
        assert [r.id for r in got] == [r.id for r in want]
        assert [r.score for r in got] == pytest.approx([r.score for r in want], rel=1e-4)
    for got, want in zip(got_hybrid, want_hybrid, strict=True):
        # k covers every fused point, so equal scores (ties) may come in either order.
        def key(r: Any) -> tuple[float, str]:
            return (-round(r.score, 5), r.id)

        assert sorted(map(key, got)) == sorted(map(key, want))
    lexical = admin_client.get_collection(collection).config.metadata["sbert_retrieval"]["lexical"]  # type: ignore[index]
    assert lexical["avgdl"] == pytest.approx(sum(3 + i for i in range(1, 200)) / 200)


def test_collection_without_the_sparse_vector_names_the_fix(
    qdrant_url: str, collection: str, admin_client: QdrantClient
) -> None:
    spec = make_spec()
    admin_client.create_collection(
        collection,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        metadata={"sbert_retrieval": {"format": 1, "embedding_spec": spec.to_dict()}},
    )
    with open_store(qdrant_url, collection, spec) as store:
        store.upsert(make_records(10))
        assert len(store.search(make_records(1)[0].vector, 3)[0]) == 3
        with pytest.raises(StoreError, match=r"no BM25 sparse vector.*[Rr]e-ingest"):
            store.lexical_search(["chunk"], 3)
