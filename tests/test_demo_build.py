"""`zsris-export demo` end to end, at a few training steps: both models trained, exported by the
real exporters into a pack that loads and runs, the training recorded, checkpoints reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsris_rt.export import demo_proposer
from zsris_rt.export.cli import main as export_main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_demo_command_builds_a_pack_that_runs(tmp_path: Path, capsys, monkeypatch):
    import numpy as np

    from zsris_rt import Segmenter
    from zsris_rt.synthetic_refer import draw_scene

    out, work = tmp_path / "demo", tmp_path / "work"
    args = ["demo", "--out", str(out), "--work", str(work), "--clip-steps", "2",
            "--proposer-steps", "2"]
    assert export_main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest["provenance"]["training"]
    assert training["clip"]["steps"] == 2 and training["proposer"]["steps"] == 2
    assert manifest["clip"]["alpha"] == 0.5 and manifest["proposer"] is not None
    seg = Segmenter.from_pack(out)
    scene = draw_scene(np.random.default_rng(0))
    result = seg.segment(scene.pixels, "the red circle",
                         np.stack([o.mask for o in scene.objects]))
    assert 0 <= result.index < len(scene.objects)
    capsys.readouterr()
    # again into the same work folder: nothing is retrained
    assert export_main([*args, "--force"]) == 0
    assert capsys.readouterr().err.count("reuse") == 2
    # a proposer trained with another recipe is not reused
    monkeypatch.setattr(demo_proposer, "ENCODER_LR_SCALE", demo_proposer.ENCODER_LR_SCALE / 2)
    assert export_main([*args, "--force"]) == 0
    log = capsys.readouterr().err
    assert log.count("reuse") == 1 and "train  proposer" in log
    assert not list(tmp_path.glob(".demo.partial-*"))


def test_jobs_do_not_change_the_weights(tmp_path: Path):
    """The two models trained side by side (the default) or one after the other: same bytes."""
    for jobs in ("1", "2"):
        assert export_main(["demo", "--out", str(tmp_path / f"demo{jobs}"), "--work",
                            str(tmp_path / f"work{jobs}"), "--clip-steps", "2",
                            "--proposer-steps", "2", "--jobs", jobs]) == 0
    trained = sorted(p.relative_to(tmp_path / "work1") for p in (tmp_path / "work1").rglob("*")
                     if p.suffix in (".pt", ".safetensors"))
    assert {p.parts[0] for p in trained} == {"clip", "proposer"}
    for path in trained:
        assert (tmp_path / "work1" / path).read_bytes() == (tmp_path / "work2" / path).read_bytes()


@pytest.mark.parametrize("bad", [["--clip-steps", "0"], ["--threads", "0"], ["--jobs", "0"]])
def test_demo_command_refuses_bad_settings(bad: list[str], tmp_path: Path, capsys):
    assert export_main(["demo", "--out", str(tmp_path / "demo"), *bad]) == 2
    assert capsys.readouterr().err.startswith("zsris-export demo: error:")
    assert not (tmp_path / "demo").exists()


def test_demo_command_refuses_to_overwrite(tmp_path: Path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "keep.txt").write_text("mine")
    assert export_main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "demo" / "keep.txt").read_text() == "mine"
