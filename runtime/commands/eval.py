"""`zsris-rt eval`: oIoU and mIoU on data in the refer layout (RefCOCO, RefCOCO+, RefCOCOg), as
SPEC.md §8 defines them (the machinery is `zsris_rt.evaluation`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import ZsrisError
from ..evaluation import (
    CSV_NAME,
    SUMMARY_NAME,
    THRESHOLDS,
    Evaluator,
    append_rows,
    mean_or_none,
    metrics,
    previous_rows,
    same_settings,
)
from ..refer_data import REFS_FILES, ReferDataset, Sample
from .exit_codes import run_command
from .options import add_proposer_options, add_segmenter_options, load_segmenter, proposer_overrides


def _select(args: argparse.Namespace, data: ReferDataset) -> tuple[list[Sample], list[Sample]]:
    """Every sample of the split and the ones asked for; all their images must be on disk, so
    that a missing file stops the run before it starts, not hours into it."""
    if args.limit is not None and args.limit < 1:
        raise ZsrisError(f"--limit must be at least 1, got {args.limit}")
    every = data.samples(args.split)
    selected = every[:args.limit] if args.limit is not None else every
    if not args.images.is_dir():
        raise ZsrisError(f"image folder not found: {args.images}")
    image_ids = list(dict.fromkeys(s.image_id for s in selected))
    missing = [data.images[i].file_name for i in image_ids
               if not (args.images / data.images[i].file_name).is_file()]
    if missing:
        raise ZsrisError(f"{len(missing)} of {len(image_ids)} images are not in {args.images} "
                         f"(first: {missing[0]})")
    return every, selected


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..atomic_files import write_files_atomically
    from ..maskops import implementation
    from ..proposer import generator_options

    overrides = proposer_overrides(args, args.proposals == "gt", "--proposals gt")
    data = ReferDataset(args.data, args.dataset)
    every, selected = _select(args, data)
    where = f"{args.dataset} {args.split}"
    csv_path = args.out / CSV_NAME
    if args.out.exists() and not args.out.is_dir():
        raise ZsrisError(f"--out {args.out} is not a folder")
    previous, keep = previous_rows(csv_path, args.resume, {s.key for s in every}, where)
    done = {r.key for r in previous}
    seg = load_segmenter(args)
    if args.proposals == "model":
        if seg.proposer is None:
            raise ZsrisError(f"pack {args.pack} has no proposer: use --proposals gt, or add one "
                             "with `zsris-export sam CHECKPOINT --pack PACK`")
        generator_options(seg.proposer.settings.generator, overrides)
    proposer_mode = seg.proposer_mode.describe() if args.proposals == "model" else None
    same_settings(args.out, {"dataset": args.dataset, "split": args.split,
                              "proposals": args.proposals, "proposer_options": overrides,
                              "proposer_mode": proposer_mode, "alpha": seg.alpha, "beta": seg.beta,
                              "precision": args.precision, "local_top": args.local_top,
                              "local_bound": args.local_bound, "spatial": seg.spatial},
                  bool(previous))
    evaluator = Evaluator(seg, data, args.images, args.proposals == "gt", overrides)
    new = append_rows(csv_path, keep, [s for s in selected if s.key not in done],
                       evaluator, f"eval {where}")
    wanted = {s.key for s in selected}
    rows = [r for r in previous + new if r.key in wanted]
    kept = [r for r in rows if not r.skipped]
    summary = {
        "dataset": args.dataset, "split": args.split, "data": str(args.data),
        "images_folder": str(args.images), "pack": str(args.pack), "proposals": args.proposals,
        "proposer_options": overrides, "proposer_mode": proposer_mode,
        "prompts_per_image": mean_or_none(evaluator.prompts), "alpha": seg.alpha, "beta": seg.beta,
        "local_top": args.local_top, "local_bound": args.local_bound, "spatial": seg.spatial,
        "maskops": implementation(), **seg.backend.describe(), "limit": args.limit,
        "official": metrics(kept), "strict": metrics(rows),
        "by_kind": {kind: {"official": metrics([r for r in kept if r.kind == kind]),
                           "strict": metrics([r for r in rows if r.kind == kind])}
                    for kind in sorted({r.kind for r in rows} - {""})},
        "counts": {"samples": len(rows), "evaluated": len(kept), "skipped": len(rows) - len(kept),
                   "images": len({r.image_id for r in rows}),
                   "skipped_images": len({r.image_id for r in rows if r.skipped}),
                   "from_earlier_runs": sum(r.key in done for r in rows),
                   "masks_per_image": mean_or_none(list({r.image_id: r.num_masks for r in kept}
                                                 .values()))},
        "timings_ms": {"per_image": mean_or_none(evaluator.image_ms),
                       "per_sentence": mean_or_none(evaluator.sentence_ms),
                       "images_timed": len(evaluator.image_ms),
                       "sentences_timed": len(evaluator.sentence_ms)},
        "local_features_per_query": mean_or_none(evaluator.local_computed),
        "samples_csv": str(csv_path),
    }
    write_files_atomically({args.out / SUMMARY_NAME:
                            (json.dumps(summary, indent=2) + "\n").encode("utf-8")})
    return summary


def _figures(report: dict[str, Any]) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    precision = "  ".join(f"P@{t} {number(report[f'P@{t}'])}" for t in THRESHOLDS)
    return (f"oIoU {number(report['oIoU'])}  mIoU {number(report['mIoU'])}  {precision}  "
            f"({report['samples']} samples)")


def summary_lines(summary: dict[str, Any]) -> list[str]:
    counts, timing = summary["counts"], summary["timings_ms"]
    per_image, per_sentence = timing["per_image"], timing["per_sentence"]
    timed = "no new work timed" if per_image is None else (
        f"{per_image:.1f} ms/image" + ("" if per_sentence is None
                                       else f", {per_sentence:.1f} ms/sentence"))
    return [
        f"{summary['dataset']} {summary['split']}: {counts['samples']} sentences on "
        f"{counts['images']} images, proposals {summary['proposals']}, "
        f"{counts['skipped']} skipped (no mask on {counts['skipped_images']} images)"
        + ("" if summary["proposer_mode"] is None or summary["prompts_per_image"] is None else
           f", proposer {summary['proposer_mode']['name']}: "
           f"{summary['prompts_per_image']:.0f} prompts/image"),
        f"official: {_figures(summary['official'])}",
        f"strict:   {_figures(summary['strict'])}",
        *(f"  {kind} (strict): {_figures(figures['strict'])}"
          for kind, figures in summary["by_kind"].items()),
        f"timing: {timed} (backend {summary['backend']}, mask ops {summary['maskops']})",
        f"wrote {summary['samples_csv']} and its summary.json",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt eval",
        description="oIoU and mIoU (official: images without a proposal skipped; strict: they "
                    "count as IoU 0) on data in the refer layout, one scene per image. Writes "
                    "OUT/samples.csv (one row per sentence) and OUT/summary.json. Exit status 0 "
                    "on success, 2 on bad input, 130 when interrupted (then --resume).")
    parser.add_argument("--pack", help="model pack folder (default: $ZSRIS_PACK, else the demo "
                        "pack engines/demo)")
    parser.add_argument("--data", type=Path, required=True, metavar="ROOT",
                        help="refer root, holding <dataset>/refs(...).p and instances.json")
    parser.add_argument("--dataset", required=True, choices=tuple(REFS_FILES))
    parser.add_argument("--split", required=True, help="val, testA, testB (RefCOCO/+), val, "
                                                       "test (RefCOCOg), ...")
    parser.add_argument("--images", type=Path, required=True, metavar="DIR",
                        help="image folder (COCO train2014), file names from instances.json")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the results")
    parser.add_argument("--proposals", choices=("model", "gt"), default="model",
                        help="model: the pack's proposer (default); gt: every COCO instance "
                             "mask of the image (oracle proposals, scoring alone)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="only the first N sentences of the split")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run: keep OUT/samples.csv and do what it lacks")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_segmenter_options(parser)
    add_proposer_options(parser, "proposer options (--proposals model)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)

    def body() -> int:
        summary = run(args)
        print(json.dumps(summary, indent=2) if args.json else "\n".join(summary_lines(summary)))
        return 0

    def interrupted() -> None:
        again = argv if "--resume" in argv else [*argv, "--resume"]
        print(f"zsris-rt eval: interrupted; {args.out / CSV_NAME} keeps every finished image. "
              f"Resume with: zsris-rt eval {shlex.join(again)}", file=sys.stderr)

    return run_command("zsris-rt eval", body, interrupted)
