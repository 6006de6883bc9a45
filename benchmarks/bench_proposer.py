#!/usr/bin/env python
"""Benchmark the proposer stage ("segment everything") of zsris-rt on the CPU, random weights.

The default is the light proposer at its real geometry: SAM 2.1 Hiera-tiny (1024-px input,
256-px low-res masks) through transformers, exported into a pack beside a tiny random CLIP (a pack
needs CLIP; CLIP does not run here). `Segmenter.propose` is timed on a JPEG decoded from disk on
every call:

- cold, segment-anything's defaults (32 × 32 points, 64 per decoder call): caches cleared before
  every run, so the encoder runs every time;
- cold, filters loosened (pred_iou_thresh 0, stability_score_thresh 0, box_nms_thresh 1): every
  one of the 3 × 32² masks is upsampled for its statistics and again as an output, the worst case
  for the mask work (random weights keep few masks at the default thresholds);
- warm: `propose` again on the same image with other thresholds; the encoding is cached;
- the decoder alone on the same prompts in chunks of 16, 64 and 256 prompts per call;
- in a fresh process: peak RSS of the encoder plus one decoder call per chunk size (the decoder's
  memory grows with prompts per call), and one profiled decoder call (ONNX Runtime's per-node
  times summed by operator type; profiling slows the call, so read the shares, not the ms).

Loosened runs return every mask at image size: 900 MiB of bool at 640×480, ~6 GiB at 1920×1080
(use --loose-runs 0 on a small machine).

`Proposals.timings` gives the stages; the benchmark also wraps four functions the proposer module
calls (preprocessing, mask statistics, box NMS, final binary masks) to split the stages further
and count the masks each step handles. The wrappers only time and count.

Each image size runs in its own subprocess (peak RSS is that size's alone), which is checked to
have never loaded torch. Other processes skew timings: each timed section reports the share of
the CPUs that other processes used while it ran (from /proc/stat), so a noisy run shows itself.
The random checkpoints and the pack are cached under --work, so reruns skip the export.
Output: a markdown report on stdout, everything as JSON in --out, progress on stderr.

    python benchmarks/bench_proposer.py                        # SAM 2.1 Hiera-tiny, 640×480
    python benchmarks/bench_proposer.py --quick                # tiny geometry: a smoke test
    python benchmarks/bench_proposer.py --sizes 640x480,1920x1080 --runs 3
    python benchmarks/bench_proposer.py --family sam --geometry vit-b   # export: ~10 GB, minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zsris_rt.bench.log import elapsed, say
from zsris_rt.bench.machine import CpuShare, heavy_modules_loaded, machine, peak_rss, wait_for_quiet
from zsris_rt.bench.packs import RandomPack, ensure_pack
from zsris_rt.bench.report import machine_lines, table, wall_line
from zsris_rt.bench.scene import write_workload
from zsris_rt.bench.stats import Json, summary
from zsris_rt.bench.workers import argument_parser, script_command, spawn_worker, worker_main
from zsris_rt.export.bench_workers import export_random_pack
from zsris_rt.export.choices import SAM_GEOMETRIES as PROPOSER_GEOMETRIES

LOOSE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
WARM = {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.9}  # "other thresholds"
RESULTS = Path(__file__).resolve().parent / "results"
# Versions the JSON records, and those the report names (label: distribution).
VERSIONS = ("numpy", "onnxruntime", "opencv-python-headless", "torch", "transformers")
SHOWN_VERSIONS = {"numpy": "numpy", "onnxruntime": "onnxruntime",
                  "opencv": "opencv-python-headless"}


@dataclass
class Config:
    family: str = "sam2"
    geometry: str = "hiera-tiny"
    seed: int = 0
    runs: int = 5
    loose_runs: int = 2
    warm_runs: int = 2
    threads: int = 2
    sizes: list[list[int]] = field(default_factory=lambda: [[640, 480]])  # W, H
    points_per_side: int = 32
    points_per_batch: int = 64
    chunks: list[int] = field(default_factory=lambda: [16, 64, 256])
    chunk_prompts: int = 512
    work: str = "/tmp/zsris-bench"
    wait_quiet: float = 0.0


# ------------------------------------------------------------------------------------- workers
class Probe:
    """Wraps functions of `zsris_rt.proposer` to time them and count the masks they handle."""

    NAMES = ("prepare_input", "logit_statistics", "box_nms", "logit_masks")

    def __init__(self) -> None:
        import zsris_rt.proposer as proposer

        self.calls: dict[str, list[tuple[float, int]]] = {n: [] for n in self.NAMES}
        for name in self.NAMES:
            setattr(proposer, name, self._wrap(name, getattr(proposer, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.calls[name].append(((time.perf_counter() - start) * 1e3,
                                     int(getattr(args[0], "shape", (1,))[0])))
            return out
        return timed

    def take(self) -> Json:
        """Per wrapped function: calls, total ms, items (masks; boxes for NMS); then reset."""
        out = {name: {"calls": len(c), "ms": sum(ms for ms, _ in c),
                      "items": sum(n for _, n in c)} for name, c in self.calls.items()}
        for calls in self.calls.values():
            calls.clear()
        return out


def _record(seg: Any, image: str, probe: Probe, clear: bool, options: Json) -> Json:
    """One timed `propose` call: wall ms, stage ms, probe numbers, masks kept."""
    if clear:
        seg.clear_caches()
    probe.take()
    share = CpuShare()
    start = time.perf_counter()
    proposals = seg.propose(image, **options)
    wall = (time.perf_counter() - start) * 1e3
    return {"wall_ms": wall, "timings": dict(proposals.timings), "probe": probe.take(),
            "masks": len(proposals), "outside_ms": wall - sum(proposals.timings.values()),
            "masks_mib": proposals.masks.nbytes / 2**20, **share.result()}


def _digest(runs: list[Json]) -> Json:
    """Median / min / max per stage, per probe step, of the wall time and of the mask counts."""
    stages = {s: summary([r["timings"].get(s, 0.0) for r in runs])
              for s in sorted({s for r in runs for s in r["timings"]})}
    probe = {name: {"ms": summary([r["probe"][name]["ms"] for r in runs]),
                    "items": statistics.median(r["probe"][name]["items"] for r in runs)}
             for name in Probe.NAMES}
    return {"wall_ms": summary([r["wall_ms"] for r in runs]), "stages_ms": stages,
            "probe": probe, "outside_ms": summary([r["outside_ms"] for r in runs]),
            "masks": [r["masks"] for r in runs],
            "other_processes_cpu_share": max(r["other_processes_cpu_share"] for r in runs),
            "runs": runs}


def worker_runtime(spec: Json) -> Json:
    """Time `Segmenter.propose` (cold, loosened, warm) and the decoder by chunk on one image."""
    import numpy as np

    from zsris_rt import Segmenter
    from zsris_rt.image import read_image
    from zsris_rt.proposer import point_grid

    probe = Probe()
    image, pps = spec["image"], spec["points_per_side"]
    defaults = {"points_per_side": pps, "points_per_batch": spec["points_per_batch"]}
    start = time.perf_counter()
    seg = Segmenter.from_pack(spec["pack"], threads=spec["threads"])
    out: Json = {"startup_s": time.perf_counter() - start, "rss_after_load": peak_rss(),
                 "settings": {k: v for k, v in asdict(seg.pack.proposer).items()
                              if k != "generator"},
                 "generator_defaults": asdict(seg.pack.proposer.generator)}
    # Warm-up: both graphs once, a few prompts (first-call allocations stay out of the runs).
    out["warmup"] = _record(seg, image, probe, True, {"points_per_side": 4})
    say(f"  warm-up {out['warmup']['wall_ms']:.0f} ms; {spec['runs']} cold runs, defaults")
    cold = []
    for i in range(spec["runs"]):
        cold.append(_record(seg, image, probe, True, defaults))
        say(f"  cold {i + 1}: {cold[-1]['wall_ms']:.0f} ms, {cold[-1]['masks']} masks")
    out["cold"] = _digest(cold)
    warm = []  # the last cold run left this image's encoding in the cache
    for i in range(spec["warm_runs"]):
        warm.append(_record(seg, image, probe, False, {**defaults, **WARM}))
        say(f"  warm {i + 1}: {warm[-1]['wall_ms']:.0f} ms, {warm[-1]['masks']} masks")
    if warm:
        out["warm"] = _digest(warm)
        out["warm"]["encoder_reran"] = any("prop_encoder" in r["timings"] for r in warm)
    out["rss_after_default"] = peak_rss()
    loose = []
    for i in range(spec["loose_runs"]):
        loose.append(_record(seg, image, probe, True, {**defaults, **LOOSE}))
        say(f"  loose {i + 1}: {loose[-1]['wall_ms']:.0f} ms, {loose[-1]['masks']} masks")
    if loose:
        out["loose"] = _digest(loose)
    out["rss_after_loose"] = peak_rss()

    rgb = read_image(image)
    embedding = seg.proposer.encode(rgb)
    height, width = rgb.shape[:2]
    grid = (point_grid(pps) * np.array([width, height])).astype(np.float32)
    picks = np.linspace(0, len(grid) - 1, min(spec["chunk_prompts"], len(grid))).astype(int)
    if len(picks) < spec["chunk_prompts"]:  # small grids: reuse points to fill the largest chunk
        picks = np.resize(picks, spec["chunk_prompts"])
    prompts = grid[picks][:, None, :]
    out["chunks"] = {}
    for chunk in spec["chunks"]:
        labels = np.ones((chunk, 1), dtype=np.int64)
        seg.proposer.decode(embedding, prompts[:chunk], labels)  # this shape's first call
        share = CpuShare()
        per_call = []
        for first in range(0, len(prompts) - chunk + 1, chunk):
            tick = time.perf_counter()
            seg.proposer.decode(embedding, prompts[first:first + chunk], labels)
            per_call.append((time.perf_counter() - tick) * 1e3)
        out["chunks"][str(chunk)] = {
            "call_ms": summary(per_call), "prompt_ms": summary([ms / chunk for ms in per_call]),
            "peak_rss_mb": peak_rss()["ru_maxrss_mb"], **share.result()}
        say(f"  decoder, {chunk} prompts per call: "
            f"{statistics.median(per_call) / chunk:.1f} ms per prompt ({len(per_call)} calls)")
    out["rss"] = peak_rss()
    out["torch_in_sys_modules"] = "torch" in sys.modules
    out["heavy_modules_loaded"] = heavy_modules_loaded()
    out["backend"] = seg.backend.describe()
    return out


def worker_profile(spec: Json) -> Json:
    """In a fresh process: encode the image; one decoder call per chunk size, smallest first, with
    the peak RSS after each (the decoder's memory by prompts per call); then one call of
    points_per_batch prompts in a profiling session (its second call: the first one allocates),
    kernel ms summed by operator type."""
    import numpy as np
    import onnxruntime as ort

    from zsris_rt import Segmenter
    from zsris_rt.image import read_image
    from zsris_rt.proposer import point_grid

    seg = Segmenter.from_pack(spec["pack"], threads=spec["threads"])
    rgb = read_image(spec["image"])
    embedding = seg.proposer.encode(rgb)
    rss_encoded = peak_rss()
    height, width = rgb.shape[:2]
    grid = point_grid(spec["points_per_side"]) * np.array([width, height])
    memory: Json = {}
    for chunk in spec["chunks"]:
        points = np.resize(grid, (chunk, 2)).astype(np.float32)[:, None, :]
        start = time.perf_counter()
        seg.proposer.decode(embedding, points, np.ones((chunk, 1), dtype=np.int64))
        memory[str(chunk)] = {"first_call_ms": (time.perf_counter() - start) * 1e3,
                              "peak_rss_mb": peak_rss()["ru_maxrss_mb"]}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = spec["threads"]
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(os.environ.get("ZSRIS_BENCH_RUNS", "/tmp")) / "ortprof")
    session = ort.InferenceSession(str(seg.pack.graph_path("prop_decoder")), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    n = spec["points_per_batch"]
    points = np.resize(grid, (n, 2))[:, None, :]
    inputs = {**embedding.tensors, "points": embedding.frame.to_input(points),
              "labels": np.ones((n, 1), dtype=np.int64)}
    session.run(None, inputs)
    start = time.perf_counter()
    session.run(None, inputs)
    wall = (time.perf_counter() - start) * 1e3
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink(missing_ok=True)
    last = max(e["ts"] for e in events if e.get("name") == "model_run")
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") \
                and event["ts"] >= last:
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e3
    return {"prompts": n, "wall_ms": wall, "rss_after_encoder": rss_encoded,
            "memory_by_chunk": memory, "rss": peak_rss(),
            "by_op_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1]))}


WORKERS = {"export": export_random_pack, "workload": write_workload, "runtime": worker_runtime,
           "profile": worker_profile}


# ------------------------------------------------------------------------------- orchestration
def run_worker(mode: str, spec: Json, cfg: Config, tag: str) -> Json:
    """Run one worker in a fresh Python process and return its result."""
    return spawn_worker(script_command(__file__), mode, spec, f"proposer_{tag}", cfg.work,
                        cfg.threads)


def ensure_proposer_pack(cfg: Config, force: bool) -> tuple[Path, Json]:
    """The pack (tiny CLIP + the proposer) under the work folder, exported once."""
    target = RandomPack.under(Path(cfg.work), "tiny", f"{cfg.family}-{cfg.geometry}", cfg.seed)
    if cfg.family == "sam" and cfg.geometry != "tiny" and (force or not target.ready()):
        say("SAM ViT export: about 10 GB of memory and several minutes")
    timings = ensure_pack(target, force, lambda mode, spec, tag: run_worker(
        mode, spec, cfg, f"{tag}_{cfg.family}-{cfg.geometry}"))
    return target.pack, timings


def measure(cfg: Config, force_export: bool) -> Json:
    """Export (once), write the images, run one runtime worker per image size."""
    report: Json = {"config": asdict(cfg), "machine": machine(VERSIONS)}
    pack, export_timings = ensure_proposer_pack(cfg, force_export)
    manifest = pack / "manifest.json"
    report["pack"] = {"path": str(pack), "export_s": export_timings, "exported": time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(manifest.stat().st_mtime)),
        "provenance": json.loads(manifest.read_text()).get("provenance", {}).get("proposer"),
        "graph_mib": {g: (pack / f"{g}.onnx").stat().st_size / 2**20
                      for g in ("prop_encoder", "prop_decoder")}}
    images = [str(Path(cfg.work) / f"proposer_scene_{w}x{h}_seed{cfg.seed}.jpg")
              for w, h in cfg.sizes]
    for (w, h), image in zip(cfg.sizes, images, strict=True):
        if not Path(image).is_file():
            say(f"write JPEG {w}×{h}")
            run_worker("workload", {"seed": cfg.seed, "size": [w, h], "image": image,
                                    "shapes": 14, "gradient": 40.0}, cfg, f"workload_{w}x{h}")
    report["sizes"] = {}
    for (w, h), image in zip(cfg.sizes, images, strict=True):
        wait_for_quiet(cfg.wait_quiet, report)
        say(f"{w}×{h}: warm-up, {cfg.runs} cold + {cfg.warm_runs} warm + {cfg.loose_runs} "
            f"loosened runs, decoder chunks {cfg.chunks}")
        spec = {"pack": str(pack), "image": image, "threads": cfg.threads, "runs": cfg.runs,
                "warm_runs": cfg.warm_runs, "loose_runs": cfg.loose_runs,
                "points_per_side": cfg.points_per_side,
                "points_per_batch": cfg.points_per_batch, "chunks": cfg.chunks,
                "chunk_prompts": max(cfg.chunk_prompts, *cfg.chunks)}
        result = run_worker("runtime", spec, cfg, f"rt_{cfg.family}-{cfg.geometry}_{w}x{h}")
        say(f"{w}×{h}: profile one decoder call of {cfg.points_per_batch} prompts")
        result["decoder_profile"] = run_worker("profile", spec, cfg,
                                               f"prof_{cfg.family}-{cfg.geometry}_{w}x{h}")
        result["image"] = {"path": image, "bytes": os.path.getsize(image), "width": w,
                           "height": h}
        report["sizes"][f"{w}x{h}"] = result
    report["machine"]["loadavg_end"] = os.getloadavg()
    return report


# -------------------------------------------------------------------------------------- report
def _stage_rows(result: Json) -> list[list[str]]:
    """Rows stage × (cold median, cold min, warm median, loosened median, loosened min)."""
    kinds = [k for k in ("cold", "warm", "loose") if k in result]

    def cell(kind: str, stage: str, stat: str, probe: str | None = None) -> str:
        if kind not in result:
            return ""
        d = result[kind]
        if probe:
            ms = d["probe"][probe]["ms"]
            if probe == "prepare_input":
                return f"{ms[stat]:.0f}"
            return f"{ms[stat]:.0f} ({d['probe'][probe]['items']:.0f})"
        if stage == "outside":
            return f"{d['outside_ms'][stat]:.0f}"
        if stage == "total":
            return f"{d['wall_ms'][stat]:.0f}"
        return f"{d['stages_ms'][stage][stat]:.0f}" if stage in d["stages_ms"] else "–"

    lines = [("decode", None), ("prop_encoder", None), ("  of which preprocess", "prepare_input"),
             ("prop_decoder", None), ("prop_filter", None),
             ("  of which mask statistics (masks)", "logit_statistics"), ("prop_nms", None),
             ("  of which box NMS (boxes)", "box_nms"),
             ("  of which binary masks (masks)", "logit_masks"),
             ("outside stages", None), ("total (wall)", None)]
    rows = []
    for label, probe in lines:
        stage = {"outside stages": "outside", "total (wall)": "total"}.get(label, label)
        row = [label]
        for kind in kinds:
            row += [cell(kind, stage, "median", probe)]
            if kind != "warm":
                row += [cell(kind, stage, "min", probe)]
        rows.append(row)
    masks = ["masks kept"]
    for kind in kinds:
        kept = result[kind]["masks"]
        masks += [f"{statistics.median(kept):.0f}"] + ([f"{min(kept)}"] if kind != "warm" else [])
    rows.append(masks)
    share = ["others' CPU share (max)"]
    for kind in kinds:
        share += [f"{100 * result[kind]['other_processes_cpu_share']:.0f} %"] + \
            ([""] if kind != "warm" else [])
    rows.append(share)
    return rows


def render(report: Json) -> str:
    """The markdown report printed on stdout."""
    cfg = report["config"]
    pps = cfg["points_per_side"]
    lines = [
        f"## zsris-rt proposer: {cfg['family']} {cfg['geometry']}, random weights, CPU",
        "",
        *machine_lines(report["machine"], SHOWN_VERSIONS),
        f"- threads: {cfg['threads']} (ORT intra-op, OpenBLAS/OpenMP)",
        f"- pack {report['pack']['path']}, exported {report['pack']['exported']}; graphs (MiB): "
        + ", ".join(f"{g} {s:.0f}" for g, s in report["pack"]["graph_mib"].items()),
        f"- grid {pps}×{pps} = {pps * pps} prompts, {cfg['points_per_batch']} per decoder call; "
        f"{cfg['runs']} cold runs (caches cleared), {cfg['warm_runs']} warm runs "
        f"({', '.join(f'{k}={v}' for k, v in WARM.items())}; encoding cached), "
        f"{cfg['loose_runs']} loosened runs ({', '.join(f'{k}={v}' for k, v in LOOSE.items())}); "
        "JPEG decoded from disk every call",
        wall_line(report),
    ]
    for size, r in report["sizes"].items():
        s = r["settings"]
        lines += ["", f"### {size}: stages, ms (median / min; probe steps: ms (masks or boxes))",
                  "", f"Proposer input {s['input_size']} px ({s['resize']}), low-res masks "
                  f"{s['low_res_size']} px; startup {r['startup_s']:.1f} s, warm-up (4×4 points) "
                  f"{r['warmup']['wall_ms']:.0f} ms.", ""]
        header = ["stage"]
        for kind, name in (("cold", "cold defaults"), ("warm", "warm"), ("loose", "loosened")):
            if kind in r:
                header += [f"{name} median"] + ([f"{name} min"] if kind != "warm" else [])
        lines.append(table(header, _stage_rows(r)))
        if r.get("warm", {}).get("encoder_reran"):
            lines.append("\n**The warm runs re-ran the encoder: the embedding cache missed.**")
        lines += ["", "Decoder alone, by prompts per call:", ""]
        memory = r["decoder_profile"]["memory_by_chunk"]
        rows = [[c, str(d["call_ms"]["n"]), f"{d['call_ms']['median']:.0f}",
                 f"{d['prompt_ms']['median']:.1f}", f"{d['prompt_ms']['min']:.1f}",
                 f"{memory[c]['peak_rss_mb']:.0f}", f"{100 * d['other_processes_cpu_share']:.0f} %"]
                for c, d in r["chunks"].items()]
        lines.append(table(["prompts per call", "calls", "median ms per call",
                            "median ms per prompt", "min ms per prompt",
                            "peak RSS, encoder + decoder alone, MiB", "others' CPU share"], rows))
        prof = r["decoder_profile"]
        total = sum(prof["by_op_ms"].values()) or 1.0
        top = list(prof["by_op_ms"].items())[:8]
        lines += ["", f"Decoder profile, one call of {prof['prompts']} prompts in a process of "
                  f"its own ({prof['wall_ms']:.0f} ms wall; peak RSS "
                  f"{prof['rss_after_encoder']['ru_maxrss_mb']:.0f} MiB after the encoder, before "
                  "any decoder call): " + ", ".join(
                      f"{op} {100 * ms / total:.0f} %" for op, ms in top)]
        rss = [r["rss_after_load"], r["rss_after_default"], r["rss_after_loose"], r["rss"]]
        lines += ["", "Peak RSS (MiB, ru_maxrss): " + ", ".join(
            f"{name} {x['ru_maxrss_mb']:.0f}" for name, x in zip(
                ("after load", "after cold + warm runs", "after loosened runs", "at end"), rss,
                strict=True)) + (f"; output masks of a loosened run: "
                                 f"{r['loose']['runs'][0]['masks_mib']:.0f} MiB"
                                 if "loose" in r else "")]
        heavy = r["heavy_modules_loaded"]
        if heavy:
            lines.append(f"\n**Loaded in the runtime process: {', '.join(heavy)}.**")
    lines += ["", "\"outside stages\" = wall minus the sum of `Proposals.timings` (the image "
              "hash of the embedding cache, option checks, call overhead). Others' CPU share "
              "above a few % means the timings are inflated by other processes."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- main
def parse_size(text: str) -> list[list[int]]:
    """"640x480,1920x1080" → [[640, 480], [1920, 1080]] (width × height)."""
    sizes = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.lower().replace("×", "x").split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not WIDTHxHEIGHT: {part!r}") from None
        if w < 16 or h < 16:
            raise argparse.ArgumentTypeError(f"image too small: {part!r}")
        sizes.append([w, h])
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser("bench_proposer.py", __doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: SAM 2 tiny geometry, 8×8 points, 1 run of each kind "
                             "(< 60 s)")
    parser.add_argument("--family", choices=sorted(PROPOSER_GEOMETRIES), default="sam2",
                        help="proposer family (default sam2)")
    parser.add_argument("--geometry", default=None,
                        help="random checkpoint geometry: " + "; ".join(
                            f"{family}: {', '.join(geometries)}"
                            for family, geometries in PROPOSER_GEOMETRIES.items())
                             + " (default hiera-tiny for sam2, vit-b for sam; tiny with --quick)")
    parser.add_argument("--runs", type=int, default=None,
                        help="cold runs at the default options (default 5)")
    parser.add_argument("--loose-runs", type=int, default=None,
                        help="cold runs with the filters loosened (default 2)")
    parser.add_argument("--warm-runs", type=int, default=None,
                        help="warm runs, encoding cached, other thresholds (default 2)")
    parser.add_argument("--sizes", type=parse_size, default=None, metavar="WxH[,WxH...]",
                        help="image sizes (default 640x480)")
    parser.add_argument("--points-per-side", type=int, default=None,
                        help="point grid side (default 32; 8 with --quick)")
    parser.add_argument("--points-per-batch", type=int, default=64,
                        help="prompts per decoder call in the propose runs (default 64)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 64, 256],
                        help="prompts per call for the decoder-alone timing (default 16 64 256)")
    parser.add_argument("--chunk-prompts", type=int, default=None,
                        help="prompts timed per chunk size (default 512; 256 with --quick)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for ORT and BLAS alike (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the image")
    parser.add_argument("--work", default="/tmp/zsris-bench",
                        help="cache folder: checkpoints, pack, JPEGs, worker files")
    parser.add_argument("--force-export", action="store_true",
                        help="re-export the pack (the random checkpoints are kept)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each size, wait up to SECONDS for other processes to use "
                             "under 10 %% of the CPUs (default 0: do not wait)")
    parser.add_argument("--out", metavar="PATH",
                        help="JSON output (default benchmarks/results/"
                             "proposer-FAMILY-GEOMETRY.json)")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    cfg = Config(family=args.family, threads=args.threads, seed=args.seed, work=args.work,
                 wait_quiet=args.wait_quiet, points_per_batch=args.points_per_batch,
                 chunks=sorted(set(args.chunks)))
    cfg.geometry = {"sam2": "hiera-tiny", "sam": "vit-b"}[cfg.family]
    if args.quick:
        cfg.geometry, cfg.runs, cfg.loose_runs, cfg.warm_runs = "tiny", 1, 1, 1
        cfg.points_per_side, cfg.chunk_prompts = 8, 256
    cfg.geometry = args.geometry or cfg.geometry
    if cfg.geometry not in PROPOSER_GEOMETRIES[cfg.family]:
        raise SystemExit(f"bench_proposer: {cfg.family} has no geometry {cfg.geometry!r}; "
                         f"choose from {', '.join(PROPOSER_GEOMETRIES[cfg.family])}")
    for name in ("runs", "loose_runs", "warm_runs", "points_per_side", "chunk_prompts"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    cfg.sizes = args.sizes or cfg.sizes
    if cfg.runs < 1 or cfg.loose_runs < 0 or cfg.warm_runs < 0 or cfg.threads < 1 or \
            cfg.points_per_side < 1 or cfg.points_per_batch < 1 or min(cfg.chunks) < 1:
        raise SystemExit("bench_proposer: --runs, --threads, point and chunk counts must be ≥ 1; "
                         "--loose-runs and --warm-runs ≥ 0")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(WORKERS, *args.worker)
    cfg = config_from(args)
    out = Path(args.out) if args.out else RESULTS / f"proposer-{cfg.family}-{cfg.geometry}.json"
    say(f"bench_proposer: {cfg.family} {cfg.geometry}, sizes "
        f"{', '.join(f'{w}×{h}' for w, h in cfg.sizes)}, {cfg.points_per_side}² points, "
        f"{cfg.runs} runs, {cfg.threads} threads, work folder {cfg.work}")
    report = measure(cfg, args.force_export)
    report["wall_s"] = elapsed()
    print(render(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    say(f"wrote {out}")
    bad = [s for s, r in report["sizes"].items()
           if r["torch_in_sys_modules"] or r.get("warm", {}).get("encoder_reran")]
    if bad:
        say(f"torch loaded or embedding cache missed at {bad}")
    say(f"done in {report['wall_s']:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
