"""The mask operations, from the C++ extension `zsris_rt._maskops` when it is built, else from
their NumPy twins; every op has both and the tests hold them equal. Each twin module is named like
its C++ file (cpp_ext/boxes.cpp ↔ boxes.py, crops.cpp ↔ crops.py, ...) and its functions like the
ops below; the functions here check their arguments once, for both.

`ZSRIS_MASKOPS=numpy` forces the NumPy twins (tests use it to run both paths). `implementation()`
says which one runs, for `--json` and for users wondering why a machine is slower.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from ..errors import MaskError
from . import boxes as _boxes
from . import crops as _crops
from . import feature_maps as _feature_maps
from . import iou as _iou
from . import logits as _logits
from . import rle as _rle

# Largest crop side or grid (as in cpp_ext/maskops.h): a larger one is a caller's mistake.
MAX_SIDE = 4096
# Largest side an RLE may claim (cpp_ext/rle.cpp): beyond it, corrupt or hostile input.
MAX_RLE_SIDE = 1 << 16


def _load_native() -> tuple[ModuleType | None, str]:
    if os.environ.get("ZSRIS_MASKOPS", "").lower() == "numpy":
        return None, "numpy (forced by ZSRIS_MASKOPS=numpy)"
    try:
        from .. import _maskops
    except ImportError as exc:
        return None, f"numpy (C++ extension not built: {exc})"
    return _maskops, "c++"


_native, _implementation = _load_native()


def implementation() -> str:
    """"c++", or "numpy (why)"."""
    return _implementation


def _bool_masks(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != np.bool_ or masks.ndim != 3:
        raise MaskError(f"masks must be a K×H×W bool array, got {masks.dtype} with shape "
                        f"{masks.shape}")
    return np.ascontiguousarray(masks)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """K×H×W bool → K×4 int64 tight boxes [x0, y0, x1, y1); an empty mask gets [0, 0, 0, 0]."""
    masks = _bool_masks(masks)
    if _native is not None:
        return _native.tight_boxes(masks)
    return _boxes.tight_boxes(masks)


def masked_crops(normalised: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                 fill: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """K masked crops → K×3×size×size float32 (SPEC.md §3); see `crops.masked_crops`.
    `out`, a reused C-contiguous float32 buffer of that shape, spares the allocation."""
    masks = _bool_masks(masks)
    normalised = np.ascontiguousarray(normalised, dtype=np.float32)
    boxes = np.ascontiguousarray(boxes, dtype=np.int64)
    fill = np.ascontiguousarray(fill, dtype=np.float32).ravel()
    k, h, w = masks.shape
    if normalised.shape != (3, h, w) or boxes.shape != (k, 4) or fill.shape != (3,) or \
            not 1 <= size <= MAX_SIDE:
        raise MaskError(f"masked_crops: image {normalised.shape}, masks {masks.shape}, boxes "
                        f"{boxes.shape}, fill {fill.shape}, size {size} do not fit together")
    if k and ((boxes[:, :2] < 0).any() or (boxes[:, 2] > w).any() or (boxes[:, 3] > h).any()
              or (boxes[:, 2:] <= boxes[:, :2]).any()):
        raise MaskError("masked_crops: every box must be non-empty and inside the image")
    if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.float32 or
                            out.shape != (k, 3, size, size) or not out.flags.c_contiguous or
                            not out.flags.writeable):
        raise MaskError(f"masked_crops: out must be a writeable C-contiguous float32 array of "
                        f"shape {(k, 3, size, size)}")
    if _native is not None and hasattr(_native, "masked_crops"):
        return _native.masked_crops(normalised, masks, boxes, fill, int(size), out)
    return _crops.masked_crops(normalised, masks, boxes, fill, int(size), out)


def mask_grid(masks: np.ndarray, grid: int) -> np.ndarray:
    """K×H×W bool → K×g×g float32 (SPEC.md §2.2); see `crops.mask_grid`."""
    masks = _bool_masks(masks)
    if not 1 <= grid <= MAX_SIDE or 0 in masks.shape[1:]:
        raise MaskError(f"mask_grid: grid {grid} of masks {masks.shape}")
    if _native is not None and hasattr(_native, "mask_grid"):
        return _native.mask_grid(masks, int(grid))
    return _crops.mask_grid(masks, int(grid))


def logit_statistics(logits: np.ndarray, maps: tuple[np.ndarray, np.ndarray], threshold: float,
                     offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stability, inclusive boxes and area of low-res logits at image size; see
    `logits.logit_statistics`."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    rows, cols = (np.ascontiguousarray(m, dtype=np.float32) for m in maps)
    if _native is not None and hasattr(_native, "logit_statistics"):
        return _native.logit_statistics(logits, rows, cols, float(threshold), float(offset))
    return _logits.logit_statistics(logits, (rows, cols), threshold, offset)


def logit_masks(logits: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
                threshold: float) -> np.ndarray:
    """K×H×W bool `logits > threshold` at image size; see `logits.logit_masks`."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    rows, cols = (np.ascontiguousarray(m, dtype=np.float32) for m in maps)
    if _native is not None and hasattr(_native, "logit_masks"):
        return _native.logit_masks(logits, rows, cols, float(threshold))
    return _logits.logit_masks(logits, (rows, cols), threshold)


def mask_iou(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """K×H×W and M×H×W bool → K×M float64 IoU (0 where both are empty); without `b`, a with a."""
    a = _bool_masks(a)
    if b is not None:
        b = _bool_masks(b)
        if b.shape[1:] != a.shape[1:]:
            raise MaskError(f"mask_iou: masks {a.shape} and {b.shape} differ in H×W")
    if _native is not None and hasattr(_native, "mask_iou"):
        return _native.mask_iou(a, b)
    return _iou.mask_iou(a, b)


def mask_nms(masks: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Kept indices (int64, best score first) of greedy mask NMS at IoU `threshold`."""
    masks = _bool_masks(masks)
    scores = np.ascontiguousarray(scores, dtype=np.float64)  # float32 scores convert exactly
    if scores.shape != masks.shape[:1] or np.isnan(scores).any() or np.isnan(threshold):
        raise MaskError(f"mask_nms: scores {scores.shape} for masks {masks.shape}, threshold "
                        f"{threshold}: one number per mask, none NaN")
    if _native is not None and hasattr(_native, "mask_nms"):
        return _native.mask_nms(masks, scores, float(threshold))
    return _iou.mask_nms(masks, scores, float(threshold))


def rle_encode(masks: np.ndarray) -> list[str]:
    """K×H×W bool → K COCO compressed RLE counts strings, as pycocotools writes them."""
    masks = _bool_masks(masks)
    if 0 in masks.shape[1:] and masks.shape[0]:
        raise MaskError(f"rle_encode: masks {masks.shape} have no pixels")
    counts = _native.rle_encode(masks) if _native is not None and hasattr(_native, "rle_encode") \
        else _rle.rle_encode(masks)
    return [c.decode("ascii") for c in counts]


def rle_decode(counts: Sequence[bytes | str], size: tuple[int, int]) -> np.ndarray:
    """K COCO compressed counts strings of masks of `size` (H, W) → K×H×W bool. Counts that do not
    cover H·W exactly, or are not a counts string, are a MaskError naming the RLE."""
    if len(size) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                  and 1 <= n <= MAX_RLE_SIDE for n in size):
        raise MaskError(f"RLE size {tuple(size)} is not a mask size (two integers, each in "
                        f"1..{MAX_RLE_SIDE})")
    if isinstance(counts, (str, bytes)) or not all(isinstance(c, (str, bytes)) for c in counts):
        raise MaskError("RLE counts must be a list of compressed counts strings")
    raw = []
    for i, c in enumerate(counts):
        try:
            raw.append(c.encode("ascii") if isinstance(c, str) else c)
        except UnicodeEncodeError:
            raise MaskError(f"RLE {i}: the counts string holds a character outside '0'..'o'") \
                from None
    height, width = int(size[0]), int(size[1])
    if _native is None or not hasattr(_native, "rle_decode"):
        return _rle.rle_decode(raw, height, width)
    try:
        return _native.rle_decode(raw, height, width)
    except ValueError as exc:
        raise MaskError(str(exc)) from None


def masked_feature_maps(features: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """C×g×g feature map, K×g×g grids → K×C×g×g float32 (SPEC.md §7, the ResNet family)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    grids = np.ascontiguousarray(grids, dtype=np.float32)
    if features.ndim != 3 or grids.ndim != 3 or grids.shape[1:] != features.shape[1:]:
        raise MaskError(f"masked_feature_maps: features {features.shape} (C×g×g) and grids "
                        f"{grids.shape} (K×g×g) do not fit together")
    if _native is not None and hasattr(_native, "masked_feature_maps"):
        return _native.masked_feature_maps(features, grids)
    return _feature_maps.masked_feature_maps(features, grids)
