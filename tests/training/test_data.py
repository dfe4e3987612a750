"""Loaders on the real ../shared/data training files, conversions, and hard-negative mining."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.errors import InvalidRecordError
from sbert_retrieval.training.data import (
    PairExample,
    RetrievalData,
    TripletExample,
    bce_examples,
    examples_fingerprint,
    group_pairs,
    load_answer_selection,
    load_msrp,
    load_scifact,
    load_snli,
    load_squad,
    load_stsb,
    make_triplets,
    mine_hard_negatives,
    positive_pairs,
    sample_examples,
    triplet_examples,
)


def test_scifact_train_counts_match_the_readme(shared_data: Path) -> None:
    data = load_scifact(shared_data)
    # README: train 809 queries, 919 qrels; 5,183 documents.
    assert len(data.queries) == 809
    assert sum(len(p) for p in data.positives.values()) == 919
    assert len(data.corpus) == 5183
    pairs = data.pairs()
    assert len(pairs) == 919 and all(p.label == 1 for p in pairs)
    # (claim, title + " " + abstract), as BEIR/MTEB join them.
    first_qid = next(iter(data.queries))
    doc_id = data.positives[first_qid][0]
    assert pairs[0] == PairExample(data.queries[first_qid], data.corpus[doc_id], 1)
    import gzip
    import json

    with gzip.open(shared_data / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        record = next(r for r in map(json.loads, f) if str(r["_id"]) == doc_id)
    assert data.corpus[doc_id] == f"{record['title']} {record['text']}"
    with pytest.raises(ValueError, match="test split is for scoring only"):
        load_scifact(shared_data, "test")


def test_stsb_train_scores_are_scaled_to_unit_interval(shared_data: Path) -> None:
    pairs = load_stsb(shared_data)
    assert len(pairs) == 5749
    labels = np.array([p.label for p in pairs])
    assert labels.min() == 0.0 and labels.max() == 1.0
    assert len(load_stsb(shared_data, "dev")) == 1500
    with pytest.raises(ValueError, match="test split"):
        load_stsb(shared_data, "test")


def test_snli_labels_use_sberts_ids(shared_data: Path) -> None:
    dev = load_snli(shared_data, ("dev",))
    assert len(dev) == 9842
    # SOURCE.md: dev E 3,329 / N 3,235 / C 3,278; ids contradiction 0, entailment 1, neutral 2.
    assert Counter(p.label for p in dev) == {1: 3329, 2: 3235, 0: 3278}
    assert len(load_snli(shared_data)) == 9842 + 9824
    with pytest.raises(ValueError, match="valid: dev, test"):
        load_snli(shared_data, ("train",))


def test_answer_selection_sets(shared_data: Path) -> None:
    wikiqa = load_answer_selection(shared_data, "wikiqa")
    assert len(wikiqa) == 8672
    assert sum(p.label for p in wikiqa) == 1040
    assert len(group_pairs(wikiqa)) == 873
    trecqa = load_answer_selection(shared_data, "trecqa")
    assert (len(trecqa), sum(p.label for p in trecqa)) == (4718, 348)
    # 94 question ids; two of them share a question text.
    assert len(group_pairs(trecqa)) == 93
    dev = load_answer_selection(shared_data, "wikiqa", "dev")
    assert (len(dev), sum(p.label for p in dev)) == (1130, 140)
    with pytest.raises(ValueError, match="valid: wikiqa, trecqa"):
        load_answer_selection(shared_data, "msmarco")


def test_squad_questions_point_at_their_paragraph(shared_data: Path) -> None:
    data = load_squad(shared_data)
    # README: train 87,599 questions over 18,896 paragraphs.
    assert (len(data.queries), len(data.corpus)) == (87_599, 18_896)
    qid = next(iter(data.queries))
    assert data.queries[qid] == "In what year did the earthquake in Sichuan occur?"
    assert "2008" in data.corpus[data.positives[qid][0]]
    assert len(data.pairs()) == 87_599


def test_msrp(shared_data: Path) -> None:
    pairs = load_msrp(shared_data)
    assert (len(pairs), sum(p.label for p in pairs)) == (4076, 2753)


def test_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "wikiqa"
    folder.mkdir(parents=True)
    (folder / "wikiqa-train.tsv").write_text(
        "qid\tquestion\tsentence\tlabel\n1\tq\ts\t1\n2\tq\ts\tmaybe\n", encoding="utf-8"
    )
    with pytest.raises(InvalidRecordError, match=r"wikiqa-train.tsv:line 3: label must be 0 or 1"):
        load_answer_selection(tmp_path, "wikiqa")
    with pytest.raises(InvalidRecordError, match="no such file"):
        load_answer_selection(tmp_path, "trecqa")


def test_conversions() -> None:
    pairs = [
        PairExample("q1", "good1", 1),
        PairExample("q1", "bad1", 0),
        PairExample("q1", "good1b", 1),
        PairExample("q2", "good2", 1),
    ]
    assert positive_pairs(pairs) == [pairs[0], pairs[2], pairs[3]]
    triplets = make_triplets(pairs, seed=3)
    assert triplets[:2] == [
        TripletExample("q1", "good1", "bad1"),
        TripletExample("q1", "good1b", "bad1"),
    ]
    # q2 has no labelled negative: a positive of another anchor stands in.
    assert triplets[2].anchor == "q2" and triplets[2].negative in {"good1", "good1b"}
    assert make_triplets(pairs, seed=3) == triplets
    sample = sample_examples(pairs, 2, seed=1)
    assert len(sample) == 2 and sample == sorted(sample, key=pairs.index)
    assert examples_fingerprint(pairs) != examples_fingerprint(pairs[::-1])
    with pytest.raises(TypeError):
        PairExample("a", "b", True)


@pytest.fixture(scope="module")
def toy_retrieval() -> RetrievalData:
    corpus = {f"d{i}": f"document number {i} about topic {i % 5}" for i in range(40)}
    corpus["dup"] = corpus["d1"]  # same text as a positive: never a negative
    queries = {f"q{i}": f"query about topic {i % 5} number {i}" for i in range(6)}
    positives = {f"q{i}": (f"d{i}",) for i in range(6)}
    positives["q1"] = ("d1", "d7")
    return RetrievalData(queries, corpus, positives, name="toy")


def test_mined_negatives_are_the_top_non_positives(tiny_encoder, toy_retrieval) -> None:  # type: ignore[no-untyped-def]
    data = toy_retrieval
    mined = mine_hard_negatives(tiny_encoder, data, num_negatives=3, top_k=5)
    assert set(mined) == set(data.queries)
    ids = list(data.corpus)
    docs = tiny_encoder.encode([data.corpus[d] for d in ids])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    for qid, negatives in mined.items():
        q = tiny_encoder.encode([data.queries[qid]])[0]
        order = [ids[i] for i in np.argsort(-(docs @ (q / np.linalg.norm(q))), kind="stable")]
        positive_texts = {data.corpus[p] for p in data.positives[qid]}
        expected = [d for d in order if data.corpus[d] not in positive_texts][:3]
        assert negatives == expected
        assert not set(negatives) & set(data.positives[qid])
    assert "dup" not in mined["q1"]
    # skip_top drops the best candidates; random sampling is seeded and stays within top_k.
    skipped = mine_hard_negatives(tiny_encoder, data, num_negatives=2, top_k=5, skip_top=1)
    assert all(skipped[q] == mined[q][1:3] for q in data.queries)
    full = mine_hard_negatives(tiny_encoder, data, num_negatives=5, top_k=5)
    drawn = mine_hard_negatives(tiny_encoder, data, num_negatives=2, top_k=5, sampling="random")
    assert drawn == mine_hard_negatives(
        tiny_encoder, data, num_negatives=2, top_k=5, sampling="random"
    )
    assert all(set(drawn[q]) <= set(full[q]) for q in data.queries)
    # A margin of 0 keeps only negatives scoring at most the lowest positive.
    margined = mine_hard_negatives(tiny_encoder, data, num_negatives=3, top_k=5, relative_margin=0)
    assert all(len(margined[q]) <= 3 for q in data.queries)


def test_mining_reuses_cached_corpus_vectors(tiny_model_dir, toy_retrieval, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sbert_retrieval.encoding import BiEncoder

    encoder = BiEncoder(tiny_model_dir, device="cpu")
    uncached = mine_hard_negatives(encoder, toy_retrieval, num_negatives=3, top_k=5)
    first = mine_hard_negatives(
        encoder, toy_retrieval, num_negatives=3, top_k=5, cache_dir=tmp_path
    )
    assert first == uncached and len(list(tmp_path.glob("*.npy"))) == 1
    encoded: list[int] = []
    original = encoder.encode_tokenized

    def counting(tokenized, **kwargs):  # type: ignore[no-untyped-def]
        encoded.append(len(tokenized))
        return original(tokenized, **kwargs)

    encoder.encode_tokenized = counting  # type: ignore[method-assign]
    second = mine_hard_negatives(
        encoder, toy_retrieval, num_negatives=3, top_k=5, cache_dir=tmp_path
    )
    assert second == first
    assert len(toy_retrieval.corpus) not in encoded  # the corpus came from the cache


def test_mined_negatives_make_bce_and_triplet_data(tiny_encoder, toy_retrieval) -> None:  # type: ignore[no-untyped-def]
    data = toy_retrieval.subset(["q1", "q2"])
    mined = mine_hard_negatives(tiny_encoder, data, num_negatives=2, top_k=4)
    bce = bce_examples(data, mined)
    assert [e.label for e in bce] == [1, 1, 0, 0, 1, 0, 0]
    assert bce[0] == PairExample(data.queries["q1"], data.corpus["d1"], 1)
    assert bce[2] == PairExample(data.queries["q1"], data.corpus[mined["q1"][0]], 0)
    triplets = triplet_examples(data, mined)
    assert len(triplets) == 3
    assert triplets[1] == TripletExample(
        data.queries["q1"], data.corpus["d7"], data.corpus[mined["q1"][1]]
    )


def test_mining_settings_are_checked(tiny_encoder, toy_retrieval) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="valid: top, random"):
        mine_hard_negatives(tiny_encoder, toy_retrieval, sampling="best")
    with pytest.raises(ValueError, match="exceeds top_k"):
        mine_hard_negatives(tiny_encoder, toy_retrieval, num_negatives=4, top_k=5, skip_top=2)


def test_both_orders_swaps_symmetric_pairs_only(shared_data: Path) -> None:
    from sbert_retrieval.training.recipes import cross_encoder_examples

    one = cross_encoder_examples(["stsb", "trecqa"], "mse", shared_data, max_examples=5)
    both = cross_encoder_examples(
        ["stsb", "trecqa"], "mse", shared_data, max_examples=5, both_orders=True
    )
    stsb, trecqa = one[:5], one[5:]
    assert both[:10] == [x for p in stsb for x in (p, PairExample(p.b, p.a, p.label))]
    assert both[10:] == trecqa  # a question and its answer are not interchangeable
