"""The contract every VectorStore passes.

Subclass :class:`StoreContract` and provide ``open_store``.

``open_store(spec)`` must return a new store object over the *same* storage each time it is called
within one test (a reopen), so persistence is checked the same way for every backend.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from sbert_retrieval.errors import InvalidFilterError, ModelMismatchError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.base import Record, VectorStore
from sbert_retrieval.stores.filters import parse_filter

DIM = 16
SPEC = EmbeddingSpec(
    model="test-model",
    dimension=DIM,
    pooling="mean",
    normalize=True,
    max_seq_length=128,
    fingerprint="0123456789abcdef",
)
OpenStore = Callable[..., VectorStore]


def unit_vectors(count: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"point-{i}"))


def make_records(vectors: np.ndarray, *, docs: int = 10, offset: int = 0) -> list[Record]:
    langs = ("en", "de", "fr")
    return [
        Record(
            pid(offset + i),
            vectors[i],
            {
                "doc_id": f"doc-{(offset + i) % docs}",
                "chunk_index": offset + i,
                "text": f"chunk {offset + i}",
                "start": 0,
                "end": 7,
                "metadata": {
                    "lang": langs[(offset + i) % 3],
                    "year": 2000 + (offset + i) % 25,
                    "tags": ["even" if (offset + i) % 2 == 0 else "odd", f"t{(offset + i) % 5}"],
                    "author": {"name": f"a{(offset + i) % 4}"},
                },
            },
        )
        for i in range(len(vectors))
    ]


def brute_force(records: list[Record], query: np.ndarray, k: int, flt: object = None) -> list[str]:
    parsed = parse_filter(flt)  # type: ignore[arg-type]
    kept = [r for r in records if parsed is None or parsed.matches(r.payload)]
    scores = np.array([float(np.dot(r.vector, query)) for r in kept])
    order = np.argsort(-scores, kind="stable")[:k]
    return [kept[i].id for i in order]


class StoreContract:
    """Behaviour shared by every backend."""

    #: Minimum fraction of exact top-k ids an approximate store must return.
    min_recall: float = 1.0

    @pytest.fixture
    def open_store(self, tmp_path) -> OpenStore:  # type: ignore[no-untyped-def]
        raise NotImplementedError

    # -- basics -----------------------------------------------------------------------------
    def test_new_store_is_empty(self, open_store: OpenStore) -> None:
        with open_store(SPEC) as store:
            assert store.count() == 0
            assert store.dimension == DIM
            assert store.search(unit_vectors(1)[0], 5) == [[]]

    def test_upsert_count_get(self, open_store: OpenStore) -> None:
        vectors = unit_vectors(50)
        records = make_records(vectors)
        with open_store(SPEC) as store:
            store.upsert(records)
            assert store.count() == 50
            got = store.get([pid(3), "missing", pid(7)])
            assert [r.id for r in got] == [pid(3), pid(7)]
            np.testing.assert_allclose(got[0].vector, vectors[3], atol=1e-6)
            assert got[0].payload["doc_id"] == "doc-3"
            assert got[0].payload["metadata"]["author"] == {"name": "a3"}

    def test_reupsert_is_idempotent_and_replaces(self, open_store: OpenStore) -> None:
        vectors = unit_vectors(30)
        with open_store(SPEC) as store:
            store.upsert(make_records(vectors))
            store.upsert(make_records(vectors))
            assert store.count() == 30
            moved = unit_vectors(1, seed=99)[0]
            store.upsert([Record(pid(5), moved, {"doc_id": "doc-5", "text": "new"})])
            assert store.count() == 30
            [record] = store.get([pid(5)])
            np.testing.assert_allclose(record.vector, moved, atol=1e-6)
            assert record.payload["text"] == "new"
            top = store.search(moved, 1)[0][0]
            assert top.id == pid(5)
            assert top.score == pytest.approx(1.0, abs=1e-4)

    def test_delete_and_ids_by_document(self, open_store: OpenStore) -> None:
        vectors = unit_vectors(40)
        with open_store(SPEC) as store:
            store.upsert(make_records(vectors, docs=4))
            by_doc = store.ids_by_document(["doc-1", "doc-9"])
            assert set(by_doc) == {"doc-1"}
            assert by_doc["doc-1"] == {pid(i) for i in range(1, 40, 4)}
            assert store.delete([pid(1), pid(5), "unknown"]) == 2
            assert store.count() == 38
            assert store.get([pid(1)]) == []
            assert store.delete_documents(["doc-2"]) == 10
            assert store.count() == 28
            assert store.ids_by_document(["doc-2"]) == {}
            hits = store.search(vectors, 40)
            assert all(
                h.payload["doc_id"] != "doc-2" and h.id not in (pid(1), pid(5))
                for row in hits
                for h in row
            )

    # -- search -----------------------------------------------------------------------------
    def test_top_k_matches_brute_force(self, open_store: OpenStore) -> None:
        vectors = unit_vectors(400)
        records = make_records(vectors)
        queries = unit_vectors(20, seed=1)
        with open_store(SPEC) as store:
            store.upsert(records)
            results = store.search(queries, 10)
        found = total = 0
        for query, row in zip(queries, results, strict=True):
            expected = brute_force(records, query, 10)
            scores = [h.score for h in row]
            assert scores == sorted(scores, reverse=True)
            for hit in row:
                exact = float(np.dot(vectors[int(hit.payload["chunk_index"])], query))
                assert hit.score == pytest.approx(exact, abs=1e-4)
            found += len(set(expected) & {h.id for h in row})
            total += len(expected)
            assert row[0].id == expected[0]
        assert found / total >= self.min_recall

    def test_k_larger_than_count_is_clamped(self, open_store: OpenStore) -> None:
        with open_store(SPEC) as store:
            store.upsert(make_records(unit_vectors(5)))
            store.delete([pid(0)])
            [row] = store.search(unit_vectors(1, seed=3), 50)
            assert sorted(h.id for h in row) == sorted(pid(i) for i in range(1, 5))

    def test_rejects_bad_queries(self, open_store: OpenStore) -> None:
        with open_store(SPEC) as store:
            store.upsert(make_records(unit_vectors(5)))
            with pytest.raises(ValueError, match="shape"):
                store.search(np.ones(DIM + 1, dtype=np.float32), 3)
            with pytest.raises(ValueError, match="k must be"):
                store.search(unit_vectors(1), 0)
            with pytest.raises(ValueError):
                store.upsert(
                    [Record(pid(100), np.ones(DIM + 2, dtype=np.float32), {"doc_id": "x"})]
                )
            assert store.count() == 5

    # -- filters ----------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "flt",
        [
            {"lang": "de"},
            {"lang": {"$in": ["en", "fr"]}},
            {"year": {"$gte": 2010, "$lt": 2015}},
            {"doc_id": "doc-3"},
            {"tags": "even"},
            {"author.name": "a2", "lang": "en"},
            {"lang": "none-such"},
        ],
    )
    def test_filters_match_brute_force(self, open_store: OpenStore, flt: dict[str, object]) -> None:
        vectors = unit_vectors(300)
        records = make_records(vectors)
        queries = unit_vectors(5, seed=2)
        with open_store(SPEC) as store:
            store.upsert(records)
            results = store.search(queries, 7, filter=flt)
        for query, row in zip(queries, results, strict=True):
            expected = brute_force(records, query, 7, flt)
            assert [h.id for h in row] == expected
            parsed = parse_filter(flt)
            assert parsed is None or all(parsed.matches(h.payload) for h in row)

    def test_invalid_filter_is_an_error(self, open_store: OpenStore) -> None:
        with open_store(SPEC) as store:
            store.upsert(make_records(unit_vectors(5)))
            with pytest.raises(InvalidFilterError, match=r"\$regex"):
                store.search(unit_vectors(1), 3, filter={"lang": {"$regex": "^e"}})

    # -- identity and persistence -----------------------------------------------------------
    def test_persists_across_reopen(self, open_store: OpenStore) -> None:
        vectors = unit_vectors(60)
        with open_store(SPEC) as store:
            store.upsert(make_records(vectors))
            store.delete([pid(0)])
        with open_store(None) as reopened:
            assert reopened.spec == SPEC
            assert reopened.count() == 59
            assert reopened.search(vectors[10], 1)[0][0].id == pid(10)
            assert reopened.get([pid(0)]) == []
            assert reopened.ids_by_document(["doc-0"])["doc-0"] == {
                pid(i) for i in range(10, 60, 10)
            }

    def test_an_empty_store_keeps_its_spec(self, open_store: OpenStore) -> None:
        with open_store(SPEC) as store:
            assert store.count() == 0
        with open_store(None) as reopened:
            assert reopened.spec == SPEC
            assert reopened.count() == 0
            assert reopened.search(unit_vectors(1)[0], 3) == [[]]

    def test_model_mismatch_is_refused(self, open_store: OpenStore) -> None:
        with open_store(SPEC) as store:
            store.upsert(make_records(unit_vectors(3)))
        other = EmbeddingSpec(
            **{**SPEC.to_dict(), "fingerprint": "ffffffffffffffff", "model": "other"}
        )
        with pytest.raises(ModelMismatchError, match="fingerprint"):
            open_store(other)
        prefixed = EmbeddingSpec(**{**SPEC.to_dict(), "query_prefix": "query: "})
        with pytest.raises(ModelMismatchError, match="query_prefix"):
            open_store(prefixed)
        # Same weights under another name or path are the same model.
        renamed = EmbeddingSpec(**{**SPEC.to_dict(), "model": "/some/local/copy"})
        with open_store(renamed) as store:
            assert store.count() == 3

    # -- concurrency ------------------------------------------------------------------------
    def test_concurrent_searches_during_writes(self, open_store: OpenStore) -> None:
        vectors = unit_vectors(1200, seed=5)
        errors: list[BaseException] = []
        with open_store(SPEC) as store:
            store.upsert(make_records(vectors[:200]))
            stop = threading.Event()

            def search_loop(seed: int) -> None:
                queries = unit_vectors(4, seed=seed)
                try:
                    while not stop.is_set():
                        for row in store.search(queries, 5):
                            assert 1 <= len(row) <= 5
                            assert all(np.isfinite(h.score) for h in row)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=search_loop, args=(s,)) for s in range(8)]
            for thread in threads:
                thread.start()
            try:
                for start in range(200, 1200, 100):
                    store.upsert(make_records(vectors[start : start + 100], offset=start))
                    store.delete([pid(start - 1)])
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            assert not errors, errors[:3]
            assert store.count() == 1200 - 10
