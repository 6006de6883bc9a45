"""Training that gives the same bytes for the same seed, for the demo pack's two trainers.

torch's CPU results depend on the thread count (how sums are split) and on which kernels run, so
both are pinned — the thread count, and the deterministic algorithms on — and put back afterwards,
so that a caller (a test session, `zsris-export demo`) keeps its own settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def reproducible(seed: int, threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(deterministic)
