"""Read `zsris-rt --json` as a robot would: run the command, decode the chosen mask from its COCO
RLE, and turn the geometry into a grasp target (centroid, principal axis, box).

The JSON holds plain values only; the mask is COCO compressed RLE, which pycocotools (or any COCO
tool) decodes. Exit status 0 means a mask was chosen; 2 bad input; 3 the proposer kept no mask.

    python examples/robot_json.py [IMAGE TEXT]
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from pycocotools import mask as coco_mask

HERE = Path(__file__).resolve().parent


def main() -> int:
    image, text = (sys.argv[1], sys.argv[2]) if len(sys.argv) == 3 else \
        (str(HERE / "scene-2.png"), "the big yellow star")
    done = subprocess.run([sys.executable, "-m", "zsris_rt.commands", image, text, "--json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"no target ({done.returncode}): {done.stderr.strip()}", file=sys.stderr)
        return done.returncode
    report = json.loads(done.stdout)
    for result in report["results"]:
        rle = result["rle"]
        mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        cx, cy = result["centroid"]
        angle = math.radians(result["angle_deg"])
        x0, y0, x1, y1 = result["box"]
        print(f"{result['text']!r}: mask {result['index']} of {result['num_masks']} "
              f"(score {result['score']:.2f}), {int(mask.sum())} px = area {result['area']}")
        print(f"  grasp at ({cx:.1f}, {cy:.1f}) px, gripper across the axis "
              f"{result['angle_deg']:.1f}° (direction {math.cos(angle):.2f}, "
              f"{math.sin(angle):.2f}), box [{x0}, {y0}, {x1}, {y1})")
        print(f"  timings {', '.join(f'{k} {v:.0f} ms' for k, v in result['timings_ms'].items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
