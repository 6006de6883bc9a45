"""`zsris-rt bench`: per-stage latency of zsris-rt, end to end from a JPEG on disk, against the
PyTorch-eager reference in the same run, with each stage's compute floor.

Every measurement runs in a subprocess of its own (workers.py): the runtime's never loads torch
(checked), and each side's peak RSS is its own. No weights can be downloaded, so by default the
pack is built on the fly from random weights of real geometry (packs.py) and cached. The proposer
and the main job (JPEG path + expression → mask) are timed in each proposer mode.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

from ..backends import BACKENDS
from ..cli import error_exit
from ..pack import load_pack
from ..proposer_modes import MODES as PROPOSER_MODES
from .errors import BenchError
from .flops import COUNTED_OPS
from .log import elapsed, say
from .machine import ROOT, machine, wait_for_quiet
from .modes import mode_list, parse_mode
from .packs import CLIP_GEOMETRIES, PROPOSERS, RandomPack, ensure_pack
from .report import render, write_plot
from .scene import DEFAULT_TEXT, expressions
from .stats import Json
from .workers import PACKAGE_COMMAND, spawn_worker

DEFAULT_WORK = Path.home() / ".cache" / "zsris-rt" / "bench"
IMAGE_SIZE = (640, 480)  # W, H of the generated JPEG
VERSIONS = ("zsris-rt", "numpy", "onnxruntime", "onnx", "torch", "transformers",
            "opencv-python-headless", "spacy", "tokenizers")
MAX_EXPRESSIONS = len(expressions(10_000))
# The main job's CLIP side per proposer mode: fast pairs the fast proposer with CLIP's top-4.
MAIN_JOB_CLIP: dict[str, Json] = {"exact": {}, "fast": {"local_top": 4}}
MAIN_JOB_LABELS = {"exact": "exact", "fast": "fast (proposer fast + CLIP top-4)"}
# `segment` needs a mask to choose from. When the proposer runs kept none (random weights at
# tiny geometry do this), the main job turns the two filters off instead (recorded).
NO_FILTERS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
# benchmarks/proposer_modes.py's results on the trained demo pack: the prompts fast decodes.
PROPOSER_MODES_RESULTS = ROOT / "benchmarks" / "results" / "proposer-modes.json"
HELD_OUT = "held-out"


@dataclass
class Config:
    """Everything that decides the numbers; recorded in the JSON."""

    geometry: str = "ViT-B/32"
    proposer: str | None = "sam2-hiera-tiny"
    pack: str | None = None
    clip_checkpoint: str | None = None
    proposer_checkpoint: str | None = None
    seed: int = 0
    work: str = str(DEFAULT_WORK)
    image: str | None = None
    ks: list[int] = field(default_factory=lambda: [8, 32, 100])
    expressions: list[int] = field(default_factory=lambda: [1, 4, 16])
    runs: int = 10
    warmup: int = 2
    threads: int = os.cpu_count() or 1
    reference: bool = True
    proposer_runs: int = 3
    proposer_warmup: int = 1
    points_per_side: int | None = None
    points_per_batch: int | None = None
    text: str = DEFAULT_TEXT
    wait_quiet: float = 0.0
    matmul_sizes: list[int] = field(default_factory=lambda: [1024, 1536, 2048])
    matmul_tries: int = 5
    smoke: bool = False
    modes: list[str] = field(default_factory=lambda: ["exact"])
    proposer_modes: list[str] = field(default_factory=lambda: list(PROPOSER_MODES))
    backend: str = "cpu"


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
                 backend=args.backend, proposer_modes=args.proposer_modes)
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


class Bench:
    """One `zsris-rt bench` run: the workers in order, their results gathered into a report."""

    def __init__(self, cfg: Config, force_export: bool) -> None:
        self.cfg, self.force_export = cfg, force_export
        self.work = Path(cfg.work)
        self.report: Json = {"config": asdict(self.cfg), "machine": machine(VERSIONS),
                             "notes": []}

    def spawn(self, mode: str, spec: Json, tag: str) -> Json:
        return spawn_worker(PACKAGE_COMMAND, mode, spec, tag, self.work, self.cfg.threads)

    def note(self, line: str) -> None:
        """A one-line remark, on stderr now and in the report."""
        say(line)
        self.report["notes"].append(line)

    def pack(self) -> tuple[Path, str | None, str | None]:
        """(pack, CLIP checkpoint, proposer checkpoint): given, or random and exported once."""
        cfg = self.cfg
        if cfg.pack is not None:
            return Path(cfg.pack), cfg.clip_checkpoint, cfg.proposer_checkpoint
        target = RandomPack.under(self.work, cfg.geometry, cfg.proposer, cfg.seed)
        if not target.ready() and importlib.util.find_spec("torch") is None:
            raise BenchError("building a random pack needs PyTorch (pip install "
                             "'zsris-rt[export]'); or give --pack")
        self.report["export_s"] = ensure_pack(target, self.force_export, self.spawn)
        proposer = str(target.proposer_checkpoint) if cfg.proposer else None
        return target.pack, str(target.clip_checkpoint), proposer

    def workload(self, ks: list[int]) -> tuple[str, str]:
        """The JPEG and the K random masks at its size."""
        cfg = self.cfg
        image = cfg.image or str(self.work / f"scene_{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}_seed"
                                              f"{cfg.seed}.jpg")
        masks = str(self.work / f"masks_seed{cfg.seed}.npy")
        say(f"workload: {image}, {max(ks)} random ellipse masks")
        self.report["workload"] = self.spawn("workload", {
            "image": image, "generate": cfg.image is None, "size": IMAGE_SIZE, "seed": cfg.seed,
            "masks": masks, "k": max(ks)}, "workload")
        return image, masks

    def run(self) -> Json:
        cfg, report = self.cfg, self.report
        self.work.mkdir(parents=True, exist_ok=True)
        pack, clip_checkpoint, proposer_checkpoint = self.pack()
        manifest = json.loads((pack / "manifest.json").read_text())
        report["pack"] = {"path": str(pack), "random_weights": cfg.pack is None,
                          "clip": manifest["clip"], "proposer": manifest.get("proposer"),
                          "provenance": manifest.get("provenance", {})}
        reference = self.reference_ready(clip_checkpoint)
        image, masks = self.workload(cfg.ks)
        wait_for_quiet(cfg.wait_quiet, report)
        say(f"matmul rate: fp32, n = {cfg.matmul_sizes}, {cfg.threads} threads")
        report["matmul"] = self.spawn("matmul", {"sizes": cfg.matmul_sizes,
                                                 "tries": cfg.matmul_tries,
                                                 "threads": cfg.threads}, "matmul")
        clip_spec = {"pack": str(pack), "backend": cfg.backend, "image": image, "masks": masks,
                     "ks": cfg.ks,
                     "text": cfg.text, "threads": cfg.threads, "warmup": cfg.warmup,
                     "runs": cfg.runs, "expressions": cfg.expressions,
                     "texts": expressions(cfg.expressions[-1]), "expressions_k": cfg.ks[0]}
        report["runtime"], report["reference"] = {}, {}
        self.side("runtime", "clip", clip_spec)
        self.modes(pack, image, clip_spec)
        if reference:
            self.side("reference", "clip", dict(clip_spec, checkpoint=clip_checkpoint))
        options = report["proposer_options"] = self.proposer_options(manifest)
        if options is not None:
            spec = {"pack": str(pack), "backend": cfg.backend, "image": image,
                    "threads": cfg.threads,
                    "warmup": cfg.proposer_warmup, "runs": cfg.proposer_runs, "options": options}
            for mode in cfg.proposer_modes:
                self.side("runtime", "proposer", dict(spec, proposer_mode=mode),
                          f"proposer_{mode}")
            if reference and not proposer_checkpoint:
                self.note("no proposer checkpoint (--proposer-checkpoint): the proposer's "
                          "reference is left out")
            elif reference and "exact" not in cfg.proposer_modes:
                self.note("the proposer's reference has exact mode only: left out")
            elif reference:
                self.side("reference", "proposer", dict(spec, checkpoint=proposer_checkpoint),
                          "proposer_exact")
            self.main_job(spec)
            report["proposer_projection"] = self.projection()
        self.flops(pack, manifest, options)
        report["machine"]["loadavg_end"] = os.getloadavg()
        report["wall_s"] = elapsed()
        return report

    def modes(self, pack: Path, image: str, clip_spec: Json) -> None:
        """Each fast mode over the same K, without the scaling over expressions."""
        modes = [parse_mode(name) for name in self.cfg.modes[1:]]
        if not modes:
            return
        if any(m.precision == "int8" for m in modes) and not self.int8_ready(pack, image):
            modes = [m for m in modes if m.precision != "int8"]
        results = self.report["modes"] = {}
        for mode in modes:
            wait_for_quiet(self.cfg.wait_quiet, self.report)
            say(f"runtime, mode {mode.name}: {self.cfg.warmup} warm-up + {self.cfg.runs} runs "
                f"per K = {self.cfg.ks}")
            tag = "runtime_clip_" + mode.name.replace("+", "_")
            result = self.spawn("runtime_clip", dict(clip_spec, mode=mode.options(),
                                                     expressions=[]), tag)
            results[mode.name] = result
            say(f"mode {mode.name}: " + ", ".join(f"K={k} {r['latency_ms']['median']:.0f} ms"
                                                  for k, r in result["ks"].items()))

    def int8_ready(self, pack: Path, image: str) -> bool:
        """The pack has int8 graphs, or (a random pack) gets them now, calibrated on the JPEG."""
        if "int8" in load_pack(pack, verify=False).precisions():
            return True
        if self.cfg.pack is not None:
            self.note(f"{pack} has no int8 graphs (zsris-export quantize): int8 modes left out")
            return False
        say(f"quantise {pack} to int8, calibrated on {image}")
        self.report["quantize"] = self.spawn("quantize", {"pack": str(pack), "calib": [image],
                                                          "threads": self.cfg.threads},
                                             "quantize")
        return True

    def reference_ready(self, checkpoint: str | None) -> bool:
        if not self.cfg.reference:
            return False
        if importlib.util.find_spec("torch") is None:
            self.note("PyTorch is not installed (pip install 'zsris-rt[export]'): benching the "
                      "runtime only")
            return False
        if checkpoint is None:
            self.note("no CLIP checkpoint for the reference (--clip-checkpoint): benching the "
                      "runtime only")
            return False
        return True

    def proposer_options(self, manifest: Json) -> Json | None:
        """The proposer's options for the runs, or None when there is no proposer to run."""
        generator = (manifest.get("proposer") or {}).get("generator")
        if generator is None or self.cfg.proposer_runs == 0:
            return None
        return {"points_per_side": self.cfg.points_per_side or generator["points_per_side"],
                "points_per_batch": self.cfg.points_per_batch or generator["points_per_batch"]}

    def side(self, side: str, part: str, spec: Json, name: str | None = None) -> None:
        """Run `side`'s `part` worker; its result goes to report[side][name or part]."""
        name = name or part
        wait_for_quiet(self.cfg.wait_quiet, self.report)
        warmup, runs = spec["warmup"], spec["runs"]
        say(f"{side}, {name}: {warmup} warm-up + {runs} runs"
            + (f" per K = {spec['ks']} and per N = {spec['expressions']} expressions"
               if part == "clip" else f", {spec['options']}"))
        result = self.spawn(f"{side}_{part}", spec, f"{side}_{name}")
        self.report[side][name] = result
        if part == "clip":
            say(f"{side}: " + ", ".join(f"K={k} {r['latency_ms']['median']:.0f} ms"
                                        for k, r in result["ks"].items()))
        else:
            propose = result["propose"]
            say(f"{side}: {name} {propose['latency_ms']['median']:.0f} ms"
                + (f", prompts {propose['prompts']}" if "prompts" in propose else ""))

    def main_job(self, proposer_spec: Json) -> None:
        """`Segmenter.segment(JPEG path, expression)` per proposer mode, each in a process of its
        own: what a user waits for, proposer and CLIP together."""
        cfg = self.cfg
        options = dict(proposer_spec["options"])
        kept = [n for record in self.report["runtime"].values() if "propose" in record
                for n in record["propose"]["masks_kept"]]
        if kept and min(kept) == 0:
            options.update(NO_FILTERS)
        results = self.report["main_job"] = {}
        for mode in cfg.proposer_modes:
            wait_for_quiet(cfg.wait_quiet, self.report)
            label, clip = MAIN_JOB_LABELS[mode], MAIN_JOB_CLIP[mode]
            say(f"runtime, main job {label}: {cfg.proposer_warmup} warm-up + "
                f"{cfg.proposer_runs} runs, {options}")
            spec = dict(proposer_spec, text=cfg.text, proposer_mode=mode, mode=clip,
                        options=options)
            result = self.spawn("runtime_main_job", spec, f"runtime_main_job_{mode}")
            results[mode] = {"label": label, "proposer_mode": mode, "clip_mode": clip,
                             "options": options, **result}
            say(f"main job {label}: {result['segment']['latency_ms']['median']:.0f} ms")

    def projection(self) -> Json:
        """Fast mode's proposer time on a trained proposer, projected (not measured): the share
        of the grid fast decodes on the demo pack's held-out set × this run's grid × exact's
        decoder ms per prompt, + exact's encoder ms. Random weights keep too few masks for fast
        mode to skip prompts, so its measured time here says little."""
        measured = fast_prompt_share(PROPOSER_MODES_RESULTS)
        exact = self.report["runtime"].get("proposer_exact")
        if measured is None or exact is None:
            why = "run benchmarks/proposer_modes.py" if measured is None else \
                "needs the exact proposer run: --proposer-mode exact,fast"
            return {"available": False, "why": why, "source": str(PROPOSER_MODES_RESULTS)}
        propose = exact["propose"]
        grid = propose["grid_points"][-1]
        decoder = propose["stages_ms"]["prop_decoder"]["median"]
        per_prompt = decoder / propose["prompts"][-1]
        encoder = propose["stages_ms"]["prop_encoder"]["median"]
        return {"available": True, "source": str(PROPOSER_MODES_RESULTS), **measured,
                "grid_points": grid, "exact_decoder_ms_per_prompt": per_prompt,
                "encoder_ms": encoder, "exact_encoder_decoder_ms": encoder + decoder,
                "projected_fast_encoder_decoder_ms":
                    encoder + measured["fast_prompt_share"] * grid * per_prompt}

    def crop_counts(self) -> list[int]:
        """Every number of crops a mode encodes at some K (the bound's varies: its runs say)."""
        counts = {parse_mode(m).local_crops(k) for m in self.cfg.modes for k in self.cfg.ks}
        return sorted(counts - {None})

    def flops(self, pack: Path, manifest: Json, options: Json | None) -> None:
        """FLOPs of each graph at the run's shapes (needs onnx), and the floors derived."""
        if importlib.util.find_spec("onnx") is None:
            self.note("onnx is not installed (pip install 'zsris-rt[export]'): no FLOPs, no "
                      "compute floors")
            return
        text = self.report["runtime"]["clip"]["text_input"]
        counts: Json = {
            "clip_trunk": {"1": {"batch": 1}},
            "clip_masked_head": {str(k): {"masks": k} for k in self.cfg.ks},
            "clip_image": {str(n): {"masks": n} for n in self.crop_counts()},
            "clip_text": {"query": {"batch": text["batch"], "length": text["length"]}}}
        if options is not None:
            counts["prop_encoder"] = {"1": {"batch": 1}}
            prompts = min(options["points_per_batch"], options["points_per_side"] ** 2)
            counts["prop_decoder"] = {"call": {"prompts": prompts, "points": 1}}
        say(f"count FLOPs ({', '.join(COUNTED_OPS)}) on {', '.join(counts)}")
        self.report["flops"] = self.spawn("flops", {"pack": str(pack), "counts": counts},
                                          "flops")


def fast_prompt_share(path: Path) -> Json | None:
    """Prompts fast decodes per image over exact's (all the grid) on the demo pack's held-out
    set, from benchmarks/proposer_modes.py's results; None without them."""
    try:
        variants = json.loads(path.read_text())["sets"][HELD_OUT]["variants"].values()
        prompts = {v["mode"]["name"]: v["prompts_per_image"] for v in variants
                   if not v["overrides"] and v["precision"] == "fp32"}
        return {"set": HELD_OUT, "fast_prompts_per_image": prompts["fast"],
                "exact_prompts_per_image": prompts["exact"],
                "fast_prompt_share": prompts["fast"] / prompts["exact"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return None


def main(argv: list[str] | None = None) -> int:
    try:
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
    except BenchError as exc:
        return error_exit("zsris-rt bench", exc)
    except KeyboardInterrupt:
        return 130
    processes = [*report["runtime"].values(), *report.get("modes", {}).values(),
                 *report.get("main_job", {}).values()]
    leaked = any(p["torch_in_sys_modules"] for p in processes)
    if leaked:
        say("torch was loaded in the runtime's process")
    say(f"done in {elapsed():.0f} s")
    return 1 if leaked else 0
