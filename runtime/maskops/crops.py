"""NumPy twins of cpp_ext/crops.cpp: the masked crops of the local branch (SPEC.md §3), all K
written into one batch buffer, and the g×g mask grids of the masked head (SPEC.md §2.2).

Only the pixels the bilinear taps read are gathered and filled, so the cost is O(K·S²) whatever
the image size, and no full-size masked copy of the image is ever made.
"""

from __future__ import annotations

import numpy as np

from ..bilinear import resize_bilinear, source_taps


def masked_crops(normalised: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                 fill: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """K masked crops → K×3×size×size float32.

    `normalised` is the 3×H×W image in normalised space; `boxes` the tight [x0, y0, x1, y1)
    boxes of `masks`; outside its mask each pixel reads as `fill` (3 normalised values).
    """
    k = masks.shape[0]
    if out is None:
        out = np.empty((k, 3, size, size), dtype=np.float32)
    fill = np.asarray(fill, dtype=np.float32).reshape(3, 1, 1)
    for i in range(k):
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        ylo, yhi, wy = source_taps(y1 - y0, size, y0)
        xlo, xhi, wx = source_taps(x1 - x0, size, 0)
        rows = np.concatenate([ylo, yhi])
        # The 2S source rows the taps read, limited to the box's columns, filled outside the mask.
        filled = np.where(masks[i, rows, x0:x1], normalised[:, rows, x0:x1], fill)  # 3×2S×bw
        wy = wy.reshape(1, size, 1)
        blend = filled[:, :size] * (1 - wy) + filled[:, size:] * wy  # 3×S×bw
        wx = wx.reshape(1, 1, size)
        out[i] = blend.take(xlo, axis=2) * (1 - wx) + blend.take(xhi, axis=2) * wx
    return out


def mask_grid(masks: np.ndarray, grid: int) -> np.ndarray:
    """K×H×W bool → K×g×g float32 in [0, 1] (bilinear, half-pixel, no antialias): soft, never
    re-binarised."""
    return np.ascontiguousarray(resize_bilinear(masks, (grid, grid)), dtype=np.float32)
