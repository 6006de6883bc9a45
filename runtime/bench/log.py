"""Progress lines on stderr, stamped with seconds since the benchmark started: long runs show
where they are without a progress bar per step."""

from __future__ import annotations

import sys
import time

_START = time.perf_counter()


def elapsed() -> float:
    """Seconds since this module was first imported (the benchmark's start)."""
    return time.perf_counter() - _START


def say(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)
