"""Tests of the trec_eval-compatible retrieval metrics.

Expected values are worked out by hand in the comments. A transliteration of trec_eval's C loops
(``_trec_eval_reference``) also checks :func:`evaluate` on random runs, value for value.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbert_retrieval.evaluation.metrics import (
    DEFAULT_K_VALUES,
    MEASURES,
    RetrievalScores,
    average_precision_at_k,
    evaluate,
    ndcg_at_k,
    precision_at_k,
    rank_documents,
    recall_at_k,
    reciprocal_rank_at_k,
)

log2 = math.log2

# --- single-query functions -------------------------------------------------------------------

GRADED = {"d1": 3, "d2": 2, "d3": 0, "d4": 1}
GRADED_RANKING = ["d3", "d1", "d4", "d2"]


def test_ndcg_graded_uses_linear_gain_and_log2_rank_plus_1() -> None:
    # DCG@4  = 0/log2(2) + 3/log2(3) + 1/log2(4) + 2/log2(5)
    #        = 0 + 1.892789 + 0.5 + 0.861353 = 3.254142
    # IDCG@4 = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.261860 + 0.5 = 4.761860
    # nDCG@4 = 3.254142 / 4.761860 = 0.683376
    expected = (3 / log2(3) + 1 / log2(4) + 2 / log2(5)) / (3 + 2 / log2(3) + 1 / log2(4))
    assert ndcg_at_k(GRADED_RANKING, GRADED, 4) == pytest.approx(0.6833763936, abs=1e-10)
    assert ndcg_at_k(GRADED_RANKING, GRADED, 4) == pytest.approx(expected, rel=1e-15)
    # With exponential gains (2^rel - 1) it would be 0.660990: the linear one is what trec_eval
    # computes.
    assert ndcg_at_k(GRADED_RANKING, GRADED, 4) != pytest.approx(0.6609898058, abs=1e-6)


def test_ndcg_ideal_is_cut_at_k() -> None:
    # DCG@2  = 0 + 3/log2(3) = 1.892789
    # IDCG@2 = 3 + 2/log2(3) = 4.261860 (the grade-1 document is past the cutoff)
    # nDCG@2 = 0.444123
    assert ndcg_at_k(GRADED_RANKING, GRADED, 2) == pytest.approx(0.4441228664, abs=1e-10)
    # nDCG@1: the top document has grade 0, so 0.
    assert ndcg_at_k(GRADED_RANKING, GRADED, 1) == 0.0


def test_ndcg_ideal_counts_relevant_documents_that_were_not_retrieved() -> None:
    # Only d1 (grade 3) retrieved, at rank 1: DCG@10 = 3.
    # IDCG@10 = 3 + 2/log2(3) + 1/log2(4) = 4.761860, from every judged grade.
    assert ndcg_at_k(["d1"], GRADED, 10) == pytest.approx(3 / (3 + 2 / log2(3) + 0.5))


def test_map_divides_by_all_relevant_documents_not_min_k_r() -> None:
    qrels = {"r1": 1, "r2": 1, "r3": 1, "r4": 1}
    # Relevant at ranks 1 and 3: precision@1 = 1, precision@3 = 2/3.
    # AP@3 = (1 + 2/3) / R, with R = 4 relevant in the qrels = (5/3) / 4 = 0.416667.
    # (Dividing by min(K, R) = 3 would give 0.555556.)
    assert average_precision_at_k(["r1", "n1", "r2"], qrels, 3) == pytest.approx(5 / 12)
    # A perfect ranking cut at K = 2 < R = 4: (1 + 1) / 4 = 0.5, not 1.
    assert average_precision_at_k(["r1", "r2", "r3", "r4"], qrels, 2) == 0.5
    assert average_precision_at_k(["r1", "r2", "r3", "r4"], qrels, 4) == 1.0


def test_recall_and_precision() -> None:
    qrels = {"r1": 1, "r2": 1, "r3": 1, "r4": 1}
    ranking = ["r1", "n1", "r2"]
    assert recall_at_k(ranking, qrels, 1) == 0.25  # 1 of 4
    assert recall_at_k(ranking, qrels, 3) == 0.5  # 2 of 4
    assert precision_at_k(ranking, qrels, 1) == 1.0  # 1/1
    assert precision_at_k(ranking, qrels, 2) == 0.5  # 1/2
    assert precision_at_k(ranking, qrels, 3) == pytest.approx(2 / 3)  # 2/3


def test_k_larger_than_the_ranking() -> None:
    qrels = {"a": 1, "b": 2}
    ranking = ["b", "a"]  # the ideal order
    assert ndcg_at_k(ranking, qrels, 100) == 1.0
    assert average_precision_at_k(ranking, qrels, 100) == 1.0  # (1/1 + 2/2) / 2
    assert recall_at_k(ranking, qrels, 100) == 1.0
    # Precision divides by K even though only 2 documents came back: 2/100.
    assert precision_at_k(ranking, qrels, 100) == 0.02
    assert reciprocal_rank_at_k(ranking, qrels, 100) == 1.0
    # An empty ranking scores 0 everywhere.
    for function in (ndcg_at_k, average_precision_at_k, recall_at_k, precision_at_k):
        assert function([], qrels, 5) == 0.0


def test_reciprocal_rank_within_k() -> None:
    qrels = {"r": 1}
    ranking = ["x", "y", "r"]
    assert reciprocal_rank_at_k(ranking, qrels, 3) == pytest.approx(1 / 3)
    assert reciprocal_rank_at_k(ranking, qrels, 10) == pytest.approx(1 / 3)
    assert reciprocal_rank_at_k(ranking, qrels, 2) == 0.0  # the hit is past the cutoff


def test_zero_and_negative_relevance_are_not_relevant_and_give_no_gain() -> None:
    qrels = {"a": 0, "b": -1, "c": 2}
    ranking = ["a", "b", "c"]
    # R = 1 (only c). c is at rank 3.
    # nDCG@3 = (2/log2(4)) / (2/log2(2)) = 1 / 2. If -1 counted as a gain it would be
    # (-1/log2(3) + 1) / 2 = 0.184.
    assert ndcg_at_k(ranking, qrels, 3) == 0.5
    assert average_precision_at_k(ranking, qrels, 3) == pytest.approx(1 / 3)  # (1/3) / 1
    assert recall_at_k(ranking, qrels, 3) == 1.0
    assert precision_at_k(ranking, qrels, 3) == pytest.approx(1 / 3)
    assert reciprocal_rank_at_k(ranking, qrels, 3) == pytest.approx(1 / 3)


def test_query_without_relevant_documents_scores_zero() -> None:
    for qrels in ({"a": 0}, {"a": -1, "b": 0}, {}):
        for function in (
            ndcg_at_k,
            average_precision_at_k,
            recall_at_k,
            precision_at_k,
            reciprocal_rank_at_k,
        ):
            assert function(["a", "b"], qrels, 10) == 0.0


def test_single_query_functions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ndcg_at_k(["a"], {"a": 1}, 0)
    with pytest.raises(TypeError, match="positive int"):
        ndcg_at_k(["a"], {"a": 1}, True)
    with pytest.raises(ValueError, match="appears twice"):
        recall_at_k(["a", "b", "a"], {"a": 1}, 1)
    with pytest.raises(TypeError, match="must be str"):
        recall_at_k([1, 2], {"1": 1}, 1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="relevance must be an int"):
        recall_at_k(["a"], {"a": 1.5}, 1)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="sequence of document ids"):
        recall_at_k("abc", {"a": 1}, 1)


# --- ranking ----------------------------------------------------------------------------------


def test_rank_documents_breaks_ties_by_doc_id_descending() -> None:
    scores = {"a": 1.0, "c": 0.5, "b": 1.0, "d": 2.0}
    # d (2.0), then the tie at 1.0 in descending id order: b before a, then c (0.5).
    assert rank_documents(scores) == ["d", "b", "a", "c"]
    assert rank_documents(scores, top=2) == ["d", "b"]
    # Ids compare as strings, as strcmp does: "9" > "10" > "1".
    assert rank_documents({"1": 0.7, "10": 0.7, "9": 0.7}) == ["9", "10", "1"]
    # -0.0 == 0.0, so they tie too.
    assert rank_documents({"x": -0.0, "y": 0.0}) == ["y", "x"]


def test_rank_documents_ignores_input_order_and_accepts_infinities() -> None:
    forward = {"a": 0.1, "b": math.inf, "c": -math.inf, "d": 3}
    backward = dict(reversed(list(forward.items())))
    assert rank_documents(forward) == rank_documents(backward) == ["b", "d", "a", "c"]


def test_rank_documents_rejects_nan_and_bad_types() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_documents({"a": math.nan})
    with pytest.raises(TypeError, match="real number"):
        rank_documents({"a": "0.5"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="top must be at least 1"):
        rank_documents({"a": 1.0}, top=0)


def test_ties_decide_evaluate_results() -> None:
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 0.5}}
    # trec_eval's order is b, a, c: the relevant a is at rank 2.
    scores = evaluate(qrels, run, k_values=(1, 10))
    assert scores["mrr@10"] == 0.5
    assert scores["precision@1"] == 0.0
    assert scores["ndcg@1"] == 0.0
    assert scores["ndcg@10"] == pytest.approx(1 / log2(3))  # (1/log2(3)) / (1/log2(2))


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_means_and_per_query_values() -> None:
    qrels = {
        "q1": {"a": 1, "b": 1},
        "q2": {"x": 2},
    }
    run = {
        # q1: a at rank 1, b at rank 3.
        "q1": {"a": 0.9, "n": 0.8, "b": 0.7},
        # q2: x at rank 2.
        "q2": {"m": 0.9, "x": 0.5},
    }
    scores = evaluate(qrels, run, k_values=(1, 3))
    assert isinstance(scores, RetrievalScores)
    assert scores.queries == 2
    assert scores.k_values == (1, 3)
    q1, q2 = scores.per_query["q1"], scores.per_query["q2"]
    # q1: nDCG@3 = (1 + 1/log2(4)) / (1 + 1/log2(3)) = 1.5 / 1.630930 = 0.919721
    assert q1["ndcg@3"] == pytest.approx(1.5 / (1 + 1 / log2(3)))
    # q1: AP@3 = (1/1 + 2/3) / 2 = 0.833333; AP@1 = (1/1) / 2 = 0.5
    assert q1["map@3"] == pytest.approx(5 / 6)
    assert q1["map@1"] == 0.5
    assert q1["recall@1"] == 0.5
    assert q1["recall@3"] == 1.0
    assert q1["precision@3"] == pytest.approx(2 / 3)
    assert q1["mrr@1"] == 1.0
    # q2: nDCG@3 = (2/log2(3)) / (2/log2(2)) = 0.630930
    assert q2["ndcg@3"] == pytest.approx(1 / log2(3))
    assert q2["ndcg@1"] == 0.0
    assert q2["map@3"] == 0.5  # (1/2) / 1
    assert q2["mrr@3"] == 0.5
    assert q2["mrr@1"] == 0.0
    assert q2["precision@3"] == pytest.approx(1 / 3)
    # Means over both queries.
    assert scores["ndcg@3"] == pytest.approx((1.5 / (1 + 1 / log2(3)) + 1 / log2(3)) / 2)
    assert scores["map@3"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert scores["mrr@1"] == 0.5
    assert scores["recall@3"] == 1.0
    # Every measure at every cutoff, in MEASURES order.
    assert list(scores.metrics) == [f"{m}@{k}" for m in MEASURES for k in (1, 3)]
    assert set(q1) == set(scores.metrics)


def test_evaluate_default_keys() -> None:
    scores = evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}})
    assert scores.k_values == DEFAULT_K_VALUES
    for key in ("ndcg@10", "map@100", "recall@100", "precision@10", "mrr@10", "ndcg@1000"):
        assert key in scores.metrics
    with pytest.raises(KeyError, match="available"):
        scores["ndcg@7"]


def test_evaluate_only_scores_queries_in_both_qrels_and_run() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q_empty": {}}
    run = {"q1": {"a": 1.0}, "q3": {"a": 1.0}, "q_empty": {"a": 1.0}}
    # q2 (not in the run) is not scored as 0, q3 (no qrels) is skipped, and so is q_empty, whose
    # judgments are empty: pytrec_eval leaves it out of its results.
    scores = evaluate(qrels, run, k_values=(10,))
    assert scores.queries == 1
    assert list(scores.per_query) == ["q1"]
    assert scores["ndcg@10"] == 1.0


def test_query_without_relevant_documents_counts_as_zero_in_the_mean() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"a": 0, "b": -1}}
    run = {"q1": {"a": 1.0}, "q2": {"a": 1.0, "b": 0.5}}
    scores = evaluate(qrels, run, k_values=(1,))
    assert scores.queries == 2
    assert all(value == 0.0 for value in scores.per_query["q2"].values())
    # (1 + 0) / 2 for each measure.
    for measure in MEASURES:
        assert scores[f"{measure}@1"] == 0.5


def test_empty_run_entry_scores_zero() -> None:
    scores = evaluate({"q": {"a": 1}}, {"q": {}}, k_values=(5,))
    assert scores.queries == 1
    assert all(value == 0.0 for value in scores.metrics.values())


def test_evaluate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same query ids"):
        evaluate({"1": {"a": 1}}, {"q1": {"a": 1.0}})
    with pytest.raises(ValueError, match="NaN"):
        evaluate({"q": {"a": 1}}, {"q": {"a": math.nan}})
    with pytest.raises(ValueError, match="k_values is empty"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, k_values=())
    with pytest.raises(ValueError, match="at least 1"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, k_values=(0, 10))
    with pytest.raises(TypeError, match="must be str"):
        evaluate({"q": {"1": 1}}, {"q": {1: 1.0}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="relevance must be an int"):
        evaluate({"q": {"a": "1"}}, {"q": {"a": 1.0}})  # type: ignore[dict-item]


def test_k_values_are_sorted_and_deduplicated() -> None:
    scores = evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, k_values=[10, 1, 10])
    assert scores.k_values == (1, 10)


# --- agreement with trec_eval's C code --------------------------------------------------------


def _trec_eval_reference(
    qrels: Mapping[str, int], run: Mapping[str, float], cutoffs: list[int]
) -> dict[str, float]:
    """A line-by-line transliteration of trec_eval 9.0.x (form_res_rels.c, m_ndcg_cut.c,
    m_map_cut.c, m_recall.c, m_P.c) and of MRR@K as recip_rank on the top K."""

    def comp_sim_docno(a: tuple[str, float], b: tuple[str, float]) -> int:
        if a[1] > b[1]:
            return -1
        if a[1] < b[1]:
            return 1
        return (b[0] > a[0]) - (b[0] < a[0])  # strcmp(b.docno, a.docno)

    ranked = sorted(run.items(), key=functools.cmp_to_key(comp_sim_docno))
    # RELVALUE_NONPOOL (-1) for a document without judgment, RELVALUE_UNJUDGED (-2) for a
    # negative judgment.
    rel_list = [
        (qrels[doc] if qrels[doc] >= 0 else -2) if doc in qrels else -1 for doc, _ in ranked
    ]
    max_rel = max(qrels.values())
    rel_levels = [0] * (max_rel + 1)
    for rel in qrels.values():
        if rel >= 0:
            rel_levels[rel] += 1
    num_rel_levels = max((i + 1 for i, n in enumerate(rel_levels) if n), default=0)
    num_rel = sum(rel_levels[1:])
    out: dict[str, float] = {}

    # ndcg_cut
    values = [0.0] * len(cutoffs)
    ci, total = 0, 0.0
    for i, rel in enumerate(rel_list):
        if i == cutoffs[ci]:
            values[ci] = total
            ci += 1
            if ci == len(cutoffs):
                break
        if rel > 0:
            total += rel / log2(i + 2)
    while ci < len(cutoffs):
        values[ci] = total
        ci += 1
    ci, cur_lvl, lvl_count, ideal, i = 0, num_rel_levels - 1, 0, 0.0, 0
    while True:
        lvl_count += 1
        while cur_lvl > 0 and lvl_count > rel_levels[cur_lvl]:
            cur_lvl -= 1
            lvl_count = 1
        if cur_lvl <= 0:  # C tests == 0; < 0 only when no judgment is >= 0, and DCG is 0 then.
            break
        if i == cutoffs[ci]:
            if ideal > 0.0:
                values[ci] /= ideal
            ci += 1
            if ci == len(cutoffs):
                break
        ideal += cur_lvl / log2(i + 2)
        i += 1
    while ci < len(cutoffs):
        if ideal > 0.0:
            values[ci] /= ideal
        ci += 1
    out.update({f"ndcg@{k}": v for k, v in zip(cutoffs, values, strict=True)})

    # map_cut, recall, P
    for name in ("map", "recall", "precision"):
        values = [0.0] * len(cutoffs)
        if name != "precision" and num_rel == 0:
            out.update({f"{name}@{k}": 0.0 for k in cutoffs})
            continue
        ci, so_far, total = 0, 0, 0.0
        for i, rel in enumerate(rel_list):
            if i == cutoffs[ci]:
                values[ci] = {
                    "map": total / num_rel if num_rel else 0.0,
                    "recall": so_far / num_rel if num_rel else 0.0,
                    "precision": so_far / i,
                }[name]
                ci += 1
                if ci == len(cutoffs):
                    break
            if rel >= 1:
                so_far += 1
                total += so_far / (i + 1)
        while ci < len(cutoffs):
            values[ci] = {
                "map": total / num_rel if num_rel else 0.0,
                "recall": so_far / num_rel if num_rel else 0.0,
                "precision": so_far / cutoffs[ci],
            }[name]
            ci += 1
        out.update({f"{name}@{k}": v for k, v in zip(cutoffs, values, strict=True)})

    # recip_rank on the top K
    for k in cutoffs:
        out[f"mrr@{k}"] = next(
            (1.0 / (i + 1) for i, rel in enumerate(rel_list[:k]) if rel >= 1), 0.0
        )
    return out


_doc_ids = st.sampled_from(["a", "b", "c", "d", "e", "1", "10", "9", "aa", "é", "Z", "b2"])
_qrels_strategy = st.dictionaries(_doc_ids, st.integers(-2, 4), min_size=1, max_size=8)
_run_strategy = st.dictionaries(
    _doc_ids, st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, -1.0, 0.25, 3.5]), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    qrels=_qrels_strategy,
    run=_run_strategy,
    cutoffs=st.lists(st.integers(1, 15), min_size=1, max_size=5, unique=True).map(sorted),
)
def test_evaluate_matches_trec_eval_transliteration_exactly(
    qrels: dict[str, int], run: dict[str, float], cutoffs: list[int]
) -> None:
    expected = _trec_eval_reference(qrels, run, cutoffs)
    got = evaluate({"q": qrels}, {"q": run}, k_values=cutoffs).per_query["q"]
    # Bit for bit: the sums are built in the same order as in the C code.
    assert dict(got) == expected


# --- properties -------------------------------------------------------------------------------


@st.composite
def _judged_run(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, float]]:
    ids = draw(
        st.lists(st.text("abcdef", min_size=1, max_size=3), min_size=1, max_size=15, unique=True)
    )
    qrels = {doc: draw(st.integers(-1, 3)) for doc in ids if draw(st.booleans())}
    extra = draw(st.lists(st.text("xyz", min_size=1, max_size=2), max_size=5, unique=True))
    run = {doc: draw(st.floats(-10, 10, allow_nan=False)) for doc in [*ids, *extra]}
    return qrels, run


@settings(max_examples=200, deadline=None)
@given(case=_judged_run(), cutoffs=st.lists(st.integers(1, 25), min_size=1, max_size=6))
def test_all_metrics_lie_in_unit_interval(
    case: tuple[dict[str, int], dict[str, float]], cutoffs: list[int]
) -> None:
    qrels, run = case
    if not qrels:
        return
    scores = evaluate({"q": qrels}, {"q": run}, k_values=cutoffs)
    for value in scores.per_query["q"].values():
        assert 0.0 <= value <= 1.0


@settings(max_examples=200, deadline=None)
@given(case=_judged_run(), cutoffs=st.lists(st.integers(1, 25), min_size=1, max_size=6))
def test_perfect_ranking_scores_one(
    case: tuple[dict[str, int], dict[str, float]], cutoffs: list[int]
) -> None:
    qrels, _ = case
    relevant = sorted((doc for doc, rel in qrels.items() if rel >= 1), key=lambda d: -qrels[d])
    if not relevant:
        return
    others = [doc for doc in qrels if doc not in relevant]
    # Best grades first, then everything else; distinct scores fix the order.
    ordered = [*relevant, *others]
    run = {doc: float(len(ordered) - i) for i, doc in enumerate(ordered)}
    per_query = evaluate({"q": qrels}, {"q": run}, k_values=cutoffs).per_query["q"]
    r = len(relevant)
    for k in set(cutoffs):
        assert per_query[f"ndcg@{k}"] == pytest.approx(1.0, abs=1e-12)
        assert per_query[f"mrr@{k}"] == 1.0
        # AP@k of a perfect ranking is min(k, R) / R: 1 once k reaches R.
        assert per_query[f"map@{k}"] == pytest.approx(min(k, r) / r)
        if k >= r:
            assert per_query[f"map@{k}"] == 1.0
            assert per_query[f"recall@{k}"] == 1.0


@settings(max_examples=200, deadline=None)
@given(case=_judged_run())
def test_recall_and_hits_grow_with_k(case: tuple[dict[str, int], dict[str, float]]) -> None:
    qrels, run = case
    if not qrels:
        return
    ks = list(range(1, 30))
    per_query = evaluate({"q": qrels}, {"q": run}, k_values=ks).per_query["q"]
    for smaller, larger in itertools.pairwise(ks):
        assert per_query[f"recall@{smaller}"] <= per_query[f"recall@{larger}"]
        assert per_query[f"map@{smaller}"] <= per_query[f"map@{larger}"]
        assert per_query[f"mrr@{smaller}"] <= per_query[f"mrr@{larger}"]
        # Relevant documents found, precision x k, never drop either.
        assert round(per_query[f"precision@{smaller}"] * smaller) <= round(
            per_query[f"precision@{larger}"] * larger
        )


@settings(max_examples=100, deadline=None)
@given(case=_judged_run(), k=st.integers(1, 20))
def test_single_query_functions_agree_with_evaluate(
    case: tuple[dict[str, int], dict[str, float]], k: int
) -> None:
    qrels, run = case
    if not qrels:
        return
    ranking = rank_documents(run)
    per_query = evaluate({"q": qrels}, {"q": run}, k_values=(k,)).per_query["q"]
    assert ndcg_at_k(ranking, qrels, k) == per_query[f"ndcg@{k}"]
    assert average_precision_at_k(ranking, qrels, k) == per_query[f"map@{k}"]
    assert recall_at_k(ranking, qrels, k) == per_query[f"recall@{k}"]
    assert precision_at_k(ranking, qrels, k) == per_query[f"precision@{k}"]
    assert reciprocal_rank_at_k(ranking, qrels, k) == per_query[f"mrr@{k}"]
