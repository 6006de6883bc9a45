"""The report of `zsris-rt bench`: markdown tables (header, end to end over K, stages with their
compute floors, expressions per scene, proposer per proposer mode, the main job end to end,
processes) and an optional PNG of the curves."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diagnosis import describe_clip
from ..pack import ClipSettings
from .flops import COUNTED_OPS
from .stats import Json, summary
from .timing import PERCENTILES

SCORE_TOLERANCE = 2e-3  # max |runtime − reference| on 100·cos scores (tests/test_runtime_parity)
SHOWN_VERSIONS = ("zsris-rt", "numpy", "onnxruntime", "onnx", "torch", "transformers", "spacy")
STATS = ("median", *(f"p{q}" for q in PERCENTILES))
NONE = "–"
END_TO_END = ("end to end",)  # a Row's stages meaning the whole run's latency


@dataclass(frozen=True)
class Row:
    """One stage row: the runtime's stages summed, the reference's (None: not timed apart;
    END_TO_END: the whole run), and the graphs whose FLOPs make its floor, as (graph, count key,
    times)."""

    label: str
    runtime: tuple[str, ...]
    reference: tuple[str, ...] | None
    graphs: tuple[tuple[str, str, float], ...] = ()


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def ratio(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}×"


def stage_stats(record: Json | None, stages: tuple[str, ...] | None) -> Json | None:
    """Median and percentiles of the per-run sum of `stages` (None: not timed)."""
    if record is None or stages is None:
        return None
    if stages == END_TO_END:
        return record["latency_ms"]
    runs = record["stage_runs"]
    if not any(stage in run for run in runs for stage in stages):
        return None
    return summary([sum(run.get(stage, 0.0) for stage in stages) for run in runs], PERCENTILES)


class Floors:
    """GFLOP and floor ms of graphs at the run's shapes; empty when FLOPs were not counted."""

    def __init__(self, report: Json) -> None:
        self.flops = report.get("flops")
        if self.flops is not None and "crop_encoder" not in self.flops and \
                "clip_image" in self.flops:  # a report from when the crops had a graph of their own
            self.flops = {**self.flops, "crop_encoder": self.flops["clip_image"]}
        self.rate = report["matmul"]["rate_gflops"]

    def gflop(self, graphs: tuple[tuple[str, str, float], ...]) -> float | None:
        if not graphs or self.flops is None:
            return None
        return sum(self.flops[g][key]["flops"] * times for g, key, times in graphs) / 1e9

    def floor_ms(self, gflop: float | None) -> float | None:
        return None if gflop is None else gflop / self.rate * 1e3


def stage_table(rows: list[Row], runtime: Json, reference: Json | None, floors: Floors) -> str:
    header = ["stage", *(f"runtime {s} ms" for s in STATS), *(f"reference {s} ms" for s in STATS),
              "reference / runtime", "GFLOP", "floor ms", "runtime × floor",
              "reference × floor"]
    lines = []
    for row in rows:
        rt, ref = stage_stats(runtime, row.runtime), stage_stats(reference, row.reference)
        gflop = floors.gflop(row.graphs)
        floor = floors.floor_ms(gflop)
        lines.append([
            row.label, *(ms(rt[s]) if rt else NONE for s in STATS),
            *(ms(ref[s]) if ref else NONE for s in STATS),
            ratio(ref["median"] / rt["median"] if rt and ref and rt["median"] > 0 else None),
            NONE if gflop is None else f"{gflop:.2f}", ms(floor),
            ratio(rt["median"] / floor if rt and floor else None),
            ratio(ref["median"] / floor if ref and floor else None)])
    return table(header, lines)


def clip_rows(k: str) -> list[Row]:
    # "crop_encoder": the trunk and the head on the K crops (flops.CROP_ENCODER).
    trunk, head, image = ("clip_trunk", "1", 1.0), ("clip_masked_head", k, 1.0), \
        ("crop_encoder", k, 1.0)
    return [
        Row("image decode (JPEG from disk)", ("decode",), ("decode",)),
        Row("preprocessing", ("preprocess",), ("preprocess",)),
        Row("mask grid (mask op)", ("mask_grid",), None),
        Row("trunk", ("trunk",), None, (trunk,)),
        Row("masked head", ("masked_head",), None, (head,)),
        Row("= global: grid + trunk + head", ("mask_grid", "trunk", "masked_head"), ("global",),
            (trunk, head)),
        Row("masked crops (mask op)", ("crops",), None),
        Row("crop encoder", ("crop_encoder",), None, (image,)),
        Row("= local: crops + crop encoder", ("crops", "crop_encoder"), ("local",), (image,)),
        Row("text (parse, tokenise, tower)", ("text",), ("text",), (("clip_text", "query", 1.0),)),
        Row("scoring", ("score",), ("score",)),
        Row("end to end", END_TO_END, END_TO_END,
            (trunk, head, image, ("clip_text", "query", 1.0))),
    ]


def proposer_rows(prompts: float, per_call: int) -> list[Row]:
    """Rows of the proposer's stages at `prompts` decoded (a mean over runs in fast mode); the
    decoder's FLOPs were counted on one call of `per_call` prompts and scale with the prompts."""
    encoder, decoder = ("prop_encoder", "1", 1.0), ("prop_decoder", "call", prompts / per_call)
    return [
        Row("image decode (JPEG from disk)", ("decode",), ("decode",)),
        Row("proposer encoder (with preprocessing)", ("prop_encoder",), ("prop_encoder",),
            (encoder,)),
        Row(f"decoder ({prompts:g} prompts)", ("prop_decoder",), None, (decoder,)),
        Row("mask ops (filters, NMS, final masks)", ("prop_filter", "prop_nms"), None),
        Row("= decoder + mask ops", ("prop_decoder", "prop_filter", "prop_nms"), ("prop_rest",),
            (decoder,)),
        Row("end to end", END_TO_END, END_TO_END, (encoder, decoder)),
    ]


def machine_lines(m: Json, shown: dict[str, str]) -> list[str]:
    """The report's bullets on the machine, the versions (`shown`: label → distribution) and the
    source checkout."""
    v, src = m["versions"], m["source"]
    return [
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['platform']}; load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m['loadavg_end'][0]:.2f} at end",
        f"- Python {m['python']}, " + ", ".join(f"{label} {v[d]}" for label, d in shown.items()),
        f"- source: {src['root']} at {src['commit']}"
        + (f", uncommitted changes in {', '.join(src['modified'])}" if src["modified"] else ""),
    ]


def wall_line(report: Json) -> str:
    """The report's bullet on the wall time and how much of it went to waiting."""
    return (f"- wall time {report['wall_s']:.0f} s, of which {report.get('waited_s', 0.0):.0f} s "
            "waiting for a quiet machine")


def _header(report: Json) -> list[str]:
    cfg, pack = report["config"], report["pack"]
    clip, proposer = pack["clip"], pack["proposer"]
    proposer_geometry = pack["provenance"].get("proposer", {}).get("geometry", "?")
    rate = report["matmul"]
    lines = [
        *machine_lines(report["machine"], {name: name for name in SHOWN_VERSIONS}),
        f"- pack {pack['path']}: CLIP {describe_clip(ClipSettings.from_dict(clip))}"
        + (f" ({cfg['geometry']})" if pack["random_weights"] else "")
        + (f"; proposer {proposer['family']} {proposer_geometry}, {proposer['input_size']} px "
           "input" if proposer else "; no proposer")
        + ("; **random weights** (latency only: the masks and scores mean nothing)"
           if pack["random_weights"] else ""),
        f"- threads: {cfg['threads']} (ONNX Runtime intra-op, torch, BLAS/OpenMP); each "
        "measurement in its own process",
        "- zsris-rt backend: " + ", ".join(
            f"{k} {v}" for k, v in report["runtime"]["clip"]["backend"].items()
            if k in ("backend", "providers", "precision", "tensorrt", "gpu")),
        f"- workload: JPEG {report['workload']['size'][0]}×{report['workload']['size'][1]} "
        f"decoded from disk every run, K random ellipse masks (given, so the proposer does not "
        f"decide K), \"{cfg['text']}\"; cold text (caches cleared: parse, tokeniser and text "
        f"tower every run on both sides); {cfg['warmup']} warm-up runs dropped, {cfg['runs']} "
        "timed",
        f"- fp32 matmul rate (best of n = {cfg['matmul_sizes']}): "
        + ", ".join(f"{k} {v:.1f}" for k, v in rate["best_gflops"].items())
        + f" GFLOP/s; floor = FLOPs ({', '.join(COUNTED_OPS)} of the ONNX "
        f"graphs at the run's shapes) / {rate['rate_gflops']:.1f} GFLOP/s",
        wall_line(report),
    ]
    return lines + [f"- note: {note}" for note in report["notes"]]


def _over_k(report: Json, floors: Floors) -> list[str]:
    rt, ref = report["runtime"]["clip"], report["reference"].get("clip")
    rows = []
    for k, run in rt["ks"].items():
        other = ref["ks"][k] if ref else None
        gflop = floors.gflop(clip_rows(k)[-1].graphs)
        floor = floors.floor_ms(gflop)
        cells = [k, *(ms(run["latency_ms"][s]) for s in STATS),
                 *(ms(other["latency_ms"][s]) if other else NONE for s in STATS),
                 ratio(other["latency_ms"]["median"] / run["latency_ms"]["median"])
                 if other else NONE,
                 NONE if gflop is None else f"{gflop:.1f}", ms(floor),
                 ratio(run["latency_ms"]["median"] / floor if floor else None)]
        if other:
            diff = max(abs(a - b) for a, b in zip(run["scores"], other["scores"], strict=True))
            agree = "yes" if run["index"] == other["index"] else "**NO**"
            cells.append(f"{agree}, {diff:.1e}" + ("" if diff <= SCORE_TOLERANCE else " **>tol**"))
        else:
            cells.append(NONE)
        rows.append(cells)
    header = ["K", *(f"runtime {s} ms" for s in STATS), *(f"reference {s} ms" for s in STATS),
              "reference / runtime", "GFLOP", "floor ms", "runtime × floor",
              f"same index, max Δscore (tol {SCORE_TOLERANCE:g})"]
    return ["### End to end over K (JPEG + K masks + expression → chosen index)", "",
            table(header, rows)]


def _modes(report: Json, floors: Floors) -> list[str]:
    """Each fast mode against exact (this run) and the reference, per K. The bound's FLOPs use
    the crops its last run encoded."""
    modes = report.get("modes")
    if not modes:
        return []
    exact, ref = report["runtime"]["clip"], report["reference"].get("clip")
    rows = []
    for name, run in {"exact": exact, **modes}.items():
        for k, record in run["ks"].items():
            crops = record.get("local_computed") or int(k)
            median = record["latency_ms"]["median"]
            other = ref["ks"][k]["latency_ms"]["median"] if ref else None
            graphs = (("clip_trunk", "1", 1.0), ("clip_masked_head", k, 1.0),
                      ("crop_encoder", str(crops), 1.0), ("clip_text", "query", 1.0))
            gflop = floors.gflop(graphs) if floors.flops and str(crops) in \
                floors.flops["crop_encoder"] else None
            rows.append([name, k, str(crops), ms(median),
                         ratio(exact["ks"][k]["latency_ms"]["median"] / median),
                         ratio(other / median if other else None),
                         NONE if gflop is None else f"{gflop:.1f}",
                         "yes" if record["index"] == exact["ks"][k]["index"] else "no"])
    header = ["mode", "K", "crops encoded", "median ms", "exact / mode", "reference / mode",
              "GFLOP", "same index as exact"]
    return ["### Fast modes over K (JPEG + K masks + expression → chosen index)", "",
            table(header, rows), "",
            "Random weights: the index column says only whether the shortcut changed this one "
            "choice; agreement is measured on the demo pack (benchmarks/fast_modes.py). int8 "
            "GFLOP are int8 operations."]


def _over_expressions(report: Json) -> list[str]:
    cfg = report["config"]
    rt, ref = report["runtime"]["clip"], report["reference"].get("clip")
    rows = []
    for n, run in rt["expressions"].items():
        other = ref["expressions"][n] if ref else None
        cells = [n]
        for record in (run, other):
            if record is None:
                cells += [NONE] * 4
                continue
            stages = record["stages_ms"]
            cells += [ms(stages["encode"]["median"]), ms(stages["queries"]["median"]),
                      ms(record["per_expression_ms"]),
                      f"{ms(record['latency_ms']['median'])} ({ms(record['latency_ms']['p90'])})"]
        cells.append(ratio(other["latency_ms"]["median"] / run["latency_ms"]["median"])
                     if other else NONE)
        rows.append(cells)
    header = ["N", "runtime encode ms", "runtime N queries ms", "runtime per expression ms",
              "runtime total median (p90) ms", "reference encode ms", "reference N queries ms",
              "reference per expression ms", "reference total median (p90) ms",
              "reference / runtime"]
    return [f"### Over expressions per scene (K = {cfg['ks'][0]}: encode once, query N "
            "expressions new to the text cache)", "", table(header, rows), "",
            "The reference has no scene object: its image features are computed once per scene "
            "and reused (its methods memoised), so both sides do the same work."]


def _proposer(report: Json, floors: Floors) -> list[str]:
    """One stage table per proposer mode (the reference, exact only, beside exact), then what
    fast mode would save on a trained proposer."""
    names = [f"proposer_{m}" for m in report["config"]["proposer_modes"]]
    runs = {name: report["runtime"][name] for name in names if name in report["runtime"]}
    if not runs:
        return []
    options, cfg = report["proposer_options"], report["config"]
    pps, per_call = options["points_per_side"], options["points_per_batch"]
    lines: list[str] = []
    for name, rt in runs.items():
        ref, propose = report["reference"].get(name), rt["propose"]
        prompts, grid = statistics.fmean(propose["prompts"]), propose["grid_points"][-1]
        lines += [f"### Proposer stages, {name.removeprefix('proposer_')} mode ({prompts:g} of "
                  f"{grid} grid points decoded (mean); {pps}×{pps} grid, {per_call} prompts per "
                  f"decoder call; {cfg['proposer_warmup']} warm-up + {cfg['proposer_runs']} runs; "
                  f"masks kept: runtime {propose['masks_kept']}"
                  + (f", reference {ref['propose']['masks_kept']}" if ref else "") + ")", "",
                  stage_table(proposer_rows(prompts, min(per_call, grid)), propose,
                              ref["propose"] if ref else None, floors), ""]
    lines += _projection(report)
    sums = []
    for side in ("runtime", "reference"):
        proposer, clip = report[side].get("proposer_exact"), report[side].get("clip")
        if proposer is None or clip is None:
            continue
        total = proposer["propose"]["latency_ms"]["median"]
        sums.append(f"{side} " + ", ".join(f"K = {k}: {ms(total + run['latency_ms']['median'])} ms"
                                           for k, run in clip["ks"].items()))
    if sums:
        lines += ["", "Exact proposer + CLIP over K (sum of medians, given K masks): "
                  + "; ".join(sums)]
    return lines


def _projection(report: Json) -> list[str]:
    """Fast mode on a trained proposer, projected from benchmarks/proposer_modes.py's prompts."""
    lines = []
    if report["pack"]["random_weights"]:
        lines.append("Random weights keep few masks, so fast mode skips few prompts here: it "
                     "skips the grid points inside the masks already found. The prompts a "
                     "trained proposer decodes in fast mode are measured in "
                     "benchmarks/results/proposer-modes.json.")
    p = report.get("proposer_projection")
    if p is None or not p["available"]:
        why = p["why"] if p else "run benchmarks/proposer_modes.py"
        return lines + ["", f"projection: not available ({why})"]
    share, grid = p["fast_prompt_share"], p["grid_points"]
    return lines + ["", f"**Projected, not measured**: fast proposer encoder + decoder ≈ "
                    f"{ms(p['encoder_ms'])} ms encoder + {share:.3f} × {grid} grid points × "
                    f"{p['exact_decoder_ms_per_prompt']:.3f} ms per prompt = "
                    f"**{ms(p['projected_fast_encoder_decoder_ms'])} ms** (projected, not "
                    f"measured), against exact's measured {ms(p['exact_encoder_decoder_ms'])} ms; "
                    f"{share:.3f} = the prompts fast decodes on the demo pack's {p['set']} set "
                    f"({p['fast_prompts_per_image']:.1f} of {p['exact_prompts_per_image']:.0f} "
                    "per image, benchmarks/results/proposer-modes.json); exact's ms per prompt "
                    "and encoder ms are this run's."]


def _main_job(report: Json) -> list[str]:
    """The main job per proposer mode, a column each: latency, stages, masks, prompts, memory."""
    jobs = report.get("main_job")
    if not jobs:
        return []
    cfg, records = report["config"], [j["segment"] for j in jobs.values()]
    stages = list(dict.fromkeys(s for r in records for run in r["stage_runs"] for s in run))
    rows = [["end to end median (p90) ms",
             *(f"{ms(r['latency_ms']['median'])} ({ms(r['latency_ms']['p90'])})"
               for r in records)],
            *([f"{stage} median ms", *(ms(r["stages_ms"][stage]["median"])
                                       if stage in r["stages_ms"] else NONE for r in records)]
              for stage in stages),
            ["masks K", *(str(r["masks"]) for r in records)],
            ["crops encoded", *(str(r["local_computed"]) for r in records)],
            ["prompts decoded / grid points", *(f"{r['prompts']} / {r['grid_points']}"
                                                for r in records)],
            ["peak memory MiB (VmHWM), first run: one-shot command",
             *(f"{j['rss_after_first_run']['vmhwm_mb']:.0f}" for j in jobs.values())],
            ["peak memory MiB (VmHWM), all runs: warm process",
             *(f"{j['rss']['vmhwm_mb']:.0f}" for j in jobs.values())],
            ["RSS after the runs MiB (VmRSS)", *(f"{j['rss']['vmrss_mb']:.0f}"
                                                 for j in jobs.values())]]
    options = next(iter(jobs.values()))["options"]
    lines = [f"### Main job end to end (`Segmenter.segment(JPEG path, expression)`, no masks "
             f"given: decode, proposer, CLIP, text; caches cleared every run; "
             f"{cfg['proposer_warmup']} warm-up + {cfg['proposer_runs']} runs, each in a "
             "process of its own)", "",
             table(["", *(j["label"] for j in jobs.values())], rows), "",
             "Generator options: " + ", ".join(f"{k} {v}" for k, v in options.items())
             + ", the pack's defaults otherwise."]
    if options.get("pred_iou_thresh") == 0.0 == options.get("stability_score_thresh"):
        lines[-1] += (" The proposer runs kept no mask at the pack's thresholds, so both "
                      "filters are off here (every decoded mask is filtered, kept and NMS-ed: "
                      "more time and memory than the pack's thresholds cost).")
    if report["pack"]["random_weights"]:
        lines[-1] += (" Random weights keep few masks (K above), so CLIP's part is smaller "
                      "than a real query's: see the CLIP tables for its time at a real K.")
    return lines


def _processes(report: Json) -> list[str]:
    rows = []
    processes = [(f"{side} {part.replace('_', ' ')}", p) for side in ("runtime", "reference")
                 for part, p in report[side].items()]
    processes += [(f"runtime mode {name}", p) for name, p in report.get("modes", {}).items()]
    processes += [(f"main job {j['label']}", j) for j in report.get("main_job", {}).values()]
    for name, p in processes:
        shares = [r["other_processes_cpu_share"] for r in _series(p)]
        rows.append([name, f"{p['startup_s']:.1f}", f"{p['rss_after_load']['vmrss_mb']:.0f}",
                     f"{p['rss']['vmhwm_mb']:.0f}", f"{p['rss']['vmrss_mb']:.0f}",
                     ", ".join(p["heavy_modules_loaded"]) or "none",
                     f"{100 * max(shares):.0f} %"])
    return ["### Processes", "", table(
        ["process", "load s", "RSS after load MiB (VmRSS)", "peak RSS MiB (VmHWM)",
         "RSS at end MiB (VmRSS)", "torch / transformers / onnx loaded",
         "other processes' CPU share (max)"], rows), "",
        "Peak RSS is /proc's VmHWM, the process's own: getrusage's ru_maxrss of a child started "
        "by vfork + exec keeps its parent's peak (both are in the JSON). Other processes' CPU "
        "share: busy CPU time of the whole machine minus the process's own, over its timed runs; "
        "above a few % its timings are inflated."]


def _series(process: Json) -> list[Json]:
    """Every timed series of a worker's result."""
    if "propose" in process:
        return [process["propose"]]
    if "segment" in process:
        return [process["segment"]]
    return [*process["ks"].values(), *process["expressions"].values()]


def render(report: Json) -> str:
    """The whole markdown report."""
    cfg, pack = report["config"], report["pack"]
    floors = Floors(report)
    title = (f"CLIP {cfg['geometry']}" + (f" + {cfg['proposer']}" if cfg["proposer"] else "")
             + ", random weights") if pack["random_weights"] else f"pack {pack['path']}"
    lines = [f"## zsris-rt bench: {title}", "", *_header(report), "", *_over_k(report, floors)]
    modes = _modes(report, floors)
    lines += ["", *modes] if modes else []
    rt, ref = report["runtime"]["clip"], report["reference"].get("clip")
    for k in rt["ks"]:
        lines += ["", f"### Stages at K = {k} (ms; floor = the stage's FLOPs at the matmul rate)",
                  "", stage_table(clip_rows(k), rt["ks"][k], ref["ks"][k] if ref else None,
                                  floors)]
    lines += ["", "The reference computes f^G in one call (resize, grid, trunk, masked head) and "
              "f^L in another (crops mask by mask, crop encoder): its times stand on the \"=\" "
              "rows. Its preprocessing is the normalisation only."]
    lines += ["", *_over_expressions(report)]
    proposer = _proposer(report, floors)
    lines += ["", *proposer] if proposer else []
    main_job = _main_job(report)
    lines += ["", *main_job] if main_job else []
    lines += ["", *_processes(report)]
    return "\n".join(lines) + "\n"


def write_plot(report: Json, path: Path) -> str:
    """PNG of latency over K and over expressions; returns the line to print. Without
    matplotlib, says so and writes nothing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install 'zsris-rt[plot]')"
    floors = Floors(report)
    fig, (over_k, over_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    for side in ("runtime", "reference"):
        clip = report[side].get("clip")
        if clip is None:
            continue
        k_values = [int(k) for k in clip["ks"]]
        over_k.plot(k_values, [r["latency_ms"]["median"] for r in clip["ks"].values()], "o-",
                    label=side)
        ns = [int(n) for n in clip["expressions"]]
        over_n.plot(ns, [r["latency_ms"]["median"] for r in clip["expressions"].values()], "o-",
                    label=side)
    ks = list(report["runtime"]["clip"]["ks"])
    floor = [floors.floor_ms(floors.gflop(clip_rows(k)[-1].graphs)) for k in ks]
    if None not in floor:
        over_k.plot([int(k) for k in ks], floor, "k--", label="compute floor")
    _axes(over_k, "K masks", "end-to-end median ms")
    _axes(over_n, f"expressions per scene (K = {report['config']['ks'][0]})",
          "scene + N queries, median ms")
    fig.suptitle(f"zsris-rt bench ({report['machine']['cpu']}, {report['config']['threads']} "
                 "threads)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def _axes(axes: Any, xlabel: str, ylabel: str) -> None:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
