"""The demo pack's quality with its own proposer's masks: the five figures of issue 19's targets.

    python benchmarks/demo_quality.py [--pack engines/demo] [--threads N] [--point-scenes 200]
        [--attribute-scenes 60] [--eval-images 240]

benchmarks/results/demo-quality-v1.json holds these figures for the first demo pack (a SAM,
git history before demo pack v2); the table prints them beside this run's.

Torch-free (the runtime only). Five figures, all with the pack's own proposer masks:

1. point-prompt best-of-3 IoU: held-out scenes, one point prompt per object at the pixel of its
   visible mask farthest from the mask's boundary (cv2.distanceTransform, L2), decoded by the
   pack's decoder (`Proposer.encode`, `Proposer.decode`), each of the 3 multimask outputs
   upsampled as the generator does (`logit_masks` with the input frame's maps, the pack's mask
   threshold); the best IoU with the true visible mask, mean and median over objects; and apart
   for shapes touching one of their own colour (`touching_same_colour`) and the others, the
   output the IoU head picks and the best of the generator's masks (pack defaults), with
   best-of-3 by area and kind;
2. `zsris-rt eval --proposals model --split val` on a `zsris-rt synth --seed 2026 --images 240`
   set (pack defaults, the paper's scoring): strict mIoU and P@0.5;
3. examples/scenes.json: expressions whose chosen mask (proposer masks, pack defaults) has
   IoU >= 0.5 with the referred object's true mask (examples/scene-N_masks.npz);
4. the README's main command, `zsris-rt examples/scene-2.png "the big yellow star"`: IoU of its
   chosen mask with the true mask of the big yellow star;
5. plain attribute expressions (`describe()`'s kind "attribute") on held-out scenes: share with
   IoU >= 0.5 and mean IoU.

Held-out scenes (1, 5) are `draw_scene(np.random.default_rng(90_000 + i))`: one-number seeds,
which the training scripts never use (export/demo_clip.py and export/demo_proposer.py draw from
three-number seeds [seed, 1, step] and [seed, 7, step]; `synth` from two-number ones). Scenes
i = 0 .. 99 chose the v2 proposer's architecture (export/demo_proposer.py), so (1) is measured on
i = 100 .. 100 + point_scenes - 1; i = 0 .. attribute_scenes-1 serve (5).

Prints a markdown table (with the machine and the time taken) and writes
benchmarks/results/demo-quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from zsris_rt.commands.eval import main as eval_main
from zsris_rt.errors import NoMaskError
from zsris_rt.maskops import logit_masks
from zsris_rt.pack import default_pack
from zsris_rt.segmenter import Segmenter
from zsris_rt.synthetic_refer import (
    describe,
    draw_scene,
    touching_same_colour,
    write_synthetic_refer,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RESULTS = Path(__file__).resolve().parent / "results" / "demo-quality.json"
BASELINE = RESULTS.with_name("demo-quality-v1.json")
HELD_OUT_BASE = 90_000
POINT_FIRST = 100  # scenes 0 .. 99 chose the proposer's architecture: not measured on
README_IMAGE, README_TEXT = "scene-2.png", "the big yellow star"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y): the mask's pixel farthest from its boundary (the image edge counts as outside)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def _summary(rows: np.ndarray) -> dict:
    """rows: best-of-3, the IoU head's pick, the generator's best mask (IoU each), per object."""
    return {"objects": len(rows), "best_of_3": float(rows[:, 0].mean()),
            "predicted_iou_pick": float(rows[:, 1].mean()),
            "generator_best": float(rows[:, 2].mean()),
            "generator_share_ge_0.9": float(np.mean(rows[:, 2] >= 0.9))}


def point_prompts(seg: Segmenter, scenes: int) -> dict:
    """Figure 1: best-of-3 IoU of a single interior point prompt per object; and, per object, the
    mask the decoder's own predicted IoU picks and the best of the generator's masks (pack
    defaults), broken down by shapes touching one of their colour, area and kind."""
    proposer = seg.proposer
    assert proposer is not None
    settings = proposer.settings
    rows: list[tuple[float, float, float]] = []
    touching: list[bool] = []
    areas: list[int] = []
    kinds: list[str] = []
    for i in range(POINT_FIRST, POINT_FIRST + scenes):
        scene = draw_scene(np.random.default_rng(HELD_OUT_BASE + i))
        embedding = proposer.encode(scene.pixels)
        maps = embedding.frame.logit_maps(settings.low_res_size)
        truths = [obj.mask for obj in scene.objects]
        points = np.array([interior_point(m) for m in truths], dtype=np.float32)[:, None, :]
        labels = np.ones((len(truths), 1), dtype=np.int64)
        logits, predicted = proposer.decode(embedding, points, labels)
        n, k = logits.shape[:2]
        masks = logit_masks(logits.reshape(n * k, *logits.shape[2:]), maps,
                            settings.mask_threshold).reshape(n, k, *truths[0].shape)
        generated = proposer.generate(embedding).masks
        for truth, outputs, scores in zip(truths, masks, predicted, strict=True):
            ious = [iou(m, truth) for m in outputs]
            rows.append((max(ious), ious[int(np.argmax(scores))],
                         max((iou(m, truth) for m in generated), default=0.0)))
        touching.extend(touching_same_colour(scene))
        areas.extend(int(m.sum()) for m in truths)
        kinds.extend(obj.shape.kind for obj in scene.objects)
    table, touch, area = np.array(rows), np.array(touching), np.array(areas)
    best = table[:, 0]
    bands = {"under 1000 px": area < 1000, "1000-3000 px": (area >= 1000) & (area < 3000),
             "3000 px and over": area >= 3000}
    return {"scenes": scenes, "first_scene": POINT_FIRST, "objects": len(best),
            "mean": float(np.mean(best)), "median": float(np.median(best)),
            "share_ge_0.5": float(np.mean(best >= 0.5)),
            "predicted_iou_pick_mean": float(np.mean(table[:, 1])),
            "touching_same_colour": _summary(table[touch]), "other": _summary(table[~touch]),
            "best_of_3_by_area": {name: float(best[sel].mean()) for name, sel in bands.items()},
            "best_of_3_by_kind": {kind: float(best[np.array(kinds) == kind].mean())
                                  for kind in sorted(set(kinds))}}


def pipeline_eval(pack: Path, images: int, seed: int, threads: int) -> dict:
    """Figure 2: `zsris-rt eval --proposals model --split val` on a synth set."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        write_synthetic_refer(data, "refcoco", images=images, seed=seed)
        out = Path(tmp) / "eval"
        args = ["--pack", str(pack), "--data", str(data), "--dataset", "refcoco", "--split",
                "val", "--images", str(data / "images"), "--out", str(out), "--proposals",
                "model", "--threads", str(threads)]
        if eval_main(args) != 0:
            raise SystemExit(f"zsris-rt eval {' '.join(args)} failed")
        summary = json.loads((out / "summary.json").read_text())
    return {"synth_seed": seed, "synth_images": images, "split": "val",
            "samples": summary["counts"]["samples"], "images": summary["counts"]["images"],
            "strict_mIoU": summary["strict"]["mIoU"], "strict_oIoU": summary["strict"]["oIoU"],
            "strict_P@0.5": summary["strict"]["P@0.5"],
            "masks_per_image": summary["counts"]["masks_per_image"]}


def examples(seg: Segmenter) -> tuple[dict, dict]:
    """Figures 3 and 4: the example expressions, and the README's main command."""
    listing = json.loads((EXAMPLES / "scenes.json").read_text())
    right, total, per_scene, readme = 0, 0, [], None
    for entry in listing:
        truths = np.load(EXAMPLES / entry["masks"])["masks"]
        scene = seg.encode_image(EXAMPLES / entry["image"])
        hits = 0
        for expression in entry["expressions"]:
            result = seg.query(scene, expression["text"])
            score = iou(result.mask, truths[expression["object"]])
            hits += score >= 0.5
            if entry["image"] == README_IMAGE and expression["text"] == README_TEXT:
                readme = score
        if readme is None and entry["image"] == README_IMAGE:
            # Not among the listed expressions: find the big yellow star among the objects.
            index = next(n for n, o in enumerate(entry["objects"]) if
                         (o["size"], o["colour"], o["kind"]) == ("big", "yellow", "star"))
            readme = iou(seg.query(scene, README_TEXT).mask, truths[index])
        right += hits
        total += len(entry["expressions"])
        per_scene.append({"image": entry["image"], "right": int(hits),
                          "expressions": len(entry["expressions"]), "masks": scene.num_masks})
    return ({"right": int(right), "total": total, "per_scene": per_scene},
            {"command": f'zsris-rt examples/{README_IMAGE} "{README_TEXT}"', "iou": readme})


def attributes(seg: Segmenter, scenes: int) -> dict:
    """Figure 5: describe()'s attribute expressions on held-out scenes."""
    scores: list[float] = []
    no_masks = 0
    for i in range(scenes):
        scene = draw_scene(np.random.default_rng(HELD_OUT_BASE + i))
        expressions = [(obj, e) for obj in scene.objects
                       for e in describe(obj, scene.objects) if e.kind == "attribute"]
        if not expressions:
            continue
        try:
            encoded = seg.encode_image(scene.pixels)
        except NoMaskError:
            no_masks += 1
            scores += [0.0] * len(expressions)
            continue
        for obj, expression in expressions:
            scores.append(iou(seg.query(encoded, expression.text).mask, obj.mask))
    values = np.array(scores)
    return {"scenes": scenes, "expressions": len(scores), "scenes_without_masks": no_masks,
            "share_ge_0.5": float(np.mean(values >= 0.5)), "mean_iou": float(np.mean(values))}


_FIGURES = (
    ("1. point prompt, best-of-3 IoU (held-out scenes)",
     lambda r: f"mean {r['point_prompts']['mean']:.3f}, median {r['point_prompts']['median']:.3f}"),
    ("2. eval val, proposer masks (synth seed 2026)",
     lambda r: f"mIoU {r['pipeline_eval']['strict_mIoU']:.1f}, P@0.5 "
               f"{r['pipeline_eval']['strict_P@0.5']:.1f}"),
    ("3. examples/scenes.json right (IoU ≥ 0.5)",
     lambda r: f"{r['examples']['right']} of {r['examples']['total']}"),
    (f"4. `zsris-rt examples/{README_IMAGE} \"{README_TEXT}\"`, IoU with the true mask",
     lambda r: f"{r['readme_command']['iou']:.3f}"),
    ("5. attribute expressions, held-out scenes",
     lambda r: f"{100 * r['attributes']['share_ge_0.5']:.1f} % right, mean IoU "
               f"{r['attributes']['mean_iou']:.3f}"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--point-scenes", type=int, default=200)
    parser.add_argument("--attribute-scenes", type=int, default=60)
    parser.add_argument("--eval-images", type=int, default=240)
    parser.add_argument("--eval-seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pack = args.pack or default_pack()
    start = time.perf_counter()
    seg = Segmenter.from_pack(pack, threads=args.threads)
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *fn_args):  # noqa: ANN001, ANN202
        tick = time.perf_counter()
        value = fn(*fn_args)
        seconds[name] = round(time.perf_counter() - tick, 1)
        return value

    points = timed("point_prompts", point_prompts, seg, args.point_scenes)
    example, readme = timed("examples", examples, seg)
    attribute = timed("attributes", attributes, seg, args.attribute_scenes)
    evaluation = timed("eval", pipeline_eval, pack, args.eval_images, args.eval_seed,
                       args.threads)
    seconds["total"] = round(time.perf_counter() - start, 1)
    machine = {"platform": platform.platform(), "processor": platform.processor() or
               platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
               "python": platform.python_version(), **seg.backend.describe()}
    report = {"pack": str(pack), "held_out_scenes": f"draw_scene(np.random.default_rng("
              f"{HELD_OUT_BASE} + i))", "machine": machine, "seconds": seconds,
              "point_prompts": points, "pipeline_eval": evaluation, "examples": example,
              "readme_command": readme, "attributes": attribute}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    runs = [report]
    if BASELINE.is_file() and args.out.resolve() != BASELINE.resolve():
        runs.insert(0, json.loads(BASELINE.read_text()))
    print("| figure | " + " | ".join("v1 pack" if run is not report else "this pack"
                                     for run in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for label, cell in _FIGURES:
        print(f"| {label} | " + " | ".join(cell(run) for run in runs) + " |")
    print("\n| objects of figure 1 | n | best-of-3 | IoU head's pick | generator's best | "
          "generator ≥ 0.9 |\n|---|---|---|---|---|---|")
    for name in ("touching_same_colour", "other"):
        part = points[name]
        print(f"| {name.replace('_', ' ')} | {part['objects']} | {part['best_of_3']:.3f} | "
              f"{part['predicted_iou_pick']:.3f} | {part['generator_best']:.3f} | "
              f"{100 * part['generator_share_ge_0.9']:.0f} % |")
    print("best-of-3 by area: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                            points["best_of_3_by_area"].items()))
    print("best-of-3 by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                            points["best_of_3_by_kind"].items()))
    print(f"\n{machine['processor']}, {machine['cpus']} CPUs, {args.threads} threads, "
          f"{machine['platform']}; {seconds['total']:.0f} s in all ({seconds}); wrote "
          f"{args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
