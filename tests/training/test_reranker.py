"""The reranker recipe's data views, negatives, first stages and dev evaluation."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sbert_retrieval.evaluation.metrics import ndcg_at_k
from sbert_retrieval.training.data import GroupExample, RetrievalData
from sbert_retrieval.training.reranker import (
    FirstStageRerankingEvaluator,
    bm25_candidates,
    dense_candidates,
    hybrid_candidates,
    leak_free,
    load_answer_selection_retrieval,
    load_squad_sentences,
    scifact_dev_split,
    split_sentences,
    training_groups,
)
from tests.bm25_reference import reference_bm25

DATA = RetrievalData(
    queries={"q1": "cats eat mice", "q2": "rivers flow to the sea"},
    corpus={
        "d1": "Cats eat mice and birds.",
        "d2": "Dogs eat meat.",
        "d3": "Rivers flow into the sea.",
        "d4": "Cats eat mice and birds.",  # a copy of q1's positive: never a negative
        "d5": "The sea is salty.",
        "d6": "Mice eat cheese.",
    },
    positives={"q1": ("d1",), "q2": ("d3",)},
)


def test_answer_selection_as_retrieval_over_every_candidate(shared_data: Path) -> None:
    data = load_answer_selection_retrieval(shared_data, "wikiqa", "dev")
    # train/README.md: dev 1,130 pairs, 126 questions with a correct answer.
    assert len(data.queries) == 126
    assert len(data.corpus) == len(set(data.corpus.values()))
    rows = (shared_data / "train" / "wikiqa" / "wikiqa-dev.tsv").read_text().splitlines()[1:]
    correct = {(r.split("\t")[1], r.split("\t")[2]) for r in rows if r.split("\t")[3] == "1"}
    found = {(data.queries[q], data.corpus[d]) for q, docs in data.positives.items() for d in docs}
    assert found == correct
    assert set(data.corpus.values()) == {r.split("\t")[2] for r in rows}
    with pytest.raises(ValueError, match="never trained on"):
        load_answer_selection_retrieval(shared_data, "wikiqa", "test")


def test_squad_sentences_positives_hold_an_answer(tmp_path: Path) -> None:
    root = tmp_path / "train" / "squad_v1.1"
    root.mkdir(parents=True)
    context = "Paris is in France. It has 2 million people. The Seine runs through it."
    records = [
        {
            "title": "P",
            "para_idx": 0,
            "context": context,
            "question": "Where?",
            "answers": ["France"],
        },
        {
            "title": "P",
            "para_idx": 0,
            "context": context,
            "question": "Many?",
            "answers": ["2 million"],
        },
        # the answer crosses a sentence boundary: left out
        {
            "title": "P",
            "para_idx": 0,
            "context": context,
            "question": "X?",
            "answers": ["France. It"],
        },
    ]
    with gzip.open(root / "squad-v1.1-train.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    data, on_topic = load_squad_sentences(tmp_path, "train")
    assert list(data.corpus.values()) == split_sentences(context)
    assert len(data.corpus) == 3
    assert data.positives == {"P/0/q0": ("P/0/0",), "P/0/q1": ("P/0/1",)}
    assert on_topic["P/0/q0"] == ("P/0/1", "P/0/2")
    assert split_sentences('Dr. smith came. Then 3 left! Why? "Yes."') == [
        "Dr. smith came.",
        "Then 3 left!",
        "Why?",
        '"Yes."',
    ]


def test_bm25_candidates_rank_as_the_reference() -> None:
    found = bm25_candidates(DATA, 10)
    texts = list(DATA.corpus.values())
    ids = list(DATA.corpus)
    for qid, query in DATA.queries.items():
        expected = reference_bm25(texts, query)
        assert {d for d, _ in found[qid]} == {ids[i] for i in expected}
        for doc, score in found[qid]:
            assert score == pytest.approx(expected[ids.index(doc)], rel=1e-5)
        assert [s for _, s in found[qid]] == sorted((s for _, s in found[qid]), reverse=True)


def test_hybrid_candidates_fuse_both_branches_by_reciprocal_rank() -> None:
    dense = {"q1": [("a", 0.9), ("b", 0.8), ("c", 0.1)]}
    lexical = {"q1": [("c", 7.0), ("d", 3.0)], "q2": [("e", 1.0)]}
    found = hybrid_candidates(dense, lexical, 3, rrf_k=1)
    # q1: a 1/2, b 1/3, c 1/4 + 1/2, d 1/3 (b ranks before d: its best rank came first).
    assert found["q1"] == [("c", 0.75), ("a", 0.5), ("b", pytest.approx(1 / 3))]
    assert found["q2"] == [("e", 0.5)]
    assert list(found) == ["q1", "q2"]


def test_dense_candidates_are_the_exact_cosine_ranking(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    found = dense_candidates(tiny_encoder, DATA, 4)
    docs = tiny_encoder.encode(list(DATA.corpus.values()))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    for qid, query in DATA.queries.items():
        q = tiny_encoder.encode([query])[0]
        scores = docs @ (q / np.linalg.norm(q))
        assert len(found[qid]) == 4
        for doc, score in found[qid]:
            assert score == pytest.approx(scores[list(DATA.corpus).index(doc)], abs=1e-5)
        assert min(s for _, s in found[qid]) >= np.sort(scores)[::-1][3] - 1e-6


def test_training_groups_mix_kinds_and_never_hold_a_positive() -> None:
    dense = {"q1": [("d4", 0.99), ("d1", 0.9), ("d6", 0.8), ("d2", 0.7)], "q2": [("d5", 0.5)]}
    lexical = {"q1": [("d6", 3.0), ("d2", 2.0)], "q2": [("d3", 4.0), ("d5", 1.0)]}
    on_topic = {"q1": ["d2"], "q2": []}
    settings = {
        "dense": dense,
        "lexical": lexical,
        "on_topic": on_topic,
        "per_kind": {"on_topic": 1, "dense": 2, "lexical": 2},
        "seed": 3,
    }
    groups = training_groups(DATA, **settings)  # type: ignore[arg-type]
    assert groups == training_groups(DATA, **settings)  # type: ignore[arg-type]
    by_query = {g.query: g for g in groups}
    first = by_query["cats eat mice"]
    assert first.positive == "Cats eat mice and birds."
    # d4 (a copy of the positive) is never a negative; no text twice.
    assert set(first.negatives) == {"Dogs eat meat.", "Mice eat cheese."}
    assert by_query["rivers flow to the sea"].negatives == ("The sea is salty.",)
    # skip_top drops the leading candidates (likely unlabelled positives).
    skipped = training_groups(DATA, dense=dense, per_kind={"dense": 1}, seed=3, skip_top=3)
    assert [g.negatives for g in skipped] == [("Dogs eat meat.",)]
    with pytest.raises(ValueError, match="no negative"):
        GroupExample("q", "p", ())


class _Scores:
    """A reranker scoring by a fixed table."""

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table = table

    def predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        return [self.table[p] for p in pairs]


def test_first_stage_reranking_evaluator_by_hand() -> None:
    candidates = {
        "q1": [("d2", 0.9), ("d6", 0.8), ("d1", 0.7)],
        "q2": [("d3", 0.9), ("d5", 0.1)],
    }
    table = {
        ("cats eat mice", DATA.corpus["d2"]): 0.1,
        ("cats eat mice", DATA.corpus["d6"]): 0.2,
        ("cats eat mice", DATA.corpus["d1"]): 0.3,  # reranked first
        ("rivers flow to the sea", DATA.corpus["d3"]): 0.0,
        ("rivers flow to the sea", DATA.corpus["d5"]): 1.0,  # the positive falls to 2nd
    }
    evaluator = FirstStageRerankingEvaluator(DATA, candidates, depth=3, weights=(0.25,), name="t")
    got = evaluator(_Scores(table))
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    first = (ndcg_at_k(["d2", "d6", "d1"], qrels["q1"], 10) + 1.0) / 2
    reranked = (1.0 + ndcg_at_k(["d5", "d3"], qrels["q2"], 10)) / 2
    assert got["t_first_stage_ndcg@10"] == pytest.approx(first)
    assert got["t_reranked_ndcg@10"] == pytest.approx(reranked)
    # 0.25 × rerank + 0.75 × first stage (both min-max): q1 d2 0.75, d6 0.5, d1 0.25 and q2
    # d3 0.75, d5 0.25, the first stage's order.
    assert got["t_interpolated_0.25_ndcg@10"] == pytest.approx(first)
    assert evaluator.main_metric == "t_reranked_ndcg@10"
    assert len(got) == 3


TOPICS = ["cats", "stocks", "volcanoes", "football", "cooking", "planets", "music", "rivers"]


def _mini_data_root(root: Path) -> Path:
    """SQuAD, WikiQA, TrecQA and SciFact train files in their real layouts, a few rows each."""
    squad = root / "train" / "squad_v1.1"
    squad.mkdir(parents=True)
    with gzip.open(squad / "squad-v1.1-train.jsonl.gz", "wt", encoding="utf-8") as handle:
        for n, topic in enumerate(TOPICS):
            context = (
                f"The {topic} page starts here. {topic.title()} were studied in {1900 + n}."
                f" Many people like {topic} a lot. Nothing else is known."
            )
            for question, answer in (
                (f"When were {topic} studied?", str(1900 + n)),
                (f"Who likes {topic}?", "Many people"),
            ):
                record = {"title": topic, "para_idx": 0, "context": context}
                handle.write(json.dumps({**record, "question": question, "answers": [answer]}))
                handle.write("\n")
    for name in ("wikiqa", "trecqa"):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for split in ("train", "dev"):
            lines = ["qid\tquestion\tsentence\tlabel"]
            for n, topic in enumerate(TOPICS):
                lines.append(f"{n}\twhat are {topic} ?\t{topic} are a thing people know .\t1")
                lines.append(f"{n}\twhat are {topic} ?\t{topic} appear in {split} files .\t0")
                lines.append(f"{n}\twhat are {topic} ?\tthe weather was fine in {n} .\t0")
            (folder / f"{name}-{split}.tsv").write_text("\n".join(lines) + "\n")
    scifact = root / "scifact"
    (scifact / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": str(n), "title": topic, "text": f"A study of {topic} found effects in {n} trials."}
        for n, topic in enumerate(TOPICS)
    ]
    (scifact / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": f"c{n}", "text": f"{topic} have effects"} for n, topic in enumerate(TOPICS)]
    (scifact / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = ["query-id\tcorpus-id\tscore"] + [f"c{n}\t{n}\t1" for n in range(len(TOPICS))]
    (scifact / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


def test_scifact_rounds_repeat_each_claim_with_new_negatives(tiny_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sbert_retrieval.training.reranker import RerankerRecipe, reranker_training_data

    data = _mini_data_root(tmp_path / "data")
    only_scifact = RerankerRecipe(
        squad_sentences=0,
        squad_paragraphs=0,
        answer_selection=(),
        scifact_rounds=1,
        scifact_dev=0.25,
    )
    once, _ = reranker_training_data(only_scifact, data, tiny_encoder)
    twice, _ = reranker_training_data(replace(only_scifact, scifact_rounds=2), data, tiny_encoder)
    assert once and len(twice) == 2 * len(once)
    assert twice[: len(once)] == once  # round 1 is the one-round recipe
    assert sorted((g.query, g.positive) for g in twice[len(once) :]) == sorted(
        (g.query, g.positive) for g in once
    )
    # Round 2 draws its negatives with another seed: some group differs in them.
    assert [g.negatives for g in twice[len(once) :]] != [g.negatives for g in once]
    assert all(set(g.negatives).isdisjoint({g.positive}) for g in twice)
    assert "SciFact train claims x2" in " ".join(RerankerRecipe(scifact_rounds=2).sources())


def test_train_reranker_cli_continues_a_killed_run(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sbert_retrieval import cli
    from sbert_retrieval.reranking import CrossEncoderReranker
    from sbert_retrieval.training import reranker as recipe_module
    from sbert_retrieval.training.trainer import CrossEncoderTrainer

    data = _mini_data_root(tmp_path / "data")
    out = tmp_path / "reranker"
    args = [
        "train", "reranker", "--output", str(out), "--model", str(tiny_model_dir),
        "--data-dir", str(data), "--squad-sentences", "12", "--scifact", "--batch-size", "4",
        "--save-steps", "2", "--device", "cpu", "--dtype", "float32", "--save-dtype", "float32",
        "--json",
    ]  # fmt: skip

    class Killed(Exception):
        pass

    original = CrossEncoderTrainer.train

    def killed_at_3(self: CrossEncoderTrainer, **kwargs: object) -> object:
        def stop(step: int, loss: float) -> None:
            if step == 3:
                raise Killed

        return original(self, on_step=stop, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CrossEncoderTrainer, "train", killed_at_3)
    with pytest.raises(Killed):
        cli.main(args)
    assert (out / "mined.json.gz").is_file() and (out / "checkpoint-2").is_dir()
    monkeypatch.setattr(CrossEncoderTrainer, "train", original)

    def no_mining(*_: object, **__: object) -> object:
        raise AssertionError("a resumed run reuses the mined candidates")

    monkeypatch.setattr(recipe_module, "dense_candidates", no_mining)
    monkeypatch.setattr(recipe_module, "bm25_candidates", no_mining)
    capsys.readouterr()
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resumed_from"] == str(out / "checkpoint-2")
    assert report["loss"] == "listwise" and report["steps"] > 3
    card = (out / "README.md").read_text()
    assert "train reranker" in card and "listwise" in card
    reranker = CrossEncoderReranker(out, device="cpu")
    scores = reranker.predict([("what are cats ?", "cats are a thing people know .")] * 2)
    assert scores.shape == (2,) and scores[0] == scores[1]


def test_choose_rerank_weight_picks_the_best_mean_and_is_recorded(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from sbert_retrieval.reranking import CrossEncoderReranker
    from sbert_retrieval.training.reranker import choose_rerank_weight, recommend_rerank_weight
    from sbert_retrieval.training.saving import init_cross_encoder_from_bi_encoder

    candidates = {
        "q1": [("d2", 0.9), ("d1", 0.85), ("d6", 0.5)],
        "q2": [("d3", 0.9), ("d5", 0.1)],
    }
    # Min-max: q1 first stage d2 1, d1 0.875, d6 0; rerank d2 0, d1 1, d6 0.1, so d1 leads for
    # any weight > 0. q2: d3 leads for weight < 0.5 only. So 0.2 and 0.4 both score 1.0, the
    # reranker alone (1.0) does not, and ties go to the larger weight.
    table = {
        ("cats eat mice", DATA.corpus["d2"]): 0.0,
        ("cats eat mice", DATA.corpus["d6"]): 0.1,
        ("cats eat mice", DATA.corpus["d1"]): 1.0,
        ("rivers flow to the sea", DATA.corpus["d3"]): 0.0,
        ("rivers flow to the sea", DATA.corpus["d5"]): 1.0,
    }
    evaluator = FirstStageRerankingEvaluator(DATA, candidates, depth=3, name="t")
    weight, per_set = choose_rerank_weight({"t": evaluator}, _Scores(table), grid=(0.2, 0.4, 1.0))
    assert weight == 0.4
    assert per_set["t"]["t_interpolated_0.4_ndcg@10"] == pytest.approx(1.0)
    assert per_set["t"]["t_reranked_ndcg@10"] < 1.0

    model = init_cross_encoder_from_bi_encoder(tiny_model_dir, tmp_path / "ce", seed=0)
    assert CrossEncoderReranker(model, device="cpu").rerank_weight == 1.0
    recommend_rerank_weight(model, weight)
    assert CrossEncoderReranker(model, device="cpu").rerank_weight == 0.4
    assert CrossEncoderReranker(model, device="cpu", rerank_weight=1.0).rerank_weight == 1.0
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        recommend_rerank_weight(model, 0.0)

    # A weight chosen after another first stage is that stage's; the dense one covers the rest.
    recommend_rerank_weight(model, 0.3, first_stage="hybrid")
    reranker = CrossEncoderReranker(model, device="cpu")
    assert reranker.rerank_weight_for("hybrid") == 0.3
    assert reranker.rerank_weight_for("dense") == reranker.rerank_weight_for("lexical") == 0.4
    given = CrossEncoderReranker(model, device="cpu", rerank_weight=0.9)
    assert given.rerank_weight_for("hybrid") == given.rerank_weight_for("dense") == 0.9
    with pytest.raises(ValueError, match="unknown first stage 'sparse'; valid: dense, lexical"):
        recommend_rerank_weight(model, 0.5, first_stage="sparse")


CLAIMS = RetrievalData(
    queries={f"c{i}": f"claim {i}" for i in range(1, 9)},
    corpus={d: d for d in "abcdefgh"},
    # c1, c2, c5 are linked through abstracts a and b; the others cite their own.
    positives={
        "c1": ("a",),
        "c2": ("a", "b"),
        "c3": ("c",),
        "c4": ("d",),
        "c5": ("b",),
        "c6": ("e",),
        "c7": ("f",),
        "c8": ("g", "h"),
    },
)


def _positives(data: RetrievalData) -> set[str]:
    return {doc for q in data.queries for doc in data.positives[q]}


@pytest.mark.parametrize("seed", range(6))
def test_a_split_by_abstract_never_holds_out_a_trained_answer(seed: int) -> None:
    train, dev = scifact_dev_split(CLAIMS, 0.25, seed, by="abstract")
    assert set(train.queries) | set(dev.queries) == set(CLAIMS.queries)
    assert not set(train.queries) & set(dev.queries)
    assert len(dev.queries) >= 2  # whole groups until the share is reached
    assert not _positives(train) & _positives(dev)
    # c1, c2 and c5 share abstracts: they land on one side together.
    assert len({("c1" in dev.queries), ("c2" in dev.queries), ("c5" in dev.queries)}) == 1
    assert scifact_dev_split(CLAIMS, 0.25, seed, by="abstract")[1].queries == dev.queries


def test_leak_free_drops_the_dev_claims_whose_answers_were_trained_on() -> None:
    train = CLAIMS.subset(["c1", "c3"])
    dev = CLAIMS.subset(["c2", "c4", "c5"])
    assert list(leak_free(dev, train).queries) == ["c4", "c5"]  # c2 cites a, as c1 does
    with pytest.raises(ValueError, match="valid: claim, abstract"):
        scifact_dev_split(CLAIMS, 0.25, 0, by="document")


def test_the_shipped_recipes_scifact_dev_is_partly_leaky_and_the_abstract_split_is_not(
    shared_data: Path,
) -> None:
    from sbert_retrieval.training.data import load_scifact
    from sbert_retrieval.training.reranker import RerankerRecipe

    claims = load_scifact(shared_data, "train")
    share = RerankerRecipe().scifact_dev
    train, dev = scifact_dev_split(claims, share, 42)  # the shipped model's split
    assert len(dev.queries) == 121
    assert len(leak_free(dev, train).queries) == 51  # 70 share a trained abstract
    train, dev = scifact_dev_split(claims, share, 42, by="abstract")
    assert len(dev.queries) >= 121 and not _positives(train) & _positives(dev)
