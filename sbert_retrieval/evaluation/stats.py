"""Correlation statistics for STS evaluation, on NumPy alone.

:func:`spearman` is the Pearson correlation of the average-tie ranks, as
``scipy.stats.spearmanr`` computes it; :func:`pearson` follows ``scipy.stats.pearsonr``. Both
refuse input on which the coefficient is undefined instead of returning NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["pearson", "rank_average", "spearman"]


def _vectors(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    for name, values in (("x", xs), ("y", ys)):
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(
            f"x and y differ in length ({xs.shape[0]} vs {ys.shape[0]}): "
            "a correlation needs one y for each x"
        )
    if xs.shape[0] < 2:
        raise ValueError(f"a correlation needs at least 2 pairs, got {xs.shape[0]}")
    for name, values in (("x", xs), ("y", ys)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"{name} holds {bad.size} NaN or infinite value(s), the first at index "
                f"{int(bad[0])}: drop those pairs first"
            )
    return xs, ys


def _check_not_constant(xs: np.ndarray, ys: np.ndarray) -> None:
    for name, values in (("x", xs), ("y", ys)):
        if bool(np.all(values == values[0])):
            raise ValueError(
                f"{name} is constant (every value is {values[0]!r}), so the correlation is "
                "undefined"
            )


def _pearson(xs: np.ndarray, ys: np.ndarray) -> float:
    if len(xs) == 2:
        # Two distinct points lie on a line: r is exactly +-1. Centring could say otherwise
        # where the mean rounds (0 and 5e-324 average to 0); scipy.stats.pearsonr answers this
        # case the same way. Distinct floats never subtract to 0 (subnormals), so no sign is 0.
        return float(np.sign(xs[1] - xs[0]) * np.sign(ys[1] - ys[0]))
    # As scipy.stats.pearsonr: centre, scale by the largest deviation, then normalize before the
    # dot product, so that tiny or huge values neither underflow nor overflow.
    xm = xs - xs.mean()
    ym = ys - ys.mean()
    unit = []
    for name, centred in (("x", xm), ("y", ym)):
        largest = float(np.max(np.abs(centred)))
        scaled = centred / largest if largest > 0.0 else centred
        norm = float(np.linalg.norm(scaled))
        if norm == 0.0:
            # Unequal values whose spread vanishes in floating point (e.g. 1e308 and its
            # neighbour).
            raise ValueError(f"{name} is constant to floating-point precision; no correlation")
        unit.append(scaled / norm)
    r = float(np.dot(unit[0], unit[1]))
    # Rounding can push |r| a hair past 1.
    return max(-1.0, min(1.0, r))


def pearson(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson's correlation coefficient of paired samples.

    Args:
        x: One-dimensional numbers.
        y: As many numbers, paired with ``x`` by position.

    Returns:
        r in [-1, 1].

    Raises:
        ValueError: ``x`` and ``y`` differ in length, hold fewer than 2 items, aren't
            one-dimensional, hold NaN or infinity, or one of them is constant (the message says
            which).
    """
    xs, ys = _vectors(x, y)
    _check_not_constant(xs, ys)
    return _pearson(xs, ys)


def rank_average(values: npt.ArrayLike) -> np.ndarray:
    """Ranks from 1, with tied values sharing the mean of their ranks.

    Ranks come back as float64 in the input's order, like ``scipy.stats.rankdata(values)``:
    ``[10, 20, 20, 5]`` gives ``[2.0, 3.5, 3.5, 1.0]``.

    Raises:
        ValueError: ``values`` isn't one-dimensional.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {array.shape}")
    n = array.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(array, kind="stable")
    ordered = array[order]
    # Start of each run of equal values in sorted order, plus the end.
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    bounds = np.append(starts, n)
    # Positions start..end-1 hold ranks start+1..end; their mean is (start + 1 + end) / 2.
    run_means = (bounds[:-1] + 1 + bounds[1:]) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(run_means, np.diff(bounds))
    return ranks


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman's rank correlation: Pearson's r of the average-tie ranks of ``x`` and ``y``.

    Gives the same value as ``scipy.stats.spearmanr(x, y).statistic``.

    Args:
        x: One-dimensional numbers.
        y: As many numbers, paired with ``x`` by position.

    Returns:
        rho in [-1, 1].

    Raises:
        ValueError: ``x`` and ``y`` differ in length, hold fewer than 2 items, aren't
            one-dimensional, hold NaN or infinity, or one of them is constant (the message says
            which).
    """
    xs, ys = _vectors(x, y)
    _check_not_constant(xs, ys)
    return _pearson(rank_average(xs), rank_average(ys))
