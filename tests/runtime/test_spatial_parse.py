"""zsris_rt.spatial.parse: the spatial part of referring expressions, on a table of phrases (the
issue's list, the synthetic generator's own sentences, RefCOCO-style ones, landmarks with
attributes, and non-spatial ones that must fall back to text.py's noun phrase exactly)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

P = "position"
ORD = "ordinal"
R = "relation"
S = "size"

# expression → (target, {field: expected}); position (axis, side, extreme), ordinal (kind, rank,
# axis, side), relation (kind, landmarks, superlative), size (kind, value, landmark)
TABLE: list[tuple[str, str, dict[str, tuple[Any, ...]]]] = [
    # absolute positions
    ("the red circle on the left", "red circle", {P: ("x", "left", False)}),
    ("the cup on the right", "cup", {P: ("x", "right", False)}),
    ("the circle in the middle", "circle", {P: ("x", "middle", False)}),
    ("the circle in the center", "circle", {P: ("x", "middle", False)}),
    ("the mug in the centre", "mug", {P: ("x", "middle", False)}),
    ("the circle at the top", "circle", {P: ("y", "top", False)}),
    ("the plate at the bottom", "plate", {P: ("y", "bottom", False)}),
    ("top left cup", "cup", {P: ("xy", "top left", False)}),
    ("top-left cup", "cup", {P: ("xy", "top left", False)}),
    ("the upper ring", "ring", {P: ("y", "top", False)}),
    ("the lower ring", "ring", {P: ("y", "bottom", False)}),
    ("upper left ring", "ring", {P: ("xy", "top left", False)}),
    ("the leftmost star", "star", {P: ("x", "left", True)}),
    ("the rightmost circle", "circle", {P: ("x", "right", True)}),
    ("the topmost square", "square", {P: ("y", "top", True)}),
    ("the highest star", "star", {P: ("y", "top", True)}),
    ("the lowest triangle", "triangle", {P: ("y", "bottom", True)}),
    ("the bottommost ring", "ring", {P: ("y", "bottom", True)}),
    ("the furthest left circle", "circle", {P: ("x", "left", True)}),
    ("the circle on the far right", "circle", {P: ("x", "right", True)}),
    ("the cup on the left side", "cup", {P: ("x", "left", False)}),
    ("left guy", "guy", {P: ("x", "left", False)}),
    ("man on right", "man", {P: ("x", "right", False)}),
    ("woman in middle", "woman", {P: ("x", "middle", False)}),
    ("bottom left corner plate", "plate", {P: ("xy", "bottom left", False)}),
    ("the bear on the top", "bear", {P: ("y", "top", False)}),
    ("right", "", {P: ("x", "right", False)}),
    # ordinals
    ("the second triangle from the right", "triangle", {ORD: ("rank", 2, "x", "right")}),
    ("second from left", "", {ORD: ("rank", 2, "x", "left")}),
    ("the second one from the right", "one", {ORD: ("rank", 2, "x", "right")}),
    ("the third big circle from the top", "big circle",
     {ORD: ("rank", 3, "y", "top"), S: ("relative", "big", None)}),
    ("the third star from the bottom", "star", {ORD: ("rank", 3, "y", "bottom")}),
    ("the first one on the right", "one", {ORD: ("rank", 1, "x", "right")}),
    ("the 2nd cup from the left", "cup", {ORD: ("rank", 2, "x", "left")}),
    ("the middle one", "one", {ORD: ("middle", None, "x", "middle")}),
    ("the middle circle", "circle", {ORD: ("middle", None, "x", "middle")}),
    ("the last cup on the right", "cup", {ORD: ("last", None, "x", "right")}),
    ("the last one", "one", {ORD: ("last", None, None, None)}),
    ("the second one of the circles from the left", "circles", {ORD: ("rank", 2, "x", "left")}),
    # relations
    ("the circle left of the star", "circle", {R: ("left_of", ("star",), False)}),
    ("the circle right of the star", "circle", {R: ("right_of", ("star",), False)}),
    ("the circle to the left of the ring", "circle", {R: ("left_of", ("ring",), False)}),
    ("the circle to the right of the ring", "circle", {R: ("right_of", ("ring",), False)}),
    ("the circle that is left of the star", "circle", {R: ("left_of", ("star",), False)}),
    ("the big red circle to the left of the small star", "big red circle",
     {R: ("left_of", ("small star",), False), S: ("relative", "big", None)}),
    ("the ring beneath the big circle", "ring", {R: ("below", ("big circle",), False)}),
    ("the ring under the table", "ring", {R: ("below", ("table",), False)}),
    ("the man below the sign", "man", {R: ("below", ("sign",), False)}),
    ("the lamp over the table", "lamp", {R: ("above", ("table",), False)}),
    ("the star above the green square", "star", {R: ("above", ("green square",), False)}),
    ("the cup on top of the box", "cup", {R: ("above", ("box",), False)}),
    ("the cup next to the plate", "cup", {R: ("near", ("plate",), False)}),
    ("the chair beside the red table", "chair", {R: ("near", ("red table",), False)}),
    ("the man near the door", "man", {R: ("near", ("door",), False)}),
    ("the dog close to the cat", "dog", {R: ("near", ("cat",), False)}),
    ("the cup closest to the plate", "cup", {R: ("near", ("plate",), True)}),
    ("the nearest chair", "chair", {R: ("near", (), True)}),
    ("the star farthest from the ring", "star", {R: ("far_from", ("ring",), True)}),
    ("the star far from the ring", "star", {R: ("far_from", ("ring",), False)}),
    ("the circle between the star and the red square", "circle",
     {R: ("between", ("star", "red square"), False)}),
    ("the blue square between the two circles", "blue square",
     {R: ("between", ("two circles",), False)}),
    # sizes
    ("the biggest circle", "circle", {S: ("superlative", "big", None)}),
    ("the largest red star", "red star", {S: ("superlative", "big", None)}),
    ("the smallest ring", "ring", {S: ("superlative", "small", None)}),
    ("the tiniest square", "square", {S: ("superlative", "small", None)}),
    ("the circle bigger than the star", "circle", {S: ("comparative", "big", "star")}),
    ("the smaller ring", "ring", {S: ("comparative", "small", None)}),
    ("the larger dog on the left", "dog",
     {S: ("comparative", "big", None), P: ("x", "left", False)}),
    ("the small star on the right", "small star",
     {S: ("relative", "small", None), P: ("x", "right", False)}),
]

# not spatial: the target is text.py's noun phrase, exactly
NON_SPATIAL = ["the green ring", "a dog", "", "   ", "the big red circle", "the small star",
               "blue square", "the man who left", "two cups", "???", "a tiny dog"]


@pytest.fixture(scope="module")
def nlp():
    from zsris_rt.text import DEFAULT_SPACY_MODEL, load_spacy

    return load_spacy(DEFAULT_SPACY_MODEL)


def _fields(parse) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    if parse.position is not None:
        p = parse.position
        out[P] = (p.axis, p.side, p.extreme)
    if parse.ordinal is not None:
        o = parse.ordinal
        out[ORD] = (o.kind, o.rank, o.axis, o.side)
    if parse.relation is not None:
        r = parse.relation
        out[R] = (r.kind, r.landmarks, r.superlative)
    if parse.size is not None:
        s = parse.size
        out[S] = (s.kind, s.value, s.landmark)
    return out


def test_table(nlp):
    from zsris_rt.spatial import parse_spatial

    assert len(TABLE) >= 60
    wrong = []
    for text, target, fields in TABLE:
        parse = parse_spatial(text, nlp)
        got = (parse.target, _fields(parse))
        if not parse.spatial or got != (target, fields):
            wrong.append(f"{text!r}: got {got}, want {(target, fields)}")
        assert parse.words, text
    assert not wrong, "\n".join(wrong)


def test_non_spatial_falls_back_to_the_noun_phrase(nlp):
    from zsris_rt.spatial import parse_spatial
    from zsris_rt.text import noun_phrase

    for text in NON_SPATIAL:
        parse = parse_spatial(text, nlp)
        assert not parse.spatial, text
        assert parse.position is parse.ordinal is parse.relation is None, text
        sentence = " ".join(t.text for t in nlp(text.lower()) if t.text.strip())
        assert parse.target == (noun_phrase(nlp(sentence)) if sentence else ""), text
    big = parse_spatial("the big red circle", nlp)
    assert big.size is not None and (big.size.kind, big.size.value) == ("relative", "big")


def test_a_doc_and_odd_input(nlp):
    from zsris_rt.spatial import SpatialParse, parse_spatial

    doc = nlp("the man on the right")
    assert parse_spatial(doc, nlp) == parse_spatial("the man on the right", nlp)
    for odd in ("left of", "between", "the second", "from the", "on the on the", "of of of",
                "bigger than", "closest to", "the left left left one", "12 34", "-", "top of"):
        assert isinstance(parse_spatial(odd, nlp), SpatialParse), odd
    assert parse_spatial("LEFT GUY", nlp).position is not None
    with pytest.raises(AttributeError):
        parse_spatial("left guy", nlp).target = "x"  # type: ignore[misc]


def test_the_generators_own_sentences(nlp):
    """Every spatial sentence `describe` says about a few drawn scenes parses to the right kind,
    its target is the generator's phrase and its landmark the anchor's name."""
    from zsris_rt.spatial import parse_spatial
    from zsris_rt.synthetic_refer import describe, draw_scene

    rng = np.random.default_rng(5)
    seen = 0
    for _ in range(3):
        scene = draw_scene(rng)
        for dataset in ("refcoco", "refcocog"):
            for obj in scene.objects:
                for expression in describe(obj, scene.objects, dataset):
                    text = expression.text
                    parse = parse_spatial(text, nlp)
                    if expression.kind == "attribute":
                        assert not parse.spatial, text
                        continue
                    seen += 1
                    assert parse.spatial, text
                    if expression.kind == "relation":
                        assert parse.relation is not None, text
                        kind = next(k for w, k in (("left of", "left_of"),
                                                   ("right of", "right_of"),
                                                   ("above", "above"), ("below", "below"))
                                    if f" {w} " in text)
                        assert parse.relation.kind == kind, text
                        landmark, = parse.relation.landmarks
                        assert text.endswith(f" the {landmark}"), text
                        assert text.startswith(f"the {parse.target} "), text
                    elif expression.kind == "position":
                        assert parse.position is not None, text
                        assert parse.position.side in ("left", "right"), text
                    else:
                        assert (parse.ordinal is not None
                                or (parse.position is not None and parse.position.extreme)), text
    assert seen > 20
