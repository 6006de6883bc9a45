"""`zsris-rt eval`: known answers with oracle proposals, official vs strict figures, resume after an
interrupt, and a one-line error with nothing written for each bad input. Expected numbers come from
refer_truth (pickle, json and pycocotools read directly), never from the code under test."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from refer_truth import Truth, decode, load_truth

from zsris_rt import Result, Segmenter
from zsris_rt.commands.main import main
from zsris_rt.errors import NoMaskError
from zsris_rt.progress import Progress, progress_printer
from zsris_rt.refer_data import ReferDataset, load_refs
from zsris_rt.synthetic_refer import write_synthetic_refer

SPLIT = "val"
LOOSE_OPTIONS = {"pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1,
                 "points_per_side": 4}
LOOSE = [a for name, value in LOOSE_OPTIONS.items()
         for a in ("--" + name.replace("_", "-"), str(value))]
PRECISION = ("P@0.5", "P@0.7", "P@0.9")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refer")
    write_synthetic_refer(root, images=8, seed=5, size=(96, 72))
    return root


@pytest.fixture(scope="module")
def truth(root: Path) -> Truth:
    return load_truth(root / "refcoco")


def eval_args(data: Path, pack: Path, out: Path, *extra: str, split: str = SPLIT) -> list[str]:
    return ["eval", "--pack", str(pack), "--data", str(data), "--dataset", "refcoco", "--split",
            split, "--images", str(data / "images"), "--out", str(out), *extra]


def run_eval(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def key(row: dict[str, str]) -> tuple[int, int]:
    return int(row["ref_id"]), int(row["sent_id"])


def image_rgb(root: Path, truth: Truth, image_id: int) -> np.ndarray:
    (info,) = [im for im in truth.doc["images"] if im["id"] == image_id]
    return cv2.imread(str(root / "images" / info["file_name"]))[:, :, ::-1]


def oracle_query(monkeypatch, truth: Truth, pick: Callable[[int, int], int]) -> None:
    """Segmenter.query that finds the sentence's true mask among the scene's masks (by equality)
    and returns mask pick(true index, K)."""
    by_text: dict[str, list[np.ndarray]] = {}
    for ref, sent in truth.samples(SPLIT):
        by_text.setdefault(sent["sent"], []).append(truth.masks[ref["ann_id"]])

    def query(self, scene, text, alpha=None, beta=None):
        hits = [k for k in range(scene.num_masks) for m in by_text[text]
                if np.array_equal(scene.masks[k], m)]
        assert len(hits) == 1
        index = pick(hits[0], scene.num_masks)
        scores = np.zeros(scene.num_masks, dtype=np.float32)
        scores[index] = 1.0
        return Result(text=text, sentence=text, noun_phrase=text, scores=scores, index=index,
                      masks=scene.masks, boxes=scene.boxes, alpha=0.95, beta=0.5)

    monkeypatch.setattr(Segmenter, "query", query)


def with_extra_instances(root: Path, folder: Path) -> Path:
    """A copy of the data where each instance is followed by a dilated twin (so a wrong pick
    still overlaps the target) and one image starts with a sliver that rasterises to nothing."""
    data = Path(shutil.copytree(root, folder))
    instances = data / "refcoco" / "instances.json"
    doc = json.loads(instances.read_text())
    truth = load_truth(data / "refcoco")
    annotations = []
    for ann in doc["annotations"]:
        twin = cv2.dilate(truth.masks[ann["id"]].astype(np.uint8), np.ones((5, 5), np.uint8))
        rle = coco_mask.encode(np.asfortranarray(twin))
        annotations += [ann, {**ann, "id": ann["id"] + 50000, "segmentation": {
            "size": rle["size"], "counts": rle["counts"].decode()}}]
    sliver = [[10.0, 10.0, 10.3, 10.0, 10.1, 10.2]]  # a real COCO kind: rasterises to nothing
    assert not decode(sliver, 72, 96).any()
    first_image = next(r["image_id"] for r in truth.refs if r["split"] == SPLIT)
    annotations.insert(0, {"id": 99999, "image_id": first_image, "category_id": 1,
                           "segmentation": sliver, "bbox": [10, 10, 0.3, 0.2], "area": 0.0,
                           "iscrowd": 0})
    instances.write_text(json.dumps({**doc, "annotations": annotations}))
    return data


def test_oracle_proposals_known_answers(monkeypatch, capsys, tmp_path, root, pack_dir):
    data = with_extra_instances(root, tmp_path / "data")
    truth = load_truth(data / "refcoco")
    samples = truth.samples(SPLIT)

    def proposals(image_id: int) -> list[np.ndarray]:  # every non-empty instance, file order
        masks = [truth.masks[a["id"]] for a in truth.image_annotations(image_id)]
        return [m for m in masks if m.any()]

    oracle_query(monkeypatch, truth, lambda k, n: k)
    code, out, err = run_eval(capsys, eval_args(data, pack_dir, tmp_path / "right",
                                                "--proposals", "gt", "--json"))
    assert code == 0, err
    summary = json.loads(out)
    for variant in ("official", "strict"):
        assert summary[variant]["oIoU"] == summary[variant]["mIoU"] == 100.0
        assert all(summary[variant][p] == 100.0 for p in PRECISION)
    rows = read_rows(tmp_path / "right" / "samples.csv")
    assert sorted(map(key, rows)) == sorted((r["ref_id"], s["sent_id"]) for r, s in samples)
    for row in rows:
        assert int(row["num_masks"]) == len(proposals(int(row["image_id"])))

    oracle_query(monkeypatch, truth, lambda k, n: (k + 1) % n)
    code, out, err = run_eval(capsys, eval_args(data, pack_dir, tmp_path / "wrong",
                                                "--proposals", "gt", "--json"))
    assert code == 0, err
    expected = {}
    for ref, sent in samples:
        masks, target = proposals(ref["image_id"]), truth.masks[ref["ann_id"]]
        k = next(i for i, m in enumerate(masks) if np.array_equal(m, target))
        chosen = masks[(k + 1) % len(masks)]
        expected[ref["ref_id"], sent["sent_id"]] = (int((chosen & target).sum()),
                                                    int((chosen | target).sum()))
    rows = read_rows(tmp_path / "wrong" / "samples.csv")
    assert {key(r): (int(r["intersection"]), int(r["union"])) for r in rows} == expected
    ious = [i / u for i, u in expected.values()]
    summary = json.loads(out)
    assert summary["official"]["mIoU"] == pytest.approx(100 * np.mean(ious), rel=1e-12)
    assert summary["official"]["oIoU"] == pytest.approx(
        100 * sum(i for i, _ in expected.values()) / sum(u for _, u in expected.values()),
        rel=1e-12)
    for threshold in (0.5, 0.7, 0.9):
        assert summary["official"][f"P@{threshold}"] == pytest.approx(
            100 * np.mean(np.array(ious) >= threshold), rel=1e-12)
    assert summary["strict"] == summary["official"] and summary["counts"]["skipped"] == 0
    assert 0 < min(ious) and max(ious) < 1, "every pick is wrong, yet overlaps the target"
    kinds = {(ref["ref_id"], sent["sent_id"]): sent["kind"] for ref, sent in samples}
    assert {key(r): r["kind"] for r in rows} == kinds
    assert set(summary["by_kind"]) == set(kinds.values()) and len(summary["by_kind"]) > 1
    for kind, figures in summary["by_kind"].items():
        own = [i / u for k, (i, u) in expected.items() if kinds[k] == kind]
        assert figures["strict"]["samples"] == len(own)
        assert figures["strict"]["mIoU"] == pytest.approx(100 * np.mean(own), rel=1e-12)


def test_official_skips_strict_counts_zero(monkeypatch, capsys, tmp_path, root, truth,
                                           proposer_packs):
    samples = truth.samples(SPLIT)
    blocked_id = samples[0][0]["image_id"]
    blocked = image_rgb(root, truth, blocked_id)
    encode_image, encoded = Segmenter.encode_image, []

    def no_mask_on_one_image(self, image, masks=None, **overrides):
        encoded.append(image)
        if np.array_equal(image, blocked):
            raise NoMaskError("stub: the proposer kept no mask")
        return encode_image(self, image, masks, **overrides)

    monkeypatch.setattr(Segmenter, "encode_image", no_mask_on_one_image)
    pack = proposer_packs["sam2"]
    code, out, err = run_eval(capsys, eval_args(root, pack, tmp_path / "out", *LOOSE, "--json"))
    assert code == 0, err
    summary = json.loads(out)
    rows = read_rows(tmp_path / "out" / "samples.csv")
    gone = [r for r in rows if r["skipped"] == "1"]
    kept = [r for r in rows if r["skipped"] == "0"]
    expected_gone = [s for r, s in samples if r["image_id"] == blocked_id]
    assert len(gone) == len(expected_gone) == summary["counts"]["skipped"] > 0
    assert summary["counts"]["skipped_images"] == 1 and len(rows) == len(samples)
    assert len(encoded) == summary["counts"]["images"] == 2, "one scene per image"
    assert {int(r["image_id"]) for r in gone} == {blocked_id}
    for row in gone:
        assert float(row["iou"]) == 0 and int(row["intersection"]) == 0 and row["index"] == ""
        assert int(row["union"]) == truth.masks[int(row["ann_id"])].sum()

    seg = Segmenter.from_pack(pack)  # the chosen mask's IoU, recomputed from the proposals
    for image_id in {int(r["image_id"]) for r in kept}:
        masks = seg.propose(image_rgb(root, truth, image_id), **LOOSE_OPTIONS).masks
        for row in (r for r in kept if int(r["image_id"]) == image_id):
            chosen, target = masks[int(row["index"])], truth.masks[int(row["ann_id"])]
            assert int(row["num_masks"]) == len(masks)
            assert int(row["intersection"]) == (chosen & target).sum()
            assert int(row["union"]) == (chosen | target).sum()

    inter = sum(int(r["intersection"]) for r in kept)
    union = sum(int(r["union"]) for r in kept)
    ious = np.array([float(r["iou"]) for r in kept])
    gt_area = sum(int(truth.masks[int(r["ann_id"])].sum()) for r in gone)
    official, strict = summary["official"], summary["strict"]
    assert official["samples"] == len(kept) and strict["samples"] == len(rows)
    assert official["mIoU"] == pytest.approx(100 * ious.mean(), rel=1e-12)
    assert official["oIoU"] == pytest.approx(100 * inter / union, rel=1e-12)
    assert strict["mIoU"] == pytest.approx(100 * ious.sum() / len(rows), rel=1e-12)
    assert strict["oIoU"] == pytest.approx(100 * inter / (union + gt_area), rel=1e-12)
    assert strict["P@0.5"] == pytest.approx(100 * (ious >= 0.5).sum() / len(rows))
    for name in ("oIoU", "mIoU", *PRECISION):
        assert strict[name] <= official[name]


def test_no_mask_anywhere(capsys, tmp_path, root, truth, proposer_packs):
    code, out, err = run_eval(capsys, eval_args(root, proposer_packs["sam2"], tmp_path / "out",
                                                "--pred-iou-thresh", "1000"))
    assert code == 0, err
    assert "official: oIoU n/a  mIoU n/a" in out and "strict:   oIoU 0.00  mIoU 0.00" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["skipped"] == len(truth.samples(SPLIT))
    assert summary["counts"]["skipped_images"] == summary["counts"]["images"] == 2


def test_resume_matches_one_run(capsys, tmp_path, root, truth, pack_dir):
    gt = ("--proposals", "gt")
    assert run_eval(capsys, eval_args(root, pack_dir, tmp_path / "full", *gt))[0] == 0
    full = {key(r): r for r in read_rows(tmp_path / "full" / "samples.csv")}
    assert len(full) == len(truth.samples(SPLIT))

    part = tmp_path / "part"
    assert run_eval(capsys, eval_args(root, pack_dir, part, *gt, "--limit", "3"))[0] == 0
    path = part / "samples.csv"
    assert len(read_rows(path)) == 3
    path.write_bytes(path.read_bytes()[:-7])  # an interrupt cut the last line short
    before = path.read_bytes()
    code, out, err = run_eval(capsys, eval_args(root, pack_dir, part, *gt))
    assert code == 2 and out == "" and "--resume" in err and len(err.splitlines()) == 1
    assert path.read_bytes() == before, "an earlier run is never overwritten"

    code, out, err = run_eval(capsys, eval_args(root, pack_dir, part, *gt, "--resume",
                                                "--alpha", "0.5"))
    assert code == 2 and "alpha 0.95 then, 0.5 now" in err and path.read_bytes() == before

    code, out, err = run_eval(capsys, eval_args(root, pack_dir, part, *gt, "--resume", "--json"))
    assert code == 0, err
    rows = read_rows(path)
    assert sorted(map(key, rows)) == sorted(full)
    fields = ("iou", "intersection", "union", "index", "num_masks", "score", "skipped")
    for row in rows:
        assert [row[f] for f in fields] == [full[key(row)][f] for f in fields]
    summary = json.loads(out)
    assert summary["counts"]["from_earlier_runs"] == 2
    whole = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["official"] == whole["official"] and summary["strict"] == whole["strict"]


def test_ctrl_c_keeps_finished_images(monkeypatch, capsys, tmp_path, root, truth, pack_dir):
    samples = truth.samples(SPLIT)
    first = sum(r["image_id"] == samples[0][0]["image_id"] for r, _ in samples)
    query, calls = Segmenter.query, []

    def interrupted(self, scene, text, alpha=None, beta=None):
        calls.append(text)
        if len(calls) > first:
            raise KeyboardInterrupt
        return query(self, scene, text, alpha, beta)

    monkeypatch.setattr(Segmenter, "query", interrupted)
    out = tmp_path / "out"
    argv = eval_args(root, pack_dir, out, "--proposals", "gt")
    code, _, err = run_eval(capsys, argv)
    assert code == 130 and "--resume" in err and not (out / "summary.json").exists()
    assert len(read_rows(out / "samples.csv")) == first
    monkeypatch.undo()
    assert run_eval(capsys, [*argv, "--resume"])[0] == 0
    assert len(read_rows(out / "samples.csv")) == len(samples)


class Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("case,message", [
    ("no data root", "data root not found"),
    ("unknown split", "splits present: testA, testB, train, val"),
    ("corrupt refs", "not a readable refs pickle"),
    ("hostile refs", "refuses to load posix.system"),
    ("corrupt instances", "not valid JSON"),
    ("missing annotation", ": annotation "),
    ("missing image", "images are not in"),
    ("proposer option with gt", "do not apply with --proposals gt"),
])
def test_bad_input(capsys, tmp_path, root, truth, pack_dir, case, message):
    data = Path(shutil.copytree(root, tmp_path / "data"))
    folder, out, marker = data / "refcoco", tmp_path / "out", tmp_path / "pwned"
    split, extra = SPLIT, ["--proposals", "gt"]
    first = next(r for r in truth.refs if r["split"] == SPLIT)
    if case == "no data root":
        data = tmp_path / "nowhere"
    elif case == "unknown split":
        split = "testC"
    elif case == "corrupt refs":
        (folder / "refs(unc).p").write_bytes(pickle.dumps(truth.refs, protocol=2)[:100])
    elif case == "hostile refs":
        (folder / "refs(unc).p").write_bytes(pickle.dumps([Hostile(marker)], protocol=2))
    elif case == "corrupt instances":
        (folder / "instances.json").write_text('{"images": [')
    elif case == "missing annotation":
        doc = json.loads((folder / "instances.json").read_text())
        doc["annotations"] = [a for a in doc["annotations"] if a["id"] != first["ann_id"]]
        (folder / "instances.json").write_text(json.dumps(doc))
    elif case == "missing image":
        (info,) = [i for i in truth.doc["images"] if i["id"] == first["image_id"]]
        (data / "images" / info["file_name"]).unlink()
    else:
        extra.extend(["--points-per-side", "4"])
    code, stdout, err = run_eval(capsys, eval_args(data, pack_dir, out, *extra, split=split))
    assert code == 2 and stdout == ""
    assert err.startswith("zsris-rt eval: error: ") and message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (out / "summary.json").exists() and not marker.exists()


def test_end_to_end_with_the_proposer(capsys, tmp_path, root, truth, proposer_packs):
    out = tmp_path / "out"
    code, stdout, err = run_eval(capsys, eval_args(root, proposer_packs["sam2"], out, *LOOSE,
                                                   "--max-masks", "8"))
    assert code == 0, err
    assert stdout.startswith("refcoco val: ") and "official: oIoU" in stdout
    rows = read_rows(out / "samples.csv")
    assert len(rows) == len(truth.samples(SPLIT))
    for row in rows:
        assert 0.0 <= float(row["iou"]) <= 1.0 and row["skipped"] == "0"
        assert 1 <= int(row["num_masks"]) <= 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["proposals"] == "model" and summary["backend"] == "cpu"
    assert summary["proposer_options"]["max_masks"] == 8 and summary["maskops"]
    assert summary["counts"]["images"] == 2 and summary["timings_ms"]["per_image"] > 0
    for variant in ("official", "strict"):
        for name in ("oIoU", "mIoU", *PRECISION):
            assert 0.0 <= summary[variant][name] <= 100.0
    assert summary["proposer_mode"]["name"] == "exact"
    assert summary["prompts_per_image"] == 16  # LOOSE's 4×4 grid, all decoded
    fast = tmp_path / "fast"
    code, stdout, err = run_eval(capsys, eval_args(root, proposer_packs["sam2"], fast, *LOOSE,
                                                   "--max-masks", "8", "--proposer-mode", "fast"))
    assert code == 0, err
    summary = json.loads((fast / "summary.json").read_text())
    assert summary["proposer_mode"]["name"] == "fast" and summary["proposer_mode"]["recentre"]
    assert 0 < summary["prompts_per_image"] <= 16 and "proposer fast: " in stdout


def test_reader_matches_direct_decoding(tmp_path):
    folder = write_synthetic_refer(tmp_path, "refcocog", images=3, seed=2, size=(64, 48))
    truth = load_truth(folder, "refs(umd).p")
    data = ReferDataset(tmp_path, "refcocog")
    assert data.splits() == ["test", "train", "val"]
    samples = data.samples("test")
    assert [(s.ref_id, s.sent_id, s.ann_id, s.sentence) for s in samples] == [
        (r["ref_id"], t["sent_id"], r["ann_id"], t["sent"]) for r, t in truth.samples("test")]
    for ann_id, mask in truth.masks.items():  # polygons and RLE alike
        np.testing.assert_array_equal(data.mask(ann_id), mask)


def test_python2_refs_pickle_loads(tmp_path):
    path = tmp_path / "refs(unc).p"  # [{"sent": "café"}] as Python 2 wrote str: SHORT_BINSTRING
    path.write_bytes(b"\x80\x02]q\x00}q\x01U\x04sentq\x02U\x04caf\xe9q\x03sa.")
    assert load_refs(path) == [{"sent": "caf\u00e9"}]


def test_progress_does_not_flood_a_log():
    stream = io.StringIO()
    with Progress(10_000, "eval", "sentences", stream=stream) as bar:
        for _ in range(10_000):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval: 10000/10000 sentences (100%)")


def test_eval_modules_do_not_import_torch():
    probe = ("import sys\n"
             "import zsris_rt.evaluation, zsris_rt.refer_data, zsris_rt.synthetic_refer\n"
             "import zsris_rt.progress, zsris_rt.segmenter\n"
             "assert not [m for m in sys.modules if m.split('.')[0] == 'torch']\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_progress_printer_stamps_seconds_since_its_start(capsys):
    """The one stamped line printer (exports, bench, check): stderr only, one line a call."""
    import time

    say = progress_printer(time.perf_counter() - 2.0)
    say("export clip_image")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"\[ {3}2\.\ds\] export clip_image\n", captured.err)
