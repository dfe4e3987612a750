"""STS evaluation: cosine similarity of sentence pairs against gold scores."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbert_retrieval.encoding.bi_encoder import BiEncoder
from sbert_retrieval.evaluation.data import StsPairs
from sbert_retrieval.evaluation.stats import pearson, spearman

__all__ = ["StsResult", "cosine_scores", "evaluate_sts"]


@dataclass(frozen=True)
class StsResult:
    """Spearman and Pearson correlation of cosine similarity with gold scores; ``precision`` is
    the encoder's compute dtype and ``inference`` its backend (what ``dtype="auto"`` and
    ``backend="auto"`` chose on this machine)."""

    spearman: float
    pearson: float
    pairs: int
    seconds: float
    precision: str = "float32"
    inference: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON."""
        return {
            "spearman": self.spearman,
            "pearson": self.pearson,
            "pairs": self.pairs,
            "seconds": round(self.seconds, 3),
            "precision": self.precision,
            "inference": self.inference,
        }


def cosine_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, dim)`` arrays (zero vectors score 0)."""
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    dots = np.einsum("ij,ij->i", left.astype(np.float64), right.astype(np.float64))
    scores: np.ndarray = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return scores


def evaluate_sts(
    pairs: StsPairs, encoder: BiEncoder, *, prefix: str = "", batch_size: int | None = None
) -> StsResult:
    """Encode each distinct sentence once and correlate pair cosines with the gold scores."""
    started = time.perf_counter()
    unique = list(dict.fromkeys([*pairs.sentences1, *pairs.sentences2]))
    position = {s: i for i, s in enumerate(unique)}
    vectors = encoder.encode(unique, prefix=prefix, batch_size=batch_size)
    left = vectors[[position[s] for s in pairs.sentences1]]
    right = vectors[[position[s] for s in pairs.sentences2]]
    cosines = cosine_scores(left, right)
    return StsResult(
        spearman=spearman(cosines, pairs.scores),
        pearson=pearson(cosines, pairs.scores),
        pairs=len(pairs),
        seconds=time.perf_counter() - started,
        precision=encoder.precision,
        inference=encoder.backend,
    )
