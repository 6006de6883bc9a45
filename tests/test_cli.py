"""The command line: outputs, and a one-line error with nothing written for each bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import random_scene
from zsris_rt.commands.main import main


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("scene")
    image, masks = random_scene(np.random.default_rng(0), 90, 120, 5)
    cv2.imwrite(str(folder / "image.png"), image[:, :, ::-1])
    np.savez_compressed(folder / "masks.npz", masks=masks)
    return folder / "image.png", folder / "masks.npz", masks


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_and_files(capsys, tmp_path, pack_dir, scene_files):
    image, masks_file, masks = scene_files
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    code, stdout, _ = run_cli(capsys, image, "the red mug", "a dog", "--pack", pack_dir,
                              "--masks", masks_file, "--out", out, "--overlay", overlay, "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["backend"] == "cpu" and report["num_masks"] == 5
    assert len(report["results"]) == 2
    for number, record in enumerate(report["results"], start=1):
        assert len(record["scores"]) == 5
        assert record["index"] == int(np.argmax(record["scores"]))
        written = cv2.imread(str(tmp_path / f"mask-{number}.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(written > 127, masks[record["index"]])
        assert record["area"] == int(masks[record["index"]].sum())
        shown = cv2.imread(str(tmp_path / f"overlay-{number}.png"))
        assert shown.shape == (90, 120, 3)
        assert set(record["timings_ms"]) >= {"trunk", "masked_head", "crop_encoder", "text"}


def test_alpha_override_changes_scores(capsys, pack_dir, scene_files):
    image, masks_file, _ = scene_files
    args = [image, "the red mug", "--pack", pack_dir, "--masks", masks_file, "--json"]
    default = json.loads(run_cli(capsys, *args)[1])["results"][0]
    local = json.loads(run_cli(capsys, *args, "--alpha", "0")[1])["results"][0]
    assert default["alpha"] == 0.95 and local["alpha"] == 0.0
    assert default["scores"] != local["scores"]


def test_human_summary(capsys, pack_dir, scene_files):
    image, masks_file, _ = scene_files
    code, stdout, _ = run_cli(capsys, image, "the red mug", "--pack", pack_dir,
                              "--masks", masks_file)
    assert code == 0 and stdout.startswith('"the red mug": mask ')


def tampered_pack(pack_dir: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / "pack"
    shutil.copytree(pack_dir, copy)
    if how == "missing":
        (copy / "tokenizer.json").unlink()
    else:
        data = bytearray((copy / "clip_text.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (copy / "clip_text.onnx").write_bytes(bytes(data))
    return copy


def make_bad(case: str, tmp_path: Path, pack_dir: Path, scene_files) -> tuple[list, str]:
    image, masks_file, masks = scene_files
    pack = pack_dir
    text = "the red mug"
    if case == "missing image":
        image = tmp_path / "nope.jpg"
    elif case == "not an image":
        image = tmp_path / "junk.jpg"
        image.write_bytes(b"this is not a jpeg at all")
    elif case in ("empty text", "blank text"):
        text = "" if case == "empty text" else "  \t "
    elif case == "wrong mask size":
        masks_file = tmp_path / "small.npz"
        np.savez(masks_file, masks=masks[:, :-1])
    elif case == "zero masks":
        masks_file = tmp_path / "zero.npz"
        np.savez(masks_file, masks=np.zeros((0, 90, 120), bool))
    elif case == "all-false mask":
        masks_file = tmp_path / "empty.npz"
        bad = masks.copy()
        bad[2] = False
        np.savez(masks_file, masks=bad)
    elif case in ("missing pack file", "altered pack file"):
        pack = tampered_pack(pack_dir, tmp_path, case.split()[0])
    elif case == "no pack":
        pack = tmp_path / "no-pack"
    elif case == "bad alpha":
        return [image, text, "--pack", pack, "--masks", masks_file, "--alpha", "2"], "alpha"
    expected = {"missing image": "no such image", "not an image": "not a readable image",
                "empty text": "empty", "blank text": "empty", "wrong mask size": "89×120",
                "zero masks": "no masks", "all-false mask": "mask 2",
                "missing pack file": "missing file tokenizer.json",
                "altered pack file": "clip_text.onnx does not match", "no pack": "not a folder"}
    return [image, text, "--pack", pack, "--masks", masks_file], expected[case]


BAD_CASES = ["missing image", "not an image", "empty text", "blank text", "wrong mask size",
             "zero masks", "all-false mask", "missing pack file", "altered pack file", "no pack",
             "bad alpha"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_and_writes_nothing(case, capsys, tmp_path, pack_dir,
                                                     scene_files):
    argv, needle = make_bad(case, tmp_path, pack_dir, scene_files)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    code, stdout, stderr = run_cli(capsys, *argv, "--out", outputs / "m.png",
                                   "--overlay", outputs / "o.png", "--json")
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsris-rt: error: "), stderr
    assert needle.lower() in lines[0].lower(), lines[0]
    assert list(outputs.iterdir()) == []


def test_missing_output_folder_is_an_error(capsys, tmp_path, pack_dir, scene_files):
    image, masks_file, _ = scene_files
    code, _, stderr = run_cli(capsys, image, "a cat", "--pack", pack_dir, "--masks", masks_file,
                              "--out", tmp_path / "no" / "such" / "m.png")
    assert code == 2 and "does not exist" in stderr


def test_console_script_runs_without_torch(pack_dir, scene_files, tmp_path):
    """The installed entry point, in a fresh interpreter: no traceback, and torch never loaded."""
    image, masks_file, _ = scene_files
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['zsris-rt', *sys.argv[1:]]\n"
        "from zsris_rt.commands.main import main\n"
        "code = main()\n"
        "assert 'torch' not in sys.modules, 'the runtime imported torch'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(image), "the red mug", "--pack",
                           str(pack_dir), "--masks", str(masks_file), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["index"] >= 0
