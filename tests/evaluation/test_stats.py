"""Tests of the correlation statistics, checked against scipy.stats (a test-only dependency)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from sbert_retrieval.evaluation.stats import pearson, rank_average, spearman


def _random_pairs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # STS-like gold scores: few distinct values, so many ties; predictions correlated with them.
    gold = rng.integers(0, 11, size=n) / 2.0
    predicted = np.round(gold + rng.normal(0.0, 1.5, size=n), 1)  # rounding adds ties here too
    return gold, predicted


@pytest.mark.parametrize("seed", range(20))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    x, y = _random_pairs(seed, n=int(np.random.default_rng(seed).integers(2, 400)))
    if np.all(x == x[0]) or np.all(y == y[0]):
        pytest.skip("constant sample")
    expected = scipy.stats.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_pearson_matches_scipy(seed: int) -> None:
    x, y = _random_pairs(seed, n=int(np.random.default_rng(seed).integers(3, 400)))
    if np.all(x == x[0]) or np.all(y == y[0]):
        pytest.skip("constant sample")
    expected = scipy.stats.pearsonr(x, y).statistic
    assert pearson(x, y) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=2,
        max_size=60,
    )
)
def test_spearman_and_pearson_match_scipy_on_arbitrary_samples(
    pairs: list[tuple[int, float]],
) -> None:
    x = np.array([a for a, _ in pairs], dtype=np.float64)
    y = np.array([b for _, b in pairs], dtype=np.float64)
    if np.all(x == x[0]) or np.all(y == y[0]):
        with pytest.raises(ValueError, match="constant"):
            spearman(x, y)
        return
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-9)
    assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-9)


def test_rank_average_matches_scipy_rankdata() -> None:
    assert rank_average([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    rng = np.random.default_rng(7)
    values = rng.integers(0, 20, size=500)
    np.testing.assert_array_equal(rank_average(values), scipy.stats.rankdata(values))
    assert rank_average([]).shape == (0,)


def test_known_values() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # A monotone but non-linear relation: Spearman 1, Pearson below 1.
    x = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 8.0, 27.0, 64.0]
    assert spearman(x, y) == 1.0
    assert pearson(x, y) < 1.0
    # Two items: always ±1, exactly, even where the mean of one rounds (hypothesis found
    # 0 and 5e-324, the smallest subnormal, whose mean is 0: centring gave 0.7071).
    assert spearman([1, 2], [5, 3]) == pytest.approx(-1.0)
    assert pearson([0, 1], [0.0, 5e-324]) == 1.0
    assert pearson([0, 1], [5e-324, 0.0]) == -1.0
    assert pearson([3, -2], [1e-300, 2e-300]) == -1.0
    # Plain lists, tuples and arrays all work.
    assert spearman((1, 2, 3), np.array([1, 3, 2])) == pytest.approx(0.5)


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"differ in length \(3 vs 2\)"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 pairs, got 1"):
        pearson([1], [2])
    with pytest.raises(ValueError, match="at least 2 pairs, got 0"):
        spearman([], [])
    with pytest.raises(ValueError, match=r"^x is constant"):
        spearman([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match=r"^y is constant"):
        pearson([1, 2, 3], [4.5, 4.5, 4.5])
    with pytest.raises(ValueError, match="y holds 1 NaN"):
        pearson([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(ValueError, match="x must be one-dimensional"):
        spearman([[1, 2], [3, 4]], [1, 2])
