"""Greedy box non-maximum suppression, as torchvision's `batched_nms` with one category."""

from __future__ import annotations

import numpy as np


def box_iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of K boxes [x0, y0, x1, y1]; area = (x1 − x0)·(y1 − y0). float32, as
    torchvision computes it, so that a pair right at the threshold falls the same way."""
    b = boxes.astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, np.float32(0.0))


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, best score first (ties: the earlier box first). A box is
    dropped when its IoU with a kept, better box exceeds `iou_threshold`."""
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    if order.size == 0:
        return order.astype(np.int64)
    iou = box_iou_matrix(boxes[order])
    suppressed = np.zeros(order.size, dtype=bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        # torchvision compares its float32 IoU with the threshold in double precision.
        suppressed |= iou[i].astype(np.float64) > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]
