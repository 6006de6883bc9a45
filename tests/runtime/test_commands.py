"""The main command (zsris_rt.commands: main, segment, options, exit_codes, __main__) on the demo
pack and on a fake backend: its outputs checked against independent decoders (pycocotools for
the RLE, OpenCV for the PNGs) and the true masks, and the exit-status policy: 0; 2 for bad input
with exactly one line on stderr and nothing written; 3 when the proposer keeps no mask; 130 on
Ctrl-C; 1 on an internal error, with no traceback unless ZSRIS_DEBUG=1."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

import zsris_rt.segmenter as segmenter_module
from zsris_rt.commands import bench, check, doctor, exit_codes, segment, synth
from zsris_rt.commands import eval as eval_command
from zsris_rt.commands.main import COMMANDS, main
from zsris_rt.commands.options import PROPOSER_OPTIONS, proposer_overrides
from zsris_rt.errors import MaskError, NoMaskError, ZsrisError
from zsris_rt.pack import GeneratorDefaults

from .conftest import EXAMPLES
from .fake_backend import ClipWorld, FakeBackend, ProposerWorld

SCENE_1, SCENE_2 = str(EXAMPLES / "scene-1.png"), str(EXAMPLES / "scene-2.png")
MASKS_1 = str(EXAMPLES / "scene-1_masks.npz")


def run(capsys, argv: list[str]) -> tuple[int, str, list[str]]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_json_rle_png_and_overlay_agree(capsys, tmp_path, scene_masks):
    mask_png, overlay_png = tmp_path / "mask.png", tmp_path / "overlay.png"
    code, out, err = run(capsys, [SCENE_2, "the big yellow star", "--json", "--out",
                                  str(mask_png), "--overlay", str(overlay_png)])
    assert code == 0 and err == []
    report = json.loads(out)
    (record,) = report["results"]
    assert report["image_size"] == [240, 320] and report["masks_from"] == "proposer"
    assert report["backend"] == "cpu" and report["maskops"]
    generator = GeneratorDefaults(**json.loads(
        (EXAMPLES.parent / "engines" / "demo" / "manifest.json").read_text())["proposer"]
        ["generator"])
    assert report["proposer"]["name"] == "exact"
    assert report["proposer"]["prompts"] == report["proposer"]["grid_points"] == \
        generator.points_per_side ** 2
    rle = dict(record["rle"], counts=record["rle"]["counts"].encode())
    mask = coco_mask.decode(rle).astype(bool)  # pycocotools, not the runtime's decoder
    assert mask.shape == (240, 320)
    png = cv2.imread(str(mask_png), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png, np.where(mask, 255, 0))
    ys, xs = np.nonzero(mask)
    assert record["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert record["area"] == mask.sum()
    assert record["centroid"] == pytest.approx([xs.mean(), ys.mean()])
    assert len(record["scores"]) == record["num_masks"] == report["num_masks"]
    assert record["index"] == int(np.argmax(record["scores"]))
    assert record["mask_file"] == str(mask_png) and record["overlay_file"] == str(overlay_png)
    assert set(record["proposal"]) == {"predicted_iou", "stability", "point"}
    truth = scene_masks["scene-2"][1]  # the big yellow star
    assert (mask & truth).sum() / (mask | truth).sum() == pytest.approx(0.78, abs=0.03)
    overlay = cv2.imread(str(overlay_png))[:, :, ::-1]
    image = cv2.imread(SCENE_2)[:, :, ::-1]
    assert overlay.shape == image.shape
    x0, y0, x1, y1 = record["box"]
    far = np.ones(mask.shape, dtype=bool)
    far[max(y0 - 30, 0):y1 + 30, max(x0 - 5, 0):x1 + 200] = False  # box, label and contour
    np.testing.assert_array_equal(overlay[far], image[far])
    assert (overlay[mask] != image[mask]).any(axis=1).mean() > 0.9  # the mask is tinted


def test_several_expressions_given_masks_and_numbered_files(capsys, tmp_path):
    code, out, err = run(capsys, [SCENE_1, "the green circle", "the yellow square", "--masks",
                                  MASKS_1, "--json", "--out", str(tmp_path / "m.png")])
    assert code == 0 and err == []
    report = json.loads(out)
    assert report["masks_from"] == MASKS_1 and "proposer" not in report
    assert [r["index"] for r in report["results"]] == [0, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1.png", "m-2.png"]
    assert all("proposal" not in r for r in report["results"])


def test_human_summary_line(capsys):
    code, out, _ = run(capsys, [SCENE_1, "the green circle", "--masks", MASKS_1])
    truth = np.load(MASKS_1)["masks"][0]
    ys, xs = np.nonzero(truth)
    assert code == 0
    assert out.startswith('"the green circle": mask 0 of 5, score ')
    assert f"box [{xs.min()}, {ys.min()}, {xs.max() + 1}, {ys.max() + 1}), " \
           f"area {truth.sum()} px, noun phrase \"the green circle\"" in out


def _bad_masks(tmp_path: Path) -> str:
    path = tmp_path / "small.npz"
    np.savez(path, masks=np.ones((2, 10, 10), dtype=bool))
    return str(path)


def _altered_pack(tmp_path: Path, demo_copy: Path) -> str:
    tokenizer = demo_copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes() + b" ")
    return str(demo_copy)


BAD_INPUT = {
    "missing image": (lambda t, p: [str(t / "nope.png"), "x"], "no such image file"),
    "corrupt image": (lambda t, p: [_text_file(t / "bad.png"), "x"], "not a readable image"),
    "empty expression": (lambda t, p: [SCENE_1, "  "], "the expression is empty"),
    "masks of another size": (lambda t, p: [SCENE_1, "x", "--masks", _bad_masks(t)],
                              "are 10×10 (H×W) but the image is 240×320"),
    "unknown mask file": (lambda t, p: [SCENE_1, "x", "--masks", str(t / "m.txt")],
                          "unknown mask file type"),
    "missing output folder": (lambda t, p: [SCENE_1, "x", "--out", str(t / "no" / "m.png")],
                              "does not exist"),
    "missing pack": (lambda t, p: [SCENE_1, "x", "--pack", str(t / "nopack")], "not a folder"),
    "altered pack": (lambda t, p: [SCENE_1, "x", "--pack", _altered_pack(t, p)],
                     "tokenizer.json does not match its sha256"),
    "alpha out of range": (lambda t, p: [SCENE_1, "x", "--alpha", "2"], "alpha must lie in"),
    "proposer option with masks": (lambda t, p: [SCENE_1, "x", "--masks", MASKS_1,
                                                 "--proposer-mode", "fast"],
                                   "do not apply with --masks"),
    "bad grid": (lambda t, p: [SCENE_1, "x", "--points-per-side", "0"],
                 "points_per_side must be a positive integer"),
    "no cuda here": (lambda t, p: [SCENE_1, "x", "--backend", "cuda"],
                     "has no CUDAExecutionProvider"),
    "fp16 on the cpu": (lambda t, p: [SCENE_1, "x", "--precision", "fp16"],
                        "fp16 runs on --backend trt or ort-trt"),
}


def _text_file(path: Path) -> str:
    path.write_text("not a png")
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, capsys, tmp_path, demo_copy,
                                                         monkeypatch):
    if case == "no cuda here":
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this onnxruntime has the CUDA provider")
    argv, message = BAD_INPUT[case]
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    argv = argv(tmp_path, demo_copy)
    if "--out" not in argv:
        argv += ["--out", str(out_dir / "mask.png"), "--overlay", str(out_dir / "over.png")]
    code, out, err = run(capsys, argv)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("zsris-rt: error: ") and message in err[0], err
    assert list(out_dir.iterdir()) == []


def test_no_mask_kept_is_exit_3(capsys, tmp_path):
    # Stability is a ratio of nested areas, never above 1: this threshold keeps nothing.
    code, out, err = run(capsys, [SCENE_1, "the green circle", "--stability-score-thresh",
                                  "1.01", "--out", str(tmp_path / "m.png")])
    assert code == 3 and out == "" and len(err) == 1
    assert err[0].startswith("zsris-rt: the proposer kept no mask")
    assert list(tmp_path.iterdir()) == []


def test_default_pack_comes_from_zsris_pack(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ZSRIS_PACK", str(tmp_path / "elsewhere"))
    code, _, err = run(capsys, [SCENE_1, "x"])
    assert code == 2 and err == [f"zsris-rt: error: pack {tmp_path / 'elsewhere'}: not a folder"]


# --- the exit-status policy on a fake backend: failures inside a graph -----------------------

@pytest.fixture
def fake_backend(monkeypatch, demo_pack):
    """`zsris-rt` with its segmenter bound to a fake backend: the demo pack's settings, a
    256×256 scene with two boxes for the proposer, constant CLIP features."""
    proposer = demo_pack.proposer
    world = ProposerWorld(proposer, 256, [(16, 16, 112, 112), (144, 144, 240, 224)], [0.9, 0.8])
    clip = ClipWorld(demo_pack.clip, np.ones((49, 4), np.float32), np.ones((49, 4), np.float32),
                     lambda ids: np.ones(4))

    def trunk(inputs):
        return [np.zeros((len(inputs["image"]), 50, 64), np.float32)]

    def head(inputs):
        return [np.ones((len(inputs["grid_masks"]), 4), np.float32)]

    backend = FakeBackend({**world.handlers(), "clip_trunk": trunk, "clip_masked_head": head,
                           "clip_text": clip.text_tower})
    monkeypatch.setattr(segmenter_module, "create_backend", lambda *a, **k: backend)
    return backend


@pytest.fixture
def square_image(tmp_path) -> str:
    path = tmp_path / "square.png"
    cv2.imwrite(str(path), np.full((256, 256, 3), 128, dtype=np.uint8))
    return str(path)


def test_the_command_on_the_fake_backend(capsys, fake_backend, square_image):
    code, out, err = run(capsys, [square_image, "the box", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["backend"] == "fake" and report["fake"] is True and report["num_masks"] == 2
    assert fake_backend.prepared == ["prop_decoder"]  # preload=False: one small graph first
    assert fake_backend.graphs()[:2] == ["prop_encoder", "prop_decoder_image"]
    assert fake_backend.graphs()[-1] == "clip_text"


def test_an_internal_error_is_one_line_exit_1(capsys, fake_backend, square_image, monkeypatch):
    fake_backend.failures["clip_text"] = RuntimeError("tensor mismatch")
    monkeypatch.delenv("ZSRIS_DEBUG", raising=False)
    code, out, err = run(capsys, [square_image, "the box"])
    assert code == 1 and out == ""
    assert err == ["zsris-rt: internal error: RuntimeError: tensor mismatch (a bug; "
                   "ZSRIS_DEBUG=1 shows the traceback)"]
    monkeypatch.setenv("ZSRIS_DEBUG", "0")  # "0" is off
    assert main([square_image, "the box"]) == 1
    monkeypatch.setenv("ZSRIS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="tensor mismatch"):
        main([square_image, "the box"])


def test_ctrl_c_is_exit_130(capsys, fake_backend, square_image, tmp_path):
    fake_backend.failures["prop_encoder"] = KeyboardInterrupt()
    code, out, err = run(capsys, [square_image, "the box", "--out", str(tmp_path / "m.png")])
    assert (code, out, err) == (130, "", ["zsris-rt: interrupted"])
    assert not (tmp_path / "m.png").exists()


def test_an_os_error_is_bad_input(capsys, fake_backend, square_image):
    fake_backend.failures["prop_encoder"] = OSError(errno.ENOSPC, "No space left on device",
                                                    "/scratch")
    code, _, err = run(capsys, [square_image, "the box"])
    assert (code, err) == (2, ["zsris-rt: error: No space left on device: /scratch"])


def test_no_mask_on_the_fake_is_exit_3(capsys, fake_backend, square_image):
    fake_backend.handlers["prop_decoder"] = _background_only(fake_backend.handlers["prop_decoder"])
    code, _, err = run(capsys, [square_image, "the box"])
    assert code == 3 and len(err) == 1


def _background_only(decoder):
    def decode(inputs):
        logits, iou = decoder(inputs)
        return [logits, np.zeros_like(iou)]  # nothing passes pred_iou_thresh
    return decode


@pytest.mark.parametrize("raised, code, line", [
    (NoMaskError("none kept"), 3, "p: none kept"),
    (MaskError("bad masks"), 2, "p: error: bad masks"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "a.png"), 2,
     "p: error: No such file or directory: a.png"),
    (ValueError(""), 1, "p: internal error: ValueError: ValueError (a bug; ZSRIS_DEBUG=1 shows "
                        "the traceback)"),
])
def test_run_command_maps_each_failure(capsys, monkeypatch, raised, code, line):
    monkeypatch.delenv("ZSRIS_DEBUG", raising=False)

    def body():
        raise raised

    assert exit_codes.run_command("p", body) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_run_command_on_interrupt_hook(capsys):
    said = []

    def body():
        raise KeyboardInterrupt

    assert exit_codes.run_command("p", body, lambda: said.append("resume hint")) == 130
    assert said == ["resume hint"] and capsys.readouterr().err == ""
    assert exit_codes.run_command("p", lambda: 0) == exit_codes.OK == 0


def test_traceback_only_with_zsris_debug():
    probe = ("import sys\nfrom zsris_rt.commands.exit_codes import run_command\n"
             "sys.exit(run_command('probe', lambda: 1 / 0))\n")
    env = {k: v for k, v in os.environ.items() if k != "ZSRIS_DEBUG"}
    quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env=env, timeout=60)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.splitlines() == ["probe: internal error: ZeroDivisionError: division by "
                                         "zero (a bug; ZSRIS_DEBUG=1 shows the traceback)"]
    loud = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**env, "ZSRIS_DEBUG": "1"}, timeout=60)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ZeroDivisionError" in \
        loud.stderr


def test_console_script_bad_input_is_exactly_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "zsris_rt.commands", str(tmp_path / "x.png"),
                           "the cup"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"zsris-rt: error: {tmp_path / 'x.png'}: no such image "
                                        "file"]


def test_module_entry_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "zsris_rt.commands", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for name in COMMANDS:
        assert f"zsris-rt {name}" in done.stdout
    assert "Exit status: 0 on success, 2 on bad input" in done.stdout


def test_each_command_module_parses_its_own_options(capsys):
    for module, prog in ((bench, "zsris-rt bench"), (check, "zsris-rt check"),
                         (doctor, "zsris-rt doctor"), (eval_command, "zsris-rt eval"),
                         (synth, "zsris-rt synth")):
        assert module.build_parser().prog == prog
    assert segment.build_parser({"x": "y"}).prog == "zsris-rt"
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: zsris-rt {name}")


def test_proposer_options_match_the_generator_and_are_refused_with_masks():
    names = [name for name, _, _ in PROPOSER_OPTIONS]
    assert names == [f.name for f in dataclasses.fields(GeneratorDefaults)]

    class Args:
        proposer_mode = None
        points_per_side = 8
    for name in names[1:]:
        setattr(Args, name, None)
    assert proposer_overrides(Args, masks_given=False, given_as="--masks") == \
        {"points_per_side": 8}
    with pytest.raises(ZsrisError, match=r"\(--points-per-side\) do not apply with --masks"):
        proposer_overrides(Args, masks_given=True, given_as="--masks")
