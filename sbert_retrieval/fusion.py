"""Fusing ranked lists from several retrievers (dense and lexical) into one ranking.

Two methods, as the hybrid retrievers of this field offer them:

* ``rrf``: reciprocal-rank fusion (Cormack et al., 2009): ``score = Σ 1 / (rrf_k + rank)`` over
  the branches that returned the item, ``rank`` 1-based; Qdrant's ``Fusion.RRF``, Haystack's
  ``reciprocal_rank_fusion`` and LlamaIndex's ``reciprocal_rerank`` compute the same.
* ``weighted``: each branch's scores min-max normalized to [0, 1] within that query's
  candidates, then ``alpha * dense + (1 - alpha) * lexical``; an item a branch did not return
  scores 0 there (txtai's and LlamaIndex's ``relative_score`` fusion). A branch whose candidates
  all score the same normalizes to 1 for each.

Ties in the fused score keep the order of the item's best rank, then of the first branch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RRF_K",
    "FUSIONS",
    "Fused",
    "check_fusion",
    "fuse",
    "interpolate_scores",
    "min_max",
    "reciprocal_rank_fusion",
    "weighted_fusion",
]

FUSIONS = ("rrf", "weighted")
"""Fusion methods, for ``fusion=`` arguments and ``--fusion``."""

DEFAULT_RRF_K = 60
DEFAULT_ALPHA = 0.5

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Fused(Generic[K]):
    """One item of a fused ranking.

    Attributes:
        key: The item (a point id, or a doc id at document level).
        score: The fused score, higher is better.
        scores: Per branch, the branch's own score, ``None`` where it did not return the item.
        ranks: Per branch, the 1-based rank there, ``None`` where it did not return the item.
    """

    key: K
    score: float
    scores: tuple[float | None, ...]
    ranks: tuple[int | None, ...]


Ranking = Sequence[tuple[K, float]]
"""One branch's result: ``(key, score)`` pairs, best first, each key once."""


def _collect(
    rankings: Sequence[Ranking[K]],
) -> dict[K, tuple[list[float | None], list[int | None]]]:
    table: dict[K, tuple[list[float | None], list[int | None]]] = {}
    width = len(rankings)
    for branch, ranking in enumerate(rankings):
        for rank, (key, score) in enumerate(ranking, start=1):
            scores, ranks = table.setdefault(key, ([None] * width, [None] * width))
            if ranks[branch] is not None:
                raise ValueError(f"branch {branch} returned {key!r} twice")
            scores[branch] = float(score)
            ranks[branch] = rank
    return table


def _ordered(
    table: dict[K, tuple[list[float | None], list[int | None]]], fused: dict[K, float]
) -> list[Fused[K]]:
    def tie_break(key: K) -> tuple[float, int, int]:
        ranks = table[key][1]
        present = [(rank, branch) for branch, rank in enumerate(ranks) if rank is not None]
        best_rank, branch = min(present)
        return (-fused[key], best_rank, branch)

    return [
        Fused(key, fused[key], tuple(table[key][0]), tuple(table[key][1]))
        for key in sorted(fused, key=tie_break)
    ]


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking[K]], *, rrf_k: int = DEFAULT_RRF_K
) -> list[Fused[K]]:
    """Fuse rankings by ``Σ 1 / (rrf_k + rank)``; best first.

    Args:
        rankings: One ranking per branch, best first.
        rrf_k: The RRF constant, ≥ 0 (default 60, the original paper's and Qdrant's).
    """
    _check_rrf_k(rrf_k)
    table = _collect(rankings)
    fused = {
        key: sum(1.0 / (rrf_k + rank) for rank in ranks if rank is not None)
        for key, (_, ranks) in table.items()
    }
    return _ordered(table, fused)


def min_max(scores: Sequence[float]) -> list[float]:
    """Scores scaled to [0, 1] by ``(s - min) / (max - min)``; all 1.0 when they are equal."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def interpolate_scores(
    first: Sequence[float], rerank: Sequence[float], weight: float
) -> list[float]:
    """``weight × min-max(rerank) + (1 − weight) × min-max(first)``, item by item.

    How a reranker's scores are blended with the first stage's over one query's candidates:
    ``weight`` 1 is the reranker's order, 0 the first stage's.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"the rerank weight must be in [0, 1], got {weight}")
    if len(first) != len(rerank):
        raise ValueError(f"{len(first)} first-stage scores for {len(rerank)} rerank scores")
    return [
        weight * r + (1 - weight) * f for f, r in zip(min_max(first), min_max(rerank), strict=True)
    ]


def weighted_fusion(rankings: Sequence[Ranking[K]], weights: Sequence[float]) -> list[Fused[K]]:
    """Fuse by the weighted sum of min-max-normalized scores (0 where a branch lacks the item).

    Args:
        rankings: One ranking per branch, best first.
        weights: One weight per branch, each ≥ 0.
    """
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if any(not w >= 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    table = _collect(rankings)
    fused = dict.fromkeys(table, 0.0)
    for branch, ranking in enumerate(rankings):
        normalized = min_max([score for _, score in ranking])
        for (key, _), value in zip(ranking, normalized, strict=True):
            fused[key] += weights[branch] * value
    return _ordered(table, fused)


def fuse(
    dense: Ranking[K],
    lexical: Ranking[K],
    *,
    fusion: str = "rrf",
    rrf_k: int = DEFAULT_RRF_K,
    alpha: float = DEFAULT_ALPHA,
) -> list[Fused[K]]:
    """Fuse a dense and a lexical ranking (branch 0 dense, branch 1 lexical); best first.

    Args:
        dense / lexical: ``(key, score)`` pairs, best first.
        fusion: ``rrf`` (default) or ``weighted``.
        rrf_k: The RRF constant (``rrf`` only; default 60).
        alpha: The dense weight in [0, 1]; lexical gets ``1 - alpha`` (``weighted`` only;
            default 0.5).

    Raises:
        ValueError: Unknown ``fusion``, or ``alpha``/``rrf_k`` out of range.
    """
    check_fusion(fusion, alpha=alpha, rrf_k=rrf_k)
    if fusion == "rrf":
        return reciprocal_rank_fusion([dense, lexical], rrf_k=rrf_k)
    return weighted_fusion([dense, lexical], [alpha, 1.0 - alpha])


def check_fusion(fusion: str, *, alpha: float, rrf_k: int) -> None:
    """Raise ``ValueError`` naming the valid choices if the fusion settings are invalid."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    _check_rrf_k(rrf_k)


def _check_rrf_k(rrf_k: int) -> None:
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise ValueError(f"rrf_k must be an integer >= 0, got {rrf_k!r}")
