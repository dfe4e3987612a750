"""The BM25 analyzer and weights: FTS5-congruent terms, the BM25 formula, parameter checks."""

from __future__ import annotations

import math
import sqlite3

import pytest

from sbert_retrieval.lexical import (
    ANALYZER,
    BM25Params,
    analyze,
    document_vector,
    mean_length,
    query_terms,
    query_vector,
    term_id,
)

TRICKY = [
    'Running RUNS ran, the runner\'s "cats" Mäuse\x00 naïve_test',
    "Généralisations: caresses, ponies; hopping & hoped -- relational CONDITIONAL",
    'cats AND "NEAR( x* :col ^ -neg (( ))',
    "Ångström 12.5kg e-mail 3D CO2 x" + "y" * 70,
    "Straße İstanbul œuvre ﬁne",
]


def fts5_terms(text: str) -> set[str]:
    """The terms SQLite FTS5 (``porter unicode61``, the local stores' tokenizer) makes of text."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'row')")
    db.execute("INSERT INTO t(x) VALUES (?)", (text,))
    return {term for (term,) in db.execute("SELECT term FROM v")}


@pytest.mark.parametrize("text", TRICKY[:4])
def test_terms_are_the_ones_fts5_makes(text: str) -> None:
    assert set(analyze(text)) == fts5_terms(text)


def test_analysis_examples() -> None:
    assert analyze('Running RUNS ran, the runner\'s "cats" Mäuse\x00') == [
        "run",
        "run",
        "ran",
        "the",
        "runner",
        "s",
        "cat",
        "maus",
    ]
    assert analyze("") == [] and analyze("\x00 -- (( ** ::") == []
    long = "x" * 50_000
    assert analyze(long) == [long]  # too long to stem, kept whole (as FTS5 does)


def test_term_ids_are_stable_unsigned_32_bit() -> None:
    assert all(0 <= term_id(w) < 2**32 for w in ("cat", "mause", "x" * 100))
    assert term_id("cat") == term_id("cat") and term_id("cat") != term_id("dog")
    import zlib

    assert term_id("run") == zlib.crc32(b"run")


def test_document_vector_is_the_bm25_formula() -> None:
    params = BM25Params(k1=1.5, b=0.6, avgdl=4.0)
    text = "cat cat dog running"  # 4 tokens: cat x2, dog, run
    indices, values = document_vector(text, params)
    assert indices == sorted(indices)
    weights = dict(zip(indices, values, strict=True))
    norm = 1.5 * (1 - 0.6 + 0.6 * 4 / 4.0)
    assert weights[term_id("cat")] == pytest.approx(2 * 2.5 / (2 + norm))
    assert weights[term_id("dog")] == pytest.approx(1 * 2.5 / (1 + norm))
    assert weights[term_id("run")] == pytest.approx(1 * 2.5 / (1 + norm))
    assert document_vector("", BM25Params()) == ([], [])  # no avgdl needed without terms
    with pytest.raises(ValueError, match="avgdl"):
        document_vector("cat", BM25Params())


def test_query_vector_weights_each_distinct_term_once() -> None:
    indices, values = query_vector("cats cat CATS dogs")
    assert sorted(indices) == sorted({term_id("cat"), term_id("dog")})
    assert values == [1.0, 1.0]
    assert query_vector("\x00 ((") == ([], [])


def test_query_terms_leave_out_stopwords_unless_nothing_else_is_left() -> None:
    # Stopwords are words, checked before stemming: "this" goes, "thing" stays.
    assert query_terms("What is THE effect of this thing on cats and cat?") == [
        "what",
        "effect",
        "thing",
        "cat",
    ]
    assert query_terms("to be or not to be") == ["to", "be", "or", "not"]
    assert query_terms("\x00 ((") == []
    # The Qdrant query vector is made of the same terms.
    assert query_vector("the cats")[0] == [term_id("cat")]


def test_mean_length_counts_empty_texts() -> None:
    assert mean_length(["a b c", "", "d"]) == pytest.approx(4 / 3)
    assert mean_length(["", "--"]) is None


def test_params_are_validated_and_round_trip() -> None:
    params = BM25Params(avgdl=12.5)
    assert BM25Params.from_dict(params.to_dict()) == params
    assert params.to_dict()["analyzer"] == ANALYZER
    with pytest.raises(ValueError, match="analyzer"):
        BM25Params.from_dict({**params.to_dict(), "analyzer": "other/9"})
    for bad in ({"k1": 0}, {"k1": math.inf}, {"b": 1.5}, {"avgdl": 0.0}, {"avgdl": math.nan}):
        with pytest.raises(ValueError):
            BM25Params(**bad)  # type: ignore[arg-type]
