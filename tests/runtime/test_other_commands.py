"""`zsris-rt synth`, `eval`, `check`, `doctor` and `bench` (zsris_rt.commands.*) on their
torch-free paths: the demo pack, a tiny synthetic dataset, ONNX Runtime's CPU. Files are read
back with independent tools (pycocotools, OpenCV, the csv module) and figures recomputed here."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

import zsris_rt.evaluation as evaluation_module
from zsris_rt.bench.report import render
from zsris_rt.commands.main import main

from .conftest import EXAMPLES

SPLITS = ("train", "val", "testA", "testB")
COLOUR_WORDS = {"red", "green", "blue", "yellow"}
KIND_WORDS = {"circle", "square", "triangle", "star", "ring"}
SIZE_WORDS = {"big", "small"}


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def decode(segmentation, height: int, width: int) -> np.ndarray:
    """An annotation's mask by pycocotools alone (polygons or compressed RLE)."""
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    else:
        rle = dict(segmentation, counts=segmentation["counts"].encode())
    return coco_mask.decode(rle).astype(bool)


# --- synth -----------------------------------------------------------------------------------

def test_synth_writes_a_consistent_refer_dataset(capsys, tmp_path):
    code, out, err = run(capsys, ["synth", "--out", str(tmp_path / "a"), "--images", "4",
                                  "--seed", "11"])
    assert code == 0 and err == [] and out.startswith("wrote 4 images to ")
    doc = json.loads((tmp_path / "a" / "refcoco" / "instances.json").read_text())
    refs = pickle.loads((tmp_path / "a" / "refcoco" / "refs(unc).p").read_bytes())
    assert [image["id"] for image in doc["images"]] == [1, 2, 3, 4]
    annotations = {a["id"]: a for a in doc["annotations"]}
    for image in doc["images"]:
        pixels = cv2.imread(str(tmp_path / "a" / "images" / image["file_name"]))[:, :, ::-1]
        assert pixels.shape == (image["height"], image["width"], 3) == (240, 320, 3)
        for a in (a for a in doc["annotations"] if a["image_id"] == image["id"]):
            mask = decode(a["segmentation"], 240, 320)
            assert mask.sum() == a["area"] > 0
            x, y, w, h = a["bbox"]
            ys, xs = np.nonzero(mask)
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                    ys.max() - ys.min() + 1)
            colours = np.unique(pixels[mask], axis=0)
            assert len(colours) == 1  # flat colour, no anti-aliasing
            r, g, b = (int(v) for v in colours[0])
            name = a["attributes"]["colour"]
            assert {"red": r > 150 > max(g, b), "green": g > 150 > max(r, b),
                    "blue": b > 150 > max(r, g), "yellow": min(r, g) > 150 > b}[name]
    for ref in refs:
        assert ref["split"] == SPLITS[(ref["image_id"] - 1) % 4]
        assert annotations[ref["ann_id"]]["image_id"] == ref["image_id"]
        for sentence in ref["sentences"]:
            if sentence["kind"] != "attribute":
                continue
            words = set(sentence["sent"].split())
            same_image = [a for a in doc["annotations"] if a["image_id"] == ref["image_id"]]
            fits = [a for a in same_image if _fits(a, words, doc)]
            assert [a["id"] for a in fits] == [ref["ann_id"]], sentence["sent"]


def _fits(annotation, words, doc) -> bool:
    kind = next(c["name"] for c in doc["categories"] if c["id"] == annotation["category_id"])
    attributes = annotation["attributes"]
    return kind in words and all(w in (kind, attributes["colour"], attributes["size"], "the")
                                 for w in words & (KIND_WORDS | COLOUR_WORDS | SIZE_WORDS))


def test_synth_is_deterministic(capsys, tmp_path):
    for name in ("a", "b"):
        assert run(capsys, ["synth", "--out", str(tmp_path / name), "--images", "2",
                            "--seed", "4", "--no-textures"])[0] == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 4
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--images", "0"], "need at least 1 image"),
    (["--size", "20x20"], "of at least 32×32 pixels"),
    (["--max-objects", "1"], "max objects must be 2 to 12"),
])
def test_synth_bad_input(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, ["synth", "--out", str(tmp_path / "d"), *argv])
    assert code == 2 and out == "" and len(err) == 1 and message in err[0]


# --- eval ------------------------------------------------------------------------------------

def eval_argv(root: Path, out: Path, *extra: str, split: str = "val") -> list[str]:
    return ["eval", "--data", str(root), "--dataset", "refcoco", "--split", split, "--images",
            str(root / "images"), "--out", str(out), *extra]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_eval_gt_proposals_figures_from_its_own_rows(capsys, tmp_path, synth_root):
    out = tmp_path / "eval"
    code, stdout, err = run(capsys, eval_argv(synth_root, out, "--proposals", "gt", "--json"))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    rows = read_csv(out / "samples.csv")
    refs = pickle.loads((synth_root / "refcoco" / "refs(unc).p").read_bytes())
    assert len(rows) == sum(len(r["sentences"]) for r in refs if r["split"] == "val")
    doc = json.loads((synth_root / "refcoco" / "instances.json").read_text())
    # Each row against masks decoded here: the chosen instance (file order) vs the referent.
    for row in rows:
        same_image = [a for a in doc["annotations"] if a["image_id"] == int(row["image_id"])]
        chosen = decode(same_image[int(row["index"])]["segmentation"], 240, 320)
        truth = decode(next(a for a in same_image if a["id"] == int(row["ann_id"]))
                       ["segmentation"], 240, 320)
        inter, union = int((chosen & truth).sum()), int((chosen | truth).sum())
        assert (int(row["intersection"]), int(row["union"])) == (inter, union)
        assert float(row["iou"]) == pytest.approx(inter / union)
        assert row["skipped"] == "0" and int(row["num_masks"]) == len(same_image)
    ious = np.array([float(r["iou"]) for r in rows])
    official = summary["official"]
    assert summary["strict"] == official  # oracle proposals never skip an image
    assert official["samples"] == len(rows)
    assert official["mIoU"] == pytest.approx(100 * ious.mean())
    assert official["oIoU"] == pytest.approx(100 * sum(int(r["intersection"]) for r in rows) /
                                             sum(int(r["union"]) for r in rows))
    for t in (0.5, 0.7, 0.9):
        assert official[f"P@{t}"] == pytest.approx(100 * (ious >= t).mean())
    kinds = {r["kind"] for r in rows}
    assert set(summary["by_kind"]) == kinds
    assert summary["counts"]["images"] == 2 and summary["proposer_mode"] is None
    assert official["mIoU"] > 50  # true masks: the demo CLIP picks most referents


def test_eval_limit_resume_and_refusal(capsys, tmp_path, synth_root):
    out = tmp_path / "eval"
    assert run(capsys, eval_argv(synth_root, out, "--proposals", "gt", "--limit", "2"))[0] == 0
    assert len(read_csv(out / "samples.csv")) == 2
    code, _, err = run(capsys, eval_argv(synth_root, out, "--proposals", "gt", "--limit", "3"))
    assert code == 2 and len(err) == 1 and "pass --resume" in err[0]
    code, stdout, _ = run(capsys, eval_argv(synth_root, out, "--proposals", "gt", "--limit", "5",
                                            "--resume", "--json"))
    summary = json.loads(stdout)
    assert code == 0 and summary["counts"]["samples"] == 5
    assert summary["counts"]["from_earlier_runs"] == 2
    assert len(read_csv(out / "samples.csv")) == 5
    code, _, err = run(capsys, eval_argv(synth_root, out, "--proposals", "gt", "--limit", "6",
                                         "--resume", "--alpha", "0.9"))
    assert code == 2 and len(err) == 1 and "made with other settings" in err[0]


def test_eval_ctrl_c_keeps_finished_images_and_says_how_to_resume(capsys, tmp_path, synth_root,
                                                                  monkeypatch):
    out = tmp_path / "eval"
    real = evaluation_module.Evaluator.image
    seen = []

    def image(self, image_id, samples):
        if seen:
            raise KeyboardInterrupt
        seen.append(image_id)
        return real(self, image_id, samples)

    monkeypatch.setattr(evaluation_module.Evaluator, "image", image)
    code, _, err = run(capsys, eval_argv(synth_root, out, "--proposals", "gt"))
    assert code == 130 and len(err) >= 1
    assert "Resume with: zsris-rt eval" in err[-1] and err[-1].endswith("--resume")
    first = read_csv(out / "samples.csv")
    assert first and {r["image_id"] for r in first} == {str(seen[0])}
    monkeypatch.setattr(evaluation_module.Evaluator, "image", real)
    code, stdout, _ = run(capsys, eval_argv(synth_root, out, "--proposals", "gt", "--resume",
                                            "--json"))
    assert code == 0 and json.loads(stdout)["counts"]["from_earlier_runs"] == len(first)


def test_eval_with_the_demo_proposer(capsys, tmp_path, synth_root):
    code, stdout, err = run(capsys, eval_argv(synth_root, tmp_path / "e", "--limit", "2",
                                              "--json"))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["proposals"] == "model" and summary["proposer_mode"]["name"] == "exact"
    assert summary["prompts_per_image"] == 256  # the demo pack's 16×16 grid
    assert summary["counts"]["samples"] == 2


@pytest.mark.parametrize("split, extra, message", [
    ("nope", [], "no split 'nope'"),
    ("val", ["--limit", "0"], "--limit must be at least 1"),
    ("val", ["--proposals", "gt", "--points-per-side", "4"], "do not apply with --proposals gt"),
])
def test_eval_bad_input(capsys, tmp_path, synth_root, split, extra, message):
    code, out, err = run(capsys, eval_argv(synth_root, tmp_path / "e", *extra, split=split))
    assert code == 2 and out == "" and len(err) == 1 and message in err[0], err


# --- check -----------------------------------------------------------------------------------

def test_check_of_exact_cpu_against_itself_agrees_fully(capsys):
    code, out, err = run(capsys, ["check", "--images", str(EXAMPLES / "scene-1.png"), "--texts",
                                  "the green circle", "the yellow square", "--json",
                                  "--graph-inputs", "4", "--min-agreement", "1.0"])
    assert code == 0, err
    report = json.loads(out)
    assert report["candidate"]["backend"] == "cpu" and report["candidate"]["precision"] == "fp32"
    assert set(report["graphs"]) >= {"clip_trunk", "clip_masked_head", "clip_text",
                                     "prop_encoder", "prop_decoder"}
    for graph, entry in report["graphs"].items():
        for output in entry["outputs"]:  # the same graphs on the same inputs: identical
            assert output["max_abs_diff"] == 0.0, graph
            assert output["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    queries = report["queries"]
    assert queries["queries"] == 2 and queries["argmax_agreement"] == 1.0
    assert queries["chosen_mask_iou"]["mean"] == 1.0
    assert queries["proposer"]["mask_recall"] == 1.0


def test_check_below_min_agreement_is_exit_1(capsys):
    code, out, err = run(capsys, ["check", "--images", str(EXAMPLES / "scene-2.png"), "--texts",
                                  "the big yellow star", "--graph-inputs", "1", "--local-top",
                                  "1", "--min-agreement", "1.01"])
    assert code == 1 and out.startswith("pack ")
    assert err[0].startswith("[") and "image 1/1" in err[0]  # the progress line
    (verdict,) = err[1:]
    assert verdict.startswith("zsris-rt check: argmax agreement ")
    assert verdict.endswith(" is below 101.0%")


def test_check_needs_texts_with_images(capsys):
    code, out, err = run(capsys, ["check", "--images", str(EXAMPLES / "scene-1.png")])
    assert (code, out) == (2, "") and err == ["zsris-rt check: error: --images needs --texts: "
                                              "the expressions to ask of them"]


# --- doctor ----------------------------------------------------------------------------------

def test_doctor_on_the_demo_pack(capsys, demo_pack):
    code, out, err = run(capsys, ["doctor", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["problems"] == []
    assert report["pack"]["path"] == str(demo_pack.root) and report["pack"]["ok"] is True
    assert report["pack"]["files"] == len(demo_pack.manifest.files)
    assert report["onnxruntime"]["loaded_providers"]["CPUExecutionProvider"] == "loads"
    assert report["maskops"]["implementation"]
    assert "torch" not in report["packages"]  # the runtime's own list, from the metadata
    assert set(report["packages"]) >= {"numpy", "onnxruntime", "spacy"}
    if "CUDAExecutionProvider" not in report["onnxruntime"]["available_providers"]:
        assert report["backends"]["auto_picks"] == "cpu"
    code, out, _ = run(capsys, ["doctor"])
    assert code == 0 and out.splitlines()[-1] == "ok: nothing missing"


def test_doctor_names_an_altered_file(capsys, demo_copy):
    (demo_copy / "clip_text.onnx").write_bytes(b"broken")
    code, out, _ = run(capsys, ["doctor", "--pack", str(demo_copy)])
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM: ")]
    assert code == 1 and len(problems) == 1 and "clip_text.onnx does not match" in problems[0]


def test_doctor_missing_package_is_a_problem(capsys, monkeypatch):
    import zsris_rt.diagnosis as diagnosis

    monkeypatch.setattr(diagnosis, "runtime_packages", lambda: ("numpy", "no-such-dist"))
    report = diagnosis.diagnose(None)
    assert report["problems"] == ["package no-such-dist is not installed"]
    assert report["packages"]["no-such-dist"] is None


# --- bench -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--runs", "0"], "--runs and --threads must be ≥ 1"),
    (["--modes", "int4"], "unknown mode part 'int4'"),
    (["--proposer-mode", "slow"], "proposer modes are exact, fast"),
    (["--clip-checkpoint", "x.pt"], "go with --pack"),
    (["--pack", "nowhere"], "nowhere: not a pack"),
])
def test_bench_bad_options_are_one_line(capsys, argv, message):
    code, out, err = run(capsys, ["bench", *argv])
    assert code == 2 and out == "" and len(err) == 1 and message in err[0], err


def test_bench_smoke_on_the_demo_pack_without_torch(capsys, tmp_path, demo_pack):
    """The runtime side of the bench, each measurement in its own process: none may load torch
    (the command exits 1 if one did), and the report renders from its JSON."""
    argv = ["bench", "--pack", str(demo_pack.root), "--no-reference", "--smoke",
            "--proposer-runs", "0", "--work", str(tmp_path / "work"), "--json",
            str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md"), "--threads", "1"]
    code, out, err = run(capsys, argv)
    assert code == 0, err[-3:]
    report = json.loads((tmp_path / "b.json").read_text())
    clip = report["runtime"]["clip"]
    assert clip["torch_in_sys_modules"] is False and "torch" not in clip["heavy_modules_loaded"]
    assert list(clip["ks"]) == ["2"] and report["reference"] == {}
    assert (tmp_path / "b.md").read_text() == render(report) == out.removesuffix("\n")
    assert out.startswith(f"## zsris-rt bench: pack {demo_pack.root}")
