"""The JSON record of one query (`zsris-rt --json`): plain Python values only."""

from __future__ import annotations

from typing import Any

import numpy as np

from .mask_io import to_coco_rle
from .results import Proposals, Result


def result_to_dict(result: Result, backend: str, spacy_model: str,
                   proposals: Proposals | None = None) -> dict[str, Any]:
    """The JSON record of one query: plain Python values only, so json.dumps always works. With
    the scene's `proposals`, the chosen mask's proposal (predicted IoU, stability, grid point)."""
    geometry = result.geometry
    record = {
        "text": result.text,
        "sentence": result.sentence,
        "noun_phrase": result.noun_phrase,
        "index": int(result.index),
        "score": result.score,
        "box": list(result.box),
        "area": geometry.area,
        "centroid": list(geometry.centroid),
        "angle_deg": geometry.angle_deg,
        "rle": to_coco_rle(result.mask),
        # Masks a pruned query never scored in full (`--local-top`) are null, not -Infinity.
        "scores": [float(s) if np.isfinite(s) else None for s in np.asarray(result.scores).ravel()],
        "local_computed": result.local_computed,
        "num_masks": int(result.masks.shape[0]),
        "alpha": float(result.alpha),
        "beta": float(result.beta),
        "truncated": bool(result.truncated),
        "backend": backend,
        "spacy_model": spacy_model,
        "timings_ms": {str(k): float(v) for k, v in result.timings.items()},
    }
    if result.spatial is not None:
        record["spatial"] = result.spatial
    if proposals is not None:
        record["proposal"] = {
            "predicted_iou": float(proposals.iou[result.index]),
            "stability": float(proposals.stability[result.index]),
            "point": [float(v) for v in proposals.points[result.index]]}
    return record
