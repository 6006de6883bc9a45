"""`zsris-rt synth`: write a small synthetic dataset in the refer layout (the generator:
`zsris_rt.synthetic_refer`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..synthetic_refer import (
    MAX_OBJECTS,
    NEW_PHRASINGS_SEED,
    PHRASINGS,
    SPLITS,
    write_synthetic_refer,
)
from .exit_codes import run_command


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 320x240, got {text!r}") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt synth",
        description="Write a small synthetic dataset in the refer layout (shapes, colours and "
                    "the relations between them), to try `zsris-rt eval` without RefCOCO.")
    parser.add_argument("--out", type=Path, required=True, help="data root to write")
    parser.add_argument("--dataset", default="refcoco", choices=tuple(SPLITS),
                        help="layout to mimic (default refcoco)")
    parser.add_argument("--images", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=_size, default=(320, 240),
                        help="image size WxH (default 320x240)")
    parser.add_argument("--max-objects", type=int, default=MAX_OBJECTS,
                        help=f"most shapes per image, 2 to 12 (default {MAX_OBJECTS})")
    parser.add_argument("--textures", action=argparse.BooleanOptionalAction, default=True,
                        help="textured backgrounds (default); --no-textures: plain grey only")
    parser.add_argument("--phrasings", default="standard", choices=PHRASINGS,
                        help="sentence set (default standard); new: the held-out spatial set "
                             "(vertical positions and ordinals, size comparisons, new relation "
                             "words) on the same scenes, for reporting only: use it with --seed "
                             f"{NEW_PHRASINGS_SEED}, a seed nothing is tuned on")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        folder = write_synthetic_refer(args.out, args.dataset, args.images, args.seed, args.size,
                                       args.max_objects, args.textures, args.phrasings)
        print(f"wrote {args.images} images to {args.out / 'images'} and refs to {folder}")
        print(f"try: zsris-rt eval --pack PACK --data {args.out} --dataset {args.dataset} "
              f"--split val --images {args.out / 'images'} --out eval-{args.dataset} "
              "--proposals gt")
        return 0

    return run_command("zsris-rt synth", body)
