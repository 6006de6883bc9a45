"""`zsris-rt check`: compare a backend / precision / pruning mode with exact fp32 on the CPU
(what is compared: `zsris_rt.agreement`).

Exit status: 0, or 1 when the argmax agreement falls below --min-agreement; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..agreement import MATCH_IOU, Query, compare_graphs, compare_queries, synthetic_queries
from ..errors import ZsrisError
from ..progress import progress_printer
from ..segmenter import Segmenter
from .exit_codes import run_command
from .options import add_proposer_mode, add_segmenter_options, load_segmenter


def _queries(images: Sequence[str] | None, texts: Sequence[str] | None) -> list[Query]:
    if not images:
        queries = synthetic_queries()
        return [Query(q.image, list(texts)) for q in queries] if texts else queries
    from ..calibration import list_images
    from ..image import read_image

    if not texts:
        raise ZsrisError("--images needs --texts: the expressions to ask of them")
    return [Query(read_image(path), list(texts)) for path in list_images(images)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt check",
        description="Compare a backend / precision / pruning mode with exact fp32 on the CPU: "
                    "per graph (max difference, feature cosine) and per query (argmax agreement "
                    "on the same masks, IoU of the masks each side chooses). Run it after "
                    "`zsris-export engines` or `zsris-export quantize`, on your own images.",
        epilog="examples:\n"
               "  zsris-rt check engines/b32 --backend trt --precision fp16 --images photos/ "
               "--texts \"the red mug\" \"the laptop\"\n"
               "  zsris-rt check --precision int8 --local-top 4      (demo pack, synthetic "
               "scenes)\n\nExit status: 0; 1 when the argmax agreement is below "
               "--min-agreement; 2 on bad input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pack", nargs="?", help="model pack (default: $ZSRIS_PACK, else the "
                                                "demo pack)")
    parser.add_argument("--images", nargs="+", metavar="IMAGE",
                        help="image files or folders (default: 12 synthetic scenes of the demo "
                             "pack's world, with their own expressions)")
    parser.add_argument("--texts", nargs="+", metavar="TEXT",
                        help="expressions asked of every image (needed with --images)")
    parser.add_argument("--graph-inputs", type=int, default=16, metavar="N",
                        help="recorded inputs compared per graph (default 16)")
    parser.add_argument("--min-agreement", type=float, metavar="F",
                        help="exit 1 when the argmax agreement is below F (e.g. 0.99)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_segmenter_options(parser)
    add_proposer_mode(parser)
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..backends import create_backend
    from ..calibration import collect_graph_inputs, fixed_masks

    queries = _queries(args.images, args.texts)
    candidate = load_segmenter(args)
    pack = candidate.pack
    reference = Segmenter(pack, create_backend(pack, "cpu", threads=args.threads),
                          args.alpha, args.beta, args.spacy_model)
    say = progress_printer() if not args.json else None
    masks_for = None if pack.proposer is not None else \
        (lambda image: fixed_masks(*image.shape[:2]))
    inputs = collect_graph_inputs(pack, [q.image for q in queries],
                                  texts=[t for q in queries for t in q.texts],
                                  per_graph=args.graph_inputs, threads=args.threads)
    report: dict[str, Any] = {
        "pack": str(args.pack), "reference": "cpu fp32, exact",
        "candidate": {**candidate.backend.describe(), "local_top": args.local_top,
                      "local_bound": args.local_bound,
                      "proposer_mode": candidate.proposer_mode.describe()},
        "images": "synthetic scenes" if not args.images else len(queries),
        "graphs": compare_graphs(candidate.backend, reference.backend, inputs),
        "queries": compare_queries(candidate, reference, queries, masks_for, say)}
    return report


def _text(report: dict[str, Any]) -> str:
    candidate = report["candidate"]
    lines = [f"pack {report['pack']}: {candidate['backend']} {candidate.get('precision', '')}"
             f"{', local-top ' + str(candidate['local_top']) if candidate['local_top'] else ''}"
             f"{', local-bound' if candidate['local_bound'] else ''}"
             f"{', proposer ' + candidate['proposer_mode']['name']} against {report['reference']}"]
    for graph, entry in report["graphs"].items():
        for i, out in enumerate(entry["outputs"]):
            lines.append(f"  {graph}[{i}]: max |diff| {out['max_abs_diff']:.3g} "
                         f"(rel {out['max_rel_diff']:.3g}), cosine min {out['min_cosine']:.5f} "
                         f"mean {out['mean_cosine']:.5f} ({entry['calls']} calls)")
    q = report["queries"]
    iou = q["chosen_mask_iou"]
    if "proposer" in q:
        p = q["proposer"]
        per_image = p["mean_prompts_per_image"]
        recall = "n/a" if p["mask_recall"] is None else f"{p['mask_recall']:.1%}"
        lines.append(f"  proposer {candidate['proposer_mode']['name']}: mask recall {recall} of "
                     f"exact's {p['masks']['reference']} masks (IoU ≥ {MATCH_IOU}), prompts per "
                     f"image {per_image.get('candidate', 0):.0f} vs "
                     f"{per_image.get('reference', 0):.0f} exact")
    lines.append(f"  queries: {q['queries']}, argmax agreement {q['argmax_agreement']:.1%}, "
                 f"chosen-mask IoU mean {iou['mean']:.3f} (≥ 0.9: {iou['share_at_least_0.9']:.1%})"
                 f", ms per image {q['median_ms_per_image']['candidate']:.0f} vs "
                 f"{q['median_ms_per_image']['reference']:.0f} exact")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        report = run(args)
        print(json.dumps(report, indent=2) if args.json else _text(report))
        agreement = report["queries"]["argmax_agreement"]
        if args.min_agreement is not None and (agreement or 0.0) < args.min_agreement:
            print(f"zsris-rt check: argmax agreement {agreement:.1%} is below "
                  f"{args.min_agreement:.1%}", file=sys.stderr)
            return 1
        return 0

    return run_command("zsris-rt check", body)
