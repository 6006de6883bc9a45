"""Segment everything with the pack's proposer, with options, and look at what it kept.

The encoder runs once per image (cached by image content), so asking again with other thresholds
costs only the decoder. The proposals come best predicted IoU first and are deterministic.

    python examples/propose_with_options.py [--pack PACK]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zsris_rt import Segmenter

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", help="model pack (default: $ZSRIS_PACK, else the demo pack)")
    args = parser.parse_args()

    seg = Segmenter.from_pack(args.pack)
    image = HERE / "scene-1.png"
    for options in ({}, {"pred_iou_thresh": 0.8, "max_masks": 5},
                    {"points_per_side": 8, "mask_nms_thresh": 0.5}):
        proposals = seg.propose(image, **options)
        print(f"options {options or 'the pack defaults'}: {len(proposals)} masks from "
              f"{proposals.prompts} of {proposals.grid_points} grid points, "
              f"{sum(proposals.timings.values()):.0f} ms")
        for k in range(min(3, len(proposals))):
            x0, y0, x1, y1 = (int(v) for v in proposals.boxes[k])
            print(f"  mask {k}: predicted IoU {proposals.iou[k]:.3f}, stability "
                  f"{proposals.stability[k]:.3f}, box [{x0}, {y0}, {x1}, {y1}), "
                  f"{int(proposals.masks[k].sum())} px, from point "
                  f"({proposals.points[k][0]:.0f}, {proposals.points[k][1]:.0f})")


if __name__ == "__main__":
    main()
