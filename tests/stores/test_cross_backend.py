"""The same data and filters give the same hits on every backend (HNSW, exact, Qdrant).

Every operator of :mod:`sbert_retrieval.stores.filters` is exercised: the local stores answer
filters by SQL, Qdrant by its own filter, and both must select what ``Filter.matches`` selects.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sbert_retrieval.stores import ExactStore, HnswStore, QdrantStore, VectorStore
from tests.stores.contract import SPEC, brute_force, make_records, unit_vectors

FILTERS = [
    None,
    {"lang": "de"},
    {"lang": {"$in": ["en", "fr"]}, "year": {"$gte": 2005, "$lte": 2015}},
    {"tags": "odd", "author.name": "a1"},
    {"doc_id": {"$in": ["doc-1", "doc-7"]}},
    {"year": {"$gt": 2023}},
    {"lang": {"$ne": "de"}},
    {"tags": {"$nin": ["odd", "t1"]}},  # no element may be listed
    {"year": {"$gte": 2010, "$ne": 2012, "$exists": True}},
    {"author": {"$exists": True}, "author.name": {"$exists": True}},  # an object exists
    {"missing": {"$exists": False}, "lang": "fr"},
    {"doc_id": {"$nin": ["doc-1", "doc-2", "doc-3"]}},
    {"$or": [{"lang": "de"}, {"year": {"$gte": 2020}}]},
    {
        "$or": [{"tags": "t2", "lang": {"$ne": "en"}}, {"author.name": {"$in": ["a1"]}}],
        "year": {"$lt": 2018},
    },
    {"$and": [{"tags": "even"}, {"tags": {"$ne": "t4"}}], "$or": [{}, {"lang": "en"}]},
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VectorStore]:
    records = make_records(unit_vectors(600, seed=11))
    built: dict[str, VectorStore] = {
        "hnsw": HnswStore(tmp_path_factory.mktemp("hnsw") / "index", SPEC),
        "exact": ExactStore(None, SPEC),
        "qdrant": QdrantStore("cross", SPEC, location=":memory:"),
    }
    for store in built.values():
        store.upsert(records)
    return built


@pytest.mark.parametrize("flt", FILTERS, ids=str)
def test_filters_give_the_same_hits_everywhere(
    stores: dict[str, VectorStore], flt: object, tmp_path: Path
) -> None:
    queries = unit_vectors(8, seed=12)
    results = {name: store.search(queries, 10, filter=flt) for name, store in stores.items()}  # type: ignore[arg-type]
    records = make_records(unit_vectors(600, seed=11))
    for q in range(len(queries)):
        expected = [h.id for h in results["exact"][q]]
        # the exact store against brute force over Filter.matches
        assert set(expected) == set(brute_force(records, queries[q], 10, flt)), (flt, q)
        for name in ("hnsw", "qdrant"):
            assert [h.id for h in results[name][q]] == expected, (name, flt, q)
            for got, want in zip(results[name][q], results["exact"][q], strict=True):
                assert got.score == pytest.approx(want.score, abs=1e-4)
