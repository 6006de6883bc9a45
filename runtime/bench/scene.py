"""The benchmark's workload, written to disk by a worker: a JPEG of smooth colour noise and
shapes (decoded from disk on every timed run, as a camera frame would be), random ellipse masks,
and distinct referring expressions."""

from __future__ import annotations

import itertools
import os
from typing import Any

from .stats import Json

COLOURS = ("red", "blue", "green", "white", "black", "small", "large", "wooden")
THINGS = ("mug", "chair on the left", "laptop", "bottle next to the plate", "book",
          "person in the back", "dog", "lamp")
DEFAULT_TEXT = "the red mug left of the laptop"


def expressions(n: int) -> list[str]:
    """`n` distinct expressions (each one new to the text cache), the default one first."""
    pairs = itertools.product(THINGS, COLOURS)
    return [DEFAULT_TEXT, *(f"the {c} {t}" for t, c in pairs)][:n]


def draw_scene(rng: Any, width: int, height: int, shapes: int, gradient: float = 0.0) -> Any:
    """A blurred uint8 BGR scene: smooth colour noise, an optional horizontal gradient of ±
    `gradient`, and filled circles and rectangles sized for 480 px on the short side."""
    import cv2
    import numpy as np

    low = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
    image = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    if gradient:
        image += np.linspace(-gradient, gradient, width, dtype=np.float32)[None, :, None]
    scale = min(width, height) / 480
    for _ in range(shapes):
        color = [float(c) for c in rng.uniform(0, 255, 3)]
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(15, 90) * scale), color, -1)
        else:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(20, 160) * scale),
                                          y + int(rng.integers(20, 120) * scale)), color, -1)
    return np.clip(cv2.GaussianBlur(image, (0, 0), 2.0 * scale), 0, 255).astype(np.uint8)


def ellipse_masks(rng: Any, k: int, height: int, width: int) -> Any:
    """K×H×W bool random ellipses, none empty."""
    import cv2
    import numpy as np

    masks = np.zeros((k, height, width), dtype=bool)
    for i in range(k):
        canvas = np.zeros((height, width), dtype=np.uint8)
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(12, width // 3)), int(rng.integers(12, height // 3)))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks[i] = canvas > 0
    if not masks.reshape(k, -1).any(axis=1).all():
        raise RuntimeError("an empty mask was drawn")
    return masks


def write_workload(spec: Json) -> Json:
    """Worker: the JPEG `spec["image"]` (drawn at `spec["size"]` = W×H unless spec["generate"]
    is false: then the caller's image is read) and, with `spec["masks"]`, `spec["k"]` ellipse
    masks at its size saved as .npy (a run at K takes the first K)."""
    import cv2
    import numpy as np

    from zsris_rt.image import read_image

    rng = np.random.default_rng(spec["seed"])
    if spec.get("generate", True):
        width, height = spec["size"]
        image = draw_scene(rng, width, height, shapes=spec.get("shapes", 10),
                           gradient=spec.get("gradient", 0.0))
        cv2.imwrite(spec["image"], image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    else:
        height, width = read_image(spec["image"]).shape[:2]
    if spec.get("masks"):
        np.save(spec["masks"], ellipse_masks(rng, spec["k"], height, width))
    return {"image_bytes": os.path.getsize(spec["image"]), "size": [width, height]}
