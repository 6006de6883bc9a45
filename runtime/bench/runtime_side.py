"""Workers timing zsris-rt itself, in processes that must never load torch (checked and
reported): the CLIP pipeline over K given masks and over expressions per scene, the proposer per
proposer mode, and the main job (JPEG path + expression → mask, proposer included).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from .machine import heavy_modules_loaded, peak_rss
from .stats import Json
from .timing import latency, timed_runs


def _load(spec: Json, preload: bool = True) -> tuple[Any, Json]:
    from zsris_rt import Segmenter

    start = time.perf_counter()
    seg = Segmenter.from_pack(spec["pack"], backend=spec.get("backend", "cpu"),
                              threads=spec["threads"], preload=preload,
                              spatial=spec.get("spatial", False), **spec.get("mode", {}))
    return seg, {"startup_s": time.perf_counter() - start, "rss_after_load": peak_rss()}


def _process(seg: Any) -> Json:
    """What the whole process did: its peak memory, what it imported, the backend it ran."""
    return {"rss": peak_rss(), "torch_in_sys_modules": "torch" in sys.modules,
            "heavy_modules_loaded": heavy_modules_loaded(), "backend": seg.backend.describe()}


def clip_runs(spec: Json) -> Json:
    """`Segmenter.segment` on the JPEG with the first K masks, for each K, cold text (caches
    cleared: the spaCy parse and the text tower run every time, as in the reference); then one
    scene queried with N new expressions, for each N."""
    import numpy as np

    seg, out = _load(spec)
    masks = np.load(spec["masks"])
    image, text, warmup, runs = spec["image"], spec["text"], spec["warmup"], spec["runs"]
    out["ks"] = {}
    for k in spec["ks"]:
        given = masks[:k]
        timings: list[dict[str, float]] = []

        def segment(given: Any = given, timings: list[dict[str, float]] = timings) -> Any:
            result = seg.segment(image, text, given)
            timings.append(dict(result.timings))
            return result

        times, results, extra = timed_runs(segment, seg.clear_caches, warmup, runs)
        last = results[-1]
        out["ks"][str(k)] = {**latency(times, extra, timings[warmup:]),
                             "scores": [float(v) for v in last.scores], "index": last.index,
                             "local_computed": last.local_computed}
    phrases = seg.parser.parse(text)
    batch = seg.tokenizer.encode(list(dict.fromkeys([phrases.sentence, phrases.noun_phrase])))
    out["text_input"] = {"batch": len(batch.ids), "length": int(batch.end_index.max()) + 1,
                         "sentence": phrases.sentence, "noun_phrase": phrases.noun_phrase}
    out["expressions"] = _expression_runs(seg, spec, masks[:spec["expressions_k"]])
    return {**out, **_process(seg)}


def _expression_runs(seg: Any, spec: Json, masks: Any) -> Json:
    """One scene, N expressions new to the text cache: encode ms, queries ms, per expression."""
    out: Json = {}
    for n in spec["expressions"]:
        texts = spec["texts"][:n]
        parts: list[dict[str, float]] = []

        def scene_and_queries(texts: list[str] = texts,
                              parts: list[dict[str, float]] = parts) -> None:
            start = time.perf_counter()
            scene = seg.encode_image(spec["image"], masks)
            encoded = time.perf_counter()
            for expression in texts:
                seg.query(scene, expression)
            done = time.perf_counter()
            parts.append({"encode": (encoded - start) * 1e3, "queries": (done - encoded) * 1e3})

        times, _, extra = timed_runs(scene_and_queries, seg.clear_caches, spec["warmup"],
                                     spec["runs"])
        record = latency(times, extra, parts[spec["warmup"]:])
        record["per_expression_ms"] = record["stages_ms"]["queries"]["median"] / n
        out[str(n)] = record
    return out


def proposer_runs(spec: Json) -> Json:
    """`Segmenter.propose` on the JPEG in `spec["proposer_mode"]`, caches cleared (the encoder
    runs every time), with the prompts each run decoded: fast mode's saving is in them."""
    seg, out = _load(spec)
    timings: list[dict[str, float]] = []
    counts: list[tuple[int, int, int]] = []  # masks, prompts, grid points (not the masks)

    def propose() -> None:
        proposals = seg.propose(spec["image"], mode=spec["proposer_mode"], **spec["options"])
        timings.append(dict(proposals.timings))
        counts.append((len(proposals), proposals.prompts, proposals.grid_points))
        out["proposer_mode_settings"] = proposals.mode

    times, _, extra = timed_runs(propose, seg.clear_caches, spec["warmup"], spec["runs"])
    kept, prompts, grid = (list(column) for column in zip(*counts[spec["warmup"]:], strict=True))
    out["propose"] = {**latency(times, extra, timings[spec["warmup"]:]),
                      "masks_kept": kept, "prompts": prompts, "grid_points": grid}
    return {**out, **_process(seg)}


def main_job_runs(spec: Json) -> Json:
    """The main job as a user runs it: `Segmenter.segment(JPEG path, expression)` without masks,
    as its two steps (encode_image, then query: the scene says what the walk decoded), caches
    cleared, so decode, proposer encoder and decoder, CLIP and the text tower run every time.
    Graphs load when first run, as `zsris-rt IMAGE TEXT` loads them: the peak memory after the
    first run is a one-shot command's, the peak at the end a warm process's."""
    seg, out = _load(spec, preload=False)
    mode, options = spec["proposer_mode"], spec["options"]
    timings: list[dict[str, float]] = []
    walked: list[tuple[int, int]] = []  # prompts decoded, grid points

    def segment() -> Any:
        scene = seg.encode_image(spec["image"], proposer_mode=mode, **options)
        result = seg.query(scene, spec["text"])
        if not timings:
            out["rss_after_first_run"] = peak_rss()
        timings.append(dict(result.timings))
        walked.append((scene.proposals.prompts, scene.proposals.grid_points))
        return result

    times, results, extra = timed_runs(segment, seg.clear_caches, spec["warmup"], spec["runs"])
    prompts, grid = walked[-1]
    out["segment"] = {**latency(times, extra, timings[spec["warmup"]:]),
                      "masks": len(results[-1].masks), "index": results[-1].index,
                      "local_computed": results[-1].local_computed,
                      "prompts": prompts, "grid_points": grid}
    return {**out, **_process(seg)}


def quantize(spec: Json) -> Json:
    """int8 graphs for a random pack (export side, but torch-free), timed."""
    from zsris_rt.export.quantize import QuantizeConfig, quantize_pack

    start = time.perf_counter()
    written = quantize_pack(QuantizeConfig(Path(spec["pack"]), spec["calib"],
                                           threads=spec["threads"]))
    return {"seconds": time.perf_counter() - start, "graphs": sorted(written)}
