#!/usr/bin/env python
"""Benchmark zsris-rt (ONNX Runtime, CPU) against the PyTorch reference on CLIP ViT-B/32 geometry.

Both sides do the same work per query: decode a 640×480 JPEG from disk, take K masks and one
expression, parse it with spaCy, tokenise, run the Global-Local computation and return the index
of the chosen mask. The runtime is timed through `Segmenter.segment` with its text and spaCy
caches cleared before every run ("cold text"), so the text tower and the parse are paid every
time, as in the reference.

Every measurement runs in its own subprocess (one per side and K), so peak RSS is that of one
side only, and the runtime's process is checked to have never loaded torch. Other processes on the
machine skew timings: each timed section reports the share of the CPUs that other processes used
while it ran (from /proc/stat), so a noisy run shows itself.
The compute floor of each stage is its FLOPs (2 × multiply-adds of every MatMul/Gemm/Conv, counted
on the pack's ONNX graphs at the real shapes with ONNX Runtime's symbolic shape inference) divided
by this machine's best fp32 matrix-multiply rate (numpy and ONNX Runtime, square matmuls, the same
thread count).

The random checkpoint and its pack are cached under --work, so reruns skip the export.
Output: a markdown report on stdout, everything in --json, progress on stderr.

    python benchmarks/bench_clip.py                     # ViT-B/32, K = 8 and 32, 10 runs each
    python benchmarks/bench_clip.py --quick             # tiny geometry, K = 4: a smoke test
    python benchmarks/bench_clip.py --json out.json --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    HEAVY_MODULES,
    CpuShare,
    Json,
    argument_parser,
    draw_scene,
    elapsed,
    machine,
    machine_lines,
    peak_rss,
    say,
    spawn_worker,
    summary,
    table,
    wait_for_quiet,
    wall_line,
    worker_main,
)

DEFAULT_TEXT = "the red mug left of the laptop"
IMAGE_SIZE = (480, 640)  # H, W
SCORE_TOLERANCE = 2e-3  # max |runtime − reference| on 100·cos scores
RUNTIME_STAGES = ("decode", "preprocess", "trunk", "mask_grid", "masked_head", "crops",
                  "crop_encoder", "text", "score")
GEOMETRIES = ("ViT-B/32", "ViT-B/16", "ViT-L/14", "tiny")  # export.random_checkpoint's
GRAPH_OF_STAGE = {"trunk": "clip_trunk", "masked_head": "clip_masked_head",
                  "crop_encoder": "clip_image", "text": "clip_text"}
# Versions the JSON records, and those the report names (label: distribution).
VERSIONS = ("numpy", "onnxruntime", "torch", "onnx", "opencv-python-headless", "spacy",
            "transformers")
SHOWN_VERSIONS = {"numpy": "numpy", "onnxruntime": "onnxruntime", "torch": "torch", "onnx": "onnx",
                  "spaCy": "spacy"}


@dataclass
class Config:
    geometry: str = "ViT-B/32"
    seed: int = 0
    ks: list[int] = field(default_factory=lambda: [8, 32])
    repeats: int = 10
    warmup: int = 2
    threads: int = 2
    text: str = DEFAULT_TEXT
    work: str = "/tmp/zsris-bench"
    wait_quiet: float = 0.0
    matmul_sizes: list[int] = field(default_factory=lambda: [1024, 1536, 2048])
    matmul_tries: int = 5


# ------------------------------------------------------------------------------------- workers
def worker_workload(spec: Json) -> Json:
    """Write the JPEG (smooth noise and shapes) and K random ellipse masks per K."""
    import cv2
    import numpy as np

    h, w = spec["size"]
    rng = np.random.default_rng(spec["seed"])
    cv2.imwrite(spec["image"], draw_scene(rng, w, h, shapes=10), [cv2.IMWRITE_JPEG_QUALITY, 90])
    for k, path in zip(spec["ks"], spec["masks"], strict=True):
        masks = np.zeros((k, h, w), dtype=bool)
        for i in range(k):
            canvas = np.zeros((h, w), dtype=np.uint8)
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(12, w // 3)), int(rng.integers(12, h // 3)))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            masks[i] = canvas > 0
        if not masks.reshape(k, -1).any(axis=1).all():
            raise RuntimeError("an empty mask was drawn")
        np.save(path, masks)
    return {"image_bytes": os.path.getsize(spec["image"])}


def _timed_runs(run: Any, before: Any, warmup: int, repeats: int) -> tuple[list[float], Any, Json]:
    """Call `before()` then time `run()` warmup + repeats times. Returns the timed ms, the last
    result, and the first (cold) call's ms with the other processes' CPU share while timing."""
    times: list[float] = []
    first, result, share = 0.0, None, CpuShare()
    for i in range(warmup + repeats):
        if i == warmup:
            share = CpuShare()
        before()
        start = time.perf_counter()
        result = run()
        ms = (time.perf_counter() - start) * 1e3
        if i == 0:
            first = ms
        if i >= warmup:
            times.append(ms)
    return times, result, {"first_call_ms": first, **share.result()}


def worker_runtime(spec: Json) -> Json:
    """Time `Segmenter.segment` (cold text) on the JPEG; report stages, scores and peak RSS."""
    import numpy as np

    from zsris_rt import Segmenter

    masks = np.load(spec["masks"])
    start = time.perf_counter()
    seg = Segmenter.from_pack(spec["pack"], threads=spec["threads"])
    startup = time.perf_counter() - start
    rss_loaded = peak_rss()
    stages: list[dict[str, float]] = []
    text, image = spec["text"], spec["image"]

    def clear() -> None:
        seg.clear_caches()  # cold text: the spaCy parse and the text tower run every time

    def run() -> Any:
        result = seg.segment(image, text, masks)
        stages.append(dict(result.timings))
        return result

    times, result, extra = _timed_runs(run, clear, spec["warmup"], spec["repeats"])
    timed_stages = stages[spec["warmup"]:]
    stage_ms = {name: summary([s.get(name, 0.0) for s in timed_stages], (90,))
                for name in sorted({n for s in timed_stages for n in s})}
    outside = [t - sum(s.values()) for t, s in zip(times, timed_stages, strict=True)]
    return {
        "latency_ms": summary(times, (90,)), "latencies_ms": times, **extra,
        "stages_ms": stage_ms, "outside_stages_ms": summary(outside, (90,)),
        "scores": [float(v) for v in result.scores], "index": int(result.index),
        "sentence": result.sentence, "noun_phrase": result.noun_phrase,
        "startup_s": startup, "rss_after_load": rss_loaded, "rss": peak_rss(),
        "torch_in_sys_modules": "torch" in sys.modules,
        "heavy_modules_loaded": [m for m in HEAVY_MODULES if m in sys.modules],
        "backend": seg.backend.describe(),
    }


def worker_reference(spec: Json) -> Json:
    """Time decode + parse + tokenise + GlobalLocalReference.run (torch eager), like the runtime."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from zsris_rt.export.checkpoints import load_clip
    from zsris_rt.export.reference import GlobalLocalReference
    from zsris_rt.image import read_image
    from zsris_rt.pack import load_pack
    from zsris_rt.text import ExpressionParser
    from zsris_rt.tokenizer import ClipTokenizer

    masks = np.load(spec["masks"])
    start = time.perf_counter()
    s = load_pack(spec["pack"], verify=False).clip
    parser = ExpressionParser(s.spacy_model)
    tokenizer = ClipTokenizer(Path(spec["pack"]) / "tokenizer.json", s.context_length,
                              s.start_token, s.end_token, s.pad_token)
    reference = GlobalLocalReference(load_clip(spec["checkpoint"]).model, s.masked_blocks,
                                     s.alpha, s.beta, tuple(s.mean), tuple(s.std), tuple(s.fill))
    startup = time.perf_counter() - start
    rss_loaded = peak_rss()
    text, image = spec["text"], spec["image"]

    def ids(phrase: str) -> tuple[Any, Any]:
        batch = tokenizer.encode([phrase])
        return torch.from_numpy(batch.ids), torch.from_numpy(batch.end_index)

    def run() -> Any:
        rgb = read_image(image)
        phrases = parser.parse(text)
        return reference.run(rgb, masks, ids(phrases.sentence), ids(phrases.noun_phrase))

    times, result, extra = _timed_runs(run, parser.clear_cache, spec["warmup"], spec["repeats"])
    return {
        "latency_ms": summary(times, (90,)), "latencies_ms": times, **extra,
        "scores": [float(v) for v in result.scores], "index": int(result.index),
        "startup_s": startup, "rss_after_load": rss_loaded, "rss": peak_rss(),
        "torch_threads": torch.get_num_threads(),
        "heavy_modules_loaded": [m for m in HEAVY_MODULES if m in sys.modules],
    }


def worker_export(spec: Json) -> Json:
    """Write the random checkpoint (unless present) and export its pack, in one torch process."""
    from zsris_rt.export.cli import main as export_main
    from zsris_rt.export.random_checkpoint import write_random_clip

    checkpoint = Path(spec["checkpoint"])
    if spec["force"] or not (checkpoint / "config.json").is_file():
        write_random_clip(checkpoint, spec["geometry"], spec["seed"])
    if export_main(["clip", str(checkpoint), "--out", spec["pack"], "--force"]) != 0:
        raise RuntimeError("zsris-export failed")
    return {}


def worker_flops(spec: Json) -> Json:
    """FLOPs (2 × multiply-adds of MatMul/Gemm/Conv) of each graph at the given batch sizes."""
    import copy

    import numpy as np
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    out: Json = {}
    for graph, batches in spec["graphs"].items():
        model = onnx.load(str(Path(spec["pack"]) / f"{graph}.onnx"))
        weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        # Weights become shaped inputs: shape inference needs their shapes, not their values.
        for tensor in [t for t in model.graph.initializer if np.prod(t.dims) > 4096]:
            model.graph.input.append(onnx.helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
            model.graph.initializer.remove(tensor)
        per_batch: Json = {}
        for batch in batches:
            fixed = copy.deepcopy(model)
            for value in fixed.graph.input:
                for dim in value.type.tensor_type.shape.dim:
                    if dim.dim_param:
                        dim.dim_value = batch
            per_batch[str(batch)] = _count_flops(SymbolicShapeInference.infer_shapes(fixed))
        out[graph] = {"parameters": weights, "by_batch": per_batch}
    return {"graphs": out}


def _count_flops(model: Any) -> Json:
    """Walk MatMul/Gemm/Conv nodes of a shape-inferred model; unknown shapes are counted apart."""
    import numpy as np

    graph = model.graph
    shapes: dict[str, list[int | None]] = {
        v.name: [d.dim_value if d.HasField("dim_value") else None
                 for d in v.type.tensor_type.shape.dim]
        for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    flops, unknown, nodes = 0, 0, 0
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        nodes += 1
        a, b, y = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if not a or not b or not y or None in a + b + y:
            unknown += 1
            continue
        if node.op_type == "Conv":  # per output element: C_in/groups × kernel area
            flops += 2 * int(np.prod(y)) * int(np.prod(b[1:]))
        elif node.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            flops += 2 * int(np.prod(y)) * (a[0] if trans_a else a[-1])
        else:
            flops += 2 * int(np.prod(y)) * a[-1]
    return {"flops": flops, "nodes": nodes, "unknown_nodes": unknown}


def worker_matmul(spec: Json) -> Json:
    """Best fp32 square-matmul rate (GFLOP/s) of numpy and of ONNX Runtime's MatMul."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    result: Json = {"numpy": {}, "onnxruntime": {}}
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.log_severity_level = 3
    for n in spec["sizes"]:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        runners = {"numpy": (np.matmul, (a, b)),
                   "onnxruntime": (session.run, (None, {"a": a, "b": b}))}
        for name, (fn, fn_args) in runners.items():
            fn(*fn_args)
            best = min(_seconds(fn, fn_args) for _ in range(spec["tries"]))
            result[name][str(n)] = 2 * n**3 / best / 1e9
    for name in ("numpy", "onnxruntime"):
        result[f"{name}_best_gflops"] = max(result[name].values())
    return result


def _seconds(fn: Any, args: tuple[Any, ...]) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


WORKERS = {"export": worker_export, "workload": worker_workload, "runtime": worker_runtime,
           "reference": worker_reference, "flops": worker_flops, "matmul": worker_matmul}


# ------------------------------------------------------------------------------- orchestration
def run_worker(mode: str, spec: Json, cfg: Config, tag: str) -> Json:
    """Run one worker in a fresh Python process and return its result."""
    return spawn_worker(__file__, mode, spec, tag, cfg.work, cfg.threads)


def ensure_pack(cfg: Config, force: bool) -> tuple[Path, Path]:
    """The random checkpoint and its pack under the work folder, exported once."""
    root = Path(cfg.work) / f"{cfg.geometry.replace('/', '-')}_seed{cfg.seed}"
    checkpoint, pack = root / "checkpoint", root / "pack"
    if force or not (pack / "manifest.json").is_file():
        say(f"random {cfg.geometry} checkpoint (seed {cfg.seed}) → pack {pack}")
        run_worker("export", {"checkpoint": str(checkpoint), "pack": str(pack), "force": force,
                              "geometry": cfg.geometry, "seed": cfg.seed}, cfg, "export")
    else:
        say(f"reuse pack {pack} (--force-export to redo)")
    return checkpoint, pack


def measure(cfg: Config, force_export: bool) -> Json:
    """Run every worker and gather the numbers of the report."""
    report: Json = {"config": asdict(cfg), "machine": machine(VERSIONS)}
    checkpoint, pack = ensure_pack(cfg, force_export)
    manifest = pack / "manifest.json"
    report["pack"] = {"path": str(pack), "exported": time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(manifest.stat().st_mtime)),
        "provenance": json.loads(manifest.read_text()).get("provenance", {})}
    work = Path(cfg.work)
    image = str(work / "scene.jpg")
    mask_files = [str(work / f"masks_K{k}.npy") for k in cfg.ks]
    say(f"write workload: {IMAGE_SIZE[1]}×{IMAGE_SIZE[0]} JPEG, K = {cfg.ks} ellipse masks")
    run_worker("workload", {"size": IMAGE_SIZE, "seed": cfg.seed, "ks": cfg.ks, "image": image,
                            "masks": mask_files}, cfg, "workload")
    wait_for_quiet(cfg.wait_quiet, report)
    say(f"matmul rate: numpy and ONNX Runtime fp32, n = {cfg.matmul_sizes}")
    report["matmul"] = run_worker("matmul", {"sizes": cfg.matmul_sizes, "tries": cfg.matmul_tries,
                                             "threads": cfg.threads}, cfg, "matmul")
    common = {"pack": str(pack), "image": image, "text": cfg.text, "threads": cfg.threads,
              "warmup": cfg.warmup, "repeats": cfg.repeats}
    report["runs"] = {}
    for k, masks in zip(cfg.ks, mask_files, strict=True):
        wait_for_quiet(cfg.wait_quiet, report)
        say(f"K={k}: runtime, {cfg.warmup} warm-up + {cfg.repeats} runs")
        rt = run_worker("runtime", dict(common, masks=masks), cfg, f"rt_K{k}")
        say(f"K={k}: runtime median {rt['latency_ms']['median']:.0f} ms")
        wait_for_quiet(cfg.wait_quiet, report)
        say(f"K={k}: reference, {cfg.warmup} warm-up + {cfg.repeats} runs")
        ref = run_worker("reference", dict(common, masks=masks, checkpoint=str(checkpoint)), cfg,
                         f"ref_K{k}")
        say(f"K={k}: reference median {ref['latency_ms']['median']:.0f} ms")
        report["runs"][str(k)] = {"runtime": rt, "reference": ref, "agreement": agreement(rt, ref)}
    text_batch = len({rt["sentence"], rt["noun_phrase"]})
    say("count FLOPs on the ONNX graphs")
    report["flops"] = run_worker("flops", {"pack": str(pack), "graphs": {
        "clip_trunk": [1], "clip_masked_head": cfg.ks, "clip_image": cfg.ks,
        "clip_text": [text_batch]}}, cfg, "flops")
    report["text_batch"] = text_batch
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["floors"] = floors(report, cfg)
    return report


def agreement(rt: Json, ref: Json) -> Json:
    """Same index? Max score difference? Margin of the winner (how telling the index check is)."""
    diffs = [abs(a - b) for a, b in zip(rt["scores"], ref["scores"], strict=True)]
    top = sorted(ref["scores"], reverse=True)
    return {"same_index": rt["index"] == ref["index"], "max_abs_score_diff": max(diffs),
            "scores_agree": max(diffs) <= SCORE_TOLERANCE, "tolerance": SCORE_TOLERANCE,
            "top2_margin": top[0] - top[1] if len(top) > 1 else None,
            "score_range": [top[-1], top[0]]}


def floors(report: Json, cfg: Config) -> Json:
    """Per stage and end to end: GFLOP, floor ms at the best matmul rate, measured / floor."""
    mm = report["matmul"]
    rate = max(mm["numpy_best_gflops"], mm["onnxruntime_best_gflops"])
    batch = {"clip_trunk": lambda k: 1, "clip_masked_head": lambda k: k,
             "clip_image": lambda k: k, "clip_text": lambda k: report["text_batch"]}
    out: Json = {"rate_gflops": rate}
    for k in cfg.ks:
        rt = report["runs"][str(k)]["runtime"]
        rows: Json = {}
        for stage, graph in GRAPH_OF_STAGE.items():
            counted = report["flops"]["graphs"][graph]["by_batch"][str(batch[graph](k))]
            gflop = counted["flops"] / 1e9
            rows[stage] = {"gflop": gflop, "floor_ms": gflop / rate * 1e3,
                           "unknown_nodes": counted["unknown_nodes"]}
        total = sum(r["gflop"] for r in rows.values())
        rows["end_to_end"] = {"gflop": total, "floor_ms": total / rate * 1e3}
        for stage, row in rows.items():
            ms = (rt["latency_ms"]["median"] if stage == "end_to_end"
                  else rt["stages_ms"][stage]["median"])
            row["measured_ms"] = ms
            row["x_floor"] = ms / row["floor_ms"]
            row["achieved_gflops"] = row["gflop"] / ms * 1e3
        out[str(k)] = rows
    return out


# -------------------------------------------------------------------------------------- report
def render(report: Json) -> str:
    """The markdown report printed on stdout."""
    cfg, mm, fl = report["config"], report["matmul"], report["floors"]
    graphs = report["flops"]["graphs"]
    lines = [
        f"## zsris-rt vs PyTorch reference: CLIP {cfg['geometry']}, random weights",
        "",
        *machine_lines(report["machine"], SHOWN_VERSIONS),
        f"- threads: {cfg['threads']} (ORT intra-op, torch.set_num_threads, OpenBLAS/OpenMP)",
        f"- workload: {IMAGE_SIZE[1]}×{IMAGE_SIZE[0]} JPEG decoded from disk every run, "
        f"K random ellipse masks, \"{cfg['text']}\"; warm-up runs dropped: {cfg['warmup']}, "
        f"{cfg['repeats']} timed; cold text (runtime's text and spaCy caches cleared before "
        "each run; both sides parse, tokenise and run the text tower every time)",
        f"- fp32 matmul rate (best of n = {cfg['matmul_sizes']}): numpy "
        f"{mm['numpy_best_gflops']:.1f} GFLOP/s, ONNX Runtime {mm['onnxruntime_best_gflops']:.1f}"
        f" GFLOP/s; floor = FLOPs / {fl['rate_gflops']:.1f} GFLOP/s (MatMul/Gemm/Conv of the "
        f"pack's ONNX graphs at the real shapes; text batch {report['text_batch']})",
        f"- pack {report['pack']['path']}, exported {report['pack']['exported']}; "
        "weights (fp32 MiB): " + ", ".join(
            f"{g} {v['parameters'] * 4 / 2**20:.0f}" for g, v in graphs.items())
        + f"; total {sum(v['parameters'] for v in graphs.values()) * 4 / 2**20:.0f}",
        wall_line(report),
        "",
        "### End to end (image + masks + expression → index)",
        "",
    ]
    rows = []
    for k, run in report["runs"].items():
        rt, ref, agree = run["runtime"], run["reference"], run["agreement"]
        e2e = fl[k]["end_to_end"]
        rows.append([
            k, f"{rt['latency_ms']['median']:.1f}", f"{rt['latency_ms']['p90']:.1f}",
            f"{ref['latency_ms']['median']:.1f}", f"{ref['latency_ms']['p90']:.1f}",
            f"{ref['latency_ms']['median'] / rt['latency_ms']['median']:.2f}×",
            f"{e2e['gflop']:.1f}", f"{e2e['floor_ms']:.1f}", f"{e2e['x_floor']:.2f}×",
            "yes" if agree["same_index"] else "**NO**",
            f"{agree['max_abs_score_diff']:.1e}" + ("" if agree["scores_agree"] else " **>tol**"),
            f"{rt['rss']['ru_maxrss_mb']:.0f}", f"{ref['rss']['ru_maxrss_mb']:.0f}",
        ])
    lines.append(table(
        ["K", "runtime median ms", "runtime p90 ms", "reference median ms", "reference p90 ms",
         "ref / runtime", "GFLOP", "floor ms", "runtime / floor", "same index",
         f"max abs Δscore (tol {SCORE_TOLERANCE:g})", "runtime peak RSS MiB",
         "reference peak RSS MiB"], rows))
    lines += [""] + [
        f"K={k}: reference scores span {r['agreement']['score_range'][0]:.3f} … "
        f"{r['agreement']['score_range'][1]:.3f}, winner ahead by "
        f"{r['agreement']['top2_margin']:.4f}, so the index check is "
        + ("meaningful." if r["agreement"]["top2_margin"] > 10 * SCORE_TOLERANCE else
           "fragile (winner's margin is within 10× the score tolerance).")
        for k, r in report["runs"].items() if r["agreement"]["top2_margin"] is not None]
    lines += ["", "### Runtime stages (median ms; floor = the stage's FLOPs at the matmul rate)",
              ""]
    ks = list(report["runs"])
    header = ["stage"]
    for k in ks:
        header += [f"K={k} ms", f"K={k} GFLOP", f"K={k} floor ms", f"K={k} × floor"]
    rows = []
    for stage in (*RUNTIME_STAGES, "outside stages", "end to end"):
        row = [stage]
        for k in ks:
            rt = report["runs"][k]["runtime"]
            if stage == "end to end":
                ms, key = rt["latency_ms"]["median"], "end_to_end"
            elif stage == "outside stages":
                ms, key = rt["outside_stages_ms"]["median"], None
            else:
                ms, key = rt["stages_ms"].get(stage, {}).get("median", 0.0), stage
            f = fl[k].get(key) if key else None
            row += [f"{ms:.1f}"] + ([f"{f['gflop']:.2f}", f"{f['floor_ms']:.1f}",
                                     f"{f['x_floor']:.2f}×"] if f else ["", "", ""])
        rows.append(row)
    lines.append(table(header, rows))
    lines += ["", "\"outside stages\" = end to end minus the sum of `Result.timings`: the "
              "validation parse `segment()` runs before encoding, and call overhead.", "",
              "### Processes (each measurement in its own process)", ""]
    rows = []
    procs = [(f"runtime K={k}", r["runtime"]) for k, r in report["runs"].items()]
    procs += [(f"reference K={k}", r["reference"]) for k, r in report["runs"].items()]
    for name, p in procs:
        rss, loaded = p["rss"], p["rss_after_load"]
        heavy = ", ".join(p["heavy_modules_loaded"]) or "none"
        rows.append([name, f"{p['startup_s']:.1f}", f"{p['first_call_ms']:.0f}",
                     f"{loaded['ru_maxrss_mb']:.0f}", f"{rss['ru_maxrss_mb']:.0f}",
                     f"{rss['vmhwm_mb']:.0f}", heavy,
                     f"{100 * p['other_processes_cpu_share']:.0f} %",
                     f"{p['own_cpu_per_wall']:.2f}"])
    lines.append(table(["process", "load s", "first call ms",
                        "RSS after load MiB", "peak RSS MiB (ru_maxrss)", "VmHWM MiB",
                        "torch / transformers / onnx loaded", "other processes' CPU share",
                        "own CPU s per s"], rows))
    lines += ["", "load s: from the constructor call to a ready object (the runtime verifies the "
              "pack's sha256 and builds the ONNX Runtime sessions). Other "
              "processes' CPU share: busy CPU time of the whole machine minus this process's, "
              "over the timed runs; above a few % the timings are inflated."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser("bench_clip.py", __doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny geometry, K = 4, 1 warm-up + 2 runs (< 30 s)")
    parser.add_argument("--geometry", default=None, choices=GEOMETRIES,
                        help="random CLIP geometry (default ViT-B/32, tiny with --quick)")
    parser.add_argument("--ks", type=int, nargs="+", default=None,
                        help="mask counts K to run (default 8 32)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per K (default 10)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed runs first (default 2; the first builds ORT sessions)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for ORT, torch and BLAS alike (default 2)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the referring expression")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, image and masks")
    parser.add_argument("--work", default="/tmp/zsris-bench",
                        help="cache folder: checkpoint, pack, JPEG, masks, worker files")
    parser.add_argument("--force-export", action="store_true",
                        help="rewrite the random checkpoint and re-export the pack")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each timed process, wait up to SECONDS for other processes "
                             "to use under 10 %% of the CPUs (default 0: do not wait)")
    parser.add_argument("--json", metavar="PATH", help="write every number here as JSON")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> Config:
    cfg = Config(threads=args.threads, text=args.text, seed=args.seed, work=args.work,
                 wait_quiet=args.wait_quiet)
    if args.quick:
        cfg.geometry, cfg.ks, cfg.repeats, cfg.warmup = "tiny", [4], 2, 1
        cfg.matmul_sizes, cfg.matmul_tries = [512, 1024], 3
    cfg.geometry = args.geometry or cfg.geometry
    cfg.ks = sorted(args.ks) if args.ks else cfg.ks
    cfg.repeats = cfg.repeats if args.repeats is None else args.repeats
    cfg.warmup = cfg.warmup if args.warmup is None else args.warmup
    if cfg.repeats < 1 or cfg.warmup < 0 or min(cfg.ks) < 1 or cfg.threads < 1:
        raise SystemExit("bench_clip: --repeats, --ks and --threads must be ≥ 1, --warmup ≥ 0")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(WORKERS, *args.worker)
    cfg = config_from(args)
    say(f"bench_clip: {cfg.geometry}, K = {cfg.ks}, {cfg.warmup} warm-up + {cfg.repeats} runs, "
        f"{cfg.threads} threads, work folder {cfg.work}")
    report = measure(cfg, args.force_export)
    report["wall_s"] = elapsed()
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        say(f"wrote {args.json}")
    bad = [k for k, r in report["runs"].items()
           if not (r["agreement"]["same_index"] and r["agreement"]["scores_agree"])]
    if bad:
        say(f"runtime and reference DISAGREE at K = {bad}")
    leaked = [k for k, r in report["runs"].items() if r["runtime"]["torch_in_sys_modules"]]
    if leaked:
        say(f"torch was loaded in the runtime process at K = {leaked}")
    say(f"done in {report['wall_s']:.0f} s")
    return 1 if bad or leaked else 0


if __name__ == "__main__":
    sys.exit(main())
