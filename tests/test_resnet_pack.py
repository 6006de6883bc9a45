"""A ResNet CLIP end to end: `zsris-export clip` on an OpenAI-layout RN state dict, then the
runtime (ONNX Runtime, NumPy) against the PyTorch reference of SPEC §7 on random scenes,
degenerate masks included, and the exact pruning bound of §7's mixed normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_clip_resnet import source_model, tiny_resnet
from test_runtime_parity import EXPRESSIONS, degenerate_masks, reference_scores

from conftest import random_scene
from zsris_rt.export.cli import main as export_main


@pytest.fixture(scope="module")
def rn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_resnet((1, 2, 1, 1), width=8, grid=7, text_width=64)
    cfg = type(cfg)(**{**cfg.__dict__, "vocab_size": 49408})
    path = tmp_path_factory.mktemp("rn") / "RN-tiny.pt"
    torch.save(source_model(cfg, seed=21).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def rn_pack(rn_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pack = tmp_path_factory.mktemp("rn-pack") / "pack"
    assert export_main(["clip", str(rn_checkpoint), "--out", str(pack)]) == 0
    return pack


@pytest.fixture(scope="module")
def rn_segmenter(rn_pack: Path):
    from zsris_rt import Segmenter

    return Segmenter.from_pack(rn_pack)


@pytest.fixture(scope="module")
def rn_reference(rn_checkpoint: Path):
    from zsris_rt.export.checkpoints import load_clip
    from zsris_rt.export.reference import GlobalLocalReference

    return GlobalLocalReference(load_clip(rn_checkpoint).model)


def test_manifest_records_the_family_and_its_rules(rn_pack: Path):
    manifest = json.loads((rn_pack / "manifest.json").read_text())
    clip = manifest["clip"]
    assert (clip["family"], clip["score"], clip["masked_blocks"]) == ("resnet", "dot", 0)
    assert clip["image_size"] // clip["patch_size"] == 7  # the layer-4 map's grid
    assert clip["local_norm_bound"] == 1.0
    assert {"clip_trunk", "clip_masked_head", "clip_crop_head", "clip_text"} <= set(
        manifest["graphs"])
    assert manifest["graphs"]["clip_crop_head"]["crop_encoder_parity_max_rel_diff"] <= 1e-4


@pytest.mark.parametrize("seed,h,w,k", [(0, 120, 160, 5), (1, 224, 224, 3), (2, 97, 301, 8),
                                        (3, 33, 17, 2), (4, 1, 1, 1), (5, 300, 200, 6)])
def test_scores_match_the_spec_7_reference(rn_segmenter, rn_reference, seed, h, w, k):
    rng = np.random.default_rng(seed)
    image, masks = random_scene(rng, h, w, k)
    if h > 2 and w > 2:
        masks = np.concatenate([masks, degenerate_masks(h, w)])
    text = EXPRESSIONS[seed % len(EXPRESSIONS)]
    result = rn_segmenter.segment(image, text, masks)
    expected = reference_scores(rn_segmenter, rn_reference, image, masks, text)
    np.testing.assert_allclose(result.scores, expected.scores.numpy(), atol=1e-3, rtol=1e-5)
    assert result.index == expected.index


def test_each_branch_matches_the_reference(rn_segmenter, rn_reference):
    rng = np.random.default_rng(9)
    image, masks = random_scene(rng, 180, 240, 6)
    scene = rn_segmenter.encode_image(image, masks)
    xn = rn_reference.normalise(image)
    m = torch.from_numpy(masks)
    np.testing.assert_allclose(scene.global_features, rn_reference.global_features(xn, m).numpy(),
                               rtol=1e-4, atol=1e-4)
    local = rn_reference.local_features(xn, m).numpy()
    np.testing.assert_allclose(scene.local_features, local, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(scene.local_features, axis=1), 1.0, atol=1e-5)


def test_exact_pruning_keeps_every_answer(rn_pack: Path, rn_segmenter):
    """§7's bound (score ≤ 100·(α f^G·t + (1−α)‖t‖), f^L of unit length) on the exported graphs:
    no choice changes. (Random weights give masks nearly equal global scores, so here it seldom
    prunes; tests/runtime/test_library_core.py shows it pruning.)"""
    from zsris_rt import Segmenter

    pruned = Segmenter(rn_segmenter.pack, rn_segmenter.backend, local_bound=True)
    for seed in range(6):
        image, masks = random_scene(np.random.default_rng(100 + seed), 160, 200, 12)
        text = EXPRESSIONS[seed % len(EXPRESSIONS)]
        exact = rn_segmenter.segment(image, text, masks)
        result = pruned.segment(image, text, masks)
        assert result.index == exact.index
        assert result.scores[result.index] == exact.scores[exact.index]
        assert 1 <= result.local_computed <= 12


def test_commands_run_on_a_resnet_pack(rn_pack: Path, tmp_path: Path, capsys):
    """doctor describes the family, eval runs, quantize's defaults take the crop head too, and
    check compares the int8 pack with fp32 graph by graph, the crop head included."""
    import shutil

    from zsris_rt.commands.main import main as zsris_main
    from zsris_rt.export.quantize import QuantizeConfig, quantize_pack
    from zsris_rt.synthetic_refer import write_synthetic_refer

    assert zsris_main(["doctor", "--pack", str(rn_pack)]) == 0
    assert "ResNet" in capsys.readouterr().out
    data = write_synthetic_refer(tmp_path / "synth", "refcoco", images=8, seed=3).parent
    assert zsris_main(["eval", "--pack", str(rn_pack), "--data", str(data), "--dataset",
                       "refcoco", "--split", "val", "--images", str(data / "images"), "--out",
                       str(tmp_path / "eval"), "--proposals", "gt"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["counts"]["samples"] > 0 and summary["strict"]["mIoU"] is not None
    capsys.readouterr()
    pack = tmp_path / "rn-int8"
    shutil.copytree(rn_pack, pack)
    examples = Path(__file__).resolve().parent.parent / "examples"
    written = quantize_pack(QuantizeConfig(pack=pack, calib=[str(examples / "scene-1.png")],
                                           per_graph=8))
    assert set(written) == {"clip_trunk", "clip_masked_head", "clip_crop_head"}
    # dynamic quantisation leaves every Conv in float: the trunk's int8 must be the static one
    trunk = written["clip_trunk"]
    assert trunk["methods_compared"]["dynamic"]["quantised_share"] == 0.0
    assert trunk["method"] == "static" and trunk["methods_compared"]["static"][
        "quantised_share"] == 1.0
    assert zsris_main(["check", str(pack), "--precision", "int8", "--json",
                       "--min-agreement", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "clip_crop_head" in json.dumps(report)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_backend_runs_a_resnet_pack(rn_pack: Path, rn_segmenter, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, precision: str):
    """Against the fake TensorRT (tests/fake_tensorrt.py: the real engine-building code, graphs
    run by ONNX Runtime): every RN graph gets an engine with profiles on its batch and mask axes,
    the crop head included, and fp16 pins each L2 norm's layers to fp32."""
    from fake_tensorrt import install, read_plan_header

    from zsris_rt.backends.tensorrt import TrtBackend
    from zsris_rt.segmenter import Segmenter

    fake = install(monkeypatch, "10.3.0")
    trt = Segmenter(rn_segmenter.pack, TrtBackend(rn_segmenter.pack, cache_dir=tmp_path,
                                                  precision=precision))
    image, masks = random_scene(np.random.default_rng(5), 120, 160, 6)
    want = rn_segmenter.segment(image, "the red mug", masks)
    got = trt.segment(image, "the red mug", masks)
    assert got.index == want.index
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-3)
    assert {e["source"] for e in fake.executions} == {
        "clip_trunk.onnx", "clip_masked_head.onnx", "clip_crop_head.onnx", "clip_text.onnx"}
    if precision == "fp16":
        plans = {p.name.split("-fp16-")[0]: read_plan_header(p.read_bytes())
                 for p in tmp_path.rglob("*.plan")}
        for graph in ("clip_masked_head", "clip_crop_head"):
            pinned = {la["type"] for la in plans[graph]["layers"] if la["precision"] == "FLOAT"}
            assert "REDUCE" in pinned, graph


def test_random_resnet_checkpoints_export_and_bench(tmp_path: Path, capsys):
    """`zsris-export random-clip --geometry RN-tiny` writes an OpenAI state dict that exports, and
    `zsris-rt bench` runs the random RN pack against the PyTorch reference of §7."""
    from zsris_rt.commands.main import main as zsris_main
    from zsris_rt.export.checkpoints import load_clip

    assert export_main(["random-clip", "--geometry", "RN-tiny", "--out",
                        str(tmp_path / "ckpt")]) == 0
    loaded = load_clip(tmp_path / "ckpt" / "clip.pt")
    assert loaded.model.config.vision_stages == (1, 1, 1, 1)
    report = tmp_path / "bench.json"
    assert zsris_main(["bench", "--geometry", "RN-tiny", "--proposer", "none", "--ks", "2",
                       "--expressions", "1", "--runs", "1", "--warmup", "0", "--threads", "1",
                       "--wait-quiet", "0", "--work", str(tmp_path / "bench"), "--json",
                       str(report)]) == 0
    text = report.read_text()
    assert '"RN-tiny"' in text and '"reference"' in text
