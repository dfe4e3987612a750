"""Dev evaluators: same numbers as the evaluation package, for bi- and cross-encoders."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from sbert_retrieval.evaluation.data import StsPairs
from sbert_retrieval.evaluation.sts import evaluate_sts
from sbert_retrieval.training import PairExample, RerankingEvaluator, StsEvaluator

CANDIDATES = [
    PairExample("q1", "right answer", 1),
    PairExample("q1", "wrong answer", 0),
    PairExample("q1", "another wrong one", 0),
    PairExample("q2", "no", 0),
    PairExample("q2", "yes", 1),
    PairExample("q3", "nothing relevant here", 0),  # no positive: left out
]


class Oracle:
    """A cross-encoder stand-in that scores by a lookup table."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return np.array([self.scores[p] for _, p in pairs], dtype=np.float32)


def test_sts_evaluator_matches_evaluate_sts(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    pairs = StsPairs(
        ("a cat sits", "the market fell", "rain today", "he plays football"),
        ("a cat is sitting", "stocks dropped", "sunny weather", "a game of soccer"),
        np.array([5.0, 4.0, 1.0, 3.5]),
    )
    expected = evaluate_sts(pairs, tiny_encoder)
    got = StsEvaluator(pairs)(tiny_encoder)
    assert got == pytest.approx({"spearman": expected.spearman, "pearson": expected.pearson})
    oracle = Oracle(dict(zip(pairs.sentences2, [0.9, 0.8, 0.1, 0.5], strict=True)))
    assert StsEvaluator(pairs)(oracle)["spearman"] == pytest.approx(1.0)


def test_reranking_evaluator_with_a_perfect_and_a_reversed_scorer(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    evaluator = RerankingEvaluator(CANDIDATES)
    assert evaluator.queries == ["q1", "q2"]
    perfect = {p.b: float(p.label) for p in CANDIDATES}
    assert evaluator(Oracle(perfect)) == {"map@100": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}
    reversed_scores = {text: 1.0 - score for text, score in perfect.items()}
    worst = evaluator(Oracle(reversed_scores))
    # q1: relevant at rank 3 → AP = 1/3; q2: rank 2 → 1/2. MAP = (1/3 + 1/2) / 2 = 0.41666667
    assert worst["map@100"] == pytest.approx(5 / 12)
    bi = evaluator(tiny_encoder)
    assert set(bi) == {"map@100", "mrr@10", "ndcg@10"} and 0 < bi["map@100"] <= 1
    with pytest.raises(ValueError, match="no query has a relevant candidate"):
        RerankingEvaluator([PairExample("q", "p", 0)])
