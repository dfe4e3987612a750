"""Batching shared by the plain encoding loop and the overlapped engine: longest-first order,
batch bounds by count and token budget, and what happens when a batch runs out of memory.

Before this module the loop (``BiEncoder``) and the engine each had their own copy of the
out-of-memory halving; both now run :class:`OutOfMemoryPolicy`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

__all__ = ["OutOfMemoryPolicy", "batch_bounds", "longest_first"]

R = TypeVar("R")


def longest_first(lengths: np.ndarray) -> np.ndarray:
    """Indices of ``lengths`` longest first (stable): padding stays minimal, and an
    out-of-memory error shows up on the first batch rather than late in a long run."""
    order: np.ndarray = np.argsort(-lengths, kind="stable")
    return order


def batch_bounds(
    lengths: np.ndarray, size: int, max_batch_tokens: int | None = None
) -> list[tuple[int, int]]:
    """``[start, end)`` ranges over longest-first ``lengths``: at most ``size`` texts each and,
    with ``max_batch_tokens``, at most that many tokens (texts × the batch's first, longest
    length; at least one text)."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < len(lengths):
        count = size
        if max_batch_tokens is not None:
            count = min(count, max(1, max_batch_tokens // max(int(lengths[start]), 1)))
        bounds.append((start, min(start + count, len(lengths))))
        start += count
    return bounds


class OutOfMemoryPolicy:
    """Halve a batch that ran out of device memory, recursively down to one text, and cap every
    later batch at the largest half tried, so the next batches do not fail the same way.

    Args:
        device: Where the forward passes run (CUDA's cache is emptied before a retry).

    Thread safety: none of its own; the encoder calls it under its forward lock.
    """

    def __init__(self, device: torch.device) -> None:
        self.cap: int | None = None
        self._cuda = device.type == "cuda"

    def size(self, requested: int) -> int:
        """``requested`` texts per batch, or fewer after an out-of-memory error."""
        return requested if self.cap is None else min(requested, self.cap)

    def run(
        self,
        start: int,
        end: int,
        forward: Callable[[int, int], list[R]],
        on_split: Callable[[], None] | None = None,
    ) -> list[R]:
        """``forward(start, end)``; on ``torch.OutOfMemoryError`` the two halves instead (each
        the same way), their results concatenated in order. ``on_split`` is told of each split.

        Raises:
            torch.OutOfMemoryError: A single text does not fit.
        """
        try:
            return forward(start, end)
        except torch.OutOfMemoryError:
            if end - start == 1:
                raise
        if self._cuda:
            torch.cuda.empty_cache()
        half = (end - start) // 2
        self.cap = half if self.cap is None else min(self.cap, half)
        if on_split is not None:
            on_split()
        middle = start + half
        return self.run(start, middle, forward, on_split) + self.run(middle, end, forward, on_split)
