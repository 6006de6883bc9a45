"""Proposer modes: which prompts of the point grid the generator decodes, and in what order.

`exact` is segment-anything's automatic mask generator: every point of the grid, in grid order.
`fast` decodes far fewer prompts for nearly the same masks. It walks the same grid coarse to fine
(every 8th point of a 32-point side first, then every 4th, …) and skips a point that lies well
inside a mask already found (surviving NMS): a prompt inside a found object mostly finds that
object again, and box NMS would drop the copy. The point that first hits an object may sit on
its edge, where SAM's mask is poorer than exact's best, so each newly found mask also gets one
prompt at its most confident grid point. Every prompt it decodes is one exact also decodes, so
its masks are a subset of exact's candidates, filtered and NMS-ed by the same rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ZsrisError

MODES = ("exact", "fast")
COARSEST_SIDE = 4  # points per side of the first level, at least


@dataclass(frozen=True)
class ProposerMode:
    """How the generator walks the grid; `describe()` goes into results so they say what ran.
    Each lever can be set alone (the benchmarks measure them one by one)."""

    name: str
    coarse_to_fine: bool = False  # levels of halving stride instead of one pass in grid order
    # After each level, skip the next levels' points lying inside a mask that survives NMS so
    # far, where its logit exceeds the mask threshold by `cover_margin` (its confident core).
    skip_covered: bool = False
    cover_margin: float = 0.0
    recentre: bool = False  # decode each new surviving mask's most confident grid point
    stop_when_idle: bool = False  # stop after a level that adds no mask surviving NMS

    def describe(self) -> dict[str, object]:
        return asdict(self)


EXACT = ProposerMode("exact")
# cover_margin 6: the smallest whole margin whose choices agreed with exact's on ≥ 98 % of the
# demo pack's tuning split (synth --seed 2026, testA; 5: 93.5 %, 4: 84 %) and on a dense one
# (--max-objects 12, seed 77); the README's figures are on other splits. stop_when_idle cost
# agreement there for ~2 prompts an image, so fast leaves it off.
FAST = ProposerMode("fast", coarse_to_fine=True, skip_covered=True, cover_margin=6.0,
                    recentre=True)


def proposer_mode(mode: str | ProposerMode) -> ProposerMode:
    """A mode by name ("exact", "fast"), or a `ProposerMode` as given (for measuring levers)."""
    if isinstance(mode, ProposerMode):
        return mode
    if mode == "exact":
        return EXACT
    if mode == "fast":
        return FAST
    raise ZsrisError(f"proposer mode must be one of {', '.join(MODES)}, got {mode!r}")


def grid_levels(points_per_side: int, coarse_to_fine: bool) -> list[np.ndarray]:
    """Indices into the n×n grid (x fastest), level by level; together each index once.

    One level in grid order without `coarse_to_fine`. With it, level stride s takes the rows and
    columns r ≡ o (mod s) for one offset o, so every level holds the coarser ones (nested) and
    the coarsest (at least `COARSEST_SIDE` points a side) sits near the centre of its cells.
    """
    n = points_per_side
    everything = np.arange(n * n)
    if not coarse_to_fine:
        return [everything]
    stride = 1
    while n // (stride * 2) >= COARSEST_SIDE:
        stride *= 2
    offset = stride // 2
    rows = np.arange(n)
    seen = np.zeros(n * n, dtype=bool)
    levels = []
    while stride >= 1:
        on = (rows % stride) == (offset % stride)
        level = np.flatnonzero((on[:, None] & on[None, :]).ravel() & ~seen)
        seen[level] = True
        levels.append(level)
        stride //= 2
    return levels
