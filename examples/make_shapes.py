"""Draw the example scene `shapes.png` and its instance masks `shapes_masks.npz` (K×H×W bool).

Run from the repository root: python examples/make_shapes.py
"""

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).parent


def main() -> None:
    h, w = 240, 320
    rng = np.random.default_rng(7)
    background = cv2.resize(rng.integers(150, 220, (6, 8, 3), dtype=np.uint8), (w, h),
                            interpolation=cv2.INTER_CUBIC)
    shapes = [
        ("red circle", (220, 30, 30), lambda m: cv2.circle(m, (70, 80), 40, 1, -1)),
        ("blue square", (30, 60, 210), lambda m: cv2.rectangle(m, (150, 40), (230, 120), 1, -1)),
        ("green triangle", (40, 170, 60), lambda m: cv2.fillPoly(
            m, [np.array([[250, 220], [310, 220], [280, 150]], np.int32)], 1)),
        ("yellow ring", (230, 200, 40), lambda m: cv2.circle(m, (110, 180), 35, 1, 12)),
    ]
    image = background.copy()
    masks = np.zeros((len(shapes), h, w), dtype=bool)
    for k, (_, colour, draw) in enumerate(shapes):
        layer = np.zeros((h, w), np.uint8)
        draw(layer)
        masks[k] = layer > 0
        image[masks[k]] = colour
    cv2.imwrite(str(HERE / "shapes.png"), image[:, :, ::-1])
    np.savez_compressed(HERE / "shapes_masks.npz", masks=masks)
    print("masks:", ", ".join(f"{k}: {name}" for k, (name, _, _) in enumerate(shapes)))


if __name__ == "__main__":
    main()
