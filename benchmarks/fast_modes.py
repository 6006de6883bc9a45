"""What each fast mode costs in accuracy, on the demo pack's held-out synthetic scenes.

    python benchmarks/fast_modes.py [--pack engines/demo] [--images 400] [--seed 2026]

For every mode (int8 graphs, global-first pruning `--local-top M`, the exact `--local-bound`,
and int8 with pruning) it runs `zsris-rt eval` on the val split of a `zsris-rt synth` set, as
exact fp32 does, and compares each sentence's choice with exact fp32's: argmax agreement (the
same candidate chosen, on the same proposals) and IoU agreement (IoU between the two chosen masks;
1 when they agree), beside the strict mIoU against the truth. Two proposal settings: the pack's
defaults (few masks per image) and a loose one capped at 32 masks, the K of the speed targets.
Prints markdown tables and writes benchmarks/results/fast-modes.json (with eval's timings, which
are not a latency measurement: `zsris-rt bench --modes` is).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from zsris_rt import Segmenter
from zsris_rt.commands.eval import main as eval_main
from zsris_rt.evaluation import read_rows
from zsris_rt.maskops import mask_iou
from zsris_rt.pack import default_pack, load_pack
from zsris_rt.refer_data import ReferDataset
from zsris_rt.synthetic_refer import write_synthetic_refer

RESULTS = Path(__file__).resolve().parent / "results" / "fast-modes.json"
MODES: dict[str, list[str]] = {
    "exact": [],
    "int8": ["--precision", "int8"],
    "top-1": ["--local-top", "1"],
    "top-2": ["--local-top", "2"],
    "top-4": ["--local-top", "4"],
    "top-8": ["--local-top", "8"],
    "top-16": ["--local-top", "16"],
    "bound": ["--local-bound", "--local-top", "4"],
    "int8 + top-4": ["--precision", "int8", "--local-top", "4"],
    "int8 + top-8": ["--precision", "int8", "--local-top", "8"],
    "int8 + top-16": ["--precision", "int8", "--local-top", "16"],
}
SETTINGS: dict[str, list[str]] = {
    "pack defaults": [],
    "K ≤ 32": ["--points-per-side", "24", "--pred-iou-thresh", "0.4",
               "--stability-score-thresh", "0.5", "--max-masks", "32"],
}


def evaluate(pack: Path, data: Path, out: Path, options: list[str]) -> dict:
    args = ["--pack", str(pack), "--data", str(data), "--dataset", "refcoco", "--split", "val",
            "--images", str(data / "images"), "--out", str(out), "--threads", "1", *options]
    with contextlib.redirect_stdout(sys.stderr):  # eval's summary lines: not this report
        code = eval_main(args)
    if code != 0:
        raise SystemExit(f"zsris-rt eval {' '.join(args)} failed")
    return json.loads((out / "summary.json").read_text())


def proposals(pack: Path, data: Path, image_ids: set[int], precision: str,
              overrides: dict) -> dict[int, np.ndarray]:
    """Each image's proposal masks from a segmenter at `precision` (pruning does not change
    proposals; precision may), to look up the mask each sentence chose."""
    seg = Segmenter.from_pack(pack, precision=precision, threads=1)
    dataset = ReferDataset(data, "refcoco")
    return {i: seg.propose(data / "images" / dataset.images[i].file_name, **overrides).masks
            for i in sorted(image_ids)}


def overrides_of(options: list[str]) -> dict:
    pairs = zip(options[::2], options[1::2], strict=True)
    return {name[2:].replace("-", "_"): (int(v) if v.isdigit() else float(v)) for name, v in pairs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=None,
                        help="pack with int8 graphs (default: the demo pack)")
    parser.add_argument("--images", type=int, default=400, help="synthetic images (a quarter "
                        "of them are the val split)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pack = args.pack or default_pack()
    modes = ["exact"] + [m for m in args.modes if m != "exact"]
    if any("int8" in m for m in modes) and "int8" not in load_pack(pack).precisions():
        raise SystemExit(f"{pack} has no int8 graphs (zsris-export quantize)")
    report: dict = {"pack": str(pack), "images": args.images, "seed": args.seed, "split": "val",
                    "settings": {}}
    lines = [f"Demo pack, val split of `zsris-rt synth --seed {args.seed} --images {args.images}`; "
             "each mode against exact fp32 on the same sentences.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        write_synthetic_refer(data, "refcoco", images=args.images, seed=args.seed)
        for setting, options in SETTINGS.items():
            overrides = overrides_of(options)
            runs, masks = {}, {}
            for mode in modes:
                out = Path(tmp) / f"{setting}-{mode}".replace(" ", "_")
                summary = evaluate(pack, data, out, options + MODES[mode])
                rows = {r.key: r for r in read_rows(out / "samples.csv")[0]}
                precision = "int8" if "int8" in mode else "fp32"
                if precision not in masks:
                    masks[precision] = proposals(pack, data, {r.image_id for r in rows.values()},
                                                 precision, overrides)
                runs[mode] = (summary, rows, precision)
            exact_rows = runs["exact"][1]
            table = {}
            for mode, (summary, rows, precision) in runs.items():
                both = [k for k, r in exact_rows.items() if not r.skipped and not rows[k].skipped]
                same = [exact_rows[k].index == rows[k].index and
                        exact_rows[k].num_masks == rows[k].num_masks for k in both]
                ious = [float(mask_iou(
                    masks["fp32"][exact_rows[k].image_id][exact_rows[k].index][None],
                    masks[precision][rows[k].image_id][rows[k].index][None])[0, 0])
                    for k in both]
                table[mode] = {
                    "mIoU": summary["strict"]["mIoU"], "oIoU": summary["strict"]["oIoU"],
                    "argmax_agreement": float(np.mean(same)), "iou_agreement": float(np.mean(ious)),
                    "sentences": len(both), "masks_per_image": summary["counts"]["masks_per_image"],
                    "local_features_per_query": summary.get("local_features_per_query"),
                    "timings_ms": summary["timings_ms"]}
            report["settings"][setting] = {"options": options, "modes": table}
            lines += [f"### {setting} ({' '.join(options) or 'the pack’s generator defaults'}; "
                      f"{table['exact']['masks_per_image']:.1f} masks per image)", "",
                      "| mode | argmax agreement | IoU agreement | mIoU | f^L per query |",
                      "|---|---|---|---|---|"]
            for mode, row in table.items():
                local = row["local_features_per_query"]
                lines.append(f"| {mode} | {row['argmax_agreement']:.1%} | "
                             f"{row['iou_agreement']:.3f} | {row['mIoU']:.1f} | "
                             f"{'' if local is None else f'{local:.1f}'} |")
            lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = "\n".join(lines)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
