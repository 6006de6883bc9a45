"""Encode a scene once, then ask it many things: the split API a robot keeps warm.

The proposer and both CLIP image stages run once in `encode_image`; each `query` costs a text
encoding (cached per expression) and a dot product. Here the candidates are the scene's true masks,
so the choice alone is on show; drop `masks=` and the pack's proposer makes them.

    python examples/encode_once_query_many.py [--pack PACK]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from zsris_rt import Segmenter

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", help="model pack (default: $ZSRIS_PACK, else the demo pack)")
    args = parser.parse_args()

    entry = json.loads((HERE / "scenes.json").read_text())[0]
    masks = np.load(HERE / entry["masks"])["masks"]  # K×H×W bool, one per object
    seg = Segmenter.from_pack(args.pack)

    start = time.perf_counter()
    scene = seg.encode_image(HERE / entry["image"], masks)
    print(f"encoded {entry['image']} with {scene.num_masks} masks in "
          f"{(time.perf_counter() - start) * 1e3:.0f} ms")
    right = 0
    for expression in entry["expressions"]:
        start = time.perf_counter()
        result = seg.query(scene, expression["text"])
        ms = (time.perf_counter() - start) * 1e3
        right += result.index == expression["object"]
        print(f"{expression['text']!r:32} → mask {result.index} (true {expression['object']}), "
              f"score {result.score:.2f}, noun phrase {result.noun_phrase!r}, {ms:.1f} ms")
    print(f"{right} of {len(entry['expressions'])} right")


if __name__ == "__main__":
    main()
