"""Training tests: tiny models, one intra-op thread.

On a small shared CPU, OpenMP's barriers cost ~10 ms per operator once the cores are busy; a
tiny model's step then takes over a second with 2 threads and ~15 ms with 1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each training test with one torch thread, restoring the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
