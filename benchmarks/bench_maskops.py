#!/usr/bin/env python
"""Benchmark the mask ops: the C++ extension against its NumPy twins and a reference (torch on the
CPU; pycocotools for RLE).

Ops (C++ through `zsris_rt.maskops` when `implementation() == "c++"`; NumPy twin; reference):

- tight_boxes:      `mask_boxes.tight_boxes`; torch any/argmax over rows and columns
- masked_crops:     `crop_batcher.masked_crops` (S = 224, tight boxes, random normalised image;
                    C++ and NumPy write into one reused buffer, as the Segmenter does);
                    torch: fill the box's crop outside the mask, `F.interpolate` bilinear
- mask_grid:        `mask_grid.mask_grid` (g = 7); torch `F.interpolate` on the float masks
- logit_statistics: `maskops.logits.logit_statistics` (l = 256, threshold 0, offset 1);
                    torch: SAM's postprocess_masks (bilinear to 1024², crop, bilinear to H×W)
- logit_masks:      `maskops.logits.logit_masks`; torch: the same resizes, then `> 0`
- mask_iou:         `mask_iou.mask_iou` (K×K); torch: float32 matmul of the flat masks
- mask_nms:         `mask_iou.mask_nms` (threshold 0.5, random scores); torch: the IoU matrix
                    as above, then the greedy loop
- rle_encode:       `rle.rle_encode`; pycocotools `mask.encode`
- rle_decode:       `rle.rle_decode`; pycocotools `mask.decode`
- feature_maps:     `masked_feature_maps.masked_feature_maps` (ResNet-50's layer 4: C = 2048,
                    g = 7, independent of H×W); torch `F.normalize` times the grids

All torch resizes are `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.
Masks are random blobs (a few filled ellipses each); logits are smooth random fields with
|logit| ≤ 32; the logit maps are `InputFrame.for_image(SAM 1024/256, H, W).logit_maps(256)`.

Before timing, every configuration checks C++ against NumPy: equal for boxes, crops, grid,
IoU, NMS, RLE (and pycocotools: equal) and feature maps (torch within 1e-6);
for the logit ops within the tolerance of tests/test_maskops_logits.py (a pixel's mask may differ
only where the image-size value lies within 1e-5 · max(1, |value|) of a threshold, and the
statistics of masks with no such pixel are equal). torch is checked against NumPy the same way
(1e-5 absolute for crops and grid). A broken op stops the script instead of giving a number.

Each implementation is timed in its own block: warm-up calls for 0.2 s (at least one), then --runs
calls, median reported; the three blocks of an op run back to back in one process. Not interleaved:
torch's and BLAS's worker threads keep spinning for a while after a call and slow whatever runs
next on this 2-core machine (measured: C++ IoU at K = 8, 640×480 took 0.5 ms alone, 2.4 ms right
after torch calls). The C++ ops use every core (std::thread), torch its default intra-op threads,
NumPy its BLAS threads for the logit products. Other processes' share of the CPUs is reported per
row.

    python benchmarks/bench_maskops.py              # K = 8, 32, 100 at 640×480 and 1920×1080
    python benchmarks/bench_maskops.py --quick      # K = 8 at 640×480, 2 runs: a smoke test
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zsris_rt.bench.log import elapsed, say
from zsris_rt.bench.machine import CpuShare, machine, wait_for_quiet
from zsris_rt.bench.report import machine_lines, table, wall_line
from zsris_rt.bench.stats import Json, summary
from zsris_rt.bench.workers import argument_parser

SIZES = ((480, 640), (1080, 1920))  # H, W
KS = (8, 32, 100)
CROP_SIZE = 224
GRID = 7
LOW_RES = 256
THRESHOLD, OFFSET = 0.0, 1.0  # segment-anything's mask threshold and stability offset
LOGIT_MAX = 32.0
TOL = 1e-5  # tests/test_maskops_logits.py and tests/test_maskops_crops.py
NMS_THRESHOLD = 0.5
SETTLE_S = 0.1  # pause before each block of timed calls
# Warm-up per block: this VM's cores take tens of ms to reach full speed after a pause (measured:
# 8 crops at 640×480 in C++ 3.2 ms right after one warm-up call, 1.4 ms after 60 calls).
WARMUP_S = 0.2
FEATURE_CHANNELS = 2048  # ResNet-50's layer 4
REFERENCES = {"rle_encode": "pycocotools", "rle_decode": "pycocotools"}  # else torch
VERSIONS = ("numpy", "torch", "opencv-python-headless", "pycocotools")
SHOWN_VERSIONS = {"numpy": "numpy", "torch": "torch", "pycocotools": "pycocotools"}


# ------------------------------------------------------------------------------------- inputs
def blob_masks(rng: Any, k: int, h: int, w: int) -> Any:
    """K random blob masks: each 1–4 filled ellipses, none empty."""
    import cv2
    import numpy as np

    masks = np.zeros((k, h, w), dtype=np.uint8)
    scale = min(h, w)
    for mask in masks:
        for _ in range(int(rng.integers(1, 5))):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.uniform(0.02, 0.3) * scale), int(rng.uniform(0.02, 0.3) * scale))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        mask[int(rng.integers(h)), int(rng.integers(w))] = 1
    return masks.astype(bool)


def random_logits(rng: Any, k: int) -> Any:
    """K smooth l×l logit fields of SAM's magnitude (|logit| ≤ LOGIT_MAX)."""
    import cv2
    import numpy as np

    out = np.empty((k, LOW_RES, LOW_RES), dtype=np.float32)
    for i in range(k):
        coarse = rng.normal(0, 8, (12, 12)).astype(np.float32) - 4
        out[i] = cv2.resize(coarse, (LOW_RES, LOW_RES), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, -LOGIT_MAX, LOGIT_MAX)


# ------------------------------------------------------------------------------- torch ops
def torch_boxes(masks: Any) -> Any:
    import torch

    t = torch.from_numpy(masks)
    h, w = t.shape[1:]
    cols, rows = t.any(dim=1).to(torch.uint8), t.any(dim=2).to(torch.uint8)
    boxes = torch.stack([cols.argmax(1), rows.argmax(1), w - cols.flip(1).argmax(1),
                         h - rows.flip(1).argmax(1)], dim=1)
    boxes[cols.amax(1) == 0] = 0
    return boxes.numpy()


def torch_crops(normalised: Any, masks: Any, boxes: Any, fill: Any, size: int) -> Any:
    import numpy as np
    import torch
    import torch.nn.functional as F

    image, fill_t = torch.from_numpy(normalised), torch.from_numpy(fill).reshape(3, 1, 1)
    out = torch.empty((len(masks), 3, size, size), dtype=torch.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        crop = torch.where(torch.from_numpy(np.ascontiguousarray(masks[i, y0:y1, x0:x1])),
                           image[:, y0:y1, x0:x1], fill_t)
        out[i] = F.interpolate(crop[None], size=(size, size), mode="bilinear",
                               align_corners=False, antialias=False)[0]
    return out.numpy()


def torch_grid(masks: Any, grid: int) -> Any:
    import torch
    import torch.nn.functional as F

    floats = torch.from_numpy(masks).to(torch.float32)[:, None]
    return F.interpolate(floats, size=(grid, grid), mode="bilinear", align_corners=False,
                         antialias=False)[:, 0].numpy()


def _torch_groups(k: int, h: int, w: int) -> list[slice]:
    """Groups of logits upsampled at once: the NumPy twin's memory bound (GROUP_BYTES)."""
    from zsris_rt.maskops.logits import GROUP_BYTES

    size = max(1, GROUP_BYTES // (4 * h * w))
    return [slice(s, min(s + size, k)) for s in range(0, k, size)]


def torch_upsample(logits: Any, frame: Any) -> Any:
    """segment-anything's Sam.postprocess_masks on l×l logits: K×1×H×W float32 torch."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(logits)[:, None]
    if frame.padded:
        s, (h, w) = frame.input_size, frame.resized
        x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False,
                          antialias=False)[..., :h, :w]
    return F.interpolate(x, frame.image_size, mode="bilinear", align_corners=False,
                         antialias=False)


def torch_statistics(logits: Any, frame: Any, threshold: float, offset: float) -> tuple:
    import torch

    h, w = frame.image_size
    stability, boxes, area = [], [], []
    for group in _torch_groups(len(logits), h, w):
        full = torch_upsample(logits[group], frame)[:, 0]
        inner = (full > threshold + offset).sum(dim=(1, 2))
        outer = (full > threshold - offset).sum(dim=(1, 2))
        stability.append(inner.to(torch.float32) / outer.to(torch.float32))
        masks = full > threshold
        cols, rows = masks.any(dim=1).to(torch.uint8), masks.any(dim=2).to(torch.uint8)
        found = cols.amax(1) > 0
        b = torch.stack([cols.argmax(1), rows.argmax(1), w - 1 - cols.flip(1).argmax(1),
                         h - 1 - rows.flip(1).argmax(1)], dim=1)
        b[~found] = 0
        boxes.append(b)
        area.append(masks.sum(dim=(1, 2)))
    return (torch.cat(stability).numpy(), torch.cat(boxes).numpy(), torch.cat(area).numpy())


def torch_masks(logits: Any, frame: Any, threshold: float) -> Any:
    import numpy as np
    import torch

    h, w = frame.image_size
    out = np.empty((len(logits), h, w), dtype=bool)
    for group in _torch_groups(len(logits), h, w):
        torch.gt(torch_upsample(logits[group], frame)[:, 0], threshold,
                 out=torch.from_numpy(out[group]))
    return out


def torch_iou(masks: Any) -> Any:
    import torch

    flat = torch.from_numpy(masks).reshape(len(masks), -1).to(torch.float32)
    inter = (flat @ flat.T).to(torch.float64)
    area = flat.sum(dim=1, dtype=torch.float64)
    union = area[:, None] + area[None] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter)).numpy()


def torch_nms(masks: Any, scores: Any, threshold: float) -> Any:
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    iou = torch_iou(masks[order])
    kept: list[int] = []
    for i in range(len(order)):
        if all(iou[i, j] <= threshold for j in kept):
            kept.append(i)
    return order[kept]


def coco_encode(masks: Any) -> list[bytes]:
    import numpy as np
    from pycocotools import mask as coco_mask

    return [r["counts"] for r in coco_mask.encode(np.asfortranarray(
        masks.transpose(1, 2, 0).astype(np.uint8)))]


def coco_decode(counts: list[bytes], h: int, w: int) -> Any:
    from pycocotools import mask as coco_mask

    return coco_mask.decode([{"size": [h, w], "counts": c} for c in counts]).transpose(2, 0, 1)


def torch_feature_maps(features: Any, grids: Any) -> Any:
    import torch
    import torch.nn.functional as F

    unit = F.normalize(torch.from_numpy(features), dim=0)
    return (unit[None] * torch.from_numpy(grids)[:, None]).numpy()


# ------------------------------------------------------------------------------------ checks
class CheckError(SystemExit):
    pass


def _fail(op: str, what: str, detail: str) -> None:
    raise CheckError(f"bench_maskops: {op}: {what} disagrees with NumPy ({detail}); not timing")


def _near(values: Any, threshold: float) -> Any:
    import numpy as np

    return np.abs(values - np.float32(threshold)) <= TOL * np.maximum(1, np.abs(values))


def check_exact(op: str, what: str, got: Any, want: Any) -> None:
    import numpy as np

    for g, x in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,), strict=True):
        if g.shape != x.shape or not np.array_equal(g, x):
            _fail(op, what, "not equal")


def check_close(op: str, what: str, got: Any, want: Any) -> None:
    import numpy as np

    if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=TOL):
        _fail(op, what, f"beyond {TOL} absolute")


def check_logits(what: str, logits: Any, maps: Any, stats: tuple, masks: Any) -> None:
    """`stats` and `masks` (at THRESHOLD) against the twin's image-size values, as
    tests/test_maskops_logits.py holds them: masks differ only near a threshold; area and boxes
    are those of the masks; stats equal the twin's wherever no pixel is near a threshold."""
    import numpy as np

    from zsris_rt.maskops.logits import logit_statistics, upsample_logits

    h, w = maps[0].shape[0], maps[1].shape[0]
    stability, boxes, area = stats
    twin = logit_statistics(logits, maps, THRESHOLD, OFFSET)
    for group in _torch_groups(len(logits), h, w):
        full = upsample_logits(logits[group], maps)
        got = masks[group]
        if got.shape != full.shape or ((got != (full > np.float32(THRESHOLD)))
                                       & ~_near(full, THRESHOLD)).any():
            _fail("logit_masks", what, "a mask differs off the threshold")
        near = (_near(full, THRESHOLD) | _near(full, THRESHOLD + OFFSET)
                | _near(full, THRESHOLD - OFFSET)).any(axis=(1, 2))
        if not np.array_equal(area[group], got.sum(axis=(1, 2))):
            _fail("logit_statistics", what, "area is not that of its masks")
        for i in np.flatnonzero(~near):
            for g, x in zip(stats, twin, strict=True):
                if not np.array_equal(g[group][i], x[group][i]):
                    _fail("logit_statistics", what, f"mask {group.start + i} clear of the "
                          "thresholds has other statistics")
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    inclusive = np.stack([cols.argmax(1), rows.argmax(1), w - 1 - cols[:, ::-1].argmax(1),
                          h - 1 - rows[:, ::-1].argmax(1)], axis=1)
    if not np.array_equal(boxes, np.where(area[:, None] > 0, inclusive, 0)):
        _fail("logit_statistics", what, "boxes are not those of its masks")
    if stability.shape != area.shape:
        _fail("logit_statistics", what, "stability has another shape")


# ------------------------------------------------------------------------------------ timing
def time_runs(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, list[float]]:
    """Per implementation: a pause (the last block's spinning threads go idle), warm-up calls
    for at least WARMUP_S (at least one), then `runs` calls (ms)."""
    times: dict[str, list[float]] = {}
    for name, fn in fns.items():
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        fn()
        while time.perf_counter() - start < WARMUP_S:
            fn()
        times[name] = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - start))
    return times


def bench_config(h: int, w: int, k: int, runs: int, native: bool, seed: int) -> list[Json]:
    import numpy as np

    from zsris_rt import maskops
    from zsris_rt.maskops import iou as np_iou
    from zsris_rt.maskops import rle as np_rle
    from zsris_rt.maskops.boxes import tight_boxes as np_boxes
    from zsris_rt.maskops.crops import mask_grid as np_grid
    from zsris_rt.maskops.crops import masked_crops as np_crops
    from zsris_rt.maskops.feature_maps import masked_feature_maps as np_features
    from zsris_rt.maskops.logits import logit_masks, logit_statistics
    from zsris_rt.pack import ProposerSettings
    from zsris_rt.proposer.input_frame import InputFrame

    _native = maskops._native  # the raw RLE ops: bytes, like pycocotools

    rng = np.random.default_rng([seed, h, w, k])
    masks = blob_masks(rng, k, h, w)
    normalised = rng.normal(0, 1, (3, h, w)).astype(np.float32)
    fill = np.array([-1.79, -1.75, -1.48], np.float32)  # CLIP-normalised black
    boxes = np_boxes(masks)
    logits = random_logits(rng, k)
    frame = InputFrame.for_image(ProposerSettings("sam", 1024, LOW_RES, "longest", "bicubic",
                                                  ("image_embeddings",)), h, w)
    maps = frame.logit_maps(LOW_RES)

    scores = rng.random(k).astype(np.float32)
    crop_buffer = np.empty((k, 3, CROP_SIZE, CROP_SIZE), np.float32)  # reused, as the runtime does
    counts = np_rle.rle_encode(masks)
    features = rng.normal(0, 1, (FEATURE_CHANNELS, GRID, GRID)).astype(np.float32)
    grids = np_grid(masks, GRID)

    ops: dict[str, dict[str, Callable[[], Any]]] = {
        "tight_boxes": {"c++": lambda: maskops.tight_boxes(masks),
                        "numpy": lambda: np_boxes(masks),
                        "reference": lambda: torch_boxes(masks)},
        "masked_crops": {"c++": lambda: maskops.masked_crops(normalised, masks, boxes, fill,
                                                             CROP_SIZE, crop_buffer),
                         "numpy": lambda: np_crops(normalised, masks, boxes, fill, CROP_SIZE,
                                                   crop_buffer),
                         "reference": lambda: torch_crops(normalised, masks, boxes, fill,
                                                          CROP_SIZE)},
        "mask_grid": {"c++": lambda: maskops.mask_grid(masks, GRID),
                      "numpy": lambda: np_grid(masks, GRID),
                      "reference": lambda: torch_grid(masks, GRID)},
        "logit_statistics": {"c++": lambda: maskops.logit_statistics(logits, maps, THRESHOLD,
                                                                     OFFSET),
                             "numpy": lambda: logit_statistics(logits, maps, THRESHOLD, OFFSET),
                             "reference": lambda: torch_statistics(logits, frame, THRESHOLD,
                                                                   OFFSET)},
        "logit_masks": {"c++": lambda: maskops.logit_masks(logits, maps, THRESHOLD),
                        "numpy": lambda: logit_masks(logits, maps, THRESHOLD),
                        "reference": lambda: torch_masks(logits, frame, THRESHOLD)},
        "mask_iou": {"c++": lambda: maskops.mask_iou(masks),
                     "numpy": lambda: np_iou.mask_iou(masks),
                     "reference": lambda: torch_iou(masks)},
        "mask_nms": {"c++": lambda: maskops.mask_nms(masks, scores, NMS_THRESHOLD),
                     "numpy": lambda: np_iou.mask_nms(masks, scores, NMS_THRESHOLD),
                     "reference": lambda: torch_nms(masks, scores, NMS_THRESHOLD)},
        "rle_encode": {"c++": lambda: _native.rle_encode(masks),
                       "numpy": lambda: np_rle.rle_encode(masks),
                       "reference": lambda: coco_encode(masks)},
        "rle_decode": {"c++": lambda: _native.rle_decode(counts, h, w),
                       "numpy": lambda: np_rle.rle_decode(counts, h, w),
                       "reference": lambda: coco_decode(counts, h, w)},
        "feature_maps": {"c++": lambda: maskops.masked_feature_maps(features, grids),
                         "numpy": lambda: np_features(features, grids),
                         "reference": lambda: torch_feature_maps(features, grids)},
    }
    if not native:
        for fns in ops.values():
            del fns["c++"]

    # Checks before any timing.
    what = f"{h}×{w} K={k}"
    # Copies: C++ and NumPy crops share one buffer, and each call overwrites it.
    outs = {op: {impl: (lambda v: v.copy() if isinstance(v, np.ndarray) else v)(fn())
                 for impl, fn in fns.items()} for op, fns in ops.items()}
    exact = ("tight_boxes", "mask_iou", "mask_nms", "rle_encode", "rle_decode")
    for op in exact:
        for impl in outs[op]:
            if impl != "numpy":
                check_exact(op, f"{impl} at {what}", np.asarray(outs[op][impl]),
                            np.asarray(outs[op]["numpy"]))
    for op in ("masked_crops", "mask_grid", "feature_maps"):
        if native:
            check_exact(op, f"c++ at {what}", outs[op]["c++"], outs[op]["numpy"])
        check_close(op, f"reference at {what}", outs[op]["reference"], outs[op]["numpy"])
    for impl in outs["logit_masks"]:
        check_logits(f"{impl} at {what}", logits, maps, outs["logit_statistics"][impl],
                     outs["logit_masks"][impl])
    del outs

    rows = []
    for op, fns in ops.items():
        share = CpuShare()
        times = time_runs(fns, runs)
        stats = {impl: summary(t) for impl, t in times.items()}
        row: Json = {"op": op, "height": h, "width": w, "k": k,
                     "reference": REFERENCES.get(op, "torch"), "ms": stats, **share.result()}
        if native:
            row["numpy_over_cpp"] = stats["numpy"]["median"] / stats["c++"]["median"]
            row["reference_over_cpp"] = stats["reference"]["median"] / stats["c++"]["median"]
        row["reference_over_numpy"] = stats["reference"]["median"] / stats["numpy"]["median"]
        rows.append(row)
        say(f"{op:17s} {h}×{w} K={k:3d}: " + ", ".join(
            f"{impl} {s['median']:.2f} ms" for impl, s in stats.items()))
    return rows


# ------------------------------------------------------------------------------------ report
def report_lines(report: Json) -> list[str]:
    native = report["native"]
    header = ["op", "H×W", "K"]
    header += ["C++ ms"] if native else []
    header += ["NumPy ms", "reference ms"]
    header += ["NumPy/C++", "reference/C++"] if native else ["reference/NumPy"]
    header += ["others' CPU"]
    rows = []
    for r in report["results"]:
        ms = r["ms"]
        row = [r["op"], f"{r['width']}×{r['height']}", str(r["k"])]
        row += [f"{ms['c++']['median']:.3f}"] if native else []
        row += [f"{ms['numpy']['median']:.3f}",
                f"{ms['reference']['median']:.3f} ({r['reference']})"]
        row += ([f"{r['numpy_over_cpp']:.1f}×", f"{r['reference_over_cpp']:.1f}×"] if native
                else [f"{r['reference_over_numpy']:.2f}×"])
        row.append(f"{100 * r['other_processes_cpu_share']:.0f} %")
        rows.append(row)
    c = report["config"]
    lines = [f"## Mask ops: {report['implementation']}", "",
             f"Median of {c['runs']} runs (ms) after {WARMUP_S} s of warm-up; S = {CROP_SIZE}, "
             f"g = {GRID}, l = {LOW_RES}; torch {report['torch_threads']} threads.", "",
             table(header, rows), ""]
    lines += machine_lines(report["machine"], SHOWN_VERSIONS)
    lines.append(wall_line(report))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("bench_maskops.py", __doc__)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per op (default 7)")
    parser.add_argument("--quick", action="store_true", help="K = 8 at 640×480, 2 runs")
    parser.add_argument("--out", default="benchmarks/results/maskops.json", help="JSON output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for other processes to go quiet first")
    args = parser.parse_args(argv)
    sizes, ks, runs = (SIZES[:1], KS[:1], 2) if args.quick else (SIZES, KS, args.runs)

    report: Json = {"config": {"sizes": [list(s) for s in sizes], "ks": list(ks), "runs": runs,
                               "warmup_s": WARMUP_S, "settle_s": SETTLE_S,
                               "crop_size": CROP_SIZE, "grid": GRID,
                               "low_res": LOW_RES, "threshold": THRESHOLD, "offset": OFFSET,
                               "seed": args.seed, "quick": args.quick}}
    report["machine"] = machine(VERSIONS)
    wait_for_quiet(args.wait_quiet, report)

    import torch

    from zsris_rt import maskops

    report["implementation"] = maskops.implementation()
    report["native"] = native = report["implementation"] == "c++"
    report["torch_threads"] = torch.get_num_threads()
    if not native:
        say(f"C++ extension not in use ({report['implementation']}): timing NumPy and the "
            "references only")

    share = CpuShare()
    report["results"] = []
    for h, w in sizes:
        for k in ks:
            report["results"] += bench_config(h, w, k, runs, native, args.seed)
    report["cpu_share"] = share.result()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = elapsed()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("\n".join(report_lines(report)))
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
