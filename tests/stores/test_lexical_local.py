"""The embedded stores' BM25 (SQLite FTS5) against a BM25 computed here, FTS5's formula."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.lexical import analyze
from sbert_retrieval.stores import ExactStore, HnswStore, Record
from sbert_retrieval.stores.local import LocalStore
from tests.stores.contract import SPEC, pid, unit_vectors

TEXTS = [
    "the cat sat on the mat",
    "the dog chased the cat",
    "a bird in the hand",
    "the quick brown fox jumps over the lazy dog",
    "cats and dogs living together",
    "the the the cat",
    "nothing about animals here",
    "the end",
    "dog days of summer",
    "the cat and the hat",
    "lorem ipsum dolor",
    "unrelated words only",
    "another plain sentence",
    "nothing to see",
]


def reference_bm25(texts: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> list[float]:
    """FTS5's bm25(): IDF ln((N - n + 0.5) / (n + 0.5)), clamped to 1e-6 when not positive."""
    docs = [Counter(analyze(t)) for t in texts]
    lengths = [sum(d.values()) for d in docs]
    avgdl = sum(lengths) / len(docs)
    scores = [0.0] * len(docs)
    for term in dict.fromkeys(analyze(query)):
        n = sum(1 for d in docs if term in d)
        idf = math.log((len(docs) - n + 0.5) / (n + 0.5))
        idf = idf if idf > 0 else 1e-6
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return scores


def records(texts: list[str], offset: int = 0) -> list[Record]:
    vectors = unit_vectors(len(texts), seed=offset)
    return [
        Record(
            pid(offset + i),
            vectors[i],
            {"doc_id": f"d{offset + i}", "text": text, "metadata": {"odd": (offset + i) % 2 == 1}},
        )
        for i, text in enumerate(texts)
    ]


@pytest.mark.parametrize("kind", [HnswStore, ExactStore])
@pytest.mark.parametrize("query", ["the cat", "THE dog, the end!", "cat", "the"])
def test_scores_equal_the_reference(tmp_path: Path, kind: type[LocalStore], query: str) -> None:
    expected = reference_bm25(TEXTS, query)
    with kind(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        for flt, keep in ((None, lambda i: True), ({"odd": True}, lambda i: i % 2 == 1)):
            (hits,) = store.lexical_search([query], 10, filter=flt)
            want = {pid(i): s for i, s in enumerate(expected) if s > 0 and keep(i)}
            assert {h.id for h in hits} == set(want), (query, flt)
            for hit in hits:
                assert hit.score == pytest.approx(want[hit.id], abs=1e-5)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)


def test_words_in_half_the_rows_are_left_out_and_counts_follow_writes(tmp_path: Path) -> None:
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        reader = HnswStore(tmp_path, read_only=True)
        with reader._read_transaction() as connection:
            # "the" is in 7 of 14 rows (IDF clamped to 1e-6): it scores nothing, so it goes;
            # "cat" (5 of 14) stays.
            assert reader._informative_words(connection, ["the", "cat"]) == ["cat"]
            # Alone, a query keeps its words.
            assert reader._informative_words(connection, ["the"]) == ["the"]
        # 30 rows without "the": it is in 7 of 44 now, and counts again.
        store.upsert(records(["plain words only"] * 30, offset=100))
        expected = reference_bm25([*TEXTS, *["plain words only"] * 30], "the cat")
        (hits,) = reader.lexical_search(["the cat"], 44)
        with reader._read_transaction() as connection:
            assert reader._informative_words(connection, ["the", "cat"]) == ["the", "cat"]
        want = {pid(i): s for i, s in enumerate(expected) if s > 0}
        assert {h.id: round(h.score, 5) for h in hits} == {k: round(v, 5) for k, v in want.items()}
        reader.close()


def test_a_query_of_hostile_text_is_answered(tmp_path: Path) -> None:
    with ExactStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        hostile = ['"', "cat AND NOT", "NEAR(cat dog)", "cat*", "\x00", "x" * 50_000, "日本 the"]
        for query in hostile:
            assert isinstance(store.lexical_search([query], 5)[0], list)
        assert np.isfinite([h.score for h in store.lexical_search(["cat\x00dog"], 5)[0]]).all()
