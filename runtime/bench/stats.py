"""Statistics of timed runs, without numpy (the orchestrating process stays small)."""

from __future__ import annotations

import statistics
from typing import Any

Json = dict[str, Any]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float], percentiles: tuple[int, ...] = ()) -> Json:
    """Median, the asked percentiles ("p90": only telling with enough runs), min and max."""
    return {"median": statistics.median(values),
            **{f"p{q}": percentile(values, q) for q in percentiles},
            "min": min(values), "max": max(values), "n": len(values)}
