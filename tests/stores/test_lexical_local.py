"""The embedded stores' BM25 (a tantivy index derived from SQLite) against BM25 computed here,
through writes, reopenings, crashes between the database and the index, and old formats."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.stores import ExactStore, HnswStore, Record
from sbert_retrieval.stores import lexical_index as lexical_index_module
from sbert_retrieval.stores.base import VectorStore
from sbert_retrieval.stores.lexical_index import LEXICAL_DIRECTORY
from sbert_retrieval.stores.local import DATABASE, LocalStore
from tests.bm25_reference import reference_bm25
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
QUERIES = ["the cat", "THE dog, the end!", "cat", "the", "summer cats"]
#: The ids whose payload has ``odd: True`` (see :func:`records`).
ODD = {pid(i) for i in range(1, 200, 2)}


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


def assert_reference(
    store: LocalStore, texts: dict[str, str], flt: object = None, *, exact: bool = True
) -> None:
    """Every query's hits are BM25 of ``texts`` (point id -> text), best first.

    ``exact=False`` after deletions: as in Lucene, a deleted document counts in the statistics
    until its segment is merged, so only which points match, and the order, are checked.
    """
    ids = list(texts)
    keep = {point_id for point_id in ids if flt is None or point_id in ODD}
    for query in QUERIES:
        expected = reference_bm25(list(texts.values()), query)
        want = {ids[i]: s for i, s in expected.items() if ids[i] in keep}
        (hits,) = store.lexical_search([query], len(ids) + 5, filter=flt)  # type: ignore[arg-type]
        assert want, query  # every query matches something: the test can fail
        if exact:
            assert {h.id: h.score for h in hits} == pytest.approx(want, rel=1e-5), (query, flt)
        else:
            assert {h.id for h in hits} == set(want), (query, flt)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("kind", [HnswStore, ExactStore])
def test_scores_equal_the_reference_with_and_without_a_filter(
    tmp_path: Path, kind: type[LocalStore]
) -> None:
    with kind(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        texts = {pid(i): t for i, t in enumerate(TEXTS)}
        assert_reference(store, texts)
        assert_reference(store, texts, {"odd": True})


def test_k_cuts_the_ranking(tmp_path: Path) -> None:
    with ExactStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        full = store.lexical_search(["the cat"], 20)[0]
        assert [h.id for h in store.lexical_search(["the cat"], 3)[0]] == [h.id for h in full[:3]]


def test_a_wide_filter_gives_what_a_narrow_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filters past the term-set limit widen an unfiltered search until k hits pass."""
    with ExactStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS * 4))
        narrow = store.lexical_search(QUERIES, 5, filter={"odd": True})
        monkeypatch.setattr(lexical_index_module, "_TERM_SET_MAX", 3)
        wide = store.lexical_search(QUERIES, 5, filter={"odd": True})
        assert [[(h.id, h.score) for h in row] for row in wide] == [
            [(h.id, h.score) for h in row] for row in narrow
        ]
        assert all(h.id in ODD for row in wide for h in row)


def test_writes_reach_the_index_and_readers(tmp_path: Path) -> None:
    """Upserts, text changes (upsert and set_payloads), deletes; the writer and a reader."""
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        reader = HnswStore(tmp_path, read_only=True)
        texts = {pid(i): t for i, t in enumerate(TEXTS)}
        assert_reference(reader, texts)
        store.upsert(records(["plain cat words", "summer dog"], offset=100))
        texts |= {pid(100): "plain cat words", pid(101): "summer dog"}
        # A changed text under the same id and vector (upsert), and one by set_payloads.
        changed = records(["the dog and the cat in summer"], offset=0)
        store.upsert(changed)
        texts[pid(0)] = "the dog and the cat in summer"
        assert store.set_payloads({pid(1): {"doc_id": "d1", "text": "a cat, a dog"}}) == 1
        texts[pid(1)] = "a cat, a dog"
        # A payload change alone keeps the text.
        store.set_payloads({pid(2): {"doc_id": "d2", "text": TEXTS[2], "metadata": {"x": 1}}})
        store.delete([pid(5), pid(9)])
        del texts[pid(5)], texts[pid(9)]
        for view in (store, reader):
            assert_reference(view, texts, exact=False)
        assert store.get([pid(0)])[0].vector == pytest.approx(changed[0].vector)
        reader.close()
    # Derived again from the database, the index holds the live points alone: exact again.
    shutil.rmtree(tmp_path / LEXICAL_DIRECTORY)
    with HnswStore(tmp_path) as store:
        assert_reference(store, texts)


def test_a_crash_between_database_and_index_is_replayed_once(tmp_path: Path) -> None:
    """The recorded marks lag the index after a crash: the replay changes nothing twice."""
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        store.delete([pid(3)])
    texts = {pid(i): t for i, t in enumerate(TEXTS) if i != 3}
    with sqlite3.connect(tmp_path / DATABASE) as db:
        entry = json.loads(db.execute("SELECT value FROM meta WHERE key = 'lexical'").fetchone()[0])
        assert entry["labels"] == len(TEXTS)
        # As if the index had committed everything but the database still named its start.
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'lexical'",
            (json.dumps({**entry, "labels": 0, "tombstones": 0}),),
        )
    with HnswStore(tmp_path) as store:
        assert_reference(store, texts)
        reader = HnswStore(tmp_path, read_only=True)
        assert_reference(reader, texts)
        reader.close()


def test_a_lost_or_damaged_index_is_rebuilt_and_readers_derive_one(tmp_path: Path) -> None:
    texts = {pid(i): t for i, t in enumerate(TEXTS)}
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
    shutil.rmtree(tmp_path / LEXICAL_DIRECTORY)
    # A reader finds no index where the database names one: it derives one in memory.
    with HnswStore(tmp_path, read_only=True) as reader:
        assert_reference(reader, texts)
    assert not (tmp_path / LEXICAL_DIRECTORY).exists()
    with HnswStore(tmp_path) as store:  # the writer rebuilds it
        assert_reference(store, texts)
    (tmp_path / LEXICAL_DIRECTORY / "meta.json").write_text("{not json")
    with HnswStore(tmp_path) as store:
        assert_reference(store, texts)


def test_a_version_2_store_is_migrated_by_its_writer(tmp_path: Path) -> None:
    """Version 2 kept an FTS5 table filled by triggers; a writer drops them and builds the
    tantivy index from the points; a reader before that derives its own."""
    with HnswStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
    shutil.rmtree(tmp_path / LEXICAL_DIRECTORY)
    with sqlite3.connect(tmp_path / DATABASE) as db:
        db.executescript(
            """
            DROP TRIGGER points_deleted;
            CREATE VIRTUAL TABLE lexical USING fts5(
                text, content='points', content_rowid='label', tokenize='porter unicode61');
            INSERT INTO lexical(lexical) VALUES ('rebuild');
            CREATE TRIGGER points_inserted AFTER INSERT ON points WHEN new.text IS NOT NULL BEGIN
                INSERT INTO lexical(rowid, text) VALUES (new.label, new.text);
            END;
            CREATE TRIGGER points_deleted AFTER DELETE ON points BEGIN
                INSERT INTO lexical(lexical, rowid, text)
                    SELECT 'delete', old.label, old.text WHERE old.text IS NOT NULL;
                DELETE FROM fields WHERE label = old.label;
                INSERT INTO tombstones(label) VALUES (old.label);
            END;
            UPDATE meta SET value = '2' WHERE key = 'version';
            DELETE FROM meta WHERE key = 'lexical';
            """
        )
    texts = {pid(i): t for i, t in enumerate(TEXTS)}
    with HnswStore(tmp_path, read_only=True) as reader:
        assert_reference(reader, texts)
    with HnswStore(tmp_path) as store:
        assert_reference(store, texts)
        store.delete([pid(0)])
        store.upsert(records(["a late cat"], offset=50))
        del texts[pid(0)]
        texts[pid(50)] = "a late cat"
        assert_reference(store, texts, exact=False)
    with sqlite3.connect(tmp_path / DATABASE) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "lexical" not in names and "points_inserted" not in names
        assert db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0] == "3"
        # The deletion still reached the log (pruned once the snapshot held it) and the fields.
        seq = "SELECT seq FROM sqlite_sequence WHERE name = 'tombstones'"
        assert db.execute(seq).fetchone()[0] >= 1
        assert db.execute("SELECT count(*) FROM fields WHERE label = 1").fetchone()[0] == 0


def test_a_query_of_hostile_text_is_answered(tmp_path: Path) -> None:
    with ExactStore(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS))
        hostile = ['"', "cat AND NOT", "NEAR(cat dog)", "cat*", "\x00", "x" * 50_000, "日本 the"]
        hostile += ["", "((", "word " * 10_000, "title:cat", "cat^5 -dog", "a" * 70_000]
        for query in hostile:
            assert isinstance(store.lexical_search([query], 5)[0], list)
        assert np.isfinite([h.score for h in store.lexical_search(["cat\x00dog"], 5)[0]]).all()
        assert store.lexical_search(["cat\x00dog"], 5)[0]


@pytest.mark.parametrize("kind", [HnswStore, ExactStore])
def test_hybrid_fused_on_labels_equals_the_contract_default(
    tmp_path: Path, kind: type[LocalStore]
) -> None:
    """The local stores fuse on labels and read only the winners' rows; the result is what the
    contract's default (both branches' records, then fuse_records) gives: ids, fused scores,
    and each branch's score and rank."""
    with kind(tmp_path, SPEC) as store:
        store.upsert(records(TEXTS * 3))
        vectors = unit_vectors(len(QUERIES), seed=91)
        for flt, k, depth in ((None, 5, 10), ({"odd": True}, 3, 20), ({"odd": False}, 10, 10)):
            got = store.hybrid_search(vectors, QUERIES, k, filter=flt, candidates=depth)
            want = VectorStore.hybrid_search(
                store, vectors, QUERIES, k, filter=flt, candidates=depth
            )
            assert [[dataclasses.astuple(r) for r in row] for row in got] == [
                [dataclasses.astuple(r) for r in row] for row in want
            ]
            assert all(len(row) == k for row in got)
