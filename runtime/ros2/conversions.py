"""ROS 2 messages ↔ the runtime's arrays, as plain data (no rclpy): the node copies message fields
in and out, so that everything here is testable without ROS.

* `image_from_msg_fields`: a sensor_msgs/Image's fields → RGB uint8 H×W×3 (rgb8, bgr8, mono8,
  rgba8, bgra8; row padding honoured; anything else refused by name).
* `image_from_compressed`: a sensor_msgs/CompressedImage (JPEG, PNG; the header's size checked
  before decoding, as the service does).
* `mask_to_mono8_fields`: a mask → the fields of a mono8 sensor_msgs/Image (0 / 255).
* `detections_from_results`: the query records (`result_to_dict`) → what each
  vision_msgs/Detection2D holds.
* `expressions_from_text`: a std_msgs/String of expressions (one, or a JSON list).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..errors import ImageError, TextError
from ..image import check_size, decode_upload

# Encoding → (channels, OpenCV conversion to RGB, or None when the bytes already are RGB).
ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}


def image_from_msg_fields(encoding: str, height: int, width: int, step: int, data: Any,
                          is_bigendian: int | bool = False,
                          where: str = "image message") -> np.ndarray:
    """A sensor_msgs/Image's fields → a fresh RGB uint8 H×W×3 array.

    `data` is anything with the buffer protocol (bytes, bytearray, array.array('B'), a uint8
    array) or a sequence of ints. Rows are `step` bytes apart (`step` ≥ width × channels; the
    padding is skipped). `is_bigendian` is accepted and ignored: every encoding taken here has
    one byte per channel.
    """
    del is_bigendian  # 8-bit channels: byte order does not apply
    if encoding not in ENCODINGS:
        raise ImageError(f"{where}: encoding {encoding!r} is not supported (use one of "
                         f"{', '.join(ENCODINGS)})")
    channels, conversion = ENCODINGS[encoding]
    height, width, step = int(height), int(width), int(step)
    check_size(height, width, where)
    row = width * channels
    if step < row:
        raise ImageError(f"{where}: step {step} is shorter than a row of {width} {encoding} "
                         f"pixels ({row} bytes)")
    try:
        raw = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        raw = np.asarray(data, dtype=np.uint8).ravel()
    # The last row's padding may be left off; anything shorter is cut.
    needed = step * (height - 1) + row
    if raw.size < needed:
        raise ImageError(f"{where}: {raw.size} bytes of data, a {width}×{height} {encoding} "
                         f"image with step {step} needs {step * height}")
    if raw.size < step * height:
        raw = np.concatenate([raw[:needed], np.zeros(step * height - needed, np.uint8)])
    pixels = raw[:step * height].reshape(height, step)[:, :row].reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def image_from_compressed(format: str, data: Any,
                          where: str = "compressed image message") -> np.ndarray:
    """A sensor_msgs/CompressedImage → RGB uint8 H×W×3: JPEG or PNG (BMP, WebP too), told apart
    by content; the size its header claims is checked before anything is decoded. The
    compressedDepth transport (16-bit depth) is refused."""
    if "compresseddepth" in format.replace(" ", "").lower():
        raise ImageError(f"{where}: format {format!r} is a depth image, not a colour one")
    return decode_upload(bytes(data), f"{where} (format {format!r})")


def mask_to_mono8_fields(mask: np.ndarray) -> tuple[str, int, int, int, bytes]:
    """An H×W mask (bool or 0/1) → (encoding "mono8", height, width, step, data): 255 inside,
    0 outside, rows unpadded."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ImageError(f"a mask must be H×W, got shape {mask.shape}")
    height, width = mask.shape
    data = np.where(mask.astype(bool), np.uint8(255), np.uint8(0)).tobytes()
    return "mono8", int(height), int(width), int(width), data


def detections_from_results(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Query records (`zsris_rt.result_json.result_to_dict`) → one plain dict per
    vision_msgs/Detection2D: its bounding box and one hypothesis.

    The box comes from the record's tight `box` [x0, y0, x1, y1) in pixels: `size_x = x1 − x0`,
    `size_y = y1 − y0` (pixels), and the centre in the runtime's convention (pixel centres at
    integer coordinates, as the record's `centroid`): `center_x = (x0 + x1 − 1) / 2`. An empty
    box (x1 ≤ x0) has size 0 at x0. `class_id` is the expression, `score` the record's score;
    `id` is the chosen mask's index (as a string, Detection2D's `id` field).
    """
    detections = []
    for record in results:
        x0, y0, x1, y1 = (int(v) for v in record["box"])
        size_x, size_y = max(x1 - x0, 0), max(y1 - y0, 0)
        detections.append({
            "center_x": x0 + (size_x - 1) / 2 if size_x else float(x0),
            "center_y": y0 + (size_y - 1) / 2 if size_y else float(y0),
            "size_x": float(size_x),
            "size_y": float(size_y),
            "class_id": str(record["text"]),
            "score": float(record["score"]),
            "id": str(int(record["index"])),
        })
    return detections


def expressions_from_text(text: str) -> list[str]:
    """A std_msgs/String on `~/expression`: one expression, or a JSON list of them
    (`["the red mug", "the laptop"]`)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise TextError(f"an expression list that is not JSON: {exc.msg}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TextError("an expression list must be a JSON list of strings")
        texts = [v.strip() for v in value]
    else:
        texts = [stripped]
    if not texts or not all(texts):
        raise TextError("an empty expression")
    return texts
