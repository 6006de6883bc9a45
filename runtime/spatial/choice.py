"""Choosing with spatial words: CLIP says *what* each mask is, the masks' geometry says *where*.

One probabilistic model, not a pile of special cases (issue 18). For the target phrase with its
spatial words removed, CLIP's scores give each of the K masks a probability of being that kind
of thing, `p(k) = softmax(score / KIND_TEMPERATURE)` (the scores are 100·cos: at temperature 1
these would be CLIP's own zero-shot probabilities, too sure of themselves to count objects by).
A spatial phrase then multiplies in a likelihood of the mask's geometry, and the choice is the
mask of highest posterior:

- ordinals and absolute positions ("the second star from the left", "the leftmost ring", "the
  circle at the top") are ranks along an axis. Each mask is *a* target-like thing with the
  relative likelihood m(k) = p(k) / max p (1 for CLIP's best, e^−Δ for a mask Δ points below
  it: `membership`); a mask's expected rank is the sum of m over the masks lying before it
  (`expected_rank`), and the n-th from a side is the mask whose expected rank is nearest n − 1
  (`rank_likelihood`, a Gaussian of width RANK_WIDTH); "the middle one" is rank (N − 1) / 2 with
  N = Σ m the expected number of target-like masks;
- superlative sizes ("the biggest circle") are ranks by area, the same way;
- relations to a landmark ("the ring beneath the big circle") average, over the landmark's own
  CLIP probabilities, a soft test of the relation between the two masks' centroids
  (`relation_likelihood`: a logistic of the signed offset for left/right/above/below, a falloff
  of the distance for near/far, both for between), a mask never being its own landmark.

Where the parse is uncertain the model degrades by itself: flat CLIP probabilities make every
rank likely, and a landmark CLIP cannot find spreads its mass. With no spatial word nothing here
runs and the paper's choice stands, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import MaskGeometry, mask_geometry

# Score points per e-fold of the probabilities over the masks. At 1 (CLIP's own logit scale) a
# star CLIP scores 5 points below another is e^-5 as likely a "star" and drops out of every
# count. 20 was chosen on the tuning split alone (benchmarks/spatial_tuning.py: testA of the
# standard synthetic set, true masks; P@0.5 of ordinals 56 → 92, positions 94 → 99, relations
# 94 → 99 from T = 1 to 20, falling again at 30–50).
KIND_TEMPERATURE = 20.0
RANK_WIDTH = 0.5  # σ of the rank likelihood, in ranks: a neighbour in line is e^-2 as likely
OFFSET_SCALE = 0.02  # logistic scale of a directional offset, in image fractions
NEAR_SCALE = 0.15  # distance falloff of "near"/"next to", in image fractions


@dataclass(frozen=True)
class Geometry:
    """Where each of K masks is, in image fractions (x right, y down), and how big."""

    centroids: np.ndarray  # K×2 float64 (x, y) in [0, 1]
    areas: np.ndarray  # K float64, fraction of the image
    boxes: np.ndarray  # K×4 int64 tight [x0, y0, x1, y1) in pixels

    @classmethod
    def of(cls, masks: np.ndarray) -> Geometry:
        masks = np.asarray(masks, dtype=bool)
        return cls.measured([mask_geometry(mask) for mask in masks], masks.shape[1:])

    @classmethod
    def measured(cls, geometries: Sequence[MaskGeometry], image_size: Sequence[int]
                 ) -> Geometry:
        """From each mask's `mask_geometry` (pixel centres at integer coordinates: the pixel
        (x, y) covers x … x + 1 in image fractions' terms)."""
        h, w = int(image_size[0]), int(image_size[1])
        centroids = np.array([[(g.centroid[0] + 0.5) / w, (g.centroid[1] + 0.5) / h]
                              for g in geometries], dtype=np.float64).reshape(-1, 2)
        areas = np.array([g.area for g in geometries], dtype=np.float64) / (h * w)
        boxes = np.array([g.box for g in geometries], dtype=np.int64).reshape(-1, 4)
        return cls(centroids, areas, boxes)


def kind_probabilities(scores: np.ndarray) -> np.ndarray:
    """Probabilities over the masks from 100·cos scores at KIND_TEMPERATURE (−inf: never a
    candidate)."""
    scores = np.asarray(scores, dtype=np.float64) / KIND_TEMPERATURE
    finite = np.isfinite(scores)
    if not finite.any():
        return np.full(scores.shape, 1.0 / max(scores.size, 1))
    shifted = np.where(finite, scores - scores[finite].max(), -np.inf)
    weights = np.exp(shifted)
    return weights / weights.sum()


def membership(p_kind: np.ndarray) -> np.ndarray:
    """How likely each mask is *a* thing of the target kind, relative to CLIP's best: p / max p."""
    p_kind = np.asarray(p_kind, dtype=np.float64)
    top = p_kind.max() if p_kind.size else 0.0
    return p_kind / top if top > 0 else np.ones_like(p_kind)


def expected_rank(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each mask, the weight of the other masks with a smaller value (ties count half):
    its expected place in the line of target-like masks, 0 for the first."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    before = (values[None, :] < values[:, None]).astype(np.float64)
    before += 0.5 * (values[None, :] == values[:, None])
    np.fill_diagonal(before, 0.0)
    return before @ weights


def rank_likelihood(ranks: np.ndarray, wanted: float) -> np.ndarray:
    return np.exp(-0.5 * ((np.asarray(ranks) - wanted) / RANK_WIDTH) ** 2)


def ordinal_likelihood(geometry: Geometry, p_kind: np.ndarray, axis: str, side: str,
                       rank: int | None) -> np.ndarray:
    """The `rank`-th (1-based) target-like mask counted from `side` along `axis` ("x" with
    left/right, "y" with top/bottom, or the area with "small"/"big"); None: the middle one."""
    if axis == "area":
        values = geometry.areas
    else:
        values = geometry.centroids[:, 0 if axis == "x" else 1]
    if side in ("right", "bottom", "big"):
        values = -values
    members = membership(p_kind)
    ranks = expected_rank(values, members)
    if rank is None:
        return rank_likelihood(ranks, (members.sum() - 1.0) / 2.0)
    return rank_likelihood(ranks, rank - 1.0)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def pair_likelihood(geometry: Geometry, relation: str) -> np.ndarray:
    """K×K soft truth of "mask i is `relation` mask j" from their centroids."""
    c = geometry.centroids
    dx = c[None, :, 0] - c[:, None, 0]  # x_j − x_i: positive when i is left of j
    dy = c[None, :, 1] - c[:, None, 1]  # y_j − y_i: positive when i is above j
    distance = np.hypot(dx, dy)
    if relation == "left_of":
        return _logistic(dx / OFFSET_SCALE)
    if relation == "right_of":
        return _logistic(-dx / OFFSET_SCALE)
    if relation == "above":
        return _logistic(dy / OFFSET_SCALE)
    if relation == "below":
        return _logistic(-dy / OFFSET_SCALE)
    if relation == "near":
        return np.exp(-distance / NEAR_SCALE)
    if relation == "far_from":
        return 1.0 - np.exp(-distance / NEAR_SCALE)
    raise ValueError(f"unknown relation {relation!r}")


def relation_likelihood(geometry: Geometry, relation: str, p_landmark: np.ndarray) -> np.ndarray:
    """For each mask i, Σ_j p_landmark(j) · truth(i relation j) over j ≠ i, the landmark's
    probabilities renormalised without i (a mask is never its own landmark)."""
    truth = pair_likelihood(geometry, relation)
    weights = np.broadcast_to(np.asarray(p_landmark, dtype=np.float64), truth.shape).copy()
    np.fill_diagonal(weights, 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    return (truth * weights).sum(axis=1)


def between_likelihood(geometry: Geometry, p_first: np.ndarray,
                       p_second: np.ndarray) -> np.ndarray:
    """Mask i between landmarks a and b: its centroid projects inside the segment a–b and lies
    near that line, averaged over both landmarks' probabilities (i, a and b all different)."""
    c = geometry.centroids
    k = len(c)
    seg = c[None, :, :] - c[:, None, :]  # [a, b]: c_b − c_a
    length2 = (seg ** 2).sum(axis=-1)  # [a, b]
    rel = c[:, None, :] - c[None, :, :]  # [i, a]: c_i − c_a
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.einsum("iad,abd->iab", rel, seg) / length2[None]  # [i, a, b]
        foot = c[None, :, None, :] + t[..., None] * seg[None]  # [i, a, b, 2]
        off = np.linalg.norm(foot - c[:, None, None, :], axis=-1) / np.sqrt(length2)[None]
    truth = _logistic(t / 0.05) * _logistic((1 - t) / 0.05) * np.exp(-off / 0.25)
    weights = np.asarray(p_first, dtype=np.float64)[None, :, None] * \
        np.asarray(p_second, dtype=np.float64)[None, None, :] * np.ones((k, 1, 1))
    index = np.arange(k)
    weights[index, index, :] = 0.0
    weights[index, :, index] = 0.0
    weights[:, index, index] = 0.0
    truth = np.where(np.isfinite(truth), truth, 0.0)
    totals = weights.sum(axis=(1, 2))
    return np.divide((truth * weights).sum(axis=(1, 2)), totals, out=np.zeros(k),
                     where=totals > 0)


def posterior(p_kind: np.ndarray, likelihood: np.ndarray) -> np.ndarray:
    """p(k) ∝ p_kind(k) · likelihood(k); where every product is zero, CLIP's alone."""
    joint = np.asarray(p_kind, dtype=np.float64) * np.asarray(likelihood, dtype=np.float64)
    total = joint.sum()
    return joint / total if total > 0 else np.asarray(p_kind, dtype=np.float64)
