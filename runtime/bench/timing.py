"""Timed runs the same way on both sides: untimed set-up before each run, warm-up runs dropped,
the other processes' CPU share over the timed ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .machine import CpuShare
from .stats import Json, summary

PERCENTILES = (90, 99)


def timed_runs(run: Callable[[], Any], before: Callable[[], None], warmup: int,
               repeats: int) -> tuple[list[float], list[Any], Json]:
    """Call `before()` (untimed) then time `run()`, warmup + repeats times. Returns the timed
    ms, the timed runs' results, and the first (cold) call's ms with the other processes' CPU
    share over the timed runs."""
    times: list[float] = []
    results: list[Any] = []
    first, share = 0.0, CpuShare()
    for i in range(warmup + repeats):
        if i == warmup:
            share = CpuShare()
        before()
        start = time.perf_counter()
        result = run()
        ms = (time.perf_counter() - start) * 1e3
        if i == 0:
            first = ms
        if i >= warmup:
            times.append(ms)
            results.append(result)
    return times, results, {"first_call_ms": first, **share.result()}


def stage_summaries(timings: list[dict[str, float]]) -> Json:
    """Per stage, the summary over runs (a stage missing from a run counts as 0 ms there)."""
    names = sorted({name for t in timings for name in t})
    return {name: summary([t.get(name, 0.0) for t in timings], PERCENTILES) for name in names}


def latency(times: list[float], extra: Json, timings: list[dict[str, float]]) -> Json:
    """The record of one timed series: end to end, per stage (summaries, and every run's stage
    times for sums of stages), and the time outside the stages."""
    return {"latency_ms": summary(times, PERCENTILES), "latencies_ms": times, **extra,
            "stages_ms": stage_summaries(timings), "stage_runs": timings,
            "outside_stages_ms": summary([t - sum(s.values()) for t, s in
                                          zip(times, timings, strict=True)], PERCENTILES)}
