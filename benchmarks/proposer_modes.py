"""What each lever of the fast proposer costs, against exact, on splits it was not tuned on.

    python benchmarks/proposer_modes.py [--pack engines/demo] [--images-limit N]
        [--sets held-out dense] [--out benchmarks/results/proposer-modes.json] [--work DIR]

`FAST`'s levers (coarse-to-fine order, skipping covered points with cover margin 6, recentring)
were tuned on the testA splits of `zsris-rt synth --seed 2026 --images 400` and of
`zsris-rt synth --seed 77 --images 200 --max-objects 12`; this measures them on the val splits of
the same two sets (held-out: a quarter of the images each). Per image the exact proposer runs once
(its proposals are the reference), then every variant (each lever alone, then combined, smaller
grids, an int8 proposer); per variant, against exact: mask recall (exact's masks some variant mask
matches at IoU ≥ 0.9, pooled), choice agreement (the mask CLIP picks for each sentence from the
variant's proposals vs from exact's, IoU ≥ 0.9), the strict mIoU of the picks against the truth,
prompts and masks per image, and the median time of the propose call (encoder included; the demo
pack's tiny geometry, so only indicative). Every choice is made by the same fp32 CLIP graphs, so
only the proposals differ. The int8 row quantises prop_encoder, prop_decoder_image and
prop_decoder of a copy of the pack (calibrated on train-split images), never the pack itself.

Prints markdown tables and writes benchmarks/results/proposer-modes.json and .md beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from zsris_rt import Segmenter
from zsris_rt.agreement import MATCH_IOU, matched_masks
from zsris_rt.bench.machine import machine
from zsris_rt.errors import NoMaskError
from zsris_rt.image import read_image
from zsris_rt.pack import default_pack, load_pack
from zsris_rt.progress import progress_printer
from zsris_rt.proposer.modes import EXACT, FAST, ProposerMode
from zsris_rt.refer_data import ReferDataset, Sample
from zsris_rt.results import Proposals
from zsris_rt.synthetic_refer import write_synthetic_refer

RESULTS = Path(__file__).resolve().parent / "results" / "proposer-modes.json"
say = progress_printer()  # stderr, so stdout stays the markdown report
SPLIT = "val"
DATASET = "refcoco"
# The tuning sets' generation, exactly (their testA splits were tuned on; val is measured here).
SETS: dict[str, dict[str, int]] = {
    "held-out": {"seed": 2026, "images": 400, "max_objects": 5},
    "dense": {"seed": 77, "images": 200, "max_objects": 12},
}
INT8_GRAPHS = ("prop_encoder", "prop_decoder_image", "prop_decoder")
CALIBRATION_IMAGES = 32  # the demo pack's CLIP int8 graphs were calibrated on as many
# Rows below these are flagged: fast's margin was chosen for ≥ 98 % agreement on the tuning
# splits (runtime/proposer_modes.py), and recall under 95 % loses objects outright.
RECALL_FLOOR, AGREEMENT_FLOOR = 0.95, 0.98


@dataclass(frozen=True)
class Variant:
    """One proposer setting: a mode, generator overrides, and the proposer graphs' precision."""

    mode: ProposerMode
    overrides: dict[str, int] = field(default_factory=dict)
    precision: str = "fp32"

    def describe(self) -> dict[str, object]:
        """What ran, for the JSON: a row is only comparable with the settings beside it."""
        return {"mode": self.mode.describe(), "overrides": self.overrides,
                "precision": self.precision}


VARIANTS: dict[str, Variant] = {
    "exact": Variant(EXACT),
    "coarse-to-fine": Variant(ProposerMode("coarse-to-fine", coarse_to_fine=True)),
    "skip (margin 0)": Variant(ProposerMode("skip-m0", coarse_to_fine=True, skip_covered=True,
                                            cover_margin=0.0)),
    "skip (margin 6)": Variant(ProposerMode("skip-m6", coarse_to_fine=True, skip_covered=True,
                                            cover_margin=6.0)),
    "skip (margin 6) + recentre = fast": Variant(FAST),
    "fast + stop_when_idle": Variant(replace(FAST, name="fast+stop", stop_when_idle=True)),
    "grid 8×8": Variant(EXACT, {"points_per_side": 8}),
    "grid 12×12": Variant(EXACT, {"points_per_side": 12}),
    "fast + grid 8×8": Variant(FAST, {"points_per_side": 8}),
    "int8 proposer graphs": Variant(EXACT, precision="int8"),
}


@dataclass
class Tally:
    """One variant's sums over a set's images, turned into the table's figures by `figures`."""

    prompts: list[int] = field(default_factory=list)
    masks: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    matched: int = 0
    exact_masks: int = 0
    agree: list[bool] = field(default_factory=list)
    chosen_iou: list[float] = field(default_factory=list)  # against exact's pick
    truth_iou: list[float] = field(default_factory=list)
    no_masks: int = 0  # images where the variant kept no mask (strict: IoU 0)
    identical: int = 0  # images whose masks equal exact's, bit for bit and in order
    unstable: int = 0  # repeated propose calls on one image that gave other masks

    def figures(self) -> dict[str, Any]:
        """The pooled figures (recall over all of exact's masks, the rest per sentence/image)."""
        return {
            "images": len(self.prompts), "sentences": len(self.agree),
            "prompts_per_image": float(np.mean(self.prompts)),
            "masks_per_image": float(np.mean(self.masks)),
            "mask_recall": self.matched / self.exact_masks if self.exact_masks else None,
            "masks_matched": self.matched, "exact_masks": self.exact_masks,
            "choice_agreement": float(np.mean(self.agree)),
            "chosen_iou_vs_exact_mean": float(np.mean(self.chosen_iou)),
            "mIoU": 100.0 * float(np.mean(self.truth_iou)),
            "propose_ms_median": statistics.median(self.ms),
            "propose_ms_mean": float(np.mean(self.ms)),
            "images_without_masks": self.no_masks,
            "images_with_identical_proposals": self.identical,
            "unstable_repeats": self.unstable,
        }


def write_set(work: Path, name: str) -> Path:
    """The synth set `name` under `work` (reused when already there), as `zsris-rt synth` would
    write it with the tuning runs' options; returns its data root."""
    spec = SETS[name]
    root = work / f"{name}-s{spec['seed']}-n{spec['images']}-k{spec['max_objects']}"
    if not (root / DATASET / "instances.json").is_file():
        say(f"write {name}: synth --seed {spec['seed']} --images {spec['images']} "
            f"--max-objects {spec['max_objects']} → {root}")
        write_synthetic_refer(root, DATASET, images=spec["images"], seed=spec["seed"],
                              max_objects=spec["max_objects"])
    return root


def int8_pack(pack: Path, work: Path, calib: list[Path]) -> tuple[Path | None, dict[str, Any]]:
    """A copy of `pack` with int8 proposer graphs (zsris-export quantize on the copy), or None and
    the reason when that cannot be made; the pack itself is never written."""
    info: dict[str, Any] = {"graphs": list(INT8_GRAPHS), "calibration_images": len(calib)}
    source = load_pack(pack)
    missing = [g for g in INT8_GRAPHS if g not in source.graph_names]
    if missing:
        info["graphs"] = [g for g in INT8_GRAPHS if g not in missing]
    if all(source.graph_precision(g, "int8") == "int8" for g in info["graphs"]):
        info["source"] = "the pack's own int8 variants"
        return pack, info
    try:
        from zsris_rt.export.quantize import QuantizeConfig, quantize_pack
    except ImportError as exc:  # the export extra (onnx, onnxruntime.quantization) is missing
        info["unavailable"] = f"zsris_rt.export.quantize does not import: {exc}"
        return None, info
    copy = work / "int8-pack"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(pack, copy)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            entries = quantize_pack(QuantizeConfig(copy, [str(p) for p in calib],
                                                   info["graphs"], force=True, threads=1), say)
    except Exception as exc:  # a failure is a finding to report, not a crash
        info["unavailable"] = f"zsris-export quantize --graphs {' '.join(info['graphs'])} " \
                              f"failed: {type(exc).__name__}: {short(str(exc))}"
        return None, info
    info["variants"] = {graph: {"method": entry["method"],
                                "methods_compared": entry["methods_compared"],
                                "cosine_vs_fp32": entry["cosine_vs_fp32"]}
                        for graph, entry in entries.items()}
    info["source"] = "zsris-export quantize on a copy of the pack"
    info["seconds"] = time.perf_counter() - start
    return copy, info


def short(message: str, limit: int = 160) -> str:
    """A long onnxruntime error on one line, its telling end kept."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else "…" + flat[-limit:]


def choices(scorer: Segmenter, rgb: np.ndarray, proposals: Proposals,
            samples: list[Sample]) -> np.ndarray:
    """S×H×W: the mask the pipeline picks for each sentence from these proposals (empty when
    there are none, as eval's strict figures count them)."""
    picked = np.zeros((len(samples), *rgb.shape[:2]), dtype=bool)
    if len(proposals) == 0:
        return picked
    try:
        scene = scorer.encode_image(rgb, proposals.masks)
    except NoMaskError:
        return picked
    for i, sample in enumerate(samples):
        picked[i] = scorer.query(scene, sample.sentence).mask
    return picked


def pair_iou(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    """IoU of a[i] with b[i]; `empty` where both are empty (1 between two picks: the same
    choice; 0 against the truth, as eval counts it)."""
    inter = np.count_nonzero(a & b, axis=(1, 2))
    union = np.count_nonzero(a | b, axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), empty)


def run_set(name: str, root: Path, variants: dict[str, Variant],
            proposers: dict[str, Segmenter], scorer: Segmenter,
            limit: int | None, repeats: int) -> dict[str, Any]:
    """Every variant against exact on the val images of one set; returns its report. Each
    propose call runs `repeats` times (time: their median; the masks must not change)."""
    data = ReferDataset(root, DATASET)
    by_image: dict[int, list[Sample]] = {}
    for sample in data.samples(SPLIT):
        by_image.setdefault(sample.image_id, []).append(sample)
    image_ids = sorted(by_image)[:limit]
    tallies = {v: Tally() for v in variants}
    start = time.perf_counter()
    for number, image_id in enumerate(image_ids, start=1):
        rgb = read_image(root / "images" / data.images[image_id].file_name)
        samples = by_image[image_id]
        truths = np.stack([data.mask(s.ann_id) for s in samples])
        props: dict[str, Proposals] = {}
        for label, variant in variants.items():
            seg, times = proposers[variant.precision], []
            for _ in range(repeats):
                seg.clear_caches()  # every propose call pays its encoder, as a new image would
                tick = time.perf_counter()
                proposals = seg.propose(rgb, mode=variant.mode, **variant.overrides)
                times.append((time.perf_counter() - tick) * 1e3)
                if label in props and not np.array_equal(proposals.masks, props[label].masks):
                    tallies[label].unstable += 1  # the same call twice, other masks
                props[label] = proposals
            tallies[label].ms.append(statistics.median(times))
        exact = props["exact"]  # computed once per image; every variant is compared with it
        exact_picks = choices(scorer, rgb, exact, samples)
        for label, proposals in props.items():
            tally = tallies[label]
            picks = exact_picks if label == "exact" else choices(scorer, rgb, proposals, samples)
            tally.prompts.append(proposals.prompts)
            tally.masks.append(len(proposals))
            tally.exact_masks += len(exact)
            tally.matched += matched_masks(exact.masks, proposals.masks)
            same = pair_iou(picks, exact_picks, empty=1.0)
            tally.chosen_iou += same.tolist()
            tally.agree += (same >= MATCH_IOU).tolist()
            tally.truth_iou += pair_iou(picks, truths, empty=0.0).tolist()
            tally.no_masks += int(len(proposals) == 0)
            tally.identical += int(proposals.masks.shape == exact.masks.shape and
                                   np.array_equal(proposals.masks, exact.masks))
        fast = tallies.get("skip (margin 6) + recentre = fast")
        note = "" if fast is None else (
            f"; fast recall {fast.matched / max(fast.exact_masks, 1):.1%}, "
            f"agreement {np.mean(fast.agree):.1%}")
        say(f"[{name}] image {number}/{len(image_ids)} ({time.perf_counter() - start:.0f} s): "
            f"exact {len(exact)} masks, {len(samples)} sentences{note}")
    spec = SETS[name]
    return {"command": f"zsris-rt synth --seed {spec['seed']} --images {spec['images']} "
                       f"--max-objects {spec['max_objects']}",
            "split": SPLIT, "images": len(image_ids),
            "sentences": sum(len(by_image[i]) for i in image_ids),
            "seconds": time.perf_counter() - start,
            "variants": {label: {**variants[label].describe(), **tallies[label].figures()}
                         for label in variants}}


def int8_lines(info: dict[str, Any]) -> list[str]:
    """How the int8 proposer graphs were made (or why they were not), under the tables."""
    lines = [f"int8 proposer graphs: {info.get('source', 'not available')}, "
             f"{info['calibration_images']} calibration images from the held-out set's train "
             "split" + (f"; {info['unavailable']}" if "unavailable" in info else ".")]
    for graph, v in info.get("variants", {}).items():
        failed = [f"{how} failed ({short(r['failed'], 80)})"
                  for how, r in v["methods_compared"].items() if "failed" in r]
        lines.append(f"- {graph}: {v['method']} kept, output cosine vs fp32 min "
                     f"{v['cosine_vs_fp32']['min']:.4f}" + (f"; {'; '.join(failed)}"
                                                            if failed else ""))
    return [*lines, ""]


def table(name: str, report: dict[str, Any], unavailable: dict[str, str]) -> list[str]:
    """One set's markdown table, with the variants below fast's bar listed under it."""
    rows = report["variants"]
    exact = rows["exact"]
    lines = [f"### {name}: val split of `{report['command']}` "
             f"({report['images']} images, {report['sentences']} sentences, "
             f"{exact['masks_per_image']:.1f} exact masks per image)", "",
             "| variant | prompts / image | masks / image | mask recall | choice agreement | "
             f"mIoU (exact {exact['mIoU']:.1f}) | propose ms / image (median, demo geometry) |",
             "|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        lines.append(f"| {label} | {row['prompts_per_image']:.1f} | "
                     f"{row['masks_per_image']:.2f} | {row['mask_recall']:.1%} | "
                     f"{row['choice_agreement']:.1%} | {row['mIoU']:.1f} | "
                     f"{row['propose_ms_median']:.0f} |")
    for label, reason in unavailable.items():
        lines.append(f"| {label} | not available: {reason} | | | | | |")
    below = [f"{label} (recall {row['mask_recall']:.1%}, agreement "
             f"{row['choice_agreement']:.1%})" for label, row in rows.items()
             if row["mask_recall"] < RECALL_FLOOR or row["choice_agreement"] < AGREEMENT_FLOOR]
    lines += ["", f"Below recall {RECALL_FLOOR:.0%} or agreement {AGREEMENT_FLOOR:.0%}: "
              f"{'; '.join(below) or 'none'}.", ""]
    return lines


def main() -> int:
    """Make the sets and the int8 copy, measure every variant, write the JSON and markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=None,
                        help="pack to measure (default: the demo pack, engines/demo)")
    parser.add_argument("--images-limit", type=int, default=None, metavar="N",
                        help="only the first N val images of each set (default: all)")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to run (exact always runs: it is the reference)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="propose calls per image and variant, timed; the median is kept "
                             "(default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="JSON to write; the markdown goes beside it as .md")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the synth sets and the int8 copy (default: a temporary "
                             "one, removed at the end)")
    args = parser.parse_args()
    pack = Path(args.pack or default_pack())
    variants = {"exact": VARIANTS["exact"],
                **{v: VARIANTS[v] for v in args.variants if v != "exact"}}
    started = time.perf_counter()
    report: dict[str, Any] = {
        "pack": str(pack), "split": SPLIT, "match_iou": MATCH_IOU, "threads": 1,
        "images_limit": args.images_limit, "repeats": args.repeats,
        "machine": machine(("numpy", "onnxruntime", "opencv-python-headless")),
        "note": "propose times are the demo pack's tiny geometry on this CPU, one thread: only "
                "indicative; every choice is made by the fp32 CLIP graphs", "sets": {}}
    unavailable: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        roots = {name: write_set(work, name) for name in args.sets}
        proposers = {"fp32": Segmenter.from_pack(pack, threads=1)}
        if any(v.precision == "int8" for v in variants.values()):
            # Calibration: train-split images of the held-out set, never a measured image.
            calib_root = write_set(work, "held-out")
            calib_data = ReferDataset(calib_root, DATASET)
            train = sorted({s.image_id for s in calib_data.samples("train")})
            calib = [calib_root / "images" / calib_data.images[i].file_name
                     for i in train[:CALIBRATION_IMAGES]]
            say(f"quantise {', '.join(INT8_GRAPHS)} of a copy of {pack} on {len(calib)} images")
            int8_root, report["int8"] = int8_pack(pack, work, calib)
            int8_labels = [k for k, v in variants.items() if v.precision == "int8"]
            if int8_root is None:
                for label in int8_labels:
                    unavailable[label] = report["int8"]["unavailable"]
                    del variants[label]
            else:
                proposers["int8"] = Segmenter.from_pack(int8_root, threads=1, precision="int8")
        scorer = Segmenter.from_pack(pack, threads=1)  # one fp32 CLIP for every variant's choice
        lines = [f"Pack `{pack}`; every variant against exact on the same image, the choices by "
                 f"the same fp32 CLIP graphs (ONNX Runtime CPU, 1 thread). Mask recall: exact's "
                 f"masks matched by a variant mask at IoU ≥ {MATCH_IOU} (pooled). Choice agreement:"
                 f" the mask picked for a sentence from the variant's proposals vs from exact's, "
                 f"IoU ≥ {MATCH_IOU}. mIoU: strict, against the ground truth. Propose time: the "
                 "demo pack's tiny geometry, encoder included, only indicative.", ""]
        for name in args.sets:
            report["sets"][name] = run_set(name, roots[name], variants, proposers, scorer,
                                           args.images_limit, args.repeats)
            lines += table(name, report["sets"][name], unavailable)
    if "int8" in report:
        lines += int8_lines(report["int8"])
    report["unavailable"] = unavailable
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["seconds"] = time.perf_counter() - started
    lines.append(f"Run time {report['seconds'] / 60:.1f} min.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    say(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
