"""Masked crops for the local branch (SPEC.md §3), all K written into one batch buffer.

Only the pixels the bilinear taps read are gathered and filled, so the cost is O(K·S²) whatever
the image size, and no full-size masked copy of the image is ever made.
"""

from __future__ import annotations

import numpy as np

from .resize import source_taps


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
        xlo, xhi, wx = source_taps(x1 - x0, size, x0)
        cols = np.concatenate([xlo, xhi])
        rows = []
        for ys in (ylo, yhi):
            pix = normalised[:, ys][:, :, cols]  # 3×S×2S: the four taps of every output sample
            keep = masks[i, ys][:, cols]
            rows.append(np.where(keep, pix, fill))
        top, bottom = rows
        wy = wy.reshape(1, size, 1)
        blend = top * (1 - wy) + bottom * wy  # 3×S×2S
        wx = wx.reshape(1, 1, size)
        out[i] = blend[:, :, :size] * (1 - wx) + blend[:, :, size:] * wx
    return out
