"""`zsris-export engines PACK`: build the pack's TensorRT engines into the engine cache.

Engines are specific to the GPU model and TensorRT version, so they are built on the machine that
runs them (a Jetson included) rather than shipped in the pack; this command does it ahead of the
first query. It needs only the runtime modules (no PyTorch).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zsris_rt.backends.engine_build import DEFAULT_MAX_MASKS, DEFAULT_WORKSPACE_MB
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import CLIP_GRAPHS, PROPOSER_GRAPHS, load_pack

GPU_SECTION = "the README's \"GPU / Jetson\" section"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The `engines` subcommand of `zsris-export`."""
    engines = subparsers.add_parser(
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


def _check(args: argparse.Namespace) -> None:
    if args.precision == "int8" and not args.calib:
        raise ZsrisError("int8 engines need calibration images: pass --calib IMAGES...")
    if args.calib and args.precision != "int8":
        raise ZsrisError("--calib applies to --precision int8 only")
    for name in ("max_masks", "workspace_mb", "per_graph"):
        if getattr(args, name) < 1:
            raise ZsrisError(f"--{name.replace('_', '-')} must be a positive integer")


def build_engines(args: argparse.Namespace) -> list[Path]:
    """Build (or find) each requested engine; returns the plan paths."""
    from zsris_rt.backends.tensorrt import TrtBackend, tensorrt_unavailable

    _check(args)
    reason = tensorrt_unavailable()
    if reason is not None:
        raise ZsrisError(f"TensorRT cannot run here: {reason}; see {GPU_SECTION}")
    pack = load_pack(args.pack)
    available = pack.graph_names
    graphs = args.graphs or list(available)
    absent = [g for g in graphs if g not in available]
    if absent:
        raise ZsrisError(f"pack {pack.root} has no {', '.join(absent)} graph (it has: "
                         f"{', '.join(available)})")
    from zsris_rt.progress import progress_printer

    say = progress_printer()
    calibration = None
    if args.precision == "int8":
        from zsris_rt.calibration import collect_graph_inputs, list_images

        images = list_images(args.calib)
        say(f"recording calibration inputs on {len(images)} image(s)")
        calibration = collect_graph_inputs(pack, images, per_graph=args.per_graph, threads=1)
    backend = TrtBackend(pack, args.precision, Path(args.cache_dir) if args.cache_dir else None,
                         args.max_masks, calibration=calibration, progress=say,
                         workspace_mb=args.workspace_mb)
    plans = []
    for graph in graphs:
        tick = time.perf_counter()
        cached = backend.cache.plan_path(backend.key(graph))
        if args.force or not cached.is_file():
            backend.build(graph)
        backend.prepare(graph)  # loads it: a plan that does not deserialise is rebuilt
        plans.append(backend.plans[graph])
        say(f"{graph}: {backend.plans[graph].name} ({time.perf_counter() - tick:.1f} s)")
    return plans


def run(args: argparse.Namespace) -> int:
    """Run `zsris-export engines`: plan paths on stdout, progress on stderr; a ZsrisError is left
    to the caller's one-line report (command.py)."""
    for plan in build_engines(args):
        print(plan)
    return 0


__all__ = ["add_parser", "build_engines", "run"]
