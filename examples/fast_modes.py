"""The fast modes side by side with exact, on one scene: what each costs and what it changes.

- proposer_mode="fast": walks the point grid coarse to fine and skips points inside masks already
  found (far fewer decoder prompts, nearly the same masks);
- local_top=M: encodes the crops of only the M masks with the best global score (approximate);
- local_bound=True: encodes crops in rounds until no other mask can win (same answer as exact).
`zsris-rt check` measures the same on your own images.

    python examples/fast_modes.py [--pack PACK]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zsris_rt import Segmenter
from zsris_rt.maskops import mask_iou

HERE = Path(__file__).resolve().parent
MODES = {"exact": {}, "proposer fast": {"proposer_mode": "fast"}, "top-2": {"local_top": 2},
         "bound": {"local_bound": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", help="model pack (default: $ZSRIS_PACK, else the demo pack)")
    args = parser.parse_args()

    entry = json.loads((HERE / "scenes.json").read_text())[1]
    texts = [e["text"] for e in entry["expressions"]][:4]
    chosen: dict[str, list[np.ndarray]] = {}
    for name, options in MODES.items():
        seg = Segmenter.from_pack(args.pack, **options)
        scene = seg.encode_image(HERE / entry["image"])
        results = [seg.query(scene, text) for text in texts]
        chosen[name] = [r.mask for r in results]
        prompts = scene.proposals.prompts if scene.proposals is not None else 0
        crops = [r.local_computed for r in results]
        print(f"{name:14} {scene.num_masks} masks from {prompts} prompts, crops encoded per "
              f"query {crops}, chosen {[r.index for r in results]}")
    for name, masks in chosen.items():
        if name != "exact":  # the same choice: the same pixels (fast's masks are its own)
            same = sum(float(mask_iou(a[None], b[None])[0, 0]) >= 0.9
                       for a, b in zip(masks, chosen["exact"], strict=True))
            print(f"{name}: {same} of {len(texts)} chosen masks as exact's (IoU ≥ 0.9)")


if __name__ == "__main__":
    main()
