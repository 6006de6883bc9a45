"""The picture a person reads: the chosen mask tinted over the image, its contour, box and label.

Drawing only; writing the picture is the caller's (`image.encode_png`, `atomic_files`).
"""

from __future__ import annotations

import unicodedata

import cv2
import numpy as np

from .errors import ImageError, MaskError

OVERLAY_RGB = (0, 230, 120)  # tint, contour, box and label background
OVERLAY_ALPHA = 0.45
_TEXT_RGB = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


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
