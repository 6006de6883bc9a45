"""Mask IoU matrix and greedy mask NMS: exact pixel counts, one float64 division per pair.

The intersections are a matrix product of the flattened masks, block by block of pixels: in
float32 each block's counts are exact integers (a block holds fewer than 2^24 pixels), summed in
float64.
"""

from __future__ import annotations

import numpy as np

# Bytes of the float32 copy of one block of masks.
_BLOCK_BYTES = 16 << 20


def mask_iou(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """K×H×W and M×H×W bool → K×M float64 IoU (0 where both masks are empty); without `b`,
    the K×K matrix of `a` with itself."""
    b = a if b is None else b
    k, m = a.shape[0], b.shape[0]
    pixels = int(np.prod(a.shape[1:]))
    flat_a, flat_b = a.reshape(k, pixels), b.reshape(m, pixels)
    block = max(4096, _BLOCK_BYTES // (4 * max(k, m, 1)))
    inter = np.zeros((k, m), dtype=np.float64)
    for start in range(0, pixels, block):
        block_a = flat_a[:, start:start + block].astype(np.float32)
        block_b = flat_b[:, start:start + block].astype(np.float32)
        inter += block_a @ block_b.T
    union = flat_a.sum(axis=1, dtype=np.int64)[:, None] + flat_b.sum(axis=1, dtype=np.int64) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mask_nms(masks: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS over masks: best score first (ties: lower index first); a mask goes when its IoU
    with a kept one exceeds `threshold`. Returns the kept indices (int64), best first."""
    order = np.argsort(-scores, kind="stable")
    iou = mask_iou(masks[order])
    kept: list[int] = []
    for i in range(len(order)):
        if not (iou[i, kept] > threshold).any():
            kept.append(i)
    return order[kept].astype(np.int64)
