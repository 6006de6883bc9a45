"""What `zsris-rt check` measures: does a backend, precision or pruning mode give the answers of
exact fp32 on the CPU, for your pack and your images? The tool to run after building engines or
quantising.

Two levels. Graphs: every graph gets the inputs it really receives on the images (recorded from
the fp32 CPU pipeline) on both sides: max difference, feature cosine. Queries: each image ×
expression is answered by both sides on the same candidate masks (the reference's), so the choice
is compared alone (argmax agreement), and again with the mode's own proposals (IoU of the chosen
masks: what a robot would get).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend
from .errors import NoMaskError
from .maskops import mask_iou
from .scoring import cosines
from .segmenter import Segmenter

SYNTHETIC_SCENES = 12  # default image set: drawn by synth's generator, with their expressions


@dataclass
class Query:
    image: np.ndarray
    texts: list[str]


def synthetic_queries(count: int = SYNTHETIC_SCENES, seed: int = 0) -> list[Query]:
    """Scenes of the demo pack's world with expressions true of one object each: a default for
    the demo pack; a real pack should be checked on its user's own images."""
    from .synthetic_refer import describe, draw_scene

    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(count):
        scene = draw_scene(rng)
        texts = [e.text for obj in scene.objects for e in describe(obj, scene.objects)[:1]]
        queries.append(Query(scene.pixels, texts[:4]))
    return queries


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1).astype(np.float64) if array.ndim > 1 else \
        array.reshape(1, -1).astype(np.float64)


def row_agreement(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per output row (a feature, a flattened mask or embedding), the cosine of candidate and
    reference; rows that are identical count 1 (two zero rows included), a zero row against a
    non-zero one 0."""
    a, b = _rows(got), _rows(want)
    return np.where((a == b).all(axis=1), 1.0, cosines(a, b))


def compare_graphs(candidate: Backend, reference: Backend,
                   inputs: dict[str, list[dict[str, np.ndarray]]]) -> dict[str, dict[str, Any]]:
    """Per graph and output: max |difference|, that relative to the reference's max |value|,
    and the min / mean cosine of output rows (one row per mask, prompt or expression)."""
    report: dict[str, dict[str, Any]] = {}
    for graph, entries in inputs.items():
        diffs: dict[int, list[float]] = {}
        scale: dict[int, float] = {}
        cosines: dict[int, list[np.ndarray]] = {}
        for entry in entries:
            want = reference.run(graph, entry)
            got = candidate.run(graph, entry)  # entries are single rows (calibration.py)
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                g = np.asarray(g, dtype=np.float64)
                diffs.setdefault(i, []).append(float(np.abs(g - w).max()) if w.size else 0.0)
                scale[i] = max(scale.get(i, 0.0), float(np.abs(w).max()) if w.size else 0.0)
                cosines.setdefault(i, []).append(row_agreement(g, w))
        report[graph] = {"calls": len(entries), "outputs": [
            {"max_abs_diff": max(diffs[i]),
             "max_rel_diff": max(diffs[i]) / scale[i] if scale[i] else 0.0,
             "min_cosine": float(np.concatenate(cosines[i]).min()),
             "mean_cosine": float(np.concatenate(cosines[i]).mean())} for i in sorted(diffs)]}
    return report


MATCH_IOU = 0.9  # a mask "is" another when their IoU reaches this (recall, choice agreement)


def matched_masks(reference: np.ndarray, candidate: np.ndarray,
                  threshold: float = MATCH_IOU) -> int:
    """How many of the `reference` masks (K×H×W) some `candidate` mask overlaps at IoU ≥
    `threshold`: a proposer's mask recall against another's is this over K."""
    if len(reference) == 0 or len(candidate) == 0:
        return 0
    return int(np.count_nonzero(mask_iou(reference, candidate).max(axis=1) >= threshold))


def compare_queries(candidate: Segmenter, reference: Segmenter, queries: Sequence[Query],
                    masks_for: Callable[[np.ndarray], np.ndarray] | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Argmax agreement on the reference's masks. With a proposer (`masks_for` None), also the
    IoU between the masks each side picks from its own proposals, and each side's time per image
    end to end (proposer, CLIP, every expression); without one, `masks_for(image)` gives both
    sides the same masks and the times cover CLIP and the expressions."""
    same, total, score_diff = 0, 0, 0.0
    ious: list[float] = []
    times: dict[str, list[float]] = {"reference": [], "candidate": []}
    prompts: dict[str, list[int]] = {"reference": [], "candidate": []}
    masks_matched, masks_total = 0, 0
    for number, query in enumerate(queries, start=1):
        masks = None if masks_for is None else masks_for(query.image)
        start = time.perf_counter()
        ref_scene = reference.encode_image(query.image, masks)
        ref_results = [reference.query(ref_scene, t) for t in query.texts]
        times["reference"].append(time.perf_counter() - start)
        start = time.perf_counter()
        own_scene = None
        try:
            own_scene = candidate.encode_image(query.image, masks)
            own_masks = [candidate.query(own_scene, t).mask for t in query.texts]
        except NoMaskError:
            own_masks = [np.zeros_like(r.mask) for r in ref_results]
        times["candidate"].append(time.perf_counter() - start)
        if ref_scene.proposals is not None:
            own = own_scene.proposals if own_scene is not None else None
            prompts["reference"].append(ref_scene.proposals.prompts)
            if own is not None:
                prompts["candidate"].append(own.prompts)
            masks_total += len(ref_scene.masks)
            masks_matched += matched_masks(ref_scene.masks,
                                           own.masks if own is not None else ref_scene.masks[:0])
        ious += [float(mask_iou(r.mask[None], m[None])[0, 0])
                 for r, m in zip(ref_results, own_masks, strict=True)]
        scene = own_scene if masks is not None and own_scene is not None else \
            candidate.encode_image(query.image, ref_scene.masks)
        for r in ref_results:
            c = candidate.query(scene, r.text)
            total += 1
            same += int(r.index == c.index)
            if np.isfinite(c.scores[r.index]):  # a pruned query may not have scored it
                score_diff = max(score_diff, abs(r.score - float(c.scores[r.index])))
        if progress is not None:
            progress(f"image {number}/{len(queries)}: {same}/{total} choices agree so far")
    report: dict[str, Any] = {"queries": total, "argmax_agreement": same / total if total else None,
              "max_score_diff_of_exact_choice": score_diff,
              "chosen_mask_iou": {"mean": float(np.mean(ious)) if ious else None,
                                  "share_at_least_0.9": float(np.mean(np.array(ious) >= MATCH_IOU))
                                  if ious else None},
              "median_ms_per_image": {k: float(np.median(v)) * 1e3 for k, v in times.items()
                                      if v}}
    if masks_total or prompts["reference"]:
        report["proposer"] = {
            "mask_recall": masks_matched / masks_total if masks_total else None,
            "masks": {"reference": masks_total, "matched": masks_matched},
            "mean_prompts_per_image": {k: float(np.mean(v)) for k, v in prompts.items() if v}}
    return report
