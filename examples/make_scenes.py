"""Draw the demo scenes `scene-N.png`, their instance masks `scene-N_masks.npz` (K×H×W bool) and
`scenes.json`: per scene, attribute expressions that single one object out, and which.

The scenes come from the generator the demo pack was *not* trained on (seeds of `zsris-rt synth`'s
two-number form), chosen by what they hold, not by how the demo pack does on them: the first seeds
whose scene has at least four objects and a kind drawn twice (so that colour or size must decide).

Run from the repository root: python examples/make_scenes.py
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from zsris_rt.synthetic_refer import describe, draw_scene

HERE = Path(__file__).parent
SEED = 2024
SCENES = 3


def wanted(objects: list) -> bool:
    kinds = [o.shape.kind for o in objects]
    return len(objects) >= 4 and len(set(kinds)) < len(kinds)


def main() -> None:
    chosen, index = [], 0
    while len(chosen) < SCENES:
        scene = draw_scene(np.random.default_rng([SEED, index]))
        if wanted(scene.objects):
            chosen.append((index, scene))
        index += 1
    doc = []
    for number, (index, scene) in enumerate(chosen, start=1):
        name = f"scene-{number}"
        cv2.imwrite(str(HERE / f"{name}.png"), scene.pixels[:, :, ::-1])
        np.savez_compressed(HERE / f"{name}_masks.npz",
                            masks=np.stack([o.mask for o in scene.objects]))
        expressions = [
            {"text": e.text, "object": k}
            for k, obj in enumerate(scene.objects)
            for e in describe(obj, scene.objects, "refcoco") if e.kind == "attribute"]
        doc.append({"image": f"{name}.png", "masks": f"{name}_masks.npz",
                    "seed": [SEED, index],
                    "objects": [{"kind": o.shape.kind, "colour": o.shape.colour,
                                 "size": o.shape.size} for o in scene.objects],
                    "expressions": expressions})
    (HERE / "scenes.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {SCENES} scenes to {HERE}")


if __name__ == "__main__":
    main()
