"""The synthetic refer-layout generator: masks are the drawn pixels, and every sentence is true of
its referent and of no other object, judged here from the decoded masks and the image's pixels."""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from refer_truth import Truth, load_truth

from zsris_rt.commands.main import main
from zsris_rt.synthetic_refer import (
    COLOURS,
    TOUCH_GAP,
    SceneObject,
    Shape,
    SyntheticScene,
    touching_same_colour,
    write_synthetic_refer,
)

KINDS = {1: "circle", 2: "square", 3: "triangle", 4: "star", 5: "ring"}
CLEAR = 0.05  # of the shorter side: how far apart "clearly left of" means here
NP = r"((?:big |small )?(?:red |green |blue |yellow )?(?:circle|square|triangle|star|ring))"
GRAMMAR = {
    "attribute": re.compile(rf"(?:the )?{NP}"),
    "position": re.compile(rf"the {NP} on the (left|right)"),
    "ordinal": re.compile(rf"the (?:(left|right)most {NP}|(second|third) {NP} from the "
                          r"(left|right))"),
    "relation": re.compile(rf"the {NP} (?:to the )?(left of|right of|above|below) the {NP}"),
}
SPATIAL_WORDS = {"left", "right", "above", "below", "leftmost", "rightmost", "second", "third"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_refer(tmp_path_factory.mktemp("synth"), images=8, seed=3,
                                 size=(96, 72))


@pytest.fixture(scope="module", params=["refcoco", "refcoco+", "refcocog"])
def crowded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Many images with up to 7 shapes: every expression kind, repeated kinds, rings, textures."""
    return write_synthetic_refer(tmp_path_factory.mktemp("crowded"), request.param, images=40,
                                 seed=11, size=(128, 96), max_objects=7)


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def refs_of(folder: Path) -> Truth:
    return load_truth(folder, "refs(umd).p" if folder.name == "refcocog" else "refs(unc).p")


def check_pixels(folder: Path, truth: Truth, max_objects: int) -> dict[int, str]:
    """Every instance is one flat object colour, instances are disjoint, and every pixel in an
    object colour belongs to an instance (so no background pixel takes one); returns the colour
    of each annotation, read from the image."""
    palette = np.array(list(COLOURS.values()))
    colour_of: dict[int, str] = {}
    for info in truth.doc["images"]:
        image = rgb(folder.parent / "images" / info["file_name"])
        assert image.shape == (info["height"], info["width"], 3)
        anns = truth.image_annotations(info["id"])
        assert 2 <= len(anns) <= max_objects
        painted = (image[:, :, None, :] == palette[None, None]).all(axis=3).any(axis=2)
        union = np.zeros(painted.shape, dtype=int)
        for ann in anns:
            mask = truth.masks[ann["id"]]
            colours = np.unique(image[mask], axis=0)
            assert len(colours) == 1, "every pixel of an instance has its object's colour"
            (name,) = [n for n, c in COLOURS.items() if tuple(colours[0]) == c]
            colour_of[ann["id"]] = name
            assert ann["attributes"]["colour"] == name
            assert ann["area"] == mask.sum() > 0
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            union += mask
        assert union.max() == 1, "instances do not overlap"
        np.testing.assert_array_equal(union == 1, painted)  # nothing painted is unannotated
    return colour_of


def test_masks_are_the_drawn_pixels(generated):
    truth = load_truth(generated)
    check_pixels(generated, truth, max_objects=5)
    for ref in truth.refs:
        ann = next(a for a in truth.doc["annotations"] if a["id"] == ref["ann_id"])
        assert ref["image_id"] == ann["image_id"] and ref["category_id"] == ann["category_id"]
        assert 1 <= len(ref["sentences"]) <= 3
        for sentence in ref["sentences"]:
            words = sentence["sent"].split()
            assert KINDS[ann["category_id"]] in words
            assert sentence["tokens"] == words and sentence["raw"] == sentence["sent"]


@dataclass(frozen=True)
class Thing:
    """One annotated object as this test sees it: kind from the category, colour from the
    pixels, size from the annotation's record, centroid from the decoded mask."""

    ann_id: int
    words: frozenset[str]
    x: float
    y: float

    def fits(self, phrase: str) -> bool:
        return set(phrase.split()) <= self.words


def things(truth: Truth, colour_of: dict[int, str], image_id: int) -> list[Thing]:
    out = []
    for ann in truth.image_annotations(image_id):
        ys, xs = np.nonzero(truth.masks[ann["id"]])
        words = {KINDS[ann["category_id"]], colour_of[ann["id"]], ann["attributes"]["size"]}
        out.append(Thing(ann["id"], frozenset(words), float(xs.mean()), float(ys.mean())))
    return out


def satisfying(kind: str, match: re.Match[str], scene: list[Thing], clear: float) -> list[Thing]:
    """The objects the sentence is true of, each at least `clear` pixels from its rivals; a
    sentence some object fits without that clearance counts as ambiguous (fails the test)."""
    if kind == "attribute":
        return [t for t in scene if t.fits(match[1])]
    if kind == "position":
        phrase, side = match.groups()
        sign = 1 if side == "left" else -1
        ordered = sorted(scene, key=lambda t: sign * t.x)
        gap = sign * (ordered[1].x - ordered[0].x)
        assert gap >= clear, "the referent is not clearly the outermost object"
        return [ordered[0]] if ordered[0].fits(phrase) else []
    if kind == "ordinal":
        side0, phrase0, word, phrase1, side1 = match.groups()
        phrase, side = (phrase0, side0) if phrase0 else (phrase1, side1)
        rank = {None: 0, "second": 1, "third": 2}[word]
        sign = 1 if side == "left" else -1
        group = sorted((t for t in scene if t.fits(phrase)), key=lambda t: sign * t.x)
        assert len(group) >= 2 and rank < len(group), "an ordinal needs a group to count in"
        xs = [t.x for t in group]
        near = xs[max(rank - 1, 0):rank + 2]
        assert all(abs(a - b) >= clear for a, b in pairwise(near)), "unclear order"
        return [group[rank]]
    target, relation, anchor_phrase = match.groups()
    (anchor,) = [t for t in scene if t.fits(anchor_phrase)]  # the anchor is named uniquely
    offset = {"left of": lambda t: anchor.x - t.x, "right of": lambda t: t.x - anchor.x,
              "above": lambda t: anchor.y - t.y, "below": lambda t: t.y - anchor.y}[relation]
    hits = [t for t in scene if t is not anchor and t.fits(target) and offset(t) > 0]
    assert all(offset(t) >= clear for t in hits), "the referent is not clearly there"
    return hits


def test_every_sentence_singles_out_its_referent(crowded):
    truth = refs_of(crowded)
    colour_of = check_pixels(crowded, truth, max_objects=7)
    dataset = crowded.name
    kinds_seen: set[str] = set()
    for ref in truth.refs:
        scene = things(truth, colour_of, ref["image_id"])
        (referent,) = [t for t in scene if t.ann_id == ref["ann_id"]]
        info = next(i for i in truth.doc["images"] if i["id"] == ref["image_id"])
        clear = CLEAR * min(info["height"], info["width"])
        for sentence in ref["sentences"]:
            kind, text = sentence["kind"], sentence["sent"]
            kinds_seen.add(kind)
            assert [k for k, g in GRAMMAR.items() if g.fullmatch(text)] == [kind], text
            assert satisfying(kind, GRAMMAR[kind].fullmatch(text), scene, clear) == [referent], \
                text
            if dataset == "refcoco+":  # RefCOCO+ forbids location words
                assert kind == "attribute" and not set(sentence["tokens"]) & SPATIAL_WORDS
            if dataset == "refcocog":  # every sentence names all of the referent's attributes
                target = next(g for g in GRAMMAR[kind].fullmatch(text).groups()
                              if g and re.fullmatch(NP, g))
                assert len(target.split()) == 3 and referent.fits(target)
    expected = {"attribute"} if dataset == "refcoco+" else {
        "attribute", "relation", "ordinal", "position"}
    assert kinds_seen == expected


def test_scenes_repeat_kinds_hold_rings_and_textures(crowded):
    truth = refs_of(crowded)
    by_image: dict[int, list[tuple[int, str]]] = {}
    for ann in truth.doc["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(
            (ann["category_id"], ann["attributes"]["colour"]))
    assert set(KINDS) == {c for looks in by_image.values() for c, _ in looks}
    assert any(len(set(looks)) < len(looks) for looks in by_image.values()), \
        "some image repeats a kind in the same colour"
    holes = 0
    for ann in truth.doc["annotations"]:
        mask = truth.masks[ann["id"]].astype(np.uint8)
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        has_hole = hierarchy is not None and (hierarchy[0, :, 3] >= 0).any()
        holes += has_hole and KINDS[ann["category_id"]] == "ring"
    assert holes >= 5, "rings decode with their hole"
    textures = set()
    for info in truth.doc["images"]:
        textures.add(info["texture"])
        image = rgb(crowded.parent / "images" / info["file_name"]).astype(int)
        background = np.ones(image.shape[:2], dtype=bool)
        for ann in truth.image_annotations(info["id"]):
            background &= ~truth.masks[ann["id"]]
        tones = np.unique(image[background], axis=0)
        assert (len(tones) == 1) == (info["texture"] == "plain")
        assert tones.min(axis=1).min() > max(min(c) for c in COLOURS.values())
    assert len(textures) >= 4


def test_no_textures_gives_plain_backgrounds(tmp_path):
    folder = write_synthetic_refer(tmp_path, images=4, seed=2, size=(64, 48), textures=False)
    assert {i["texture"] for i in load_truth(folder).doc["images"]} == {"plain"}


def test_both_segmentation_kinds_and_unique_ids(generated):
    truth = load_truth(generated)
    kinds = [type(a["segmentation"]) for a in truth.doc["annotations"]]
    assert list in kinds and dict in kinds
    sent_ids = [s["sent_id"] for _, s in truth.samples("val") + truth.samples("train")]
    assert len(set(sent_ids)) == len(sent_ids)
    assert len({r["ref_id"] for r in truth.refs}) == len(truth.refs)


@pytest.mark.parametrize("dataset,refs_file,splits", [
    ("refcoco", "refs(unc).p", ("train", "val", "testA", "testB")),
    ("refcoco+", "refs(unc).p", ("train", "val", "testA", "testB")),
    ("refcocog", "refs(umd).p", ("train", "val", "test")),
])
def test_layout_and_splits(tmp_path, dataset, refs_file, splits):
    folder = write_synthetic_refer(tmp_path, dataset, images=6, seed=1, size=(64, 48))
    assert folder == tmp_path / dataset
    assert (folder / "instances.json").is_file() and len(list((tmp_path / "images").glob(
        "*.png"))) == 6
    truth = load_truth(folder, refs_file)
    image_split = {r["image_id"]: r["split"] for r in truth.refs}
    assert len(image_split) == 6
    for index, info in enumerate(truth.doc["images"]):
        assert image_split[info["id"]] == splits[index % len(splits)]
    if dataset == "refcoco+":  # RefCOCO+ forbids location words
        words = {w for r in truth.refs for s in r["sentences"] for w in s["tokens"]}
        assert not words & {"left", "right"}


def test_same_seed_same_bytes(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    a = write_synthetic_refer(tmp_path / "a", images=3, seed=7, size=(64, 48)).parent
    b = write_synthetic_refer(tmp_path / "b", images=3, seed=7, size=(64, 48)).parent
    c = write_synthetic_refer(tmp_path / "c", images=3, seed=8, size=(64, 48)).parent
    assert files(a) == files(b)
    assert files(a)["refcoco/instances.json"] != files(c)["refcoco/instances.json"]


def test_pickle_holds_builtins_only(generated):
    data = (generated / "refs(unc).p").read_bytes()
    refs = load_truth(generated).refs  # its unpickler refuses every global

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return type(value) in (str, int)

    assert plain(refs) and refs == pickle.loads(data)


def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--images", "2", "--size", "64x48",
                 "--dataset", "refcocog"]) == 0
    assert "zsris-rt eval" in capsys.readouterr().out
    assert (tmp_path / "refcocog" / "refs(umd).p").is_file()
    assert rgb(next((tmp_path / "images").glob("*.png"))).shape == (48, 64, 3)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path), "--size", "64by48"])
    assert exit_info.value.code == 2
    assert main(["synth", "--out", str(tmp_path), "--images", "0"]) == 2
    assert "at least 1 image" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path), "--max-objects", "1"]) == 2
    assert "max objects" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["synth", "--out", str(plain), "--images", "3", "--size", "64x48",
                 "--max-objects", "2", "--no-textures"]) == 0
    truth = load_truth(plain / "refcoco")
    assert {i["texture"] for i in truth.doc["images"]} == {"plain"}
    assert all(len(truth.image_annotations(i["id"])) == 2 for i in truth.doc["images"])


def test_touching_same_colour_needs_the_colour_and_the_gap() -> None:
    """Within TOUCH_GAP pixels and of one colour counts (a 1-pixel gap included); another
    colour overlapping, or the same colour two pixels further off, does not."""
    def scene(*shapes: Shape) -> SyntheticScene:
        objects = [SceneObject(shape, shape.draw(120, 160), None) for shape in shapes]
        return SyntheticScene(np.zeros((120, 160, 3), np.uint8), objects, "plain")

    left = Shape("circle", "yellow", "big", (40, 40), 15)
    near = Shape("circle", "yellow", "big", (40 + 30 + TOUCH_GAP, 40), 15)
    far = Shape("circle", "yellow", "big", (40 + 30 + TOUCH_GAP + 2, 40), 15)
    red = Shape("square", "red", "big", (40, 64), 12)  # overlaps `left`
    assert touching_same_colour(scene(left, near, red)).tolist() == [True, True, False]
    assert touching_same_colour(scene(left, far, red)).tolist() == [False, False, False]
