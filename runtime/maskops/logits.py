"""NumPy twins of cpp_ext/logits.cpp: low-resolution mask logits → image-size masks, the
stability score and boxes.

Done group by group, so that a chunk of 192 logits on a 12-megapixel photo never lives at full
resolution all at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .boxes import tight_boxes

INCLUSIVE = np.array([0, 0, 1, 1])

# Full-resolution float32 logits held at once, at most.
GROUP_BYTES = 64 << 20


def _groups(count: int, height: int, width: int) -> Iterator[slice]:
    size = max(1, GROUP_BYTES // (4 * height * width))
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def upsample_logits(logits: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """K×l×l → K×H×W float32 through the frame's maps (`InputFrame.logit_maps`)."""
    rows, cols = maps
    return np.matmul(np.matmul(rows, logits), cols.T)


def logit_statistics(logits: np.ndarray, maps: tuple[np.ndarray, np.ndarray], threshold: float,
                    offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stability K float32, boxes K×4 inclusive [x0, y0, x1, y1] int64, area K int64) of the
    masks `logits > threshold` at image size.

    Stability is segment-anything's: |logits > threshold + offset| / |logits > threshold − offset|
    (NaN when nothing clears the lower bar). An empty mask's box is all zeros.
    """
    k = logits.shape[0]
    height, width = maps[0].shape[0], maps[1].shape[0]
    stability = np.zeros(k, dtype=np.float32)
    boxes = np.zeros((k, 4), dtype=np.int64)
    area = np.zeros(k, dtype=np.int64)
    for group in _groups(k, height, width):
        full = upsample_logits(logits[group], maps)
        inner = np.count_nonzero(full > threshold + offset, axis=(1, 2))
        outer = np.count_nonzero(full > threshold - offset, axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            stability[group] = inner.astype(np.float32) / outer.astype(np.float32)
        masks = full > threshold
        area[group] = np.count_nonzero(masks, axis=(1, 2))
        found = area[group] > 0
        # tight_boxes' exclusive ends, made inclusive (segment-anything's); empty stays zeros.
        boxes[group] = np.where(found[:, None], tight_boxes(masks) - INCLUSIVE, 0)
    return stability, boxes, area


def logit_masks(logits: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
                 threshold: float) -> np.ndarray:
    """K×H×W bool: `logits > threshold` at image size."""
    height, width = maps[0].shape[0], maps[1].shape[0]
    out = np.empty((logits.shape[0], height, width), dtype=bool)
    for group in _groups(logits.shape[0], height, width):
        np.greater(upsample_logits(logits[group], maps), threshold, out=out[group])
    return out
