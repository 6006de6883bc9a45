"""The `new` phrasing set of `zsris-rt synth` (`zsris_rt.synthetic_refer.new_candidates`): the
default output unchanged, every new sentence re-checked against geometry computed here from the
written masks (pycocotools, NumPy; none of the generator's code), each new kind present, and
`zsris-rt eval` reporting on them."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from zsris_rt.commands.main import main

STANDARD_KINDS = {"attribute", "relation", "ordinal", "position"}
NEW_KINDS = {"position_v", "ordinal_v", "ordinal", "size", "relation_new"}
CATEGORIES = ("circle", "square", "triangle", "star", "ring")
COLOURS = {"red", "green", "blue", "yellow"}
SIZES = {"big", "small"}
HEIGHT, WIDTH = 240, 320
MARGIN = 0.06 * HEIGHT  # the generator's margin: 6 % of the shorter side
SIZE_RATIO = 1.5
NEAR_LIMIT = 0.35 * HEIGHT
NP = r"(?P<np>[a-z ]+?)"

# sha256 of what the generator wrote BEFORE the `new` set existed (commit 2ca0645's code), with the
# arguments beside each: for every file of ROOT/<dataset> by name, its name and bytes, then for
# every image by name, its name and its decoded pixels (not the PNG bytes, which depend on libpng).
DEFAULT_DIGESTS = (
    (dict(dataset="refcoco", images=12, seed=0, max_objects=5, textures=True),
     "b06906272782a87589f43234951ddabfea11659665026dbf2d061dbd2ed20c38"),
    (dict(dataset="refcocog", images=6, seed=3, max_objects=8, textures=False),
     "fbbc8c04ba5f7a286c6479bd3290523ae34b4132055213ba9ef7d5a8caab77da"),
)


def digest(root: Path, dataset: str) -> str:
    h = hashlib.sha256()
    for p in sorted((root / dataset).iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    for p in sorted((root / "images").iterdir()):
        h.update(p.name.encode())
        h.update(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize(("arguments", "expected"), DEFAULT_DIGESTS)
def test_default_output_is_unchanged(tmp_path, arguments, expected):
    from zsris_rt.synthetic_refer import write_synthetic_refer

    write_synthetic_refer(tmp_path / "a", **arguments)
    assert digest(tmp_path / "a", arguments["dataset"]) == expected
    write_synthetic_refer(tmp_path / "b", **arguments, phrasings="standard")
    assert digest(tmp_path / "b", arguments["dataset"]) == expected
    refs = pickle.loads(next((tmp_path / "a" / arguments["dataset"]).glob("refs*.p")).read_bytes())
    assert {s["kind"] for r in refs for s in r["sentences"]} <= STANDARD_KINDS


def test_unknown_phrasings_are_refused(tmp_path):
    from zsris_rt.errors import ZsrisError
    from zsris_rt.synthetic_refer import write_synthetic_refer

    with pytest.raises(ZsrisError, match="unknown phrasings"):
        write_synthetic_refer(tmp_path, phrasings="fancy")


# --- independent geometry --------------------------------------------------------------------

class Obj:
    def __init__(self, annotation: dict) -> None:
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, HEIGHT, WIDTH))
        else:
            rle = dict(segmentation, counts=segmentation["counts"].encode())
        mask = coco_mask.decode(rle).astype(bool)
        ys, xs = np.nonzero(mask)
        self.id = annotation["id"]
        self.x, self.y, self.area = float(xs.mean()), float(ys.mean()), int(mask.sum())
        self.kind = CATEGORIES[annotation["category_id"] - 1]
        self.colour = annotation["attributes"]["colour"]
        self.size = annotation["attributes"]["size"]


def matching(phrase: str, scene: list[Obj]) -> list[Obj]:
    """Objects a noun phrase ("big red circle", "shape", "blue shape") is true of."""
    words = phrase.split()
    assert words[-1] in (*CATEGORIES, "shape") and set(words[:-1]) <= COLOURS | SIZES, phrase
    return [o for o in scene if words[-1] in (o.kind, "shape")
            and all(w in (o.colour, o.size) for w in words[:-1])]


def coordinate(o: Obj, where: str) -> float:
    """Smaller is further towards `where`."""
    return {"left": o.x, "right": -o.x, "top": o.y, "bottom": -o.y}[where]


def ranked(target: Obj, among: list[Obj], where: str, rank: int) -> bool:
    gaps = [coordinate(target, where) - coordinate(o, where) for o in among if o is not target]
    return sum(g > 0 for g in gaps) == rank and all(abs(g) >= MARGIN for g in gaps)


ORDINAL_RANK = {"first": 0, "second": 1, "third": 2}
EXTREME = {"top": "top", "highest": "top", "topmost": "top", "upper": "top",
           "bottom": "bottom", "lowest": "bottom", "bottommost": "bottom", "lower": "bottom"}


def check(text: str, kind: str, target: Obj, scene: list[Obj]) -> str:
    """Assert that `text` singles out `target` by the geometry here; return the pattern's name."""
    def group_of(phrase: str) -> list[Obj]:
        group = matching(phrase, scene)
        assert target in group and len(group) >= 2, (text, "the phrase alone would do")
        return group

    if m := re.fullmatch(rf"the (?P<w>biggest|largest|smallest|tiniest) {NP}", text):
        group = group_of(m["np"])
        others = [o.area for o in group if o is not target]
        if m["w"] in ("biggest", "largest"):
            assert all(target.area >= SIZE_RATIO * a for a in others), text
        else:
            assert all(SIZE_RATIO * target.area <= a for a in others), text
        return "size" if kind == "size" else "wrong kind"
    if m := re.fullmatch(rf"the {NP} at the (?P<w>top|bottom)", text):
        group_of(m["np"])
        assert ranked(target, scene, m["w"], 0), text  # of the whole scene
        return "position_v" if kind == "position_v" else "wrong kind"
    if m := re.fullmatch(rf"the (?P<w>{'|'.join(EXTREME)}) {NP}", text):
        group = group_of(m["np"])
        assert m["w"] not in ("upper", "lower") or len(group) == 2, text
        assert ranked(target, group, EXTREME[m["w"]], 0), text
        return "position_v" if kind == "position_v" else "wrong kind"
    if m := re.fullmatch(rf"the (?P<r>second|third) {NP} from the (?P<w>top|bottom)", text):
        assert ranked(target, group_of(m["np"]), m["w"], ORDINAL_RANK[m["r"]]), text
        return "ordinal_v" if kind == "ordinal_v" else "wrong kind"
    if m := (re.fullmatch(rf"the {NP} (on the far|furthest) (?P<w>left|right)", text) or
             re.fullmatch(rf"the (?P<r>first) {NP} on the (?P<w>left|right)", text) or
             re.fullmatch(rf"the {NP} (?P<r>second|third) from the (?P<w>left|right)", text)):
        rank = ORDINAL_RANK[m.groupdict().get("r") or "first"]
        assert ranked(target, group_of(m["np"]), m["w"], rank), text
        return "ordinal" if kind == "ordinal" else "wrong kind"
    if m := re.fullmatch(rf"the {NP} (?P<w>under|beneath|over|closest to|next to|beside) "
                         rf"the (?P<anchor>[a-z ]+)", text):
        anchors = matching(m["anchor"], scene)
        assert len(anchors) == 1 and anchors[0] is not target, text
        anchor = anchors[0]
        group = [o for o in group_of(m["np"]) if o is not anchor]
        assert len(group) >= 2, text
        others = [o for o in group if o is not target]
        if m["w"] in ("under", "beneath", "over"):
            def down(o: Obj) -> float:
                return (o.y - anchor.y) * (1 if m["w"] != "over" else -1)
            assert down(target) >= MARGIN and all(down(o) <= 0 for o in others), text
        else:
            def dist(o: Obj) -> float:
                return math.dist((o.x, o.y), (anchor.x, anchor.y))
            assert all(dist(target) + MARGIN <= dist(o) for o in others), text
            assert m["w"] == "closest to" or dist(target) <= NEAR_LIMIT, text
        return "relation_new" if kind == "relation_new" else "wrong kind"
    raise AssertionError(f"not a sentence of the new set: {text!r}")


def read(root: Path, dataset: str = "refcoco") -> tuple[list[dict], dict[int, list[Obj]]]:
    doc = json.loads((root / dataset / "instances.json").read_text())
    refs = pickle.loads(next((root / dataset).glob("refs*.p")).read_bytes())
    scenes: dict[int, list[Obj]] = {}
    for annotation in doc["annotations"]:
        scenes.setdefault(annotation["image_id"], []).append(Obj(annotation))
    return refs, scenes


def test_every_new_sentence_singles_out_its_object(tmp_path):
    from zsris_rt.synthetic_refer import NEW_PHRASINGS_SEED, write_synthetic_refer

    write_synthetic_refer(tmp_path, "refcoco", images=60, seed=NEW_PHRASINGS_SEED,
                          phrasings="new")
    refs, scenes = read(tmp_path)
    seen: dict[str, int] = {}
    for ref in refs:
        scene = scenes[ref["image_id"]]
        target = next(o for o in scene if o.id == ref["ann_id"])
        for sentence in ref["sentences"]:
            assert check(sentence["sent"], sentence["kind"], target, scene) == sentence["kind"]
            seen[sentence["kind"]] = seen.get(sentence["kind"], 0) + 1
    assert set(seen) == NEW_KINDS, seen
    # The whole candidate set, not only the sentences chosen: a wider net for the same checks.
    from zsris_rt.synthetic_refer import describe, draw_scene

    checked = 0
    for index in range(10):
        drawn = draw_scene(np.random.default_rng([NEW_PHRASINGS_SEED, index]))
        scene = [Obj({"id": k, "segmentation": _rle(o.mask), "attributes": {
            "colour": o.shape.colour, "size": o.shape.size},
            "category_id": CATEGORIES.index(o.shape.kind) + 1}) for k, o in
            enumerate(drawn.objects)]
        for k, obj in enumerate(drawn.objects):
            for expression in describe(obj, drawn.objects, "refcoco", "new"):
                check(expression.text, expression.kind, scene[k], scene)
                checked += 1
    assert checked > 100


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def test_refcoco_plus_gets_sizes_only(tmp_path):
    from zsris_rt.synthetic_refer import write_synthetic_refer

    write_synthetic_refer(tmp_path, "refcoco+", images=20, seed=7000, phrasings="new")
    refs, _ = read(tmp_path, "refcoco+")
    assert refs and {s["kind"] for r in refs for s in r["sentences"]} == {"size"}


def test_synth_new_then_eval_reports_per_kind(capsys, tmp_path):
    assert main(["synth", "--out", str(tmp_path / "data"), "--images", "24", "--seed", "7000",
                 "--phrasings", "new"]) == 0
    capsys.readouterr()
    code = main(["eval", "--data", str(tmp_path / "data"), "--dataset", "refcoco", "--split",
                 "val", "--images", str(tmp_path / "data" / "images"), "--out",
                 str(tmp_path / "eval"), "--proposals", "gt", "--limit", "50", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["by_kind"]) == NEW_KINDS
    assert sum(f["strict"]["samples"] for f in summary["by_kind"].values()) == \
        summary["strict"]["samples"] > 0
