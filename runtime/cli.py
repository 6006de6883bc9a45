"""`zsris-rt IMAGE TEXT [TEXT ...]`: the referred mask of each expression, for a person or a robot.
`zsris-rt COMMAND ...` runs one of the other commands (COMMANDS), each in its own module.

The image is encoded once and every expression is scored against that one scene. Every output is
rendered in memory first and written atomically, so a failure leaves no half-written file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from .backends import BACKENDS, PRECISIONS
from .errors import NoMaskError, ZsrisError
from .proposer_modes import MODES as PROPOSER_MODES

EPILOG = """\
examples:
  zsris-rt examples/scene-2.png "the big yellow star" --overlay out.png    (the demo pack)
  zsris-rt kitchen.jpg "the red mug" --pack engines/b32 --overlay out.png
  zsris-rt kitchen.jpg "the red mug" "the laptop" --pack engines/b32 --json
  zsris-rt kitchen.jpg "the red mug" --pack engines/b32 --masks masks.npz --out mug.png

Without --pack, the demo pack runs ($ZSRIS_PACK, else engines/demo): tiny models trained on
synthetic shapes, for trying the tool; export a real pack for photos. Without --masks the pack's
proposer cuts the image into candidate masks (segment-anything's
automatic mask generator and its defaults; the options below override them). With several
expressions, --out and --overlay get the expression's number before the suffix (mask-1.png,
mask-2.png, ...). Exit status: 0 on success, 2 on bad input (one-line message), 3 when the
proposer keeps no mask. Set ZSRIS_DEBUG=1 to see a traceback instead of the one-line message.

other commands (each has --help):
{commands}
"""

# `zsris-rt NAME ...` → the module whose `main(argv)` runs it, and one line for --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "what this machine runs: packages, providers, C++ mask ops, a pack"),
    "eval": ("evaluation", "oIoU/mIoU on data in the refer layout (RefCOCO/+/g)"),
    "synth": ("synthetic_refer", "write a small synthetic dataset in the refer layout"),
    "check": ("check", "compare a backend / precision / pruning mode with exact fp32 CPU"),
    "bench": ("bench.command",
              "per-stage latency against the PyTorch reference, with compute floors"),
}

# Proposer options: the `propose()` keyword, its type and its help.
PROPOSER_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("points_per_side", int, "point grid side, n² prompts (default 32)"),
    ("points_per_batch", int, "prompts per decoder call (default 64)"),
    ("pred_iou_thresh", float, "keep masks with predicted IoU above this (default 0.88)"),
    ("stability_score_thresh", float, "keep masks with stability at least this (default 0.95)"),
    ("stability_score_offset", float, "logit offset of the stability score (default 1.0)"),
    ("box_nms_thresh", float, "box IoU above which the weaker mask goes (default 0.7)"),
    ("max_masks", int, "keep at most this many masks, best first (default: all)"),
    ("mask_nms_thresh", float, "also drop a mask whose mask IoU with a better one exceeds this "
                               "(zsris-rt's own; default off)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt",
        description="Zero-shot referring image segmentation: pick the mask that an expression "
                    "refers to (Global-Local CLIP, no PyTorch).",
        epilog=EPILOG.format(commands="\n".join(
            f"  zsris-rt {name:<8} {text}" for name, (_, text) in COMMANDS.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="RGB image file (JPEG, PNG, ...)")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="referring expression(s)")
    parser.add_argument("--pack", help="model pack folder (see zsris-export); default: "
                        "$ZSRIS_PACK, else the demo pack engines/demo")
    parser.add_argument("--masks", help="candidate masks: .npz/.npy with a K×H×W bool array, or "
                                        "COCO-style JSON (RLE or polygons)")
    parser.add_argument("--out", type=Path, help="write the chosen mask as a PNG (0/255)")
    parser.add_argument("--overlay", type=Path, help="write the image with the mask, box and "
                                                     "label drawn on it")
    parser.add_argument("--json", action="store_true", help="print one JSON document to stdout: "
                        "index, score, box, area, centroid, angle, RLE, all scores, timings")
    add_segmenter_options(parser)
    add_proposer_options(parser, "proposer options (without --masks)")
    return parser


def add_segmenter_options(parser: argparse.ArgumentParser) -> None:
    """The options of `Segmenter.from_pack` that every command running a pack takes."""
    parser.add_argument("--alpha", type=float, help="global weight α, overriding the pack's "
                                                    "(0.95 RefCOCO style, 0.85 RefCOCOg style)")
    parser.add_argument("--beta", type=float, help="sentence weight β, overriding the pack's")
    parser.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime "
                                                    "(default: all cores)")
    fast = parser.add_argument_group(
        "backend and fast modes (each trades something; `zsris-rt check` measures what)")
    fast.add_argument("--backend", default="cpu", choices=BACKENDS,
                      help="cpu: ONNX Runtime CPU (default); cuda: ONNX Runtime CUDA; ort-trt: "
                           "ONNX Runtime's TensorRT provider; trt: native TensorRT engines "
                           "(zsris-export engines); auto: the best of these that really runs "
                           "here (trt only once its engines are built)")
    fast.add_argument("--precision", default="fp32", choices=PRECISIONS,
                      help="fp32 (default, exact); int8: the pack's int8 graphs (zsris-export "
                           "quantize) or int8 TensorRT engines; fp16: trt and ort-trt only")
    fast.add_argument("--engine-cache", metavar="DIR",
                      help="TensorRT engine cache (default $ZSRIS_ENGINE_CACHE, else "
                           "~/.cache/zsris-rt/engines)")
    fast.add_argument("--local-top", type=int, metavar="M",
                      help="global-first pruning: encode the local crops of only the M masks "
                           "with the best global score (default: all, exact)")
    fast.add_argument("--local-bound", action="store_true",
                      help="exact pruning: encode local crops in rounds (of --local-top, "
                           "default 4) until no other mask can win; same answer as exact")
    parser.add_argument("--spacy-model", help="spaCy pipeline for parsing expressions "
                                              "(default: the pack's)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the sha256 check of the pack's files (faster start)")


def add_proposer_options(parser: argparse.ArgumentParser, title: str) -> None:
    group = parser.add_argument_group(title)
    add_proposer_mode(group)
    for name, kind, text in PROPOSER_OPTIONS:
        group.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


def add_proposer_mode(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--proposer-mode", choices=PROPOSER_MODES,
                        help="exact: segment-anything's generator, every grid point (default); "
                             "fast: the grid coarse to fine, skipping points inside masks "
                             "already found (far fewer prompts; `zsris-rt check "
                             "--proposer-mode fast` measures what it changes)")


def proposer_overrides(args: argparse.Namespace, masks_given: bool, given_as: str
                       ) -> dict[str, object]:
    """The proposer options set on the command line; refused when masks are given instead."""
    overrides = {name: getattr(args, name) for name, _, _ in PROPOSER_OPTIONS
                 if getattr(args, name) is not None}
    given = [*overrides, *(["proposer_mode"] if args.proposer_mode is not None else [])]
    if masks_given and given:
        raise ZsrisError("proposer options (--" + ", --".join(
            n.replace("_", "-") for n in given) + f") do not apply with {given_as}")
    return overrides


def load_segmenter(args: argparse.Namespace,
                   preload: bool = True):  # -> Segmenter (imported lazily: fast --help)
    from .pack import default_pack
    from .segmenter import Segmenter

    if args.pack is None:  # resolved here, so that reports name the pack that ran
        args.pack = default_pack()
    return Segmenter.from_pack(args.pack, backend=args.backend, alpha=args.alpha, beta=args.beta,
                               spacy_model=args.spacy_model, threads=args.threads,
                               verify=not args.no_verify, precision=args.precision,
                               engine_cache=args.engine_cache, local_top=args.local_top,
                               local_bound=args.local_bound,
                               proposer_mode=getattr(args, "proposer_mode", None) or "exact",
                               preload=preload)


def error_exit(prog: str, exc: ZsrisError) -> int:
    """Bad input: one line on stderr and exit status 2 (ZSRIS_DEBUG=1: the traceback instead)."""
    if os.environ.get("ZSRIS_DEBUG"):
        raise exc
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def numbered(path: Path | None, number: int, total: int) -> Path | None:
    if path is None or total == 1:
        return path
    return path.with_name(f"{path.stem}-{number}{path.suffix}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .atomic_files import write_files_atomically
    from .image import read_image
    from .maskops import implementation
    from .masks import load_masks
    from .outputs import encode_png, render_overlay, result_to_dict

    for path in (args.out, args.overlay):
        if path is not None and not path.parent.is_dir():
            raise ZsrisError(f"{path}: folder {path.parent} does not exist")
    image = read_image(args.image)
    seg = load_segmenter(args, preload=False)  # one image: each graph loads when first needed
    for text in args.texts:  # reject a bad expression before paying for the image
        seg.parser.parse(text)
    overrides = proposer_overrides(args, bool(args.masks), "--masks")
    masks = load_masks(args.masks, image.shape[:2]) if args.masks else None
    scene = seg.encode_image(image, masks, **overrides)
    proposals = scene.proposals
    files: dict[Path, bytes] = {}
    records = []
    total = len(args.texts)
    for number, text in enumerate(args.texts, start=1):
        result = seg.query(scene, text)
        record = result_to_dict(result, seg.backend.name, seg.spacy_model)
        if proposals is not None:
            record["proposal"] = {
                "predicted_iou": float(proposals.iou[result.index]),
                "stability": float(proposals.stability[result.index]),
                "point": [float(v) for v in proposals.points[result.index]]}
        out, overlay = numbered(args.out, number, total), numbered(args.overlay, number, total)
        if out is not None:
            files[out] = encode_png(result.mask)
            record["mask_file"] = str(out)
        if overlay is not None:
            label = f'"{result.text}" {result.score:.1f}'
            files[overlay] = encode_png(render_overlay(image, result.mask, result.box, label))
            record["overlay_file"] = str(overlay)
        records.append(record)
    write_files_atomically(files)
    return {"image": str(args.image), "image_size": list(scene.image_size),
            "num_masks": scene.num_masks, "pack": str(args.pack),
            "masks_from": str(args.masks) if args.masks else "proposer",
            **({} if proposals is None else {"proposer": {
                **proposals.mode, "prompts": proposals.prompts,
                "grid_points": proposals.grid_points}}),
            "maskops": implementation(),
            **seg.backend.describe(), "results": records}


def summary_line(record: dict[str, Any]) -> str:
    x0, y0, x1, y1 = record["box"]
    line = (f'"{record["text"]}": mask {record["index"]} of {record["num_masks"]}, '
            f'score {record["score"]:.2f}, box [{x0}, {y0}, {x1}, {y1}), '
            f'area {record["area"]} px, noun phrase "{record["noun_phrase"]}"')
    if record.get("truncated"):
        line += " (expression truncated to the text context)"
    return line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(f".{COMMANDS[argv[0]][0]}", __package__)
        return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except NoMaskError as exc:
        print(f"zsris-rt: {exc}", file=sys.stderr)
        return 3
    except ZsrisError as exc:
        return error_exit("zsris-rt", exc)
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for record in report["results"]:
            print(summary_line(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
