"""`zsris-rt IMAGE TEXT [TEXT ...]`: the referred mask of each expression, for a person or a robot.

The image is encoded once and every expression is scored against that one scene. Every output is
rendered in memory first and written atomically, so a failure leaves no half-written file.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ZsrisError
from .exit_codes import run_command
from .options import add_proposer_options, add_segmenter_options, load_segmenter, proposer_overrides

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
proposer keeps no mask, 130 on Ctrl-C, 1 on an internal error. Set ZSRIS_DEBUG=1 to see a
traceback instead of the one-line message.

other commands (each has --help):
{commands}
"""

def build_parser(commands: dict[str, str]) -> argparse.ArgumentParser:
    """The main command's parser; `commands` (name → one line) are listed in its epilog."""
    parser = argparse.ArgumentParser(
        prog="zsris-rt",
        description="Zero-shot referring image segmentation: pick the mask that an expression "
                    "refers to (Global-Local CLIP, no PyTorch).",
        epilog=EPILOG.format(commands="\n".join(
            f"  zsris-rt {name:<8} {text}" for name, text in commands.items())),
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
    remote = parser.add_argument_group("a running server (zsris-rt serve) instead of a local pack")
    remote.add_argument("--server", metavar="URL", help="send the image and expressions to this "
                        "server (e.g. http://127.0.0.1:8321); same output as a local run")
    remote.add_argument("--token", help="the server's token (default $ZSRIS_TOKEN)")
    add_segmenter_options(parser)
    add_proposer_options(parser, "proposer options (without --masks)")
    return parser


def numbered(path: Path | None, number: int, total: int) -> Path | None:
    if path is None or total == 1:
        return path
    return path.with_name(f"{path.stem}-{number}{path.suffix}")


# Options of a local run that a server decides for itself.
LOCAL_ONLY = ("pack", "threads", "engine_cache", "local_top", "spacy_model")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..atomic_files import write_files_atomically
    from ..drawing import render_overlay
    from ..image import encode_png, read_image
    from ..mask_io import from_coco_rle

    for path in (args.out, args.overlay):
        if path is not None and not path.parent.is_dir():
            raise ZsrisError(f"{path}: folder {path.parent} does not exist")
    image = read_image(args.image)
    report = remote(args) if args.server else local(args, image)
    files: dict[Path, bytes] = {}
    total = len(report["results"])
    for number, record in enumerate(report["results"], start=1):
        out, overlay = numbered(args.out, number, total), numbered(args.overlay, number, total)
        if out is None and overlay is None:
            continue
        mask = from_coco_rle(record["rle"])
        if out is not None:
            files[out] = encode_png(mask)
            record["mask_file"] = str(out)
        if overlay is not None:
            label = f'"{record["text"]}" {record["score"]:.1f}'
            files[overlay] = encode_png(render_overlay(image, mask, tuple(record["box"]), label))
            record["overlay_file"] = str(overlay)
    write_files_atomically(files)
    return report


def local(args: argparse.Namespace, image: Any) -> dict[str, Any]:
    from ..mask_io import load_masks
    from ..maskops import implementation
    from ..result_json import result_to_dict

    seg = load_segmenter(args, preload=False)  # one image: each graph loads when first needed
    for text in args.texts:  # reject a bad expression before paying for the image
        seg.check_text(text)
    overrides = proposer_overrides(args, bool(args.masks), "--masks")
    masks = load_masks(args.masks, image.shape[:2]) if args.masks else None
    scene = seg.encode_image(image, masks, **overrides)
    proposals = scene.proposals
    records = [result_to_dict(seg.query(scene, text), seg.backend.name, seg.spacy_model,
                              proposals) for text in args.texts]
    return {"image": str(args.image), "image_size": list(scene.image_size),
            "num_masks": scene.num_masks, "pack": str(args.pack),
            "masks_from": str(args.masks) if args.masks else "proposer",
            **({} if proposals is None else {"proposer": {
                **proposals.mode, "prompts": proposals.prompts,
                "grid_points": proposals.grid_points}}),
            "maskops": implementation(),
            **seg.backend.describe(), "results": records}


def remote(args: argparse.Namespace) -> dict[str, Any]:
    """The same report from a server: the image and masks go as they are on disk."""
    from ..client import Client

    given = [name for name in LOCAL_ONLY if getattr(args, name, None) is not None]
    given += [f"{name} {getattr(args, name)}" for name, default in
              (("backend", "cpu"), ("precision", "fp32")) if getattr(args, name) != default]
    given += [name for name in ("local_bound", "no_verify", "spatial") if getattr(args, name)]
    if given:
        raise ZsrisError("--" + ", --".join(g.replace("_", "-") for g in given) +
                         ": for a local run only (the server runs its own pack and settings)")
    overrides = proposer_overrides(args, bool(args.masks), "--masks")
    if args.proposer_mode is not None:
        overrides["proposer_mode"] = args.proposer_mode
    masks = None
    if args.masks:
        if not Path(args.masks).is_file():
            raise ZsrisError(f"mask file not found: {args.masks}")
        masks = Path(args.masks).read_bytes()
    client = Client(args.server, args.token or os.environ.get("ZSRIS_TOKEN") or None)
    server = client.health()
    document = client.segment_json(Path(args.image).read_bytes(), args.texts, masks,
                                   args.alpha, args.beta, **overrides)
    return {"image": str(args.image), "image_size": document["image_size"],
            "num_masks": document["num_masks"], "server": args.server, "pack": server["pack"],
            "masks_from": str(args.masks) if args.masks else "proposer",
            **({"proposer": document["proposer"]} if "proposer" in document else {}),
            "backend": server["backend"], "precision": server["precision"],
            "results": document["results"]}


def summary_line(record: dict[str, Any]) -> str:
    x0, y0, x1, y1 = record["box"]
    line = (f'"{record["text"]}": mask {record["index"]} of {record["num_masks"]}, '
            f'score {record["score"]:.2f}, box [{x0}, {y0}, {x1}, {y1}), '
            f'area {record["area"]} px, noun phrase "{record["noun_phrase"]}"')
    if record.get("truncated"):
        line += " (expression truncated to the text context)"
    return line


def main(argv: list[str], commands: dict[str, str]) -> int:
    args = build_parser(commands).parse_args(argv)

    def body() -> int:
        report = run(args)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for record in report["results"]:
                print(summary_line(record))
        return 0

    return run_command("zsris-rt", body)
