"""Tests of the evaluation data loaders, on the real files in shared/data and on small files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.errors import InvalidRecordError
from sbert_retrieval.evaluation.data import (
    BeirDataset,
    StsPairs,
    load_beir_dataset,
    load_beir_qrels,
    load_beir_queries,
    load_sts_tsv,
)


def _data_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        for candidate in (parent / "shared" / "data", parent.parent / "shared" / "data"):
            if (candidate / "scifact").is_dir():
                return candidate
    return Path("/work/shared/data")


DATA = _data_root()
SCIFACT = DATA / "scifact"
STSB = DATA / "stsb"
needs_scifact = pytest.mark.skipif(not SCIFACT.is_dir(), reason="shared/data/scifact not found")
needs_stsb = pytest.mark.skipif(not STSB.is_dir(), reason="shared/data/stsb not found")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# --- the real data ----------------------------------------------------------------------------


@needs_scifact
def test_scifact_test_split() -> None:
    dataset = load_beir_dataset(SCIFACT)
    assert isinstance(dataset, BeirDataset)
    assert dataset.split == "test"
    assert len(dataset.corpus) == 5183
    assert len(dataset.queries) == 300
    assert len(dataset.qrels) == 300
    assert sum(len(judged) for judged in dataset.qrels.values()) == 339
    # Only the test split's queries, though queries.jsonl holds train ones too.
    assert set(dataset.queries) == set(dataset.qrels)
    assert dataset.queries["1"] == "0-dimensional biomaterials show inductive properties."
    assert "0" not in dataset.queries  # a train query
    assert dataset.qrels["1"] == {"31715818": 1}
    # Title and text joined with one space, as BEIR and MTEB do.
    doc = dataset.corpus["31715818"]
    assert doc.id == "31715818"
    assert doc.text.startswith(
        "New opportunities: the use of nanotechnologies to manipulate and track stem cells. "
        "Nanotechnologies are emerging platforms"
    )
    assert doc.metadata["title"].startswith("New opportunities")
    # Every judged document is in the corpus.
    assert all(d in dataset.corpus for judged in dataset.qrels.values() for d in judged)


@needs_scifact
def test_scifact_train_split() -> None:
    dataset = load_beir_dataset(SCIFACT, split="train")
    assert len(dataset.corpus) == 5183
    assert len(dataset.queries) == 809
    assert sum(len(judged) for judged in dataset.qrels.values()) == 919
    assert dataset.qrels["0"] == {"31715818": 1}


@needs_scifact
def test_scifact_missing_split_lists_the_available_ones() -> None:
    with pytest.raises(InvalidRecordError, match=r"no qrels for split 'dev'.*test, train"):
        load_beir_dataset(SCIFACT, split="dev")


@needs_scifact
def test_scifact_queries_file_holds_every_split() -> None:
    queries = load_beir_queries(SCIFACT / "queries.jsonl")
    assert len(queries) == 300 + 809
    assert queries["0"] == "0-dimensional biomaterials lack inductive properties."


@needs_stsb
def test_stsb_test_split() -> None:
    pairs = load_sts_tsv(STSB / "test.tsv")
    assert isinstance(pairs, StsPairs)
    assert len(pairs) == 1379
    assert pairs.scores.shape == (1379,)
    assert pairs.scores.dtype == np.float64
    assert pairs.scores[0] == 2.5
    assert pairs.sentences1[0] == "A girl is styling her hair."
    assert pairs.sentences2[0] == "A girl is brushing her hair."
    # File line 650 (pair 648) has an unbalanced double quote, which CSV quoting would swallow.
    assert pairs.sentences1[648] == "The rule - When in doubt throw it out!"
    assert pairs.sentences2[648] == 'I always go by the rule "When in doubt, throw it out!'
    assert pairs.scores[648] == 4.0
    assert float(pairs.scores.min()) >= 0.0
    assert float(pairs.scores.max()) <= 5.0


@needs_stsb
def test_stsb_other_splits() -> None:
    assert len(load_sts_tsv(STSB / "train.tsv")) == 5749
    assert len(load_sts_tsv(STSB / "dev.tsv")) == 1500


# --- queries ----------------------------------------------------------------------------------


def test_queries_small_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "queries.jsonl",
        "\ufeff"  # a byte-order mark is tolerated
        + json.dumps({"_id": "q1", "text": "first", "metadata": {}})
        + "\n\n"  # a blank line is skipped
        + json.dumps({"_id": 7, "text": "an integer id"})
        + "\r\n",
    )
    assert load_beir_queries(path) == {"q1": "first", "7": "an integer id"}


def test_queries_gzip(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "q", "text": "zipped"}) + "\n")
    assert load_beir_queries(path) == {"q": "zipped"}


@pytest.mark.parametrize(
    ("third_line", "reason"),
    [
        ('{"_id": "q3", "text": ', "invalid JSON"),
        ('["q3", "text"]', "expected a JSON object"),
        ('{"text": "no id"}', "'_id' must be a string or integer"),
        ('{"_id": "q3"}', "'text' must be a string"),
        ('{"_id": "q3", "text": "  "}', "empty text"),
        ('{"_id": "q1", "text": "again"}', r"'q1' repeats \(first on line 1\)"),
    ],
)
def test_queries_bad_line_names_file_and_line(tmp_path: Path, third_line: str, reason: str) -> None:
    path = _write(
        tmp_path / "queries.jsonl",
        '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b"}\n' + third_line + "\n",
    )
    with pytest.raises(InvalidRecordError, match=reason) as caught:
        load_beir_queries(path)
    assert str(caught.value).startswith(f"{path}:line 3: ")
    assert caught.value.location == "line 3"


def test_queries_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_bytes(b'{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "\xff"}\n')
    with pytest.raises(InvalidRecordError, match="line 2: not valid UTF-8"):
        load_beir_queries(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRecordError, match="no such file"):
        load_beir_queries(tmp_path / "absent.jsonl")
    with pytest.raises(InvalidRecordError, match="is a folder"):
        load_beir_qrels(tmp_path)


# --- qrels ------------------------------------------------------------------------------------


def test_qrels_with_and_without_header(tmp_path: Path) -> None:
    body = "q1\td1\t1\nq1\td2\t0\nq2\td1\t2\nq2\td3\t-1\n"
    expected = {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2, "d3": -1}}
    with_header = _write(tmp_path / "a.tsv", "query-id\tcorpus-id\tscore\n" + body)
    without = _write(tmp_path / "b.tsv", body)
    crlf = _write(tmp_path / "c.tsv", ("query-id\tcorpus-id\tscore\n" + body).replace("\n", "\r\n"))
    assert load_beir_qrels(with_header) == expected
    assert load_beir_qrels(without) == expected
    assert load_beir_qrels(crlf) == expected


def test_qrels_repeated_identical_line_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.tsv", "q1\td1\t1\nq1\td1\t1\n")
    assert load_beir_qrels(path) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("q3 d1 1", "expected 3 tab-separated fields"),
        ("q3\td1\t1\textra", "got 4"),
        ("q3\td1\t1.0", "score must be an integer, got '1.0'"),
        ("q3\td1\thigh", "score must be an integer"),
        ("\td1\t1", "empty query-id or corpus-id"),
        ("q1\td1\t2", r"score 2 contradicts score 1 on line 2"),
    ],
)
def test_qrels_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = _write(tmp_path / "test.tsv", f"query-id\tcorpus-id\tscore\nq1\td1\t1\n{bad_line}\n")
    with pytest.raises(InvalidRecordError, match=reason) as caught:
        load_beir_qrels(path)
    assert str(caught.value).startswith(f"{path}:line 3: ")


# --- dataset ----------------------------------------------------------------------------------


def _small_dataset(root: Path) -> Path:
    _write(
        root / "corpus.jsonl",
        json.dumps({"_id": "d1", "title": "Title", "text": "Body one."})
        + "\n"
        + json.dumps({"_id": "d2", "title": "", "text": "Body two."})
        + "\n",
    )
    _write(
        root / "queries.jsonl",
        "".join(
            json.dumps({"_id": qid, "text": f"query {qid}"}) + "\n" for qid in ("q1", "q2", "q3")
        ),
    )
    _write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    _write(root / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq3\td2\t1\n")
    return root


def test_small_dataset(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "ds")
    test = load_beir_dataset(root)
    assert test.queries == {"q1": "query q1", "q2": "query q2"}
    assert test.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert test.corpus["d1"].text == "Title Body one."
    assert test.corpus["d2"].text == "Body two."
    assert test.path == root
    dev = load_beir_dataset(str(root), split="dev")
    assert dev.queries == {"q3": "query q3"}
    with pytest.raises(InvalidRecordError, match="available splits: dev, test"):
        load_beir_dataset(root, split="train")


def test_dataset_invalid_corpus_record_is_an_error(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "ds")
    with (root / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"_id": "d3", "text": 5}\n')
    with pytest.raises(InvalidRecordError, match=r"corpus\.jsonl:line 3: document d3"):
        load_beir_dataset(root)


def test_dataset_duplicate_document_is_an_error(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "ds")
    with (root / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"_id": "d1", "text": "again"}\n')
    with pytest.raises(InvalidRecordError, match="'d1' appears twice"):
        load_beir_dataset(root)


def test_dataset_qrels_naming_unknown_query_is_an_error(tmp_path: Path) -> None:
    root = _small_dataset(tmp_path / "ds")
    _write(root / "qrels" / "test.tsv", "q1\td1\t1\nq9\td1\t1\n")
    reason = r"1 query id\(s\) absent from queries\.jsonl: 'q9'"
    with pytest.raises(InvalidRecordError, match=reason):
        load_beir_dataset(root)


def test_dataset_missing_parts(tmp_path: Path) -> None:
    with pytest.raises(InvalidRecordError, match="no such folder"):
        load_beir_dataset(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidRecordError, match=r"no qrels/\*\.tsv at all"):
        load_beir_dataset(empty)
    root = _small_dataset(tmp_path / "ds")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(InvalidRecordError, match=r"no corpus\.jsonl"):
        load_beir_dataset(root)


# --- STS --------------------------------------------------------------------------------------


def test_sts_small_file_keeps_quotes_verbatim(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "sts.tsv",
        'score\tsentence1\tsentence2\n4.5\tHe said "hi.\tShe said "hello"\n0\ta\tb\r\n',
    )
    pairs = load_sts_tsv(path)
    assert pairs.sentences1 == ('He said "hi.', "a")
    assert pairs.sentences2 == ('She said "hello"', "b")
    assert pairs.scores.tolist() == [4.5, 0.0]


def test_sts_column_order_follows_the_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "sts.tsv", "sentence1\tsentence2\tscore\nfirst\tsecond\t3.25\n")
    pairs = load_sts_tsv(path)
    assert pairs.sentences1 == ("first",)
    assert pairs.sentences2 == ("second",)
    assert pairs.scores.tolist() == [3.25]
    path = _write(tmp_path / "upper.tsv", "Sentence2\tScore\tSentence1\nsecond\t1\tfirst\n")
    assert load_sts_tsv(path).sentences1 == ("first",)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("1.0\tonly two", "expected 3 tab-separated fields, got 2"),
        ("1.0\ta\tb\tc", "got 4"),
        ("high\ta\tb", "score must be a finite number, got 'high'"),
        ("nan\ta\tb", "score must be a finite number"),
        ("2.0\t\tb", "empty sentence"),
    ],
)
def test_sts_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = _write(tmp_path / "sts.tsv", f"score\tsentence1\tsentence2\n1\ta\tb\n{bad_line}\n")
    with pytest.raises(InvalidRecordError, match=reason) as caught:
        load_sts_tsv(path)
    assert str(caught.value).startswith(f"{path}:line 3: ")


def test_sts_header_is_required(tmp_path: Path) -> None:
    path = _write(tmp_path / "sts.tsv", "2.5\ta\tb\n")
    with pytest.raises(InvalidRecordError, match="line 1: expected a header"):
        load_sts_tsv(path)
    with pytest.raises(InvalidRecordError, match="empty file"):
        load_sts_tsv(_write(tmp_path / "empty.tsv", ""))
    with pytest.raises(InvalidRecordError, match="no sentence pairs"):
        load_sts_tsv(_write(tmp_path / "header.tsv", "score\tsentence1\tsentence2\n"))


def test_sts_pairs_is_frozen_and_checked() -> None:
    pairs = StsPairs(("a",), ("b",), np.array([1.0]))
    with pytest.raises(ValueError, match="read-only"):
        pairs.scores[0] = 2.0
    with pytest.raises(ValueError, match="differ in length"):
        StsPairs(("a", "b"), ("c",), np.array([1.0, 2.0]))
