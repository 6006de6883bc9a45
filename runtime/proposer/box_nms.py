"""Greedy box non-maximum suppression, as torchvision's `batched_nms` with one category."""

from __future__ import annotations

import numpy as np


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes [x0, y0, x1, y1], best score first (ties: the earlier box
    first). A box is dropped when its IoU with a kept, better box exceeds `iou_threshold`.

    IoU as torchvision computes it: area (x1 − x0)·(y1 − y0), in float32, compared with the
    threshold in double precision, so that a pair right at the threshold falls the same way.
    Only the rows of kept boxes are computed: O(kept × K), not a K×K matrix.
    """
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    if order.size == 0 or iou_threshold >= 1.0:  # an IoU never exceeds 1: nothing is dropped
        return order.astype(np.int64)
    x0, y0, x1, y1 = boxes[order].astype(np.float32).T
    area = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(order.size, dtype=bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, None)
        w = np.maximum(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), np.float32(0))
        h = np.maximum(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), np.float32(0))
        inter = w * h
        union = area[i] + area[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / union  # 0/0 is NaN, which suppresses nothing, as in torchvision
        suppressed[rest] |= iou.astype(np.float64) > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]
