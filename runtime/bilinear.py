"""Bilinear resampling with half-pixel centres and no antialiasing (SPEC.md §0).

This is PyTorch's `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`, done
separably by gathering the two source rows (then columns) of every output sample, so a downscale
costs O(output) rather than O(input).
"""

from __future__ import annotations

import numpy as np


def source_taps(in_size: int, out_size: int, start: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """Indices (lo, hi) and weight of hi for each output sample along one axis.

    `start` offsets the indices, so a crop `[start, start + in_size)` of a larger axis can be
    sampled in place without copying the crop first.
    """
    # PyTorch's CPU kernel: a float32 scale, the index from one fused multiply-add, rounded once
    # to float32. Emulated here so that the weights agree with it bit for bit.
    scale = np.float64(np.float32(in_size / out_size))
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src.astype(np.float32), np.float32(0.0))
    lo = np.minimum(src.astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    weight = np.clip(src - lo.astype(np.float32), 0.0, 1.0).astype(np.float32)
    return lo + start, hi + start, weight


def lerp_axis(x: np.ndarray, taps: tuple[np.ndarray, np.ndarray, np.ndarray],
              axis: int) -> np.ndarray:
    lo, hi, w = taps
    shape = [1] * x.ndim
    shape[axis] = w.size
    w = w.reshape(shape)
    # Gather first, convert after: a bool or uint8 input is never expanded to float32 whole.
    a = np.take(x, lo, axis=axis).astype(np.float32)
    b = np.take(x, hi, axis=axis).astype(np.float32)
    return a * (1 - w) + b * w


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of `x` (…×H×W) to `size` = (out_h, out_w); float32 out."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.bool_, np.uint8):
        x = x.astype(np.float32)
    h, w = x.shape[-2:]
    out = lerp_axis(x, source_taps(h, size[0]), x.ndim - 2)
    return lerp_axis(out, source_taps(w, size[1]), x.ndim - 1)
