"""`zsris-rt bench`: parse the options into a `bench.runner.Config` and run it (see there)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import NoReturn

from ..backends import BACKENDS
from ..bench.errors import BenchError
from ..bench.log import elapsed, say
from ..bench.modes import mode_list
from ..bench.packs import CLIP_GEOMETRIES, PROPOSERS
from ..bench.report import render, write_plot
from ..bench.runner import DEFAULT_WORK, MAX_EXPRESSIONS, Bench, Config
from ..bench.scene import DEFAULT_TEXT
from ..proposer.modes import MODES as PROPOSER_MODES
from .exit_codes import run_command


class Parser(argparse.ArgumentParser):
    """A bad option is a BenchError: one line on stderr and exit status 2, like every other
    input error (argparse's own would print the usage too)."""

    def error(self, message: str) -> NoReturn:
        raise BenchError(message)


def int_list(text: str) -> list[int]:
    """"8,32,100" → [8, 32, 100]: sorted, distinct, each ≥ 1."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"need integers ≥ 1: {text!r}")
    return values


def proposer_mode_list(text: str) -> list[str]:
    """"fast,exact" → ["exact", "fast"]: known proposer modes, in MODES order."""
    given = {v.strip() for v in text.split(",") if v.strip()}
    unknown = sorted(given - set(PROPOSER_MODES))
    if unknown or not given:
        raise argparse.ArgumentTypeError(f"proposer modes are {', '.join(PROPOSER_MODES)}, "
                                         f"comma-separated: {text!r}")
    return [m for m in PROPOSER_MODES if m in given]


def build_parser() -> Parser:
    parser = Parser(
        prog="zsris-rt bench",
        description="Per-stage latency of zsris-rt (image decode, preprocessing, proposer "
                    "encoder, decoder, mask ops, trunk, masked head, crop encoder, text, scoring) "
                    "end to end from a JPEG on disk, against the PyTorch-eager reference, with "
                    "scaling over K masks and over expressions per scene, peak RSS, and each "
                    "stage's compute floor (its ONNX FLOPs over this machine's matmul rate). "
                    "Without --pack, random-weight packs of real geometry are built and cached.")
    what = parser.add_argument_group("what to bench")
    what.add_argument("--pack", help="bench this pack instead of a random one")
    what.add_argument("--clip-checkpoint", help="with --pack: the CLIP checkpoint for the "
                                                "reference (without it, the runtime only)")
    what.add_argument("--proposer-checkpoint", help="with --pack: the proposer checkpoint for "
                                                    "the reference")
    what.add_argument("--geometry", choices=CLIP_GEOMETRIES, help="random CLIP geometry "
                      "(default ViT-B/32; tiny with --smoke)")
    what.add_argument("--proposer", choices=(*PROPOSERS, "none"),
                      help="random proposer (default sam2-hiera-tiny; sam2-tiny with --smoke)")
    what.add_argument("--seed", type=int, default=0, help="seed of weights, image and masks")
    what.add_argument("--work", default=str(DEFAULT_WORK), help="cache folder for checkpoints, "
                      f"packs, the JPEG and worker files (default {DEFAULT_WORK})")
    what.add_argument("--force-export", action="store_true", help="re-export the random pack")
    what.add_argument("--image", help="JPEG to run on (default: a generated 640×480 scene)")
    what.add_argument("--text", default=DEFAULT_TEXT, help="the expression of the K runs")
    how = parser.add_argument_group("how to bench")
    how.add_argument("--ks", type=int_list, help="K given masks for the scaling over masks "
                                                 "(default 8,32,100; 2 with --smoke)")
    how.add_argument("--expressions", type=int_list, help="expressions per scene for the "
                     f"scaling over expressions (default 1,4,16; at most {MAX_EXPRESSIONS})")
    how.add_argument("--backend", choices=BACKENDS, default="cpu",
                     help="zsris-rt's backend (default cpu; the reference runs PyTorch on the CPU)")
    how.add_argument("--modes", type=mode_list, help="fast modes timed over K beside exact: "
                     "comma-separated, each exact or int8 / topM / bound joined with + (e.g. "
                     "int8,top4,top8,int8+top8); int8 quantises a random pack on first use "
                     "(a given --pack needs its int8 graphs)")
    how.add_argument("--spatial", action="store_true",
                     help="the runtime's CLIP runs read spatial words (--spatial of the main "
                          "command; the reference is the paper's scoring)")
    how.add_argument("--proposer-mode", type=proposer_mode_list, dest="proposer_modes",
                     default=list(PROPOSER_MODES), help="proposer modes of the proposer stages "
                     "and the main job, comma-separated (default exact,fast; the reference is "
                     "exact only)")
    how.add_argument("--runs", type=int, help="timed runs per measurement (default 10)")
    how.add_argument("--warmup", type=int, help="runs dropped first (default 2)")
    how.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                     help="threads for ONNX Runtime, torch and BLAS alike (default: all cores)")
    how.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                     help="also time the PyTorch reference (needs the export extra)")
    how.add_argument("--proposer-runs", type=int, help="timed proposer and main-job runs per "
                     "proposer mode (default 3; 0 skips both; ~44 s each at SAM 2.1 Hiera-tiny "
                     "defaults on 2 cores)")
    how.add_argument("--points-per-side", type=int, help="proposer grid side (default: the "
                     "pack's, 32; 16 is 4× less decoder work)")
    how.add_argument("--points-per-batch", type=int, help="prompts per decoder call "
                                                          "(default: the pack's, 64)")
    how.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                     help="before each timed process wait up to SECONDS for other processes "
                          "to use under 10%% of the CPUs")
    how.add_argument("--smoke", action="store_true", help="tiny geometry, tiny proposer, K = 2, "
                     "1 run, no warm-up: seconds, for CI (not a measurement)")
    out = parser.add_argument_group("output (the markdown report also goes to stdout)")
    out.add_argument("--json", type=Path, metavar="PATH", help="every number as JSON")
    out.add_argument("--markdown", type=Path, metavar="PATH", help="the markdown report")
    out.add_argument("--plot", type=Path, metavar="PATH",
                     help="PNG of the scaling curves (needs matplotlib: zsris-rt[plot])")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    """The configuration, smoke defaults first, then the options given; bad values raise."""
    cfg = Config(seed=args.seed, work=args.work, image=args.image, text=args.text,
                 threads=args.threads, reference=args.reference, wait_quiet=args.wait_quiet,
                 pack=args.pack, clip_checkpoint=args.clip_checkpoint,
                 proposer_checkpoint=args.proposer_checkpoint, smoke=args.smoke,
                 points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                 backend=args.backend, proposer_modes=args.proposer_modes,
                 spatial=args.spatial)
    if args.smoke:
        cfg.geometry, cfg.proposer, cfg.ks, cfg.expressions = "tiny", "sam2-tiny", [2], [1, 2]
        cfg.runs, cfg.warmup, cfg.proposer_runs, cfg.proposer_warmup = 1, 0, 1, 0
        cfg.points_per_side = 4 if cfg.points_per_side is None else cfg.points_per_side
        cfg.matmul_sizes, cfg.matmul_tries = [128, 256], 2
    cfg.geometry = args.geometry or cfg.geometry
    if args.proposer:
        cfg.proposer = None if args.proposer == "none" else args.proposer
    for name in ("ks", "expressions", "runs", "warmup", "proposer_runs"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.modes is not None:
        cfg.modes = [m.name for m in args.modes]
    _check(cfg, args)
    return cfg


def _check(cfg: Config, args: argparse.Namespace) -> None:
    if cfg.runs < 1 or cfg.warmup < 0 or cfg.proposer_runs < 0 or cfg.threads < 1:
        raise BenchError("--runs and --threads must be ≥ 1, --warmup and --proposer-runs ≥ 0")
    for name in ("points_per_side", "points_per_batch"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be ≥ 1")
    if cfg.expressions[-1] > MAX_EXPRESSIONS:
        raise BenchError(f"--expressions: at most {MAX_EXPRESSIONS} distinct expressions")
    if cfg.pack is None and (cfg.clip_checkpoint or cfg.proposer_checkpoint):
        raise BenchError("--clip-checkpoint and --proposer-checkpoint go with --pack (a random "
                         "pack brings its own)")
    if cfg.pack is not None:
        if args.geometry or args.proposer or args.force_export:
            raise BenchError("--pack benches that pack: --geometry, --proposer and "
                             "--force-export apply to random packs only")
        if not (Path(cfg.pack) / "manifest.json").is_file():
            raise BenchError(f"{cfg.pack}: not a pack (no manifest.json)")
    if cfg.image is not None and not Path(cfg.image).is_file():
        raise BenchError(f"{cfg.image}: no such image")
    for path in (args.json, args.markdown, args.plot):
        if path is not None and not path.parent.is_dir():
            raise BenchError(f"{path}: folder {path.parent} does not exist")


def main(argv: list[str] | None = None) -> int:
    return run_command("zsris-rt bench", lambda: _bench(argv))


def _bench(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from(args)
    what = f"pack {cfg.pack}" if cfg.pack else \
        f"{cfg.geometry} + {cfg.proposer or 'no proposer'}, random weights"
    say(f"zsris-rt bench: {what}, K = {cfg.ks}, N = {cfg.expressions}, "
        f"{cfg.warmup} warm-up + {cfg.runs} runs, "
        f"{cfg.threads} threads, work folder {cfg.work}")
    report = Bench(cfg, args.force_export).run()
    markdown = render(report)
    print(markdown)
    if args.markdown:
        args.markdown.write_text(markdown)
        say(f"wrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        say(f"wrote {args.json}")
    if args.plot:
        say(write_plot(report, args.plot))
    processes = [*report["runtime"].values(), *report.get("modes", {}).values(),
                 *report.get("main_job", {}).values()]
    leaked = any(p["torch_in_sys_modules"] for p in processes)
    if leaked:
        say("torch was loaded in the runtime's process")
    say(f"done in {elapsed():.0f} s")
    return 1 if leaked else 0
