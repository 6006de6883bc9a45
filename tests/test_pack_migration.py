"""One image tower per pack: the crop encoder is the trunk then the masked head (all-ones grids);
packs that still hold `clip_image` load and run without it; `drop_duplicate_tower`
(export/pack_migration.py, `zsris-export migrate`) slims them in place."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from legacy_pack import make_two_tower_pack

from conftest import random_scene
from zsris_rt import Segmenter
from zsris_rt.errors import PackError, ZsrisError
from zsris_rt.export.pack_migration import drop_duplicate_tower
from zsris_rt.image import normalise
from zsris_rt.maskops import masked_crops, tight_boxes
from zsris_rt.pack import load_pack

TOWER = ["clip_image.onnx", "clip_image.int8.onnx"]
RTOL = 1e-4  # as the export-time parity checks


def _listing(root: Path) -> dict[str, str]:
    """Every file of a folder (hidden ones too) with its sha256, computed here."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max()) / float(np.abs(want).max())


@pytest.fixture(scope="module")
def legacy(pack_dir: Path, clip_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_two_tower_pack(pack_dir, clip_folder, tmp_path_factory.mktemp("old") / "two")


@pytest.fixture(scope="module")
def scenes() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(16)
    return [random_scene(rng, int(rng.integers(40, 90)), int(rng.integers(40, 90)),
                         int(rng.integers(2, 12))) for _ in range(3)]


def _crops(seg: Segmenter, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    s = seg.settings
    return masked_crops(normalise(image, s.mean, s.std), masks, tight_boxes(masks),
                        np.asarray(s.fill), s.image_size)


def _answers(seg: Segmenter, scenes, texts=("a red circle", "the big square on the left")):
    out = []
    for image, masks in scenes:
        scene = seg.encode_image(image, masks)
        out += [(r.index, r.scores, scene.local_features)
                for r in (seg.query(scene, t) for t in texts)]
    return out


def test_crop_encoder_is_the_plain_image_tower(pack_dir: Path, legacy: Path, clip_folder: Path,
                                               scenes) -> None:
    """f^L through trunk + head (all-ones grids) = PyTorch's `visual(crops)` = the old tower."""
    import torch

    from zsris_rt.export.checkpoints import load_clip

    visual = load_clip(clip_folder).model.eval().visual
    seg = Segmenter.from_pack(pack_dir, threads=1)
    tower = ort.InferenceSession(str(legacy / "clip_image.onnx"),
                                 providers=["CPUExecutionProvider"])
    image, masks = scenes[0]
    masks = np.concatenate([masks] * 3)  # K = 6..33: more crops than one engine profile opt
    crops = _crops(seg, image, masks)
    got = seg.encode_crops(crops)
    with torch.no_grad():
        want = visual(torch.from_numpy(crops)).numpy()
    old = tower.run(None, {"images": crops})[0]
    print(f"K={len(crops)}: vs PyTorch max abs {np.abs(got - want).max():.2e} rel "
          f"{_rel(got, want):.2e}; vs clip_image max abs {np.abs(got - old).max():.2e} rel "
          f"{_rel(got, old):.2e}")
    assert _rel(got, want) <= RTOL and _rel(got, old) <= RTOL
    assert np.abs(want[0] - want[1]).max() > 1e-3  # rows differ: no constant passes


def test_an_old_pack_loads_and_runs_without_its_duplicate_tower(pack_dir: Path, legacy: Path,
                                                                scenes) -> None:
    pack = load_pack(legacy, verify=True)  # its clip_image files still verify
    assert "clip_image" not in pack.graph_names and not pack.batched_head
    assert pack.duplicate_tower_files() == TOWER
    assert load_pack(pack_dir).duplicate_tower_files() == [] and load_pack(pack_dir).batched_head
    new = Segmenter.from_pack(pack_dir, threads=1)
    old = Segmenter.from_pack(legacy, threads=1)
    for (i, scores, local), (j, old_scores, old_local) in zip(_answers(new, scenes),
                                                              _answers(old, scenes), strict=True):
        assert i == j
        np.testing.assert_allclose(old_scores, scores, rtol=0, atol=1e-4)
        np.testing.assert_allclose(old_local, local, rtol=1e-5, atol=1e-6)
    int8 = Segmenter.from_pack(legacy, threads=1, precision="int8")
    _answers(int8, scenes[:1])
    for seg in (old, int8):
        assert "clip_image" not in seg.backend._sessions
        assert seg.backend.describe()["graph_precision"].keys() == {
            "clip_trunk", "clip_masked_head", "clip_text"}
    assert int8.backend.describe()["graph_precision"]["clip_masked_head"] == "int8"


def test_migration_drops_the_tower_and_keeps_the_answers(legacy: Path, tmp_path: Path,
                                                         scenes) -> None:
    copy = shutil.copytree(legacy, tmp_path / "pack")
    before = {p: _answers(Segmenter.from_pack(copy, threads=1, precision=p), scenes)
              for p in ("fp32", "int8")}
    said: list[str] = []
    assert drop_duplicate_tower(copy, said.append) == TOWER
    assert not [name for name in TOWER if (copy / name).exists()]
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]
    assert any("max relative difference" in line for line in said)
    pack = load_pack(copy, verify=True)
    assert pack.batched_head and pack.duplicate_tower_files() == []
    assert "clip_image" not in pack.manifest.graphs
    assert not [name for name in pack.manifest.files if name.startswith("clip_image")]
    head = pack.manifest.graphs["clip_masked_head"]
    assert head["inputs"][0]["shape"][0] == "batch"
    assert head["crop_encoder_parity_max_rel_diff"] <= RTOL
    (record,) = pack.manifest.provenance["migrations"]
    assert record["removed"] == TOWER
    assert record["widened"] == ["clip_masked_head.int8.onnx", "clip_masked_head.onnx"]
    assert pack.precisions() == ["fp32", "int8"]
    for precision, answers in before.items():
        after = _answers(Segmenter.from_pack(copy, threads=1, precision=precision), scenes)
        for (i, scores, local), (j, new_scores, new_local) in zip(answers, after, strict=True):
            assert i == j
            if precision == "fp32":  # int8: the head now quantises a batch of crops per call
                np.testing.assert_allclose(new_scores, scores, rtol=0, atol=1e-4)
                np.testing.assert_allclose(new_local, local, rtol=1e-5, atol=1e-6)
    listing = _listing(copy)
    assert drop_duplicate_tower(copy) == []  # twice is harmless: nothing left to do
    assert _listing(copy) == listing


def test_a_pack_that_holds_one_tower_is_left_untouched(pack_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(pack_dir, tmp_path / "pack")
    listing = _listing(copy)
    assert drop_duplicate_tower(copy) == [] and _listing(copy) == listing


def test_migration_refusals_are_one_line_and_leave_the_pack_unchanged(
        pack_dir: Path, legacy: Path, clip_folder: Path, tmp_path: Path) -> None:
    from zsris_rt.export.random_checkpoint import write_random_clip

    with pytest.raises(PackError, match="not a folder") as absent:
        drop_duplicate_tower(tmp_path / "nowhere")
    tampered = shutil.copytree(legacy, tmp_path / "tampered")
    with open(tampered / "clip_image.onnx", "ab") as handle:
        handle.write(b"\0")
    other = write_random_clip(tmp_path / "other-clip", "tiny", seed=7)
    impostor = make_two_tower_pack(pack_dir, clip_folder, tmp_path / "impostor", int8=False,
                                   tower_checkpoint=other)
    errors = [absent.value]
    for pack, error, words in ((tampered, PackError, "clip_image.onnx does not match its sha256"),
                               (impostor, ZsrisError, "disagrees with clip_image")):
        listing = _listing(pack)
        with pytest.raises(error, match=words) as caught:
            drop_duplicate_tower(pack)
        assert _listing(pack) == listing
        errors.append(caught.value)
    assert all("\n" not in str(e) for e in errors)


def test_a_migration_that_fails_late_leaves_the_pack_as_it_was(
        legacy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The widened head is in place (its old file under a backup name) when the manifest is
    written: a failure there puts the old head back and deletes nothing."""
    import zsris_rt.export.pack_migration as migration

    copy = shutil.copytree(legacy, tmp_path / "pack")
    listing = _listing(copy)

    def failing(root: Path, manifest) -> None:
        head = "clip_masked_head.onnx"
        assert (root / head).read_bytes() != (legacy / head).read_bytes()  # widened, in place
        raise OSError("disk full")

    monkeypatch.setattr(migration, "write_manifest", failing)
    with pytest.raises(OSError, match="disk full"):
        drop_duplicate_tower(copy)
    assert _listing(copy) == listing
    load_pack(copy, verify=True)


def test_migrate_command_is_torch_free(legacy: Path, tmp_path: Path) -> None:
    """`zsris-export migrate PACK` through the export CLI's entry point, without torch."""
    copy = shutil.copytree(legacy, tmp_path / "pack")
    probe = ("import sys\n"
             "from zsris_rt.export.cli import main\n"
             "code = main(sys.argv[1:])\n"
             "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
             "assert not loaded, loaded\n"
             "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", probe, "migrate", str(copy)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"removed {', '.join(TOWER)}" in done.stderr
    assert not [name for name in TOWER if (copy / name).exists()]
    missing = subprocess.run([sys.executable, "-c", probe, "migrate", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("zsris-export migrate: error:")


def test_doctor_says_an_old_pack_can_be_slimmed(pack_dir: Path, legacy: Path) -> None:
    from zsris_rt.diagnosis import diagnose

    slim = diagnose(legacy)["pack"]["slim"]
    assert "clip_image.onnx, clip_image.int8.onnx" in slim
    assert f"zsris-export migrate {legacy}" in slim
    report = diagnose(pack_dir)
    assert "slim" not in report["pack"] and report["pack"]["ok"]
    assert not [p for p in report["problems"] if "clip_image" in p]


def test_manifest_io_of_the_head_declares_both_batches(pack_dir: Path) -> None:
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    head = manifest["graphs"]["clip_masked_head"]
    shapes = {spec["name"]: spec["shape"] for spec in head["inputs"] + head["outputs"]}
    assert shapes["tokens"][0] == "batch" and shapes["grid_masks"][0] == "masks"
    assert shapes["features"][0] == "masks"
    assert head["crop_encoder_parity_max_rel_diff"] <= RTOL
    assert set(manifest["graphs"]) == {"clip_trunk", "clip_masked_head", "clip_text"}
