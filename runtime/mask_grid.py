"""Masks → the g×g patch grid of the masked head (SPEC.md §2.2): soft, never re-binarised."""

from __future__ import annotations

import numpy as np

from .resize import resize_bilinear


def mask_grid(masks: np.ndarray, grid: int) -> np.ndarray:
    """K×H×W bool → K×g×g float32 in [0, 1] (bilinear, half-pixel, no antialias)."""
    return np.ascontiguousarray(resize_bilinear(masks, (grid, grid)), dtype=np.float32)
