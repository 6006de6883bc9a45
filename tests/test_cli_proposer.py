"""The command line without --masks: the pack's proposer makes the candidates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import random_scene
from zsris_rt.commands.main import main

LOOSE = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1",
         "--points-per-side", "4"]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "image.png"
    image, _ = random_scene(np.random.default_rng(0), 90, 120, 1)
    cv2.imwrite(str(path), image[:, :, ::-1])
    return path


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_end_to_end_without_masks(capsys, tmp_path, proposer_packs, image_file, family):
    out = tmp_path / "mask.png"
    code, stdout, stderr = run_cli(capsys, image_file, "the red mug", "--pack",
                                   proposer_packs[family], "--out", out, "--json", *LOOSE,
                                   "--max-masks", "10")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["masks_from"] == "proposer" and report["num_masks"] == 10
    record = report["results"][0]
    assert set(record["proposal"]) == {"predicted_iou", "stability", "point"}
    assert {"prop_encoder", "prop_decoder", "prop_filter", "prop_nms"} <= set(record["timings_ms"])
    written = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert written.shape == (90, 120) and record["area"] == int((written > 127).sum())


def test_proposals_are_what_propose_returns(capsys, proposer_packs, image_file):
    from zsris_rt import Segmenter

    code, stdout, _ = run_cli(capsys, image_file, "a dog", "--pack", proposer_packs["sam"],
                              "--json", *LOOSE)
    assert code == 0
    record = json.loads(stdout)["results"][0]
    seg = Segmenter.from_pack(proposer_packs["sam"])
    proposals = seg.propose(image_file, pred_iou_thresh=0, stability_score_thresh=0,
                            box_nms_thresh=1, points_per_side=4)
    assert len(record["scores"]) == len(proposals)
    assert record["proposal"]["predicted_iou"] == pytest.approx(
        float(proposals.iou[record["index"]]))


def test_pack_without_proposer_needs_masks(capsys, pack_dir, image_file):
    code, stdout, stderr = run_cli(capsys, image_file, "a cat", "--pack", pack_dir)
    assert code == 2 and stdout == ""
    assert "has no proposer" in stderr and "zsris-export sam" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_no_mask_kept_exits_3(capsys, tmp_path, proposer_packs, image_file):
    out = tmp_path / "m.png"
    code, stdout, stderr = run_cli(capsys, image_file, "a cat", "--pack", proposer_packs["sam"],
                                   "--pred-iou-thresh", "1000", "--out", out)
    assert code == 3 and stdout == "" and not out.exists()
    assert "kept no mask" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--points-per-side", "0"], "points_per_side must be a positive integer"),
    (["--box-nms-thresh", "2"], "box_nms_thresh must lie in [0, 1]"),
    (["--max-masks", "0"], "max_masks"),
])
def test_bad_proposer_options(capsys, proposer_packs, image_file, argv, needle):
    code, _, stderr = run_cli(capsys, image_file, "a cat", "--pack", proposer_packs["sam"], *argv)
    assert code == 2 and needle in stderr


def test_proposer_options_with_masks_are_refused(capsys, tmp_path, proposer_packs, image_file):
    masks = tmp_path / "m.npz"
    np.savez(masks, masks=np.ones((1, 90, 120), bool))
    code, _, stderr = run_cli(capsys, image_file, "a cat", "--pack", proposer_packs["sam"],
                              "--masks", masks, "--points-per-side", "4")
    assert code == 2 and "--points-per-side" in stderr and "--masks" in stderr


def test_console_script_without_masks_runs_without_torch(proposer_packs, image_file):
    probe = (
        "import sys\n"
        "sys.argv = ['zsris-rt', *sys.argv[1:]]\n"
        "from zsris_rt.commands.main import main\n"
        "code = main()\n"
        "assert 'torch' not in sys.modules, 'the runtime imported torch'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(image_file), "the red mug",
                           "--pack", str(proposer_packs["sam2"]), "--json", *LOOSE],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["masks_from"] == "proposer"


def test_proposer_mode_is_reported_and_refused_with_masks(capsys, tmp_path, proposer_packs,
                                                         image_file):
    code, stdout, stderr = run_cli(capsys, image_file, "the red mug", "--pack",
                                   proposer_packs["sam2"], "--json", "--proposer-mode", "fast",
                                   *LOOSE)
    assert code == 0, stderr
    proposer = json.loads(stdout)["proposer"]
    assert proposer["name"] == "fast" and proposer["grid_points"] == 16
    assert 0 < proposer["prompts"] <= 16 and proposer["skip_covered"] is True
    code, stdout, _ = run_cli(capsys, image_file, "the red mug", "--pack",
                              proposer_packs["sam2"], "--json", *LOOSE)
    assert json.loads(stdout)["proposer"]["prompts"] == 16
    masks = tmp_path / "masks.npy"
    np.save(masks, np.ones((1, 90, 120), dtype=bool))
    code, _, stderr = run_cli(capsys, image_file, "the red mug", "--pack", proposer_packs["sam2"],
                              "--masks", masks, "--proposer-mode", "fast")
    assert code == 2 and "--proposer-mode) do not apply with --masks" in stderr
