"""Batching shared by the encoding loop and the engine, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbert_retrieval.encoding.batching import OutOfMemoryPolicy, batch_bounds, longest_first


def test_longest_first_is_stable() -> None:
    assert longest_first(np.array([3, 9, 3, 9, 1])).tolist() == [1, 3, 0, 2, 4]


def test_bounds_cap_by_count_and_by_tokens() -> None:
    lengths = np.array([60, 60, 60, 10, 10, 10, 10, 3])
    assert batch_bounds(lengths, 3) == [(0, 3), (3, 6), (6, 8)]
    # 130 tokens: 130 // 60 = 2 long texts, then 130 // 10 = 13 capped by size 4.
    assert batch_bounds(lengths, 4, 130) == [(0, 2), (2, 4), (4, 8)]
    # A text longer than the budget still goes, alone.
    assert batch_bounds(np.array([500, 2]), 8, 100) == [(0, 1), (1, 2)]
    assert batch_bounds(np.array([], dtype=np.int64), 8) == []


def test_out_of_memory_halves_in_order_and_caps_later_batches() -> None:
    policy = OutOfMemoryPolicy(torch.device("cpu"))
    tried: list[tuple[int, int]] = []
    splits: list[int] = []

    def forward(start: int, end: int) -> list[tuple[int, int]]:
        tried.append((start, end))
        if end - start > 3:
            raise torch.OutOfMemoryError("simulated")
        return [(start, end)]

    found = policy.run(0, 10, forward, lambda: splits.append(1))
    # 10 → 5 + 5 → (2 + 3) + (2 + 3): results in input order, covering every row once.
    assert found == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert tried == [(0, 10), (0, 5), (0, 2), (2, 5), (5, 10), (5, 7), (7, 10)]
    assert len(splits) == 3
    assert policy.cap == 2 and policy.size(32) == 2 and policy.size(1) == 1


def test_a_single_row_that_does_not_fit_raises() -> None:
    policy = OutOfMemoryPolicy(torch.device("cpu"))

    def forward(start: int, end: int) -> list[int]:
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        policy.run(0, 4, forward)
    assert policy.cap == 1
