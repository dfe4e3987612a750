"""Fusion math against hand-computed cases."""

from __future__ import annotations

import pytest

from sbert_retrieval.fusion import (
    fuse,
    interpolate_scores,
    min_max,
    reciprocal_rank_fusion,
    weighted_fusion,
)


def test_rrf_matches_a_hand_computed_case() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    lexical = [("c", 12.0), ("a", 3.0)]
    fused = reciprocal_rank_fusion([dense, lexical], rrf_k=60)
    scores = {item.key: item.score for item in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert [item.key for item in fused] == ["a", "c", "b"]
    a = fused[0]
    assert a.scores == (0.9, 3.0) and a.ranks == (1, 2)
    assert fused[2].scores == (0.8, None) and fused[2].ranks == (2, None)


def test_rrf_ties_keep_the_best_rank_then_the_first_branch() -> None:
    # x: dense 1st only; y: lexical 1st only -> equal fused scores; dense branch first.
    fused = reciprocal_rank_fusion([[("x", 1.0)], [("y", 1.0)]], rrf_k=0)
    assert [item.key for item in fused] == ["x", "y"]
    assert fused[0].score == fused[1].score == 1.0


def test_min_max() -> None:
    assert min_max([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert min_max([4.0, 4.0]) == [1.0, 1.0]
    assert min_max([]) == []


def test_weighted_fusion_matches_a_hand_computed_case() -> None:
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]  # normalized 1, 0.5, 0
    lexical = [("c", 10.0), ("d", 6.0), ("a", 2.0)]  # normalized 1, 0.5, 0
    fused = weighted_fusion([dense, lexical], [0.25, 0.75])
    scores = {item.key: item.score for item in fused}
    assert scores == pytest.approx({"a": 0.25, "b": 0.125, "c": 0.75, "d": 0.375})
    assert [item.key for item in fused] == ["c", "d", "a", "b"]


def test_fuse_dispatches_and_validates() -> None:
    dense, lexical = [("a", 0.5), ("b", 0.4)], [("b", 2.0)]
    assert [i.key for i in fuse(dense, lexical)] == ["b", "a"]  # rrf: b in both lists
    assert [i.key for i in fuse(dense, lexical, fusion="weighted", alpha=1.0)] == ["a", "b"]
    with pytest.raises(ValueError, match="valid: rrf, weighted"):
        fuse(dense, lexical, fusion="max")
    with pytest.raises(ValueError, match="alpha"):
        fuse(dense, lexical, fusion="weighted", alpha=1.5)
    with pytest.raises(ValueError, match="rrf_k"):
        fuse(dense, lexical, rrf_k=-1)
    with pytest.raises(ValueError, match="twice"):
        fuse([("a", 1.0), ("a", 0.5)], [])


def test_interpolate_scores_min_max_per_list() -> None:
    # first (0.2, 0.6, 0.4) → (0, 1, 0.5); rerank (3, 1, 2) → (1, 0, 0.5)
    assert interpolate_scores([0.2, 0.6, 0.4], [3.0, 1.0, 2.0], 0.25) == pytest.approx(
        [0.25, 0.75, 0.5]
    )
    assert interpolate_scores([1.0, 1.0], [5.0, 7.0], 1.0) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        interpolate_scores([1.0], [1.0], 1.5)
    with pytest.raises(ValueError, match="2 first-stage scores for 1"):
        interpolate_scores([1.0, 2.0], [1.0], 0.5)
