"""`zsris-rt synth`: small synthetic datasets in the `refer` layout, to try and test `zsris-rt eval`
without RefCOCO or COCO at hand.

Each image holds 2–`max_objects` flat-coloured shapes (circle, square, triangle, star, ring; big or
small; kinds and colours may repeat, shapes may overlap) on a plain or textured background whose
pixels never take an object colour. Every shape is one annotation (its visible pixels after
occlusion); a shape that some sentence singles out gets a ref with 1–3 of them. Sentences name
attributes ("the big blue square"), relations ("the circle left of the star"), ordinals ("the second
triangle from the right") or positions ("the small red ring on the left"); each is kept only when
exactly one object satisfies it, and its sentence dict says which kind it is. RefCOCO+ gets no
position, relation or ordinal words; RefCOCOg gets the full noun phrase in every sentence.
`phrasings="new"` (`zsris-rt synth --phrasings new`) writes, on the same scenes, only sentences
this standard set never says (vertical positions and ordinals, size comparisons, new relation
words: see `new_candidates`), a held-out test set for reporting only: use it with
`seed=NEW_PHRASINGS_SEED` (7000) and never to choose settings.
Annotations alternate between polygons and compressed RLE (a ring whose hole shows is always RLE:
polygons would fill the hole) so that both decoding paths run. The same seed gives the same bytes.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from .errors import ZsrisError
from .refer_data import REFS_FILES

KINDS = ("circle", "square", "triangle", "star", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {  # RGB; each has a channel below BACKGROUND_RANGE
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 210, 30)}
BACKGROUND_RANGE = (90, 250)  # every background channel lies here, so it is never an object colour
TEXTURES = ("plain", "noise", "stripes", "checker", "gradient")
SIZES = {"big": 0.2, "small": 0.1}  # radius as a fraction of the image's shorter side
SPLITS = {"refcoco": ("train", "val", "testA", "testB"),
          "refcoco+": ("train", "val", "testA", "testB"),
          "refcocog": ("train", "val", "test")}
MIN_VISIBLE = 0.5  # of a shape's own pixels, left after occlusion
PLACEMENT_TRIES = 50
REPEAT_KIND = 0.4  # chance that a new shape repeats an earlier kind, so ordinals have groups
MARGIN = 0.06  # of the shorter side: how clearly a referent must stand out along x or y
MAX_OBJECTS = 5  # default; a few more fit at 320×240
TOUCH_GAP = 2  # pixels: shapes at most this far apart (a 1-pixel gap) count as touching
RELATIONS = ("left of", "right of", "above", "below")
ORDINALS = ("second", "third")  # ranks 1 and 2 from one side; rank 0 is "leftmost"
PHRASINGS = ("standard", "new")  # the sentence sets; "new": `new_candidates`
ExpressionKind = Literal["attribute", "relation", "ordinal", "position",
                         "position_v", "ordinal_v", "size", "relation_new"]


@dataclass(frozen=True)
class Shape:
    """What an expression can say about one object, and where it is drawn."""

    kind: str
    colour: str
    size: str
    centre: tuple[int, int]  # (x, y) pixels
    radius: int

    def draw(self, height: int, width: int) -> np.ndarray:
        """H×W bool pixels of the shape alone, no anti-aliasing (every pixel is its colour)."""
        canvas = np.zeros((height, width), dtype=np.uint8)
        (x, y), r = self.centre, self.radius
        if self.kind in ("circle", "ring"):
            cv2.circle(canvas, (x, y), r, 1, -1, cv2.LINE_8)
            if self.kind == "ring":
                cv2.circle(canvas, (x, y), max(1, r // 2), 0, -1, cv2.LINE_8)
        elif self.kind == "square":
            half = round(r * 0.85)  # about the circle's area
            cv2.rectangle(canvas, (x - half, y - half), (x + half, y + half), 1, -1, cv2.LINE_8)
        else:
            cv2.fillPoly(canvas, [self._corners()], 1, cv2.LINE_8)
        return canvas.astype(bool)

    def _corners(self) -> np.ndarray:
        (x, y), r = self.centre, self.radius
        if self.kind == "triangle":
            return np.array([[x, y - r], [x - r, y + r * 3 // 4], [x + r, y + r * 3 // 4]],
                            dtype=np.int32)
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5  # a five-pointed star, tip up
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return np.round(np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)],
                                 axis=1)).astype(np.int32)


@dataclass
class SceneObject:
    shape: Shape
    mask: np.ndarray  # H×W bool, exactly what the annotation's segmentation decodes to
    segmentation: Any  # COCO polygons or compressed RLE
    centroid: tuple[float, float] = field(init=False)  # (x, y) of the mask: where relations look

    def __post_init__(self) -> None:
        ys, xs = np.nonzero(self.mask)
        self.centroid = (float(xs.mean()), float(ys.mean()))


@dataclass(frozen=True)
class NounPhrase:
    """"big red circle", "red circle", "circle": the attributes a sentence names."""

    kind: str
    colour: str | None = None
    size: str | None = None

    def matches(self, obj: SceneObject) -> bool:
        s = obj.shape
        return s.kind == self.kind and self.colour in (None, s.colour) \
            and self.size in (None, s.size)

    def __str__(self) -> str:
        return " ".join(w for w in (self.size, self.colour, self.kind) if w)


@dataclass(frozen=True)
class Expression:
    """A sentence and the test it states: `holds(o, strict)` is whether object o satisfies it,
    with the margin when strict, without it otherwise."""

    text: str
    kind: ExpressionKind
    holds: Callable[[SceneObject, bool], bool]

    def singles_out(self, obj: SceneObject, scene: list[SceneObject]) -> bool:
        """True of `obj` clearly, and of no other object even loosely: never ambiguous."""
        return self.holds(obj, True) and not any(self.holds(o, False) for o in scene
                                                 if o is not obj)


def _look(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str, str]:
    """(kind, colour, size) of the next shape; kinds and colours repeat, but never the first
    shape's whole look, so that every image has a shape its attributes alone single out."""
    while True:
        if shapes and rng.random() < REPEAT_KIND:
            kind = shapes[int(rng.integers(len(shapes)))].kind
        else:
            kind = KINDS[int(rng.integers(len(KINDS)))]
        look = (kind, str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))))
        if not shapes or look != (shapes[0].kind, shapes[0].colour, shapes[0].size):
            return look


def _place(rng: np.random.Generator, height: int, width: int, max_objects: int) -> list[Shape]:
    """2–max_objects shapes placed one by one, each where every shape so far stays at least half
    visible; a shape with no such place in PLACEMENT_TRIES tries is left out."""
    shapes: list[Shape] = []
    full: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        kind, colour, size = _look(rng, shapes)
        for _ in range(PLACEMENT_TRIES):
            r = max(4, round(SIZES[size] * min(height, width) * rng.uniform(0.9, 1.1)))
            centre = (int(rng.integers(r, width - r)), int(rng.integers(r, height - r)))
            shape = Shape(kind, colour, size, centre, r)
            masks = [*full, shape.draw(height, width)]
            if all(v >= MIN_VISIBLE for v in _visible_fractions(masks)):
                shapes.append(shape)
                full = masks
                break
    return shapes


def _visible(full: list[np.ndarray]) -> list[np.ndarray]:
    """Pixels of each shape not covered by a later one (later shapes are drawn on top)."""
    covered = np.zeros_like(full[0])
    visible = []
    for mask in reversed(full):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def _visible_fractions(full: list[np.ndarray]) -> list[float]:
    return [v.sum() / max(f.sum(), 1) for v, f in zip(_visible(full), full, strict=True)]


def _polygons(mask: np.ndarray) -> list[list[float]] | None:
    """Outer contours through pixel centres: pycocotools fills them inside the mask. None when the
    polygons would not decode to a non-empty subset of the mask (holes, slivers): use RLE."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polygons = [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours if len(c) >= 3]
    if not polygons:
        return None
    decoded = _decode(polygons, mask.shape)
    return polygons if decoded.any() and not (decoded & ~mask).any() else None


def _decode(segmentation: Any, size: tuple[int, ...]) -> np.ndarray:
    h, w = size
    rle = segmentation if isinstance(segmentation, dict) else \
        coco_mask.merge(coco_mask.frPyObjects(segmentation, h, w))
    return coco_mask.decode(rle).astype(bool)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _objects(shapes: list[Shape], height: int, width: int, first_ann: int) -> list[SceneObject]:
    objects = []
    visible_masks = _visible([s.draw(height, width) for s in shapes])
    for k, (shape, visible) in enumerate(zip(shapes, visible_masks, strict=True)):
        polygons = _polygons(visible) if (first_ann + k) % 2 == 0 else None
        segmentation = polygons if polygons is not None else _rle(visible)
        objects.append(SceneObject(shape, _decode(segmentation, (height, width)), segmentation))
    return objects


def phrases_of(obj: SceneObject, full: bool) -> list[NounPhrase]:
    """Noun phrases true of `obj`, shortest first; `full`: only the one naming every attribute."""
    s = obj.shape
    everything = NounPhrase(s.kind, s.colour, s.size)
    if full:
        return [everything]
    return [NounPhrase(s.kind), NounPhrase(s.kind, s.colour), NounPhrase(s.kind, size=s.size),
            everything]


def shortest_name(obj: SceneObject, scene: list[SceneObject]) -> NounPhrase | None:
    """The shortest noun phrase that no other object matches: how a relation names its anchor."""
    return next((p for p in phrases_of(obj, full=False)
                 if sum(p.matches(o) for o in scene) == 1), None)


def offset(a: SceneObject, b: SceneObject, relation: str) -> float:
    """How far a's centroid lies from b's in the relation's direction (negative: the other way)."""
    (ax, ay), (bx, by) = a.centroid, b.centroid
    return {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[relation]


def _ranked(obj: SceneObject, group: list[SceneObject], side: str, rank: int,
            margin: float) -> bool:
    """Whether exactly `rank` members of `group` lie further towards `side` (along x) than `obj`,
    each other member at least `margin` away from it."""
    sign = 1 if side == "left" else -1
    gaps = [sign * (obj.centroid[0] - o.centroid[0]) for o in group if o is not obj]
    return sum(g > 0 for g in gaps) == rank and all(abs(g) >= margin for g in gaps)


# The tests an Expression states, `holds(o, strict)` once their first arguments are bound.
def _names(phrase: NounPhrase, obj: SceneObject, strict: bool) -> bool:
    return phrase.matches(obj)


def _nth_from(phrase: NounPhrase | None, group: list[SceneObject], side: str, rank: int,
              margin: float, obj: SceneObject, strict: bool) -> bool:
    return (phrase is None or phrase.matches(obj)) and \
        _ranked(obj, group, side, rank, margin if strict else 0)


def _related(phrase: NounPhrase, anchor: SceneObject, relation: str, margin: float,
             obj: SceneObject, strict: bool) -> bool:
    if not phrase.matches(obj):
        return False
    return offset(obj, anchor, relation) >= margin if strict else offset(obj, anchor, relation) > 0


def _candidates(obj: SceneObject, scene: list[SceneObject], dataset: str) -> list[Expression]:
    """Every sentence the generator can say about `obj`, true or not."""
    margin = MARGIN * min(obj.mask.shape)
    full = dataset == "refcocog"
    phrases = phrases_of(obj, full)
    s = obj.shape
    out = [Expression(f"the {p}", "attribute", partial(_names, p)) for p in phrases]
    if not full:
        bare = NounPhrase(s.kind, s.colour)
        out.append(Expression(str(bare), "attribute", partial(_names, bare)))
    if dataset == "refcoco+":
        return out
    everything = phrases[-1]
    for side in ("left", "right"):
        out.append(Expression(f"the {everything} on the {side}", "position",
                              partial(_nth_from, None, scene, side, 0, margin)))
    targets = phrases if full else phrases[:2]
    for p in targets:
        group = [o for o in scene if p.matches(o)]
        ranks = range(min(len(group), len(ORDINALS) + 1)) if len(group) > 1 else range(0)
        for side, rank in ((side, rank) for side in ("left", "right") for rank in ranks):
            text = (f"the {side}most {p}" if rank == 0 else
                    f"the {ORDINALS[rank - 1]} {p} from the {side}")
            out.append(Expression(text, "ordinal",
                                  partial(_nth_from, p, group, side, rank, margin)))
    for anchor in scene:
        anchor_name = shortest_name(anchor, scene)
        if anchor is obj or anchor_name is None:
            continue
        for relation in RELATIONS:
            words = f"to the {relation}" if full and relation.endswith("of") else relation
            for p in targets:
                out.append(Expression(f"the {p} {words} the {anchor_name}", "relation",
                                      partial(_related, p, anchor, relation, margin)))
    return out


# --- The `new` phrasing set (phrasings="new"): a held-out test set, for reporting only -------
# Same scenes, other sentences, each kept only when it singles its object out the standard way and
# named with the shortest noun phrase that matches at least two objects, so that the spatial or
# size word does the work. Kinds: position_v ("the star at the top" – the topmost object of the
# scene, and a star –, "the top square", "the highest ring", "the lower circle" – upper / lower for
# pairs only), ordinal_v ("the second circle from the top"), ordinal ("the circle on the far left",
# "the star furthest right", "the first ring on the left", "the square second from the right"),
# size ("the biggest circle", "the largest shape": visible areas, by SIZE_RATIO) and relation_new
# ("the ring under the circle", "the square over the star": centroid offsets by the margin; "the
# star next to the circle", "the star beside the ring", "the triangle closest to the ring": the
# nearest centroid by NEAR_MARGIN, next to / beside within NEAR_LIMIT). RefCOCO+ gets sizes only;
# RefCOCOg the same sentences as RefCOCO (short noun phrases are the point here).

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


def _rank_along(obj: SceneObject, group: list[SceneObject], axis: int, sign: int, rank: int,
                margin: float) -> bool:
    """Whether exactly `rank` members of `group` lie further than `obj` towards the low end of
    `axis` (sign 1: left / top; -1: right / bottom), each other member at least `margin` away."""
    gaps = [sign * (obj.centroid[axis] - o.centroid[axis]) for o in group if o is not obj]
    return sum(g > 0 for g in gaps) == rank and all(abs(g) >= margin for g in gaps)


def _ranked_along(phrase: NounPhrase, group: list[SceneObject], axis: int, sign: int,
                  rank: int, margin: float, obj: SceneObject, strict: bool) -> bool:
    return phrase.matches(obj) and \
        _rank_along(obj, group, axis, sign, rank, margin if strict else 0)


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
    return template.format(p=phrase), partial(_ranked_along, phrase, among, 1, sign, 0, margin)


def _ordinal(axis: int, margin: float, template: str, sign: int, rank: int, phrase: NounPhrase,
             group: list[SceneObject]) -> tuple[str, Holds] | None:
    if len(group) <= rank:
        return None
    return template.format(p=phrase), \
        partial(_ranked_along, phrase, group, axis, sign, rank, margin)


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


def describe(obj: SceneObject, scene: list[SceneObject], dataset: str = "refcoco",
             phrasings: str = "standard") -> list[Expression]:
    """Sentences that single `obj` out in `scene`: those true of it with the margin and of no other
    object without it. RefCOCO+ gets attributes only; RefCOCOg names every attribute. With
    phrasings "new", the held-out set of `new_candidates` instead."""
    candidates = new_candidates if phrasings == "new" else _candidates
    kept: dict[str, Expression] = {}
    for expression in candidates(obj, scene, dataset):
        if expression.text not in kept and expression.singles_out(obj, scene):
            kept[expression.text] = expression
    return list(kept.values())


def _choose(rng: np.random.Generator, expressions: list[Expression]) -> list[Expression]:
    """1–3 of the sentences, of as many different kinds as there are, so that relations and
    ordinals (numerous) do not crowd out attributes and positions (few)."""
    kinds = list(dict.fromkeys(e.kind for e in expressions))
    kind_order = {kinds[i]: n for n, i in enumerate(rng.permutation(len(kinds)))}
    seen: dict[str, int] = {}
    keyed = []
    for i in rng.permutation(len(expressions)):
        e = expressions[i]
        seen[e.kind] = seen.get(e.kind, 0) + 1
        keyed.append((seen[e.kind], kind_order[e.kind], e))
    count = int(rng.integers(1, min(3, len(expressions)) + 1))
    return [e for *_, e in sorted(keyed, key=lambda t: t[:2])[:count]]


def _background(rng: np.random.Generator, height: int, width: int, texture: str) -> np.ndarray:
    """H×W×3 float background: a light tinted grey, alone or textured with a darker tone; every
    channel inside BACKGROUND_RANGE."""
    light = rng.integers(175, 236) + rng.integers(-12, 13, size=3)
    dark = light - rng.integers(25, 60)
    yy, xx = np.mgrid[:height, :width]
    if texture == "stripes":
        angle, period = rng.uniform(0, np.pi), int(rng.integers(6, 17))
        weight = ((xx * np.cos(angle) + yy * np.sin(angle)) / period % 1 < 0.5).astype(float)
    elif texture == "checker":
        cell = int(rng.integers(4, 13))
        weight = ((xx // cell + yy // cell) % 2).astype(float)
    elif texture == "gradient":
        coarse = rng.uniform(0, 1, size=(3, 4)).astype(np.float32)
        weight = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        weight = np.zeros((height, width))
    image = light + (dark - light) * weight[:, :, None]
    if texture == "noise":
        image = image + rng.integers(-8, 9, size=image.shape)
    return np.clip(np.round(image), *BACKGROUND_RANGE)


def _image(rng: np.random.Generator, objects: list[SceneObject], height: int, width: int,
           texture: str) -> np.ndarray:
    image = _background(rng, height, width, texture)
    for obj in objects:
        image[obj.mask] = COLOURS[obj.shape.colour]
    return image.astype(np.uint8)


@dataclass
class SyntheticScene:
    """One drawn image of the demo world and its objects (not `results.Scene`, the encoded one)."""

    pixels: np.ndarray  # H×W×3 uint8 RGB
    objects: list[SceneObject]  # in drawing order; later ones cover earlier ones
    texture: str


def draw_scene(rng: np.random.Generator, height: int = 240, width: int = 320,
               max_objects: int = MAX_OBJECTS, textures: bool = True,
               first_ann: int = 0) -> SyntheticScene:
    """One image and its objects, in memory: what `synth` writes per image, and what the demo
    pack's training scripts draw from (with seeds of their own, so eval scenes stay held out).
    `first_ann` only decides which annotations are written as polygons."""
    objects = _objects(_place(rng, height, width, max_objects), height, width, first_ann)
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))] if textures else "plain"
    return SyntheticScene(_image(rng, objects, height, width, texture), objects, texture)


def touching_same_colour(scene: SyntheticScene, gap: int = TOUCH_GAP) -> np.ndarray:
    """Per object, whether it lies within `gap` pixels of another object of its colour: the two
    are one blob of pixels, split only by shape, the demo proposer's hardest case (it trains on
    them more often, and benchmarks/demo_quality.py reports them apart)."""
    kernel = np.ones((2 * gap + 1,) * 2, dtype=np.uint8)
    objects = scene.objects
    grown = [cv2.dilate(obj.mask.astype(np.uint8), kernel).astype(bool) for obj in objects]
    return np.array([any(other.shape.colour == obj.shape.colour and bool((near & other.mask).any())
                         for other in objects if other is not obj)
                     for near, obj in zip(grown, objects, strict=True)], dtype=bool)


def write_synthetic_refer(root: str | Path, dataset: str = "refcoco", images: int = 8,
                          seed: int = 0, size: tuple[int, int] = (320, 240),
                          max_objects: int = MAX_OBJECTS, textures: bool = True,
                          phrasings: str = "standard") -> Path:
    """Write `images` images to ROOT/images and their refs and instances to ROOT/<dataset>;
    return ROOT/<dataset>. Image i goes to split i mod (number of splits). `phrasings`: "standard"
    or "new" (the held-out spatial set; same images, other sentences)."""
    if dataset not in SPLITS:
        raise ZsrisError(f"unknown dataset {dataset!r}: use one of {', '.join(SPLITS)}")
    if phrasings not in PHRASINGS:
        raise ZsrisError(f"unknown phrasings {phrasings!r}: use one of {', '.join(PHRASINGS)}")
    width, height = size
    if images < 1 or width < 32 or height < 32:
        raise ZsrisError(f"need at least 1 image of at least 32×32 pixels, got {images} of "
                         f"{width}×{height}")
    if not 2 <= max_objects <= 12:
        raise ZsrisError(f"max objects must be 2 to 12, got {max_objects}")
    root = Path(root)
    folder, image_folder = root / dataset, root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    image_folder.mkdir(parents=True, exist_ok=True)
    splits = SPLITS[dataset]
    doc: dict[str, Any] = {"images": [], "annotations": [], "categories": [
        {"id": i + 1, "name": kind, "supercategory": "shape"} for i, kind in enumerate(KINDS)]}
    refs: list[dict[str, Any]] = []
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        image_id, file_name = index + 1, f"synth_s{seed}_{index:05d}.png"
        scene = draw_scene(rng, height, width, max_objects, textures, len(doc["annotations"]))
        objects = scene.objects
        cv2.imwrite(str(image_folder / file_name), scene.pixels[:, :, ::-1])
        doc["images"].append({"id": image_id, "file_name": file_name, "height": height,
                              "width": width, "texture": scene.texture})
        for obj in objects:
            ann_id = 1000 + len(doc["annotations"])
            x0, y0, w, h = cv2.boundingRect(obj.mask.astype(np.uint8))
            category = KINDS.index(obj.shape.kind) + 1
            doc["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": category,
                "segmentation": obj.segmentation, "bbox": [x0, y0, w, h],
                "area": int(obj.mask.sum()), "iscrowd": 0,
                "attributes": {"colour": obj.shape.colour, "size": obj.shape.size}})
            expressions = describe(obj, objects, dataset, phrasings)
            if not expressions:
                continue
            first_sent = sum(len(r["sentences"]) for r in refs)
            sentences = [{"sent_id": first_sent + n, "sent": e.text, "raw": e.text,
                          "tokens": e.text.split(), "kind": e.kind}
                         for n, e in enumerate(_choose(rng, expressions))]
            refs.append({"ref_id": len(refs), "ann_id": ann_id, "image_id": image_id,
                         "split": splits[index % len(splits)], "category_id": category,
                         "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences})
    (folder / "instances.json").write_text(json.dumps(doc), encoding="utf-8")
    (folder / REFS_FILES[dataset]).write_bytes(pickle.dumps(refs, protocol=2))
    return folder
