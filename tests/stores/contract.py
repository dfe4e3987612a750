"""The contract every VectorStore passes.

Subclass :class:`StoreContract` and provide ``open_store``.

``open_store(spec)`` must return a new store object over the *same* storage each time it is called
within one test (a reopen), so persistence is checked the same way for every backend.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from sbert_retrieval.errors import InvalidFilterError, ModelMismatchError
from sbert_retrieval.models import EmbeddingSpec
from sbert_retrieval.stores.base import MAX_PAYLOAD_BYTES, Record, VectorStore
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

    # -- replacing, refusing and copying ----------------------------------------------------
    def test_reupsert_next_to_a_deleted_slot_leaves_no_ghost(self, open_store: OpenStore) -> None:
        """A re-upsert while a deleted slot exists must replace the point, never add a second.

        hnswlib's ``add_items(..., replace_deleted=True)`` on an existing label puts the new
        vector in the deleted slot and leaves the old node live under the same label: search
        then returns the id twice, and once the id is deleted, the ghost's label is unknown.
        """
        vectors = unit_vectors(20)
        records = make_records(vectors)
        moved = unit_vectors(1, seed=77)[0]
        queries = np.vstack([moved, vectors])

        def check_replaced(store: VectorStore) -> None:
            assert store.count() == 19
            for row in store.search(queries, 19):
                ids = [h.id for h in row]
                assert len(ids) == len(set(ids)) == 19, ids
                assert pid(0) not in ids
                assert ids.count(pid(5)) == 1
            for query in (moved, vectors[5]):
                [row] = store.search(query, 19)
                [hit] = [h for h in row if h.id == pid(5)]
                assert hit.score == pytest.approx(float(np.dot(moved, query)), abs=1e-4)
            top = store.search(moved, 1)[0][0]
            assert top.id == pid(5)
            assert top.score == pytest.approx(1.0, abs=1e-4)
            [record] = store.get([pid(5)])
            np.testing.assert_allclose(record.vector, moved, atol=1e-5)

        def check_deleted(store: VectorStore) -> None:
            assert store.count() == 18
            assert store.get([pid(5)]) == []
            for k in (1, 5, 18, 40):
                for row in store.search(queries, k):
                    ids = [h.id for h in row]
                    assert len(ids) == len(set(ids)) == min(k, 18), ids
                    assert pid(5) not in ids and pid(0) not in ids
            # doc-5 holds points 5 and 15; only 15 is left.
            for row in store.search(queries, 5, filter={"doc_id": "doc-5"}):
                assert [h.id for h in row] == [pid(15)]

        with open_store(SPEC) as store:
            store.upsert(records)
            assert store.delete([pid(0)]) == 1  # leaves a deleted slot
            store.upsert([Record(pid(5), moved, records[5].payload)])
            check_replaced(store)
        with open_store(None) as reopened:
            check_replaced(reopened)
            assert reopened.delete([pid(5)]) == 1
            check_deleted(reopened)
        with open_store(None) as reopened:
            check_deleted(reopened)

    @pytest.mark.parametrize("kind", ["lone-surrogate", "nan", "oversized"])
    def test_a_refused_payload_blocks_nothing(self, open_store: OpenStore, kind: str) -> None:
        """One bad payload is refused with its id; nothing of its batch is stored, and later
        upserts, flush, close and reopen work with every acknowledged record present."""
        bad_metadata: dict[str, object] = {
            "lone-surrogate": {"lang": "\ud800"},
            "nan": {"lang": "en", "score": float("nan")},
            "oversized": {"lang": "en", "blob": "x" * MAX_PAYLOAD_BYTES},
        }[kind]
        vectors = unit_vectors(14)
        good = make_records(vectors)
        expected = {r.id: copy.deepcopy(dict(r.payload)) for r in good}
        bad = Record(pid(100), vectors[13], {"doc_id": "doc-bad", "metadata": bad_metadata})
        with open_store(SPEC) as store:
            store.upsert(good[:5])
            store.flush()
            with pytest.raises(ValueError, match=re.escape(pid(100))):
                store.upsert([good[5], bad, good[6]])
            assert store.count() == 5
            assert store.get([pid(5), pid(100), pid(6)]) == []
            assert store.ids_by_document(["doc-bad"]) == {}
            # As a replacement of a stored point, or as new metadata, it changes nothing either.
            replacing = Record(pid(0), vectors[13], {"doc_id": "doc-0", "metadata": bad_metadata})
            with pytest.raises(ValueError, match=re.escape(pid(0))):
                store.upsert([replacing])
            with pytest.raises(ValueError, match=re.escape(pid(1))):
                store.set_payloads({pid(1): {"doc_id": "doc-1", "metadata": bad_metadata}})
            store.upsert(good[5:10])
            store.flush()
            assert store.count() == 10
            for i, record in enumerate(store.get([pid(0), pid(1)])):
                np.testing.assert_allclose(record.vector, vectors[i], atol=1e-5)
                assert dict(record.payload) == expected[record.id]
        with open_store(None) as reopened:
            assert reopened.count() == 10
            got = reopened.get([pid(i) for i in range(14)] + [pid(100)])
            assert [r.id for r in got] == [pid(i) for i in range(10)]
            for record in got:
                assert dict(record.payload) == expected[record.id]
            assert reopened.search(vectors[7], 1)[0][0].id == pid(7)
            assert reopened.search(vectors[13], 10, filter={"doc_id": "doc-bad"}) == [[]]
            reopened.upsert(good[10:13])
        with open_store(None) as again:
            assert again.count() == 13
            assert again.get([pid(100)]) == []

    def test_set_payloads_changes_metadata_and_keeps_the_vector(
        self, open_store: OpenStore
    ) -> None:
        vectors = unit_vectors(30)
        records = make_records(vectors)
        old = dict(records[4].payload)
        assert old["metadata"]["lang"] == "de"
        new = {**old, "text": "retagged", "metadata": {**old["metadata"], "lang": "sv"}}
        updated = [Record(r.id, r.vector, new) if r.id == pid(4) else r for r in records]

        def check(store: VectorStore) -> None:
            assert store.count() == 30
            [record] = store.get([pid(4)])
            np.testing.assert_allclose(record.vector, vectors[4], atol=1e-5)
            assert dict(record.payload) == new
            assert store.get_payloads([pid(4)]) == {pid(4): new}
            [row] = store.search(vectors[4], 5, filter={"lang": "sv"})
            assert [h.id for h in row] == [pid(4)]
            assert row[0].score == pytest.approx(1.0, abs=1e-4)
            assert row[0].payload["text"] == "retagged"
            [row] = store.search(vectors[4], 30, filter={"lang": "de"})
            assert pid(4) not in [h.id for h in row]
            assert [h.id for h in row] == brute_force(updated, vectors[4], 30, {"lang": "de"})
            top = store.search(vectors[4], 1)[0][0]
            assert top.id == pid(4)
            assert top.score == pytest.approx(1.0, abs=1e-4)

        with open_store(SPEC) as store:
            store.upsert(records)
            assert store.set_payloads({pid(4): new, pid(999): new}) == 1
            assert store.get([pid(999)]) == []
            check(store)
        with open_store(None) as reopened:
            check(reopened)

    def test_stores_hand_out_copies(self, open_store: OpenStore) -> None:
        """Mutating what went in, or what came out, never changes what the store holds."""
        vectors = unit_vectors(10)
        expected_vectors = vectors.copy()
        records = [Record(r.id, r.vector.copy(), r.payload) for r in make_records(vectors)]
        expected = {r.id: copy.deepcopy(dict(r.payload)) for r in records}

        def check(store: VectorStore) -> None:
            got = store.get([pid(i) for i in range(10)])
            assert [r.id for r in got] == [pid(i) for i in range(10)]
            for i, record in enumerate(got):
                np.testing.assert_allclose(record.vector, expected_vectors[i], atol=1e-5)
                assert dict(record.payload) == expected[record.id]
            [[hit]] = store.search(expected_vectors[3], 1)
            assert hit.id == pid(3) and dict(hit.payload) == expected[pid(3)]
            assert store.search(expected_vectors[3], 5, filter={"lang": "xx"}) == [[]]
            assert store.ids_by_document(["hacked"]) == {}
            assert store.get_payloads([pid(5)]) == {pid(5): expected[pid(5)]}

        with open_store(SPEC) as store:
            store.upsert(records)
            # The caller's record, after the upsert.
            records[2].payload["metadata"]["lang"] = "xx"  # type: ignore[index]
            records[2].payload["text"] = "changed"  # type: ignore[index]
            records[2].vector[:] = 0
            # A search hit.
            [[hit]] = store.search(expected_vectors[3], 1)
            hit.payload["metadata"]["lang"] = "xx"
            hit.payload["doc_id"] = "hacked"  # type: ignore[index]
            # A record from get(), vector included (a read-only array is fine too).
            [record] = store.get([pid(4)])
            record.payload["metadata"]["lang"] = "xx"
            record.payload["metadata"]["tags"].append("xx")
            if record.vector.flags.writeable:
                record.vector[:] = 0
            # A payload from get_payloads().
            store.get_payloads([pid(5)])[pid(5)]["metadata"]["lang"] = "xx"
            check(store)
        with open_store(None) as reopened:
            check(reopened)
