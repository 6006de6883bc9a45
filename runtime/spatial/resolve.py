"""The spatial parse and the model of choice.py put together: which mask an expression with
spatial words refers to, and why (for a robot's log).

`score` is the Global-Local score of a phrase over the scene's masks (SPEC §4–6, the paper's);
the target phrase and each landmark are scored with it, never the whole expression, whose
spatial words CLIP cannot read. Each part of the parse multiplies one likelihood into CLIP's
probabilities of the target phrase (choice.py); no spatial part: the caller keeps the paper's
choice, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .choice import (
    Geometry,
    between_likelihood,
    kind_probabilities,
    ordinal_likelihood,
    posterior,
    relation_likelihood,
)
from .parse import SpatialParse

OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


@dataclass(frozen=True)
class SpatialChoice:
    index: int  # the mask the expression refers to
    posterior: np.ndarray  # K: p(mask | target phrase, spatial words)
    parse: SpatialParse
    applied: tuple[str, ...]  # the parts that weighed in ("position x left", "relation below", …)

    def describe(self, paper_index: int) -> dict[str, Any]:
        """JSON-ready: what the parse found and how it changed the choice."""
        p = self.parse
        return {"target": p.target, "words": list(p.words),
                "position": None if p.position is None else asdict(p.position),
                "ordinal": None if p.ordinal is None else asdict(p.ordinal),
                "relation": None if p.relation is None else {
                    "kind": p.relation.kind, "landmarks": list(p.relation.landmarks)},
                "size": None if p.size is None else asdict(p.size),
                "applied": list(self.applied), "paper_index": int(paper_index),
                "changed": int(paper_index) != self.index,
                "probability": float(self.posterior[self.index])}


def _ordinal(parse: SpatialParse) -> tuple[str, str, int | None] | None:
    """(axis, side, rank) of an ordinal; rank None: the middle one."""
    o = parse.ordinal
    if o is None:
        return None
    axis, side = o.axis or "x", o.side
    if o.kind == "middle":
        return axis, side or ("left" if axis == "x" else "top"), None
    if o.kind == "last":  # the end of the row: from the side named, else from the right
        return axis, side or ("right" if axis == "x" else "bottom"), 1
    return axis, side or ("left" if axis == "x" else "top"), o.rank


def resolve(parse: SpatialParse, score: Callable[[str], np.ndarray],
            geometry: Geometry) -> SpatialChoice:
    """The mask of highest posterior given every spatial part of `parse` (which must be
    spatial); `score(phrase)` gives the K Global-Local scores of a phrase."""
    p_target = kind_probabilities(score(parse.target))
    likelihood = np.ones_like(p_target)
    applied: list[str] = []
    position = parse.position
    if position is not None:
        for axis, side in (("x", position.x), ("y", position.y)):
            if side is None:
                continue
            if side == "middle":
                likelihood *= ordinal_likelihood(geometry, p_target, axis, "left" if axis == "x"
                                                 else "top", None)
            else:
                likelihood *= ordinal_likelihood(geometry, p_target, axis, side, 1)
            applied.append(f"position {axis} {side}")
    ordinal = _ordinal(parse)
    if ordinal is not None:
        axis, side, rank = ordinal
        likelihood *= ordinal_likelihood(geometry, p_target, axis, side, rank)
        applied.append(f"ordinal {axis} {'middle' if rank is None else rank} from {side}")
    size = parse.size
    if size is not None and size.kind == "superlative":
        likelihood *= ordinal_likelihood(geometry, p_target, "area", size.value, 1)
        applied.append(f"size {size.value}gest" if size.value == "big" else "size smallest")
    relation = parse.relation
    if relation is not None and relation.landmarks:
        landmarks = [kind_probabilities(score(phrase)) for phrase in relation.landmarks]
        if relation.kind == "between" and len(landmarks) >= 2:
            likelihood *= between_likelihood(geometry, landmarks[0], landmarks[1])
        elif relation.kind != "between":
            likelihood *= relation_likelihood(geometry, relation.kind, landmarks[0])
        applied.append(f"relation {relation.kind}")
    post = posterior(p_target, likelihood)
    return SpatialChoice(int(np.argmax(post)), post, parse, tuple(applied))
