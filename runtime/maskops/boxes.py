"""Tight boxes of masks, the NumPy twin of the C++ `tight_boxes` (cpp_ext/boxes.cpp)."""

from __future__ import annotations

import numpy as np


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """K×4 int64 tight boxes [x0, y0, x1, y1) of K×H×W masks; an empty mask gets [0, 0, 0, 0]."""
    k, h, w = masks.shape
    if masks.size == 0:
        return np.zeros((k, 4), dtype=np.int64)
    cols = np.asarray(masks.any(axis=1))  # K×W
    rows = np.asarray(masks.any(axis=2))  # K×H
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            w - cols[:, ::-1].argmax(axis=1),
            h - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.int64)
    boxes[~cols.any(axis=1)] = 0
    return boxes
