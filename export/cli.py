"""`zsris-export`: checkpoints → model packs. This module only parses the command line and calls
the pipeline it names, each a function of a typed config (clip_pack, sam_pack, demo_pack, engines,
quantize, pack_migration, random_checkpoint); a pipeline is imported only when run, so
`engines`, `quantize` and `migrate` never import PyTorch (a Jetson often has none).

    zsris-export clip CHECKPOINT --out PACK      CLIP (OpenAI .pt, HF folder, open_clip) → pack
    zsris-export sam CHECKPOINT --pack PACK     add a proposer (SAM .pth, HF SAM / SAM 2) to a pack
    zsris-export demo --out engines/demo        train the demo pack's tiny models, export them
    zsris-export random-clip --out DIR          a random-weight HF CLIP folder to try things on
    zsris-export random-sam --out PATH          a random-weight SAM / SAM 2 to try things on
    zsris-export quantize PACK --calib IMAGES   int8 graphs for ONNX Runtime, beside the fp32 ones
    zsris-export engines PACK --precision P     TensorRT engines for `--backend trt`
    zsris-export migrate PACK                   an older pack: drop its second image tower
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from zsris_rt.backends.engine_build import DEFAULT_MAX_MASKS, DEFAULT_WORKSPACE_MB
from zsris_rt.commands.exit_codes import run_command
from zsris_rt.pack import CLIP_GRAPHS, PROPOSER_GRAPHS
from zsris_rt.progress import progress_printer
from zsris_rt.text import DEFAULT_SPACY_MODEL

from .choices import (
    CLIP_FORMATS,
    CLIP_RANDOM_GEOMETRIES,
    CLIP_STEPS,
    PROPOSER_STEPS,
    SAM_FORMATS,
    SAM_GEOMETRIES,
)
from .quantize import DEFAULT_GRAPHS, METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-export", description="Turn PyTorch checkpoints into zsris-rt model packs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    clip = sub.add_parser(
        "clip", help="export a CLIP checkpoint (ViT or ResNet) into a pack",
        description="Export CLIP (ViT or ResNet family, any geometry) into a pack: trunk, masked "
                    "head, crop encoder and text graphs, tokenizer.json and manifest.json. Every "
                    "graph is checked against PyTorch right after export. A ResNet (RN50, …; "
                    "OpenAI .pt or open_clip state dict) gets SPEC §7's graphs and score rule.")
    clip.add_argument("checkpoint", help="OpenAI .pt (TorchScript or state dict), Hugging Face "
                                         "CLIPModel folder, or open_clip state dict")
    clip.add_argument("--out", required=True, help="pack folder to write")
    clip.add_argument("--format", choices=CLIP_FORMATS, default="auto",
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
    sam.add_argument("--format", choices=SAM_FORMATS, default="auto",
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
                    "SAM 2 (on point prompts) on synthetic scenes, on the CPU, and export both "
                    "with the exporters above into a pack: how engines/demo was made. About an "
                    "hour at the default steps on two cores (the models side by side, one thread "
                    "each); same seed and threads, same weights.")
    demo.add_argument("--out", required=True, help="pack folder to write (e.g. engines/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--clip-steps", type=int, default=CLIP_STEPS, help=f"CLIP training steps (8 "
                      f"scenes each; default {CLIP_STEPS})")
    demo.add_argument("--proposer-steps", type=int, default=PROPOSER_STEPS,
                      help=f"proposer training steps (4 scenes × 16 prompts each; default "
                           f"{PROPOSER_STEPS})")
    demo.add_argument("--threads", type=int, default=1, help="torch threads per model (default "
                      "1; the weights depend on it)")
    demo.add_argument("--jobs", type=int, default=2, help="train the two models side by side in "
                      "this many processes (default 2; the weights do not depend on it)")
    demo.add_argument("--work", help="keep the trained checkpoints in this folder")
    demo.add_argument("--force", action="store_true", help="replace an existing pack folder")

    rnd = sub.add_parser("random-clip", help="write a random-weight HF CLIP folder",
                         description="Write a seeded random CLIPModel folder (config.json + "
                                     "safetensors) of a real geometry, for trying the tools "
                                     "without downloaded weights.")
    rnd.add_argument("--out", required=True, help="folder to write")
    rnd.add_argument("--geometry", choices=sorted(CLIP_RANDOM_GEOMETRIES), default="tiny",
                     help="ViT or ResNet (RN*: written as an OpenAI state dict OUT/clip.pt)")
    rnd.add_argument("--seed", type=int, default=0)
    _add_engines(sub)
    _add_quantize(sub)
    migrate = sub.add_parser(
        "migrate", help="make an older pack hold the CLIP image tower once (no torch)",
        description="Packs exported before zsris-rt 0.1's single-tower layout hold the CLIP "
                    "image tower twice (clip_image beside clip_trunk + clip_masked_head). They "
                    "still run as they are; this drops clip_image (and its int8 variant) in "
                    "place, after checking that the crop encoder left gives its features, and "
                    "rewrites the manifest. A pack already migrated is left untouched.")
    migrate.add_argument("pack", help="pack folder (verified first)")
    return parser


def _add_engines(sub: argparse._SubParsersAction) -> None:
    engines = sub.add_parser(
        "engines", help="build the pack's TensorRT engines for this GPU",
        description="Build a TensorRT engine for each graph of a verified pack, for this GPU and "
                    "TensorRT version, into the engine cache ($ZSRIS_ENGINE_CACHE, else "
                    "~/.cache/zsris-rt/engines). Each engine has an optimisation profile over "
                    "every dynamic axis (up to --max-masks masks per call; more are run in "
                    "chunks). Cached engines are reused unless --force. Then run "
                    "`zsris-rt ... --backend trt --precision P`.")
    engines.add_argument("pack", help="pack folder (verified first)")
    engines.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                         help="fp32; fp16 (LayerNorm, softmax and the end-token gather stay "
                              "fp32); int8 (needs --calib) (default fp32)")
    engines.add_argument("--max-masks", type=int, default=DEFAULT_MAX_MASKS,
                         help=f"most masks per engine call (default {DEFAULT_MAX_MASKS})")
    engines.add_argument("--calib", nargs="+", metavar="IMAGES",
                         help="int8 calibration images: files, folders or glob patterns")
    engines.add_argument("--per-graph", type=int, default=64,
                         help="int8: calibration inputs per graph (default 64)")
    engines.add_argument("--cache-dir", help="engine cache folder (default: $ZSRIS_ENGINE_CACHE, "
                                             "else ~/.cache/zsris-rt/engines)")
    engines.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB,
                         help=f"TensorRT builder workspace in MiB (default "
                              f"{DEFAULT_WORKSPACE_MB})")
    engines.add_argument("--graphs", nargs="+", metavar="G", choices=CLIP_GRAPHS + PROPOSER_GRAPHS,
                         help="graphs to build (default: all of the pack's)")
    engines.add_argument("--force", action="store_true",
                         help="rebuild engines that are already cached")


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    quant = sub.add_parser(
        "quantize", help="add int8 graphs (ONNX Runtime CPU) to a pack",
        description="Quantise graphs of a verified pack to int8 for ONNX Runtime CPU, calibrated "
                    "on the given images; writes <graph>.int8.onnx beside each graph and records "
                    "the variant (method, calibration, cosine vs fp32) in the manifest. Run with "
                    "`zsris-rt ... --precision int8`.")
    quant.add_argument("pack", help="pack folder (verified first)")
    quant.add_argument("--calib", nargs="+", required=True, metavar="IMAGES",
                       help="calibration images: files, folders or glob patterns (a few dozen "
                            "images like the ones the pack will see)")
    quant.add_argument("--graphs", nargs="+", metavar="G",
                       help=f"graphs to quantise (default: {' '.join(DEFAULT_GRAPHS)})")
    quant.add_argument("--method", choices=METHODS, default="static",
                       help="static: calibrated QDQ, dynamic kept where that matches fp32 "
                            "better; dynamic: dynamic only (default static)")
    quant.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                       help="per-output-channel weight scales (default on)")
    quant.add_argument("--per-graph", type=int, default=64,
                       help="calibration entries per graph (default 64)")
    quant.add_argument("--threads", type=int, default=1,
                       help="ONNX Runtime threads for calibration (default 1)")
    quant.add_argument("--force", action="store_true", help="replace existing int8 variants")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress lines say what is happening


def _clip(args: argparse.Namespace) -> int:
    from .clip_pack import ClipExportConfig, export_clip_pack

    _quiet_transformers()
    export_clip_pack(ClipExportConfig(
        checkpoint=Path(args.checkpoint), out=Path(args.out), format=args.format,
        activation=args.activation, vision_heads=args.vision_heads, text_heads=args.text_heads,
        masked_blocks=args.masked_blocks, alpha=args.alpha, beta=args.beta,
        spacy_model=args.spacy_model, tokenizer=Path(args.tokenizer) if args.tokenizer else None,
        force=args.force))
    return 0


def _sam(args: argparse.Namespace) -> int:
    from .sam_pack import SamExportConfig, export_sam_into_pack

    _quiet_transformers()
    export_sam_into_pack(SamExportConfig(checkpoint=Path(args.checkpoint), pack=Path(args.pack),
                                         format=args.format, force=args.force))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo_pack import DemoConfig, build_demo_pack

    _quiet_transformers()
    build_demo_pack(DemoConfig(out=Path(args.out), seed=args.seed, clip_steps=args.clip_steps,
                               proposer_steps=args.proposer_steps, threads=args.threads,
                               jobs=args.jobs,
                               work=Path(args.work) if args.work else None, force=args.force))
    return 0


def _random_clip(args: argparse.Namespace) -> int:
    from .random_checkpoint import write_random_clip

    written = write_random_clip(Path(args.out), args.geometry, args.seed)
    print(f"wrote random {args.geometry} CLIP to {written}", file=sys.stderr)
    return 0


def _random_sam(args: argparse.Namespace) -> int:
    from .random_checkpoint import write_random_proposer

    write_random_proposer(Path(args.out), args.family, args.geometry, args.format, args.seed)
    print(f"wrote random {args.family} {args.geometry} ({args.format}) to {args.out}",
          file=sys.stderr)
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .quantize import QuantizeConfig, quantize_pack

    say = progress_printer()
    entries = quantize_pack(QuantizeConfig(
        pack=Path(args.pack), calib=args.calib, graphs=tuple(args.graphs or ()),
        method=args.method, per_channel=args.per_channel, force=args.force,
        threads=args.threads, per_graph=args.per_graph), say)
    say(f"done   {args.pack}: int8 {', '.join(entries)}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from .pack_migration import drop_duplicate_tower

    say = progress_printer()
    removed = drop_duplicate_tower(args.pack, say)
    say(f"done   {args.pack}" + (f": removed {', '.join(removed)}" if removed else ""))
    return 0


def _engines(args: argparse.Namespace) -> int:
    from .engines import EnginesConfig, build_engines

    plans = build_engines(EnginesConfig(
        pack=Path(args.pack), precision=args.precision, max_masks=args.max_masks,
        calib=tuple(args.calib or ()), per_graph=args.per_graph,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        workspace_mb=args.workspace_mb, graphs=tuple(args.graphs or ()), force=args.force))
    for plan in plans:
        print(plan)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "clip": _clip, "sam": _sam, "demo": _demo, "random-clip": _random_clip,
    "random-sam": _random_sam, "quantize": _quantize, "engines": _engines, "migrate": _migrate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"zsris-export {args.command}", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
