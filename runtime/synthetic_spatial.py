"""The `new` phrasing set of `zsris-rt synth`: spatial sentences the standard generator never
says, for a held-out test set (`write_synthetic_refer(..., phrasings="new")`,
`zsris-rt synth --phrasings new`).

The scenes are the standard generator's (the same seed draws the same images); only the sentences
differ. Every sentence is of one of these kinds (each sentence dict's `kind`, which `zsris-rt eval`
reports on):

- `position_v`: vertical positions: "the star at the top" (the topmost object of the whole scene,
  and a star), "the top square", "the highest ring", "the lowest triangle", "the bottommost star",
  "the lower circle" (upper / lower only when exactly two objects match the noun);
- `ordinal_v`: "the second circle from the top", "the third star from the bottom";
- `ordinal`: horizontal phrasings the standard set lacks: "the circle on the far left", "the star
  furthest right", "the first ring on the left", "the square second from the right";
- `size`: "the biggest circle", "the smallest star", "the largest shape", "the tiniest green
  square", compared on visible mask areas: the referent's area is at least SIZE_RATIO times (or at
  most 1 / SIZE_RATIO of) every other area of its group;
- `relation_new`: "the ring under the circle", "the star beneath the square", "the square over
  the big star" (centroid offsets, the standard margin) and "the triangle closest to the ring",
  "the star next to the circle", "the star beside the blue ring" (the nearest by centroid
  distance, by NEAR_MARGIN over the second nearest; next to / beside also within NEAR_LIMIT).

Each sentence is kept only when it singles its object out the standard way
(`Expression.singles_out`: true of it with the margin, of no other object without it), and uses the
shortest noun phrase that does so while matching at least two objects, so that the spatial or size
word does the work ("the circle on the far left" in a scene with several circles). RefCOCO+ gets
only `size` sentences (it has no location words); RefCOCOg gets the same sentences as RefCOCO (not
its full-noun-phrase rule: the short noun phrase is the point here).

**This set is for reporting only, never for choosing settings**: generate it with
`--seed NEW_PHRASINGS_SEED` (7000), a seed no tuning, training or committed measurement uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

from .synthetic_refer import (
    MARGIN,
    Expression,
    ExpressionKind,
    NounPhrase,
    SceneObject,
    phrases_of,
    shortest_name,
)

NEW_PHRASINGS_SEED = 7000  # the recommended --seed of the `new` set: reporting only, never tuning
SIZE_RATIO = 1.5  # how many times larger (smaller) the biggest (smallest) visible area must be
NEAR_MARGIN = 0.06  # of the shorter side: the nearest's lead over the second nearest
NEAR_LIMIT = 0.35  # of the shorter side: "next to" / "beside" are at most this far
ORDINAL_WORDS = ("first", "second", "third")

Holds = Callable[[SceneObject, bool], bool]


class AnyShape(NounPhrase):
    """"shape", "red shape": a noun phrase of any kind."""

    def matches(self, obj: SceneObject) -> bool:
        return self.colour in (None, obj.shape.colour) and self.size in (None, obj.shape.size)


def _rank(obj: SceneObject, group: list[SceneObject], axis: int, sign: int, rank: int,
          margin: float) -> bool:
    """Whether exactly `rank` members of `group` lie further than `obj` towards the low end of
    `axis` (sign 1: left / top; -1: right / bottom), each other member at least `margin` away."""
    gaps = [sign * (obj.centroid[axis] - o.centroid[axis]) for o in group if o is not obj]
    return sum(g > 0 for g in gaps) == rank and all(abs(g) >= margin for g in gaps)


def _ranked(phrase: NounPhrase, group: list[SceneObject], axis: int, sign: int, rank: int,
            margin: float, obj: SceneObject, strict: bool) -> bool:
    return phrase.matches(obj) and _rank(obj, group, axis, sign, rank, margin if strict else 0)


def _sized(phrase: NounPhrase, group: list[SceneObject], largest: bool, obj: SceneObject,
           strict: bool) -> bool:
    """The largest (smallest) visible area of `group`: by SIZE_RATIO when strict."""
    if not phrase.matches(obj):
        return False
    area = float(obj.mask.sum())
    others = [float(o.mask.sum()) for o in group if o is not obj]
    ratio = SIZE_RATIO if strict else 1.0
    if largest:
        return all(area >= ratio * a and area > a for a in others)
    return all(ratio * area <= a and area < a for a in others)


def _offset(a: SceneObject, b: SceneObject, below: bool) -> float:
    dy = a.centroid[1] - b.centroid[1]
    return dy if below else -dy


def _vertical(phrase: NounPhrase, anchor: SceneObject, below: bool, margin: float,
              obj: SceneObject, strict: bool) -> bool:
    if not phrase.matches(obj) or obj is anchor:
        return False
    return _offset(obj, anchor, below) >= (margin if strict else 0) and \
        _offset(obj, anchor, below) > 0


def distance(a: SceneObject, b: SceneObject) -> float:
    return math.dist(a.centroid, b.centroid)


def _nearest(phrase: NounPhrase, group: list[SceneObject], anchor: SceneObject, margin: float,
             limit: float | None, obj: SceneObject, strict: bool) -> bool:
    """`obj` is the member of `group` nearest to `anchor`: by `margin` and within `limit` when
    strict, merely nearest otherwise."""
    if not phrase.matches(obj) or obj is anchor:
        return False
    d = distance(obj, anchor)
    others = [distance(o, anchor) for o in group if o is not obj and o is not anchor]
    if not strict:
        return all(d < e for e in others)
    return all(d + margin <= e for e in others) and (limit is None or d <= limit)


def _first(obj: SceneObject, scene: list[SceneObject], phrases: Iterable[NounPhrase],
           make: Callable[[NounPhrase, list[SceneObject]], tuple[str, Holds] | None],
           kind: ExpressionKind) -> Expression | None:
    """The sentence `make` builds with the first (shortest) phrase that matches `obj` and at least
    one other object and with which the sentence singles `obj` out; None when none does."""
    for phrase in phrases:
        group = [o for o in scene if phrase.matches(o)]
        if not phrase.matches(obj) or len(group) < 2:
            continue
        made = make(phrase, group)
        if made is None:
            continue
        expression = Expression(made[0], kind, made[1])
        if expression.singles_out(obj, scene):
            return expression
    return None


def _position_v(scene: list[SceneObject], margin: float, template: str, sign: int,
                pair_only: bool, whole_scene: bool, phrase: NounPhrase,
                group: list[SceneObject]) -> tuple[str, Holds] | None:
    if pair_only and len(group) != 2:
        return None
    among = scene if whole_scene else group
    return template.format(p=phrase), partial(_ranked, phrase, among, 1, sign, 0, margin)


def _ordinal(axis: int, margin: float, template: str, sign: int, rank: int, phrase: NounPhrase,
             group: list[SceneObject]) -> tuple[str, Holds] | None:
    if len(group) <= rank:
        return None
    return template.format(p=phrase), partial(_ranked, phrase, group, axis, sign, rank, margin)


def _size(word: str, largest: bool, phrase: NounPhrase,
          group: list[SceneObject]) -> tuple[str, Holds] | None:
    return f"the {word} {phrase}", partial(_sized, phrase, group, largest)


def _relation(scene: list[SceneObject], anchor: SceneObject, anchor_name: NounPhrase, word: str,
              margin: float, near_limit: float, phrase: NounPhrase,
              group: list[SceneObject]) -> tuple[str, Holds] | None:
    if sum(o is not anchor for o in group) < 2:  # the relation must choose between two or more
        return None
    text = f"the {phrase} {word} the {anchor_name}"
    if word in ("under", "beneath", "over"):
        return text, partial(_vertical, phrase, anchor, word != "over", margin)
    limit = None if word == "closest to" else near_limit
    return text, partial(_nearest, phrase, group, anchor, margin, limit)


POSITION_V = (("the {p} at the top", 1, False, True), ("the top {p}", 1, False, False),
              ("the highest {p}", 1, False, False), ("the topmost {p}", 1, False, False),
              ("the upper {p}", 1, True, False),
              ("the {p} at the bottom", -1, False, True), ("the bottom {p}", -1, False, False),
              ("the lowest {p}", -1, False, False), ("the bottommost {p}", -1, False, False),
              ("the lower {p}", -1, True, False))
SIZE_WORDS = (("biggest", True), ("largest", True), ("smallest", False), ("tiniest", False))
RELATION_WORDS = ("under", "beneath", "over", "closest to", "next to", "beside")


def new_candidates(obj: SceneObject, scene: list[SceneObject], dataset: str) -> list[Expression]:
    """The `new` set's sentences that single `obj` out in `scene`, one per template at most."""
    side = min(obj.mask.shape)
    margin = MARGIN * side
    found: list[Expression | None] = []
    s = obj.shape
    sized_phrases = [NounPhrase(s.kind), AnyShape("shape"), NounPhrase(s.kind, s.colour),
                     AnyShape("shape", s.colour)]
    for word, largest in SIZE_WORDS:
        found.append(_first(obj, scene, sized_phrases, partial(_size, word, largest), "size"))
    if dataset != "refcoco+":
        phrases = phrases_of(obj, full=False)
        for template, sign, pair_only, whole in POSITION_V:
            found.append(_first(obj, scene, phrases, partial(
                _position_v, scene, margin, template, sign, pair_only, whole), "position_v"))
        for rank in (1, 2):
            for where, sign in (("top", 1), ("bottom", -1)):
                template = f"the {ORDINAL_WORDS[rank]} {{p}} from the {where}"
                found.append(_first(obj, scene, phrases, partial(
                    _ordinal, 1, margin, template, sign, rank), "ordinal_v"))
        for where, sign in (("left", 1), ("right", -1)):
            templates = [(f"the {{p}} on the far {where}", 0), (f"the {{p}} furthest {where}", 0),
                         (f"the first {{p}} on the {where}", 0),
                         (f"the {{p}} second from the {where}", 1),
                         (f"the {{p}} third from the {where}", 2)]
            for template, rank in templates:
                found.append(_first(obj, scene, phrases, partial(
                    _ordinal, 0, margin, template, sign, rank), "ordinal"))
        for anchor in scene:
            anchor_name = shortest_name(anchor, scene)
            if anchor is obj or anchor_name is None:
                continue
            for word in RELATION_WORDS:
                found.append(_first(obj, scene, phrases, partial(
                    _relation, scene, anchor, anchor_name, word, NEAR_MARGIN * side,
                    NEAR_LIMIT * side), "relation_new"))
    return [e for e in found if e is not None]
