"""`zsris-export`: checkpoints → model packs.

    zsris-export clip CHECKPOINT --out PACK      CLIP (OpenAI .pt, HF folder, open_clip) → pack
    zsris-export sam CHECKPOINT --pack PACK     add a proposer (SAM .pth, HF SAM / SAM 2) to a pack
    zsris-export demo --out engines/demo        train the demo pack's tiny models, export them
    zsris-export random-clip --out DIR          a random-weight HF CLIP folder to try things on
    zsris-export random-sam --out PATH          a random-weight SAM / SAM 2 to try things on
    zsris-export quantize PACK --calib IMAGES   int8 graphs for ONNX Runtime, beside the fp32 ones
    zsris-export engines PACK --precision P     TensorRT engines for `--backend trt`

The last two need no PyTorch (command.py runs them without importing it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from zsris_rt import __version__
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import (
    PROPOSER_GRAPHS,
    ClipSettings,
    Manifest,
    load_pack,
    sha256_file,
    write_manifest,
)
from zsris_rt.progress import progress_printer
from zsris_rt.text import DEFAULT_SPACY_MODEL

from .checkpoints import FORMATS, load_clip
from .clip_model import ClipModel
from .command import TORCH_FREE, run_torch_free, torch_free_command
from .demo_proposer import PROPOSER_STEPS
from .local_bound import local_norm_bound
from .random_checkpoint import GEOMETRIES, SAM_GEOMETRIES, random_sam, write_random_clip

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def _checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint file; for a folder, of its sorted "name sha256" listing."""
    if not path.is_dir():
        return sha256_file(path)
    listing = "".join(f"{p.name} {sha256_file(p)}\n" for p in sorted(path.iterdir()) if p.is_file())
    return hashlib.sha256(listing.encode()).hexdigest()


def pack_tokenizer(path: str | None, vocab_size: int) -> Tokenizer:
    """OpenAI's CLIP BPE, built offline; or the given `tokenizer.json` of a model trained with a
    cut-down CLIP vocabulary (compact_vocab.py), checked against the token embedding."""
    from tokenizers import Tokenizer

    from .tokenizer_build import END, START, build_clip_tokenizer

    if path is None:
        if vocab_size != 49408:
            raise ZsrisError(f"text vocabulary has {vocab_size} entries; the CLIP BPE tokenizer "
                             "has 49408 (pass the model's own with --tokenizer)")
        return build_clip_tokenizer()
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises its own Exception type for every failure
        raise ZsrisError(f"cannot read tokenizer {path}: {str(exc).splitlines()[0]}") from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size != vocab_size:
        raise ZsrisError(f"tokenizer {path} has {size} tokens; the model's token embedding has "
                         f"{vocab_size}")
    for special in (START, END):
        if tokenizer.token_to_id(special) is None:
            raise ZsrisError(f"tokenizer {path} has no {special} token: not a CLIP BPE tokenizer")
    return tokenizer


def settings_for(model: ClipModel, args: argparse.Namespace, tokenizer: Tokenizer) -> ClipSettings:
    from .tokenizer_build import END, START

    cfg = model.config
    return ClipSettings(
        start_token=tokenizer.token_to_id(START), end_token=tokenizer.token_to_id(END),
        image_size=cfg.image_size, patch_size=cfg.patch_size, width=cfg.vision_width,
        layers=cfg.vision_layers, heads=cfg.vision_heads, embed_dim=cfg.embed_dim,
        context_length=cfg.context_length, vocab_size=cfg.vocab_size,
        masked_blocks=args.masked_blocks, alpha=args.alpha, beta=args.beta,
        spacy_model=args.spacy_model,
    )


def export_clip_pack(args: argparse.Namespace) -> Path:
    import torch

    from .onnx_clip import export_clip_graphs
    from .onnx_graph import OPSET

    say = progress_printer()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ZsrisError(f"{out} exists and is not empty (use --force to replace it)")
    say(f"load   {args.checkpoint}")
    loaded = load_clip(args.checkpoint, args.format, args.activation,
                       (args.vision_heads, args.text_heads))
    model = loaded.model
    cfg = model.config
    say(f"model  {loaded.source_format} CLIP ViT: {cfg.vision_layers} layers × {cfg.vision_width},"
        f" patch {cfg.patch_size} at {cfg.image_size}px, embed {cfg.embed_dim}, "
        f"{cfg.activation}")
    tokenizer = pack_tokenizer(args.tokenizer, cfg.vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        graphs = export_clip_graphs(model, staging, args.masked_blocks, progress=say)
        say(f"write  tokenizer.json (CLIP BPE, {cfg.vocab_size} tokens"
            f"{', built offline' if args.tokenizer is None else ''})")
        tokenizer.save(str(staging / "tokenizer.json"))
        manifest = Manifest(
            clip=dataclasses.replace(settings_for(model, args, tokenizer),
                                     local_norm_bound=local_norm_bound(
                                         staging / "clip_image.onnx")),
            files={f: "" for g in graphs.values() for f in g["files"]} | {"tokenizer.json": ""},
            graphs=graphs,
            provenance={
                "checkpoint": str(Path(args.checkpoint).name),
                "checkpoint_sha256": _checkpoint_digest(Path(args.checkpoint)),
                "checkpoint_format": loaded.source_format,
                "activation": cfg.activation,
                "exporter": f"zsris-rt {__version__}",
                "torch": torch.__version__,
                "opset": OPSET,
            },
        )
        say("write  manifest.json (sha256 of every file)")
        write_manifest(staging, manifest)
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    say(f"done   {out}")
    return out


def export_sam_into_pack(args: argparse.Namespace) -> Path:
    """Add (or with --force replace) the proposer graphs of an existing pack.

    The CLIP part of the pack is verified first and left untouched; the new graphs are exported
    and checked in a hidden staging folder inside the pack, moved in, and the manifest is
    rewritten last, so an interrupted export leaves the old pack working.
    """
    import torch

    from .onnx_graph import OPSET
    from .onnx_sam import export_proposer_graphs, proposer_settings
    from .sam_checkpoints import load_proposer

    say = progress_printer()
    root = Path(args.pack)
    pack = load_pack(root, verify=True)
    manifest = pack.manifest
    if manifest.proposer is not None and not args.force:
        raise ZsrisError(f"pack {root} already has a {manifest.proposer.family} proposer "
                         "(use --force to replace it)")
    say(f"load   {args.checkpoint}")
    loaded = load_proposer(args.checkpoint, args.format)
    settings = proposer_settings(loaded.model)
    say(f"model  {loaded.fmt} {loaded.family.upper()} {loaded.geometry}: input "
        f"{settings.input_size}px ({settings.resize}), low-res masks {settings.low_res_size}px")
    staging = Path(tempfile.mkdtemp(prefix=".proposer.partial-", dir=root))
    try:
        graphs = export_proposer_graphs(loaded.model, staging, progress=say)
        old = {f for name in PROPOSER_GRAPHS
               for f in manifest.graphs.get(name, {}).get("files", [f"{name}.onnx"])}
        new = [f for g in graphs.values() for f in g["files"]]
        for name in new:
            os.replace(staging / name, root / name)
        for name in old - set(new):
            (root / name).unlink(missing_ok=True)
            manifest.files.pop(name, None)
        manifest.proposer = settings
        manifest.graphs.update(graphs)
        manifest.files.update({name: "" for name in new})
        manifest.provenance["proposer"] = {
            "checkpoint": Path(args.checkpoint).name,
            "checkpoint_sha256": _checkpoint_digest(Path(args.checkpoint)),
            "checkpoint_format": loaded.fmt,
            "geometry": loaded.geometry,
            "exporter": f"zsris-rt {__version__}",
            "torch": torch.__version__,
            "opset": OPSET,
        }
        say("write  manifest.json (sha256 of every file)")
        write_manifest(root, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"done   {root}")
    return root


def write_random_proposer(args: argparse.Namespace) -> None:
    out = Path(args.out)
    model = random_sam(args.family, args.geometry, args.seed)
    if args.format == "sam":
        from .sam_checkpoints import save_original_sam

        if args.family != "sam":
            raise ZsrisError("--format sam writes segment-anything's layout, which only SAM has; "
                             "use --format hf for SAM 2")
        out.parent.mkdir(parents=True, exist_ok=True)
        save_original_sam(model, out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
    print(f"wrote random {args.family} {args.geometry} ({args.format}) to {out}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-export", description="Turn PyTorch checkpoints into zsris-rt model packs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    clip = sub.add_parser(
        "clip", help="export a CLIP ViT checkpoint into a pack",
        description="Export CLIP (ViT family, any geometry) into a pack: trunk, masked head, "
                    "crop encoder and text graphs, tokenizer.json and manifest.json. Every graph "
                    "is checked against PyTorch right after export.")
    clip.add_argument("checkpoint", help="OpenAI .pt (TorchScript or state dict), Hugging Face "
                                         "CLIPModel folder, or open_clip state dict")
    clip.add_argument("--out", required=True, help="pack folder to write")
    clip.add_argument("--format", choices=FORMATS, default="auto",
                      help="checkpoint format (default: detect)")
    clip.add_argument("--activation", choices=("quick_gelu", "gelu"),
                      help="MLP activation; default quick_gelu for OpenAI, gelu for open_clip, "
                           "the config's for HF")
    clip.add_argument("--vision-heads", type=int, help="attention heads of the image tower "
                      "(state dicts only; default width / 64, as OpenAI; open_clip ViT-H/14 and "
                      "bigG/14 need 16)")
    clip.add_argument("--text-heads", type=int, help="attention heads of the text tower "
                      "(state dicts only; default width / 64)")
    clip.add_argument("--masked-blocks", type=int, default=3,
                      help="k: the last k ViT blocks see the mask (default 3)")
    clip.add_argument("--alpha", type=float, default=0.95,
                      help="global weight α (0.95 RefCOCO/+, 0.85 RefCOCOg)")
    clip.add_argument("--beta", type=float, default=0.5, help="sentence weight β (default 0.5)")
    clip.add_argument("--spacy-model", default=DEFAULT_SPACY_MODEL,
                      help="spaCy pipeline the runtime parses expressions with")
    clip.add_argument("--tokenizer", help="the model's own CLIP BPE tokenizer.json, for a model "
                      "trained with a cut-down vocabulary (default: OpenAI's, built offline)")
    clip.add_argument("--force", action="store_true", help="replace an existing pack folder")

    sam = sub.add_parser(
        "sam", help="add a SAM-style mask proposer to a pack",
        description="Export a mask proposer into an existing pack: an image encoder (run once per "
                    "image) and a prompt decoder that takes a batch of point prompts per call. "
                    "Both graphs are checked against PyTorch right after export.")
    sam.add_argument("checkpoint", help="segment-anything .pth (ViT-B/L/H), or a Hugging Face "
                                        "SamModel / Sam2Model folder (e.g. SAM 2.1 Hiera-tiny)")
    sam.add_argument("--pack", required=True, help="pack folder to add the proposer to")
    sam.add_argument("--format", choices=("auto", "sam", "hf"), default="auto",
                     help="checkpoint format (default: a file is segment-anything's, a folder "
                          "Hugging Face's)")
    sam.add_argument("--force", action="store_true", help="replace the pack's proposer")

    rsam = sub.add_parser("random-sam", help="write a random-weight SAM or SAM 2",
                          description="Write a seeded random SAM / SAM 2 (weights at realistic "
                                      "scales) of a real geometry, for trying the tools without "
                                      "downloaded weights.")
    rsam.add_argument("--out", required=True, help="folder (hf) or .pth file (sam) to write")
    rsam.add_argument("--family", choices=sorted(SAM_GEOMETRIES), default="sam")
    rsam.add_argument("--geometry", default="tiny",
                      help="sam: " + ", ".join(SAM_GEOMETRIES["sam"]) + "; sam2: " +
                           ", ".join(SAM_GEOMETRIES["sam2"]) + " (default tiny)")
    rsam.add_argument("--format", choices=("hf", "sam"), default="hf",
                      help="Hugging Face folder, or segment-anything .pth (SAM only)")
    rsam.add_argument("--seed", type=int, default=0)

    demo = sub.add_parser(
        "demo", help="train the demo pack's tiny CLIP and SAM here and export them",
        description="Train a tiny CLIP (contrastive, on captions of synthetic objects) and a tiny "
                    "SAM (on point prompts) on synthetic scenes, on the CPU, and export both with "
                    "the exporters above into a pack: how engines/demo was made. About 40 minutes "
                    "at the default steps on one thread; same seed and threads, same weights.")
    demo.add_argument("--out", required=True, help="pack folder to write (e.g. engines/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--clip-steps", type=int, default=4000, help="CLIP training steps (8 "
                      "scenes each; default 4000)")
    demo.add_argument("--proposer-steps", type=int, default=PROPOSER_STEPS,
                      help=f"proposer training steps (4 scenes × 16 prompts each; default "
                           f"{PROPOSER_STEPS})")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1; the "
                      "weights depend on it)")
    demo.add_argument("--work", help="keep the trained checkpoints in this folder")
    demo.add_argument("--force", action="store_true", help="replace an existing pack folder")

    rnd = sub.add_parser("random-clip", help="write a random-weight HF CLIP folder",
                         description="Write a seeded random CLIPModel folder (config.json + "
                                     "safetensors) of a real geometry, for trying the tools "
                                     "without downloaded weights.")
    rnd.add_argument("--out", required=True, help="folder to write")
    rnd.add_argument("--geometry", choices=sorted(GEOMETRIES), default="tiny")
    rnd.add_argument("--seed", type=int, default=0)
    for name in TORCH_FREE:
        torch_free_command(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in TORCH_FREE:
        return run_torch_free(args)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress lines say what is happening
    try:
        if args.command == "clip":
            export_clip_pack(args)
        elif args.command == "sam":
            export_sam_into_pack(args)
        elif args.command == "demo":
            from .demo_pack import build_demo_pack

            build_demo_pack(args)
        elif args.command == "random-sam":
            if args.geometry not in SAM_GEOMETRIES[args.family]:
                raise ZsrisError(f"{args.family} has no geometry {args.geometry!r}; choose from "
                                 + ", ".join(SAM_GEOMETRIES[args.family]))
            write_random_proposer(args)
        else:
            write_random_clip(Path(args.out), args.geometry, args.seed)
            print(f"wrote random {args.geometry} CLIP to {args.out}", file=sys.stderr)
    except ZsrisError as exc:
        print(f"zsris-export: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
