"""One `zsris-rt bench` run: per-stage latency of zsris-rt, end to end from a JPEG on disk,
against the PyTorch-eager reference in the same run, with each stage's compute floor.

Every measurement runs in a subprocess of its own (workers.py): the runtime's never loads torch
(checked), and each side's peak RSS is its own. No weights can be downloaded, so by default the
pack is built on the fly from random weights of real geometry (packs.py) and cached. The proposer
and the main job (JPEG path + expression → mask) are timed in each proposer mode.
"""


from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..pack import load_pack
from ..proposer.modes import MODES as PROPOSER_MODES
from .errors import BenchError
from .flops import COUNTED_OPS
from .log import elapsed, say
from .machine import ROOT, machine, wait_for_quiet
from .modes import parse_mode
from .packs import RandomPack, ensure_pack
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
    spatial: bool = False  # the runtime's segmenter reads spatial words (the reference never)


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
        self.side("runtime", "clip", dict(clip_spec, spatial=cfg.spatial))
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
        return sorted(c for c in counts if c is not None)

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
            "crop_encoder": {str(n): {"masks": n} for n in self.crop_counts()},
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


