"""Images in and out: decode, validate, normalise (SPEC.md §1); PNG bytes of a mask or picture."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError, ZsrisError

# Beyond this the K×H×W masks alone cost gigabytes; refuse with a clear message instead.
MAX_PIXELS = 64_000_000


def _check_size(h: int, w: int, where: str) -> None:
    if h < 1 or w < 1:
        raise ImageError(f"{where}: image has no pixels ({h}×{w})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"{where}: image is {w}×{h} = {h * w / 1e6:.0f} MP, above the "
                         f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it first")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a file into RGB uint8 H×W×3 (EXIF orientation applied, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    _check_size(bgr.shape[0], bgr.shape[1], str(path))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def as_rgb(image: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
    """Accept a path or an array; return a C-contiguous RGB uint8 H×W×3 array."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"image array must be H×W×3 RGB, got shape {array.shape}")
    _check_size(array.shape[0], array.shape[1], "image")
    return np.ascontiguousarray(array)


def normalise(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """RGB uint8 H×W×3 → 3×H×W float32, `(I/255 − mean) / std`."""
    x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (x - m) / s


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
