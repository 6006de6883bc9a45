"""Options several commands share: the segmenter's (`Segmenter.from_pack`) and the proposer's."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..backends import BACKENDS, PRECISIONS
from ..errors import ZsrisError
from ..proposer.modes import MODES as PROPOSER_MODES

if TYPE_CHECKING:
    from ..segmenter import Segmenter

# Proposer options: the `propose()` keyword, its type and its help.
PROPOSER_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("points_per_side", int, "point grid side, n² prompts (default 32)"),
    ("points_per_batch", int, "prompts per decoder call (default 64)"),
    ("pred_iou_thresh", float, "keep masks with predicted IoU above this (default 0.88)"),
    ("stability_score_thresh", float, "keep masks with stability at least this (default 0.95)"),
    ("stability_score_offset", float, "logit offset of the stability score (default 1.0)"),
    ("box_nms_thresh", float, "box IoU above which the weaker mask goes (default 0.7)"),
    ("max_masks", int, "keep at most this many masks, best first (default: all)"),
    ("mask_nms_thresh", float, "also drop a mask whose mask IoU with a better one exceeds this "
                               "(zsris-rt's own; default off)"),
)


def add_segmenter_options(parser: argparse.ArgumentParser) -> None:
    """The options of `Segmenter.from_pack` that every command running a pack takes."""
    parser.add_argument("--alpha", type=float, help="global weight α, overriding the pack's "
                                                    "(0.95 RefCOCO style, 0.85 RefCOCOg style)")
    parser.add_argument("--beta", type=float, help="sentence weight β, overriding the pack's")
    parser.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime "
                                                    "(default: all cores)")
    fast = parser.add_argument_group(
        "backend and fast modes (each trades something; `zsris-rt check` measures what)")
    fast.add_argument("--backend", default="cpu", choices=BACKENDS,
                      help="cpu: ONNX Runtime CPU (default); cuda: ONNX Runtime CUDA; ort-trt: "
                           "ONNX Runtime's TensorRT provider; trt: native TensorRT engines "
                           "(zsris-export engines); auto: the best of these that really runs "
                           "here (trt only once its engines are built)")
    fast.add_argument("--precision", default="fp32", choices=PRECISIONS,
                      help="fp32 (default, exact); int8: the pack's int8 graphs (zsris-export "
                           "quantize) or int8 TensorRT engines; fp16: trt and ort-trt only")
    fast.add_argument("--engine-cache", metavar="DIR",
                      help="TensorRT engine cache (default $ZSRIS_ENGINE_CACHE, else "
                           "~/.cache/zsris-rt/engines)")
    fast.add_argument("--local-top", type=int, metavar="M",
                      help="global-first pruning: encode the local crops of only the M masks "
                           "with the best global score (default: all, exact)")
    fast.add_argument("--local-bound", action="store_true",
                      help="exact pruning: encode local crops in rounds (of --local-top, "
                           "default 4) until no other mask can win; same answer as exact")
    parser.add_argument("--spatial", action="store_true",
                        help="read spatial words (left, the second from the top, beneath the X, "
                             "the biggest) with the masks' geometry; without them an expression "
                             "gets the paper's choice exactly (default off: the paper's scoring)")
    parser.add_argument("--spacy-model", help="spaCy pipeline for parsing expressions "
                                              "(default: the pack's)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the sha256 check of the pack's files (faster start)")


def add_proposer_options(parser: argparse.ArgumentParser, title: str) -> None:
    group = parser.add_argument_group(title)
    add_proposer_mode(group)
    for name, kind, text in PROPOSER_OPTIONS:
        group.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


def add_proposer_mode(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--proposer-mode", choices=PROPOSER_MODES,
                        help="exact: segment-anything's generator, every grid point (default); "
                             "fast: the grid coarse to fine, skipping points inside masks "
                             "already found (far fewer prompts; `zsris-rt check "
                             "--proposer-mode fast` measures what it changes)")


def proposer_overrides(args: argparse.Namespace, masks_given: bool, given_as: str
                       ) -> dict[str, Any]:
    """The proposer options set on the command line; refused when masks are given instead."""
    overrides = {name: getattr(args, name) for name, _, _ in PROPOSER_OPTIONS
                 if getattr(args, name) is not None}
    given = [*overrides, *(["proposer_mode"] if args.proposer_mode is not None else [])]
    if masks_given and given:
        raise ZsrisError("proposer options (--" + ", --".join(
            n.replace("_", "-") for n in given) + f") do not apply with {given_as}")
    return overrides


def load_segmenter(args: argparse.Namespace, preload: bool = True) -> Segmenter:
    """The segmenter the options ask for (imported here, so that --help stays fast)."""
    from ..pack import default_pack
    from ..segmenter import Segmenter

    if args.pack is None:  # resolved here, so that reports name the pack that ran
        args.pack = default_pack()
    return Segmenter.from_pack(args.pack, backend=args.backend, alpha=args.alpha, beta=args.beta,
                               spacy_model=args.spacy_model, threads=args.threads,
                               verify=not args.no_verify, precision=args.precision,
                               engine_cache=args.engine_cache, local_top=args.local_top,
                               local_bound=args.local_bound,
                               proposer_mode=getattr(args, "proposer_mode", None) or "exact",
                               preload=preload, spatial=getattr(args, "spatial", False))
