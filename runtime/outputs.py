"""What a query leaves behind: geometry a robot can act on, a picture a person can read, files."""

from __future__ import annotations

import math
import unicodedata
from typing import Any

import cv2
import numpy as np

from .errors import ImageError, MaskError, ZsrisError
from .maskops import tight_boxes
from .masks import rle_encode
from .results import Result

OVERLAY_RGB = (0, 230, 120)  # tint, contour, box and label background
OVERLAY_ALPHA = 0.45
_TEXT_RGB = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def mask_geometry(mask: np.ndarray) -> dict[str, Any]:
    """Area, centroid, principal axis angle and tight box of one H×W mask, for a grasp planner.

    Pixel centres sit at integer (x, y). `angle_deg` is the direction of the major axis of the
    second central moments, in (-90, 90], measured from +x towards +y; image y points down, so a
    band from top-left to bottom-right is +45 (clockwise on screen) and a vertical bar is 90. A
    shape without a major axis (disc, square, one pixel) gets 0.0.
    """
    mask = np.asarray(mask, dtype=bool)
    x0, y0, x1, y1 = (int(v) for v in tight_boxes(mask[None])[0])
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    if xs.size == 0:
        raise MaskError("mask is empty (all false): it has no geometry")
    cx, cy = xs.mean() + x0, ys.mean() + y0
    dx, dy = xs + (x0 - cx), ys + (y0 - cy)
    mu20, mu02, mu11 = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    anisotropy = math.hypot(mu20 - mu02, 2.0 * mu11)
    if anisotropy <= 1e-9 * (mu20 + mu02):
        angle = 0.0
    else:
        angle = math.degrees(0.5 * math.atan2(2.0 * mu11 + 0.0, mu20 - mu02))
        if angle <= -90.0:
            angle += 180.0
    return {
        "area": int(xs.size),
        "centroid": [float(cx), float(cy)],
        "angle_deg": angle,
        "box": [x0, y0, x1, y1],
    }


_ASCII_PUNCTUATION = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-", "\u2014": "-"}
)


def _printable(label: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: straighten quotes, strip accents, else '?'."""
    decomposed = unicodedata.normalize("NFKD", label.translate(_ASCII_PUNCTUATION))
    return "".join(c if c.isascii() else "?" for c in decomposed if not unicodedata.combining(c))


def render_overlay(
    image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], label: str
) -> np.ndarray:
    """RGB uint8 picture of the chosen mask tinted over the image, its contour, box and label.

    Line width and text size follow the image size so the picture reads the same at 240p and 4K;
    the label sits above the box where it fits and is always kept inside the picture.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"overlay needs an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (h, w):
        raise MaskError(f"mask is {mask.shape} but the image is {h}×{w}")

    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    colour = np.array(OVERLAY_RGB, dtype=np.float32)
    out[mask] = (
        (out[mask] * (1.0 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA).round().astype(np.uint8)
    )

    line = max(1, round(min(h, w) / 320))
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(out, contours, -1, OVERLAY_RGB, line, cv2.LINE_AA)
    x0, y0, x1, y1 = (int(v) for v in box)
    cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), OVERLAY_RGB, line)

    text = _printable(label)
    scale = max(0.35, min(h, w) / 900)
    thick = max(1, round(scale * 1.5))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    if tw + 2 > w:  # shrink a long label to the picture's width, down to the smallest legible size
        scale = max(0.3, scale * (w - 2) / max(tw, 1))
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(1, round(th * 0.3))
    lw, lh = tw + 2 * pad, th + base + 2 * pad
    if y0 - lh >= 0:
        ly = y0 - lh
    elif y1 + lh <= h:
        ly = y1
    else:
        ly = y0
    lx = min(max(x0, 0), max(w - lw, 0))
    ly = min(max(ly, 0), max(h - lh, 0))
    cv2.rectangle(out, (lx, ly), (lx + lw - 1, ly + lh - 1), OVERLAY_RGB, cv2.FILLED)
    cv2.putText(out, text, (lx + pad, ly + pad + th), _FONT, scale, _TEXT_RGB, thick, cv2.LINE_AA)
    return out


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an H×W×3 uint8 RGB image, or of an H×W mask written as 0/255 single channel.

    An H×W uint8 array counts as a mask (non-zero is 255), so 0/1 masks give a visible PNG.
    """
    array = np.asarray(array)
    if array.ndim == 2 and (array.dtype == np.bool_ or array.dtype == np.uint8):
        pixels = np.where(array != 0, np.uint8(255), np.uint8(0))
    elif array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        pixels = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    else:
        raise ValueError(
            f"encode_png needs H×W×3 uint8 or H×W bool/uint8, got {array.dtype} {array.shape}"
        )
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise ZsrisError(f"could not encode a {array.shape} array as PNG")
    return buf.tobytes()


def result_to_dict(result: Result, backend: str, spacy_model: str) -> dict[str, Any]:
    """The JSON record of one query: plain Python values only, so json.dumps always works."""
    geometry = mask_geometry(result.mask)
    return {
        "text": result.text,
        "sentence": result.sentence,
        "noun_phrase": result.noun_phrase,
        "index": int(result.index),
        "score": result.score,
        "box": list(result.box),
        "area": geometry["area"],
        "centroid": geometry["centroid"],
        "angle_deg": geometry["angle_deg"],
        "rle": rle_encode(result.mask),
        # Masks a pruned query never scored in full (`--local-top`) are null, not -Infinity.
        "scores": [float(s) if np.isfinite(s) else None for s in np.asarray(result.scores).ravel()],
        "local_computed": result.local_computed,
        "num_masks": int(result.masks.shape[0]),
        "alpha": float(result.alpha),
        "beta": float(result.beta),
        "truncated": bool(result.truncated),
        "backend": backend,
        "spacy_model": spacy_model,
        "timings_ms": {str(k): float(v) for k, v in result.timings.items()},
    }
