#!/usr/bin/env python
"""The prompt decoder's time per prompt: the split graphs against the one-graph decoder they
replace and against transformers' own forward, on the same random weights, in one run.

For each geometry a random SAM / SAM 2 model (transformers, seeded) is exported three ways into a
temporary folder: the old one-graph decoder (`OneGraphDecoder`, what packs held before the split,
run per call on the encoder's outputs) and the split pair (`prop_decoder_image` once per image,
then `prop_decoder` per call). The same N single-point prompts then go through the one-graph
decoder and the split decoder in ONNX Runtime and through transformers' `forward` in PyTorch,
interleaved round by round, so a noisy machine slows all three alike. Reported per prompt: the
medians, the ratios split / one-graph and split / transformers, the per-image half's time (once
per image, not per prompt), and each output's largest difference from transformers'.

    python benchmarks/bench_decoder.py                              # Hiera-tiny and SAM ViT-B
    python benchmarks/bench_decoder.py --geometries sam2-hiera-tiny --prompts 16 --rounds 3

SAM ViT-B needs ~6 GB of memory at 64 prompts per call (the one-graph decoder and transformers
copy the image embedding once per prompt). Markdown on stdout, JSON in --out, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from zsris_rt.bench.machine import machine
from zsris_rt.bench.report import machine_lines, table
from zsris_rt.export.onnx_graph import GraphSpec, export_graph
from zsris_rt.export.onnx_sam import (
    OneGraphDecoder,
    proposer_graph_specs,
    proposer_settings,
    transformers_decoder,
)
from zsris_rt.export.random_checkpoint import random_sam
from zsris_rt.progress import progress_printer

RESULTS = Path(__file__).resolve().parent / "results" / "decoder-split.json"
GEOMETRIES = ("sam2-hiera-tiny", "sam-vit-b")
say = progress_printer()
SHOWN_VERSIONS = {"onnxruntime": "onnxruntime", "torch": "torch", "transformers": "transformers"}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def numpy_inputs(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in tensors.items()}


def largest_difference(got: list[np.ndarray], want: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Largest absolute difference per output, relative to the output's largest magnitude."""
    return {name: float(np.abs(mine - theirs.numpy()).max() / np.abs(theirs.numpy()).max())
            for name, mine, theirs in zip(("low_res_logits", "iou"), got, want, strict=True)}


def bench_geometry(name: str, prompts: int, rounds: int, threads: int, seed: int) -> dict[str, Any]:
    """Export, check and time the three decoders of one geometry."""
    family, geometry = name.split("-", 1)
    say(f"{name}: random model (seed {seed}), export to a temporary folder")
    model = random_sam(family, geometry, seed).eval()
    specs = {spec.name: spec for spec in proposer_graph_specs(model, seed=seed)}
    image_half, decoder = specs["prop_decoder_image"], specs["prop_decoder"]
    size = proposer_settings(model).input_size
    gen = torch.Generator().manual_seed(seed + 1)
    points = torch.rand(prompts, 1, 2, generator=gen) * size
    labels = torch.ones(prompts, 1, dtype=torch.int64)
    embeddings = image_half.inputs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_graph = GraphSpec("one_graph", OneGraphDecoder(model),
                              {**embeddings, "points": decoder.inputs["points"],
                               "labels": decoder.inputs["labels"]},
                              decoder.outputs, decoder.dynamic_axes, {})
        for spec in (one_graph, image_half, decoder):
            export_graph(spec, folder / f"{spec.name}.onnx")
        sessions = {spec.name: session(folder / f"{spec.name}.onnx", threads)
                    for spec in (one_graph, image_half, decoder)}
    embedded = numpy_inputs(embeddings)
    prompt_inputs = {"points": points.numpy(), "labels": labels.numpy()}
    state = dict(zip(proposer_settings(model).decoder_state,
                     sessions["prop_decoder_image"].run(None, embedded), strict=True))
    torch.set_num_threads(threads)
    runners: dict[str, Callable[[], Any]] = {
        "one-graph (ONNX Runtime)": lambda: sessions["one_graph"].run(
            None, {**embedded, **prompt_inputs}),
        "split (ONNX Runtime)": lambda: sessions["prop_decoder"].run(
            None, {**state, **prompt_inputs}),
        "transformers forward (PyTorch)": lambda: transformers_decoder(
            model, embeddings, points, labels),
        "split, per-image half": lambda: sessions["prop_decoder_image"].run(None, embedded),
    }
    want = transformers_decoder(model, embeddings, points, labels)
    differences = {label: largest_difference(runners[label](), want)
                   for label in ("one-graph (ONNX Runtime)", "split (ONNX Runtime)")}
    times: dict[str, list[float]] = {label: [] for label in runners}
    for run in runners.values():  # warm-up: sessions allocate on their first call
        run()
    for index in range(rounds):
        for label, run in runners.items():
            start = time.perf_counter()
            run()
            times[label].append((time.perf_counter() - start) * 1e3)
        say(f"{name}: round {index + 1}/{rounds}: " + ", ".join(
            f"{label} {values[-1]:.0f} ms" for label, values in times.items()))
    medians = {label: statistics.median(values) for label, values in times.items()}
    per_prompt = {label: medians[label] / prompts for label in runners
                  if label != "split, per-image half"}
    split = per_prompt["split (ONNX Runtime)"]
    return {"geometry": name, "input_size": size, "prompts_per_call": prompts,
            "rounds": rounds, "threads": threads, "seed": seed, "call_ms": times,
            "per_prompt_ms": per_prompt, "per_image_half_ms": medians["split, per-image half"],
            "split_over_one_graph": split / per_prompt["one-graph (ONNX Runtime)"],
            "split_over_transformers": split / per_prompt["transformers forward (PyTorch)"],
            "max_relative_difference_vs_transformers": differences}


def render(report: dict[str, Any]) -> str:
    rows = []
    for result in report["results"]:
        per_prompt = result["per_prompt_ms"]
        worst = max(max(d.values()) for d in
                    result["max_relative_difference_vs_transformers"].values())
        rows.append([result["geometry"], *(f"{v:.1f}" for v in per_prompt.values()),
                     f"{result['split_over_one_graph']:.2f}",
                     f"{result['split_over_transformers']:.2f}",
                     f"{result['per_image_half_ms']:.0f}", f"{worst:.1e}"])
    labels = list(report["results"][0]["per_prompt_ms"]) if report["results"] else []
    first = report["results"][0] if report["results"] else {}
    return "\n".join([
        "## Prompt decoder, ms per prompt (random weights)", "",
        *machine_lines(report["machine"], SHOWN_VERSIONS), "",
        f"{first.get('prompts_per_call')} single-point prompts per call, median of "
        f"{first.get('rounds')} interleaved rounds, {first.get('threads')} threads.", "",
        table(["geometry", *labels, "split / one-graph", "split / transformers",
               "per-image half ms (once per image)", "max rel. diff vs transformers"], rows),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometries", default=",".join(GEOMETRIES),
                        help=f"comma list of {', '.join(GEOMETRIES)} (and sam-tiny, sam2-tiny)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per call (default 64)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--prompts, --rounds and --threads must be ≥ 1")
    report: dict[str, Any] = {"config": vars(args) | {"out": str(args.out)},
                              "machine": machine(tuple(SHOWN_VERSIONS.values())),
                              "results": []}
    for name in (g.strip() for g in args.geometries.split(",") if g.strip()):
        report["results"].append(bench_geometry(name, args.prompts, args.rounds, args.threads,
                                                args.seed))
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
