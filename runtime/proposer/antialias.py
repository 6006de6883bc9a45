"""Antialiased bilinear / bicubic resizing, as PyTorch's CPU kernel does it (SAM's preprocessing).

This is `F.interpolate(x, size, mode=kernel, align_corners=False, antialias=True)` on float32,
without torch. The taps and weights follow `_compute_indices_weights_aa` in ATen's
UpSampleKernel.cpp operation for operation, in float32 wherever ATen rounds to float32: the same
formulas in float64 drift from torch by more than 1e-4, because torch's scale `in / out` is a
float32 and its error grows with the output index.

The resize is separable: rows first, then columns (on a transposed copy, so that both passes
gather whole contiguous rows). Each pass gathers a fixed number of source rows per output row and
accumulates tap by tap over blocks of output rows, so the only large temporaries are the
half-resized image and its transpose, whatever the scale. Results agree with torch to a few float32
ulps, not bit for bit: torch resizes columns first and its build fuses some multiply-adds.
"""

from __future__ import annotations

import numpy as np

# Half the filter's width in source pixels at scale 1 (`interp_size / 2` in ATen).
_HALF_WIDTH = {"bilinear": 1.0, "bicubic": 2.0}

# Elements per gathered block: a few hundred KiB, so a block's taps stay in cache.
_BLOCK_ELEMENTS = 1 << 16

_F32 = np.float32


def _fma(a: np.ndarray, b: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """a*b + c rounded once to float32: torch's x86 build compiles these to fused multiply-adds."""
    return (a.astype(np.float64) * b + c).astype(_F32)


def _filter(x: np.ndarray, kernel: str) -> np.ndarray:
    """ATen's `aa_filter` on float32 arguments; bicubic is Keys' with a = -0.5, like PIL."""
    x = np.abs(x)
    if kernel == "bilinear":
        return np.where(x < 1, 1 - x, 0)
    # ((a + 2)x - (a + 3))x² + 1 and ((a x - 5a)x + 8a)x - 4a, with a = -0.5, fused like torch.
    near = _fma(_fma(x, 1.5, -2.5) * x, x, 1.0)
    far = _fma(_fma(_fma(x, -0.5, 2.5), x, -4.0), x, 2.0)
    return np.where(x < 1, near, np.where(x < 2, far, 0))


def antialias_taps(in_size: int, out_size: int, kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """(first source index int64[out_size], weights float32[out_size, taps]) per PyTorch's
    antialiased kernel.

    Every output reads sources `first + [0, taps)`, all inside `[0, in_size)`: windows near the
    far edge start early and carry leading zero weights, so the gather needs no clamping.
    """
    if kernel not in _HALF_WIDTH:
        raise ValueError(f"unknown resampling kernel {kernel!r}; expected one of "
                         f"{sorted(_HALF_WIDTH)}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = _F32(in_size) / _F32(out_size)
    half = _HALF_WIDTH[kernel]
    support = _F32(half * scale) if scale >= 1 else _F32(half)
    invscale = _F32(1 / np.float64(scale)) if scale >= 1 else _F32(1)
    max_taps = int(np.ceil(support)) * 2 + 1

    center = (np.float64(scale) * (np.arange(out_size) + 0.5)).astype(_F32)
    # float32 differences, then + 0.5 in float64 and truncation toward zero, as in ATen.
    xmin = np.maximum((center - support).astype(np.float64) + 0.5, 0).astype(np.int64)
    xmax = np.minimum(((center + support).astype(np.float64) + 0.5).astype(np.int64), in_size)
    xsize = np.clip(xmax - xmin, 0, max_taps)

    j = np.arange(max_taps)
    arg = ((xmin[:, None] + j).astype(_F32) - center[:, None]).astype(np.float64) + 0.5
    w = np.where(j < xsize[:, None], _filter((arg * np.float64(invscale)).astype(_F32), kernel), 0)
    total = np.zeros(out_size, _F32)
    for col in w.T:  # in order, as torch sums them
        total += col
    w = w / total[:, None]

    taps = int(xsize.max())
    first = np.minimum(xmin, in_size - taps)
    weights = np.zeros((out_size, taps + max_taps), _F32)
    np.put_along_axis(weights, (xmin - first)[:, None] + j, w, axis=1)
    return first, np.ascontiguousarray(weights[:, :taps])


def _resample_rows(x: np.ndarray, first: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """B×H×W → B×out×W: each output row is the weighted sum of its taps' source rows."""
    batch, _, width = x.shape
    out_size, taps = weights.shape
    out = np.empty((batch, out_size, width), _F32)
    rows = max(1, _BLOCK_ELEMENTS // width)
    buf = np.empty((rows, width), _F32)
    for b in range(batch):
        for lo in range(0, out_size, rows):
            hi = min(lo + rows, out_size)
            acc, tmp = out[b, lo:hi], buf[: hi - lo]
            src, w = first[lo:hi], weights[lo:hi, :, None]
            # Indices are in range; "clip" only spares np.take a buffered copy of `out`.
            np.multiply(np.take(x[b], src, axis=0, out=tmp, mode="clip"), w[:, 0], out=acc)
            for t in range(1, taps):
                np.multiply(np.take(x[b], src + t, axis=0, out=tmp, mode="clip"), w[:, t], out=tmp)
                acc += tmp
    return out


def resize_antialiased(x: np.ndarray, size: tuple[int, int],
                       kernel: str = "bilinear") -> np.ndarray:
    """Resize the last two axes of float32 x to size=(out_h, out_w); float32 out."""
    x = np.asarray(x, dtype=_F32)
    if x.ndim < 2:
        raise ValueError(f"need an array of shape (..., H, W), got shape {x.shape}")
    *lead, h, w = x.shape
    out_h, out_w = size
    height_taps = antialias_taps(h, out_h, kernel)
    width_taps = antialias_taps(w, out_w, kernel)
    if (out_h, out_w) == (h, w):
        return x.copy()  # torch copies too: every weight would be exactly 0 or 1
    y = x.reshape(-1, h, w)
    if out_h != h:
        y = _resample_rows(y, *height_taps)
    if out_w != w:
        y = _resample_rows(np.ascontiguousarray(y.transpose(0, 2, 1)), *width_taps)
        y = y.transpose(0, 2, 1)
    return np.ascontiguousarray(y).reshape(*lead, out_h, out_w)
