"""What a query returns: the scene it ran on and the chosen mask, as plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .geometry import MaskGeometry, mask_geometry
from .local_features import LocalFeatures


@dataclass
class Proposals:
    """Candidate masks from the proposer, best predicted IoU first."""

    masks: np.ndarray  # K×H×W bool
    iou: np.ndarray  # K float32, the decoder's predicted IoU (the NMS score)
    stability: np.ndarray  # K float32, segment-anything's stability score
    boxes: np.ndarray  # K×4 int64, tight [x0, y0, x1, y1) boxes
    points: np.ndarray  # K×2 float32, the grid point (x, y) in image pixels that made each mask
    timings: dict[str, float] = field(default_factory=dict)  # stage → milliseconds
    mode: dict[str, object] = field(default_factory=dict)  # the proposer mode that ran
    prompts: int = 0  # point prompts decoded
    grid_points: int = 0  # points in the grid (exact decodes them all)

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@dataclass
class Scene:
    """Everything that depends on the image only; score any number of expressions against it.

    f^L rows may be computed lazily (a segmenter with `local_top` or `local_bound`): `local`
    holds those known so far, and `local_features` computes the rest."""

    image_size: tuple[int, int]  # (H, W)
    masks: np.ndarray  # K×H×W bool
    boxes: np.ndarray  # K×4 int64, tight [x0, y0, x1, y1) boxes
    global_features: np.ndarray  # K×E float32, f^G (SPEC §2), unnormalised
    local: LocalFeatures  # f^L (SPEC §3) rows known so far, unnormalised
    timings: dict[str, float] = field(default_factory=dict)  # stage → milliseconds
    proposals: Proposals | None = None  # where the masks came from, when the proposer made them

    @property
    def num_masks(self) -> int:
        return int(self.masks.shape[0])

    @cached_property
    def mask_geometries(self) -> tuple[MaskGeometry, ...]:
        """Area, centroid, axis and box of each mask, measured once for every query that needs
        them (spatial words)."""
        return tuple(mask_geometry(mask) for mask in self.masks)

    @property
    def local_features(self) -> np.ndarray:
        """K×E float32 f^L, computing the rows not known yet (their stages go to `timings`)."""
        self.local.ensure(np.arange(self.num_masks), self.timings)
        return self.local.rows()


@dataclass
class Result:
    """The referred mask for one expression, with everything a caller needs to act on it."""

    text: str  # the expression as given
    sentence: str  # s': what CLIP encoded (SPEC §5.1)
    noun_phrase: str  # NP of s' (SPEC §5.2)
    # K float32, 100·cos(f_k, t); −inf for a mask a pruned query never fully scored
    # (runtime/local_pruning.py), so argmax(scores) is always `index`
    scores: np.ndarray
    index: int  # argmax of scores, ties to the lowest index (unless `spatial` moved it)
    masks: np.ndarray  # K×H×W bool, the candidates scored
    boxes: np.ndarray  # K×4 int64
    alpha: float
    beta: float
    truncated: bool = False  # the expression was cut to the text context
    timings: dict[str, float] = field(default_factory=dict)  # stage → milliseconds
    # f^L rows the choice needed: K when every mask is scored, fewer when pruned; None when the
    # Result was made elsewhere than `Segmenter.query`
    local_computed: int | None = None
    # With a spatial segmenter and an expression with spatial words: what the parse found and
    # how it changed the choice (runtime/spatial/resolve.py); `index` is then that choice, which
    # may differ from argmax(scores), the paper's.
    spatial: dict[str, Any] | None = None

    @property
    def scored(self) -> np.ndarray:
        """K bool: the masks whose score is a full one (not −inf)."""
        return np.isfinite(self.scores)

    @property
    def mask(self) -> np.ndarray:
        return self.masks[self.index]

    @property
    def box(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = (int(v) for v in self.boxes[self.index])
        return x0, y0, x1, y1

    @property
    def score(self) -> float:
        return float(self.scores[self.index])

    @property
    def geometry(self) -> MaskGeometry:
        """Area, centroid, principal-axis angle and box of the chosen mask, for a grasp planner."""
        return mask_geometry(self.mask)
