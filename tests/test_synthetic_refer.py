"""The synthetic refer-layout generator: masks are the drawn pixels, sentences say what is drawn."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from refer_truth import load_truth

from zsris_rt.cli import main
from zsris_rt.synthetic_refer import COLOURS, write_synthetic_refer

KINDS = {1: "circle", 2: "square", 3: "triangle"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_refer(tmp_path_factory.mktemp("synth"), images=8, seed=3,
                                 size=(96, 72))


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def test_masks_are_the_drawn_pixels_and_sentences_name_them(generated):
    truth = load_truth(generated)
    palette = np.array(list(COLOURS.values()))
    colour_of: dict[int, str] = {}
    for info in truth.doc["images"]:
        image = rgb(generated.parent / "images" / info["file_name"])
        assert image.shape == (info["height"], info["width"], 3) == (72, 96, 3)
        anns = truth.image_annotations(info["id"])
        assert 2 <= len(anns) <= 5
        painted = (image[:, :, None, :] == palette[None, None]).all(axis=3).any(axis=2)
        union = np.zeros(painted.shape, dtype=int)
        for ann in anns:
            mask = truth.masks[ann["id"]]
            colours = np.unique(image[mask], axis=0)
            assert len(colours) == 1, "every pixel of an instance has its object's colour"
            (name,) = [n for n, c in COLOURS.items() if tuple(colours[0]) == c]
            colour_of[ann["id"]] = name
            assert ann["area"] == mask.sum() > 0
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            union += mask
        assert union.max() == 1, "instances do not overlap"
        np.testing.assert_array_equal(union == 1, painted)  # nothing painted is unannotated
    centre = {a: float(np.nonzero(m)[1].mean()) for a, m in truth.masks.items()}
    for ref in truth.refs:
        ann = next(a for a in truth.doc["annotations"] if a["id"] == ref["ann_id"])
        assert ref["image_id"] == ann["image_id"] and ref["category_id"] == ann["category_id"]
        neighbours = [centre[a["id"]] for a in truth.image_annotations(ref["image_id"])]
        assert 1 <= len(ref["sentences"]) <= 3
        for sentence in ref["sentences"]:
            words = sentence["sent"].split()
            assert KINDS[ann["category_id"]] in words
            assert [w for w in words if w in COLOURS] in ([], [colour_of[ann["id"]]])
            assert sentence["tokens"] == words and sentence["raw"] == sentence["sent"]
            if "left" in words:
                assert centre[ann["id"]] == min(neighbours)
            if "right" in words:
                assert centre[ann["id"]] == max(neighbours)


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
