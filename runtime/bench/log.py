"""Progress lines on stderr, stamped with seconds since the benchmark started: long runs show
where they are without a progress bar per step."""

from __future__ import annotations

import time

from ..progress import progress_printer

_START = time.perf_counter()


def elapsed() -> float:
    """Seconds since this module was first imported (the benchmark's start)."""
    return time.perf_counter() - _START


say = progress_printer(_START)
