"""Where a mask is, for a robot: area, centroid, principal axis and box (`Result.geometry`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import MaskError
from .maskops import tight_boxes


@dataclass(frozen=True)
class MaskGeometry:
    """Pixel centres sit at integer (x, y); `box` is the tight [x0, y0, x1, y1)."""

    area: int  # pixels
    centroid: tuple[float, float]  # (x, y)
    angle_deg: float  # major axis, in (-90, 90], from +x towards +y (image y points down)
    box: tuple[int, int, int, int]


def mask_geometry(mask: np.ndarray) -> MaskGeometry:
    """Area, centroid, principal axis angle and tight box of one H×W mask, for a grasp planner.

    Pixel centres sit at integer (x, y). `angle_deg` is the direction of the major axis of the
    second central moments, in (-90, 90], measured from +x towards +y; image y points down, so a
    band from top-left to bottom-right is +45 (clockwise on screen) and a vertical bar is 90. A
    shape without a major axis (disc, square, one pixel) gets 0.0.
    """
    mask = np.asarray(mask, dtype=bool)
    x0, y0, x1, y1 = (int(v) for v in tight_boxes(mask[None])[0])
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    if xs.size == 0:
        raise MaskError("mask is empty (all false): it has no geometry")
    cx, cy = xs.mean() + x0, ys.mean() + y0
    dx, dy = xs + (x0 - cx), ys + (y0 - cy)
    mu20, mu02, mu11 = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    anisotropy = math.hypot(mu20 - mu02, 2.0 * mu11)
    if anisotropy <= 1e-9 * (mu20 + mu02):
        angle = 0.0
    else:
        angle = math.degrees(0.5 * math.atan2(2.0 * mu11 + 0.0, mu20 - mu02))
        if angle <= -90.0:
            angle += 180.0
    return MaskGeometry(int(xs.size), (float(cx), float(cy)), angle, (x0, y0, x1, y1))
