"""The same data and filters give the same hits on every backend (HNSW, exact, Qdrant).

Hybrid search (dense + BM25, reciprocal-rank fused) is held to the same standard: with every
filter, each backend returns the fusion of the exact filtered branches.

Every operator of :mod:`sbert_retrieval.stores.filters` is exercised: the local stores answer
filters by SQL, Qdrant by its own filter, and both must select what ``Filter.matches`` selects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.fusion import reciprocal_rank_fusion
from sbert_retrieval.stores import ExactStore, HnswStore, QdrantStore, VectorStore
from sbert_retrieval.stores.base import Record
from sbert_retrieval.stores.filters import parse_filter
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


def build_stores(
    tmp_path_factory: pytest.TempPathFactory, name: str, records: list[Record]
) -> dict[str, VectorStore]:
    """One store per backend, each holding ``records``."""
    built: dict[str, VectorStore] = {
        "hnsw": HnswStore(tmp_path_factory.mktemp(name) / "index", SPEC),
        "exact": ExactStore(None, SPEC),
        "qdrant": QdrantStore(name, SPEC, location=":memory:"),
    }
    for store in built.values():
        store.upsert(records)
    return built


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VectorStore]:
    return build_stores(tmp_path_factory, "cross", make_records(unit_vectors(600, seed=11)))


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


# -- hybrid: dense + BM25, fused, with every filter ----------------------------------------------

WORDS = [
    "apple", "river", "stone", "cloud", "light", "green", "table", "music", "paper", "glass",
    "north", "winter", "garden", "silver", "bridge", "forest", "candle", "harbor", "meadow",
    "lantern", "copper", "violet", "falcon", "marble", "thunder", "saddle", "orchid", "pepper",
    "quartz", "walnut",
]  # fmt: skip
TEXT_QUERIES = ["apple river", "quartz walnut", "green falcon marble", "winter", "orchid pepper"]
N_TEXT = 240
DEPTH = 25


def text_records() -> list[Record]:
    """Records with Zipf-distributed words and distinct lengths (so BM25 has no ties)."""
    rng = np.random.default_rng(31)
    weights = 1.0 / np.arange(1, len(WORDS) + 1)
    records = make_records(unit_vectors(N_TEXT, seed=32))
    out = []
    for i, record in enumerate(records):
        words = rng.choice(WORDS, size=5 + i, p=weights / weights.sum())
        out.append(Record(record.id, record.vector, {**record.payload, "text": " ".join(words)}))
    return out


@pytest.fixture(scope="module")
def text_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VectorStore]:
    return build_stores(tmp_path_factory, "cross-text", text_records())


@pytest.mark.parametrize("flt", FILTERS, ids=str)
@pytest.mark.parametrize("backend", ["hnsw", "exact", "qdrant"])
def test_hybrid_with_filters_is_rrf_of_the_exact_filtered_branches(
    text_stores: dict[str, VectorStore], backend: str, flt: object
) -> None:
    """Each backend's hybrid = RRF of (brute-force dense, its own BM25) over the filtered set.

    BM25 scores differ between backends (FTS5 and Qdrant take IDF differently), so the lexical
    reference is the backend's own unfiltered BM25 ranking cut to the points the filter keeps:
    what an exact search of the filtered subset (with the collection's IDF) returns.
    """
    store = text_stores[backend]
    records = text_records()
    parsed = parse_filter(flt)  # type: ignore[arg-type]
    keep = {r.id for r in records if parsed is None or parsed.matches(r.payload)}
    vectors = unit_vectors(len(TEXT_QUERIES), seed=33)
    got = store.hybrid_search(vectors, TEXT_QUERIES, 10, filter=flt, candidates=DEPTH)  # type: ignore[arg-type]
    lexical_filtered = store.lexical_search(TEXT_QUERIES, DEPTH, filter=flt)  # type: ignore[arg-type]
    everything = store.lexical_search(TEXT_QUERIES, N_TEXT)
    for q in range(len(TEXT_QUERIES)):
        lexical = [r.id for r in everything[q] if r.id in keep][:DEPTH]
        assert [r.id for r in lexical_filtered[q]] == lexical, (backend, flt, q)
        dense = brute_force(records, vectors[q], DEPTH, flt)
        expected = reciprocal_rank_fusion([[(i, 0.0) for i in dense], [(i, 0.0) for i in lexical]])
        assert [r.id for r in got[q]] == [e.key for e in expected[:10]], (backend, flt, q)
        assert [r.score for r in got[q]] == pytest.approx([e.score for e in expected[:10]])
