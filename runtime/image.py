"""Images in and out: decode, validate, normalise (SPEC.md §1); PNG bytes of a mask or picture."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError, ZsrisError

# Beyond this the K×H×W masks alone cost gigabytes; refuse with a clear message instead.
MAX_PIXELS = 64_000_000


class ImageTooLarge(ImageError):
    """More pixels than MAX_PIXELS (a service answers 413)."""


def check_size(h: int, w: int, where: str) -> None:
    """An image of h×w pixels is allowed: at least one, at most MAX_PIXELS (ImageTooLarge)."""
    if h < 1 or w < 1:
        raise ImageError(f"{where}: image has no pixels ({h}×{w})")
    if h * w > MAX_PIXELS:
        raise ImageTooLarge(f"{where}: image is {w}×{h} = {h * w / 1e6:.0f} MP, above the "
                         f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it first")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that a PNG, JPEG, BMP or WebP header claims, read before anything is
    decoded (so a 60000×60000 "decompression bomb" is refused for free); None for another
    format or a header too short to say."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        return (int.from_bytes(data[18:22], "little", signed=True),
                abs(int.from_bytes(data[22:26], "little", signed=True)))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), \
                1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                    int.from_bytes(data[28:30], "little") & 0x3FFF)
        return None
    if data[:2] == b"\xff\xd8":
        at = 2
        while at + 9 <= len(data):
            if data[at] != 0xFF:
                return None
            marker = data[at + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
                at += 2
                continue
            length = int.from_bytes(data[at + 2:at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return (int.from_bytes(data[at + 7:at + 9], "big"),
                        int.from_bytes(data[at + 5:at + 7], "big"))
            at += 2 + length
    return None


def decode_image(data: bytes, where: str = "image") -> np.ndarray:
    """Encoded image bytes → RGB uint8 H×W×3 (EXIF orientation applied, alpha dropped). A header
    that claims more than MAX_PIXELS is refused before decoding."""
    claimed = header_size(data)
    if claimed is not None:
        check_size(claimed[1], claimed[0], where)
    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if bgr is None:
        raise ImageError(f"{where}: not a readable image (corrupt or unsupported format)")
    check_size(bgr.shape[0], bgr.shape[1], where)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class UnsupportedImageFormat(ImageError):
    """Bytes from outside that are empty or not PNG, JPEG, BMP or WebP: their size cannot be read
    before decoding (a service answers 415)."""


def decode_upload(data: bytes, where: str) -> np.ndarray:
    """Image bytes from outside (a request, a robot's message): only formats whose header says
    their size are decoded, and only once that size is allowed."""
    if not data:
        raise UnsupportedImageFormat(f"{where}: no data")
    if header_size(data) is None:
        raise UnsupportedImageFormat(f"{where}: not a PNG, JPEG, BMP or WebP image (or its "
                                     "header is cut short)")
    return decode_image(data, where)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a file into RGB uint8 H×W×3 (EXIF orientation applied, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    return decode_image(path.read_bytes(), str(path))


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
    check_size(array.shape[0], array.shape[1], "image")
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
