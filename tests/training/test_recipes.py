"""Training recipes: the hard-negative miner's lifetime."""

from __future__ import annotations

from sbert_retrieval.training.recipes import _Miner


class _Encoder:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_releasing_the_miner_stops_its_encoders_workers() -> None:
    miner = _Miner(None, seed=0, device=None)
    encoder = _Encoder()
    miner.encoder = encoder
    miner.release()
    assert encoder.closed == 1 and miner.encoder is None
    miner.release()  # nothing left to stop: no error, no second close
    assert encoder.closed == 1
