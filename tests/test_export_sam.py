"""`zsris-export sam`: what it writes into a pack, and what it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zsris_rt.export.cli import main
from zsris_rt.pack import load_pack, sha256_file


def copy_pack(source: Path, tmp_path: Path, name: str = "pack") -> Path:
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


STATE = ["dec_src", "dec_pos", "dec_t2i_keys", "dec_t2i_values", "dec_i2t_queries"]


@pytest.mark.parametrize("family, resize, resize_filter, embeddings, state", [
    ("sam", "longest", "bicubic", ["image_embeddings"], STATE),
    ("sam2", "square", "bilinear", ["high_res_feats_0", "high_res_feats_1", "image_embeddings"],
     STATE + ["dec_skip_s1", "dec_skip_s0"]),
])
def test_manifest_records_the_proposer(proposer_packs, family, resize, resize_filter,
                                       embeddings, state):
    pack = load_pack(proposer_packs[family], verify=True)
    settings = pack.proposer
    assert (settings.family, settings.resize, settings.resize_filter) == (family, resize,
                                                                         resize_filter)
    assert list(settings.embeddings) == embeddings
    assert list(settings.decoder_state) == state
    assert settings.input_size == 256 and settings.low_res_size == 64
    assert settings.generator.points_per_side == 32 and settings.generator.pred_iou_thresh == 0.88
    manifest = json.loads((proposer_packs[family] / "manifest.json").read_text())
    for graph in ("prop_encoder", "prop_decoder_image", "prop_decoder"):
        entry = manifest["graphs"][graph]
        assert entry["parity_max_rel_diff"] < 1e-4
        for name in entry["files"]:
            assert manifest["files"][name] == sha256_file(proposer_packs[family] / name)
    assert pack.graph_names[-3:] == ("prop_encoder", "prop_decoder_image", "prop_decoder")
    image_half = manifest["graphs"]["prop_decoder_image"]
    assert [i["name"] for i in image_half["inputs"]] == embeddings
    assert [o["name"] for o in image_half["outputs"]] == state
    decoder = manifest["graphs"]["prop_decoder"]
    assert decoder["parity_vs_transformers"] < 1e-4
    assert [i["name"] for i in decoder["inputs"]] == state + ["points", "labels"]
    assert decoder["inputs"][-2]["shape"] == ["prompts", "points", 2]
    assert decoder["outputs"][0]["shape"] == ["prompts", 3, 64, 64]
    provenance = manifest["provenance"]["proposer"]
    assert provenance["checkpoint_format"] == "hf" and provenance["geometry"] == "tiny"
    assert len(provenance["checkpoint_sha256"]) == 64


def test_existing_proposer_needs_force(capsys, proposer_packs, sam_folders, tmp_path):
    pack = copy_pack(proposer_packs["sam"], tmp_path)
    before = snapshot(pack)
    assert main(["sam", str(sam_folders["sam2"]), "--pack", str(pack)]) == 2
    assert "already has a sam proposer" in capsys.readouterr().err
    assert snapshot(pack) == before
    assert main(["sam", str(sam_folders["sam2"]), "--pack", str(pack), "--force"]) == 0
    assert load_pack(pack, verify=True).proposer.family == "sam2"
    assert not list(pack.glob(".proposer.partial-*"))


@pytest.mark.parametrize("case", ["altered pack", "bad checkpoint", "no pack"])
def test_refusals_leave_the_pack_alone(capsys, pack_dir, sam_folders, tmp_path, case):
    pack = copy_pack(pack_dir, tmp_path)
    checkpoint = sam_folders["sam"]
    if case == "altered pack":
        data = bytearray((pack / "clip_trunk.onnx").read_bytes())
        data[len(data) // 3] ^= 0xFF
        (pack / "clip_trunk.onnx").write_bytes(bytes(data))
    elif case == "bad checkpoint":
        checkpoint = tmp_path / "junk.pth"
        checkpoint.write_bytes(b"not a checkpoint")
    else:
        pack = tmp_path / "nowhere"
    before = snapshot(pack) if pack.exists() else None
    assert main(["sam", str(checkpoint), "--pack", str(pack)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zsris-export sam: error: ")
    assert {"altered pack": "clip_trunk.onnx does not match", "bad checkpoint": "junk.pth",
            "no pack": "not a folder"}[case] in err[-1]
    if before is not None:
        assert snapshot(pack) == before
        assert not list(pack.glob(".proposer.partial-*"))


def test_original_checkpoint_through_the_cli(capsys, pack_dir, tmp_path):
    """segment-anything's .pth layout: written by `random-sam --format sam`, read back by the
    exporter, and the pack proposes masks."""
    from zsris_rt import Segmenter

    checkpoint = tmp_path / "sam_tiny.pth"
    assert main(["random-sam", "--out", str(checkpoint), "--format", "sam", "--seed", "5"]) == 0
    pack = copy_pack(pack_dir, tmp_path)
    assert main(["sam", str(checkpoint), "--pack", str(pack)]) == 0
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["provenance"]["proposer"]["checkpoint_format"] == "sam"
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    proposals = Segmenter.from_pack(pack).propose(
        image, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1)
    assert len(proposals) > 0
    assert main(["random-sam", "--out", str(tmp_path / "x.pth"), "--format", "sam",
                 "--family", "sam2"]) == 2
    assert main(["random-sam", "--out", str(tmp_path / "y"), "--geometry", "vit-q"]) == 2
    assert "no geometry 'vit-q'" in capsys.readouterr().err


def test_large_weights_go_to_one_side_file(monkeypatch, pack_dir, sam_folders, tmp_path):
    """Above protobuf's 2 GiB the weights must live beside the graph (SAM ViT-H): forced here
    with a zero threshold, the pack lists and hashes the side files and still runs."""
    from zsris_rt import Segmenter
    from zsris_rt.export import onnx_graph

    monkeypatch.setattr(onnx_graph, "EXTERNAL_DATA_BYTES", 0)
    pack = copy_pack(pack_dir, tmp_path)
    assert main(["sam", str(sam_folders["sam2"]), "--pack", str(pack)]) == 0
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["graphs"]["prop_encoder"]["files"] == ["prop_encoder.onnx",
                                                           "prop_encoder.onnx.data"]
    assert "prop_decoder.onnx.data" in manifest["files"]
    proposer_files = {p.name for p in pack.glob("prop_*")}
    assert proposer_files == {f"prop_{g}.onnx{data}" for g in ("encoder", "decoder_image",
                                                                 "decoder")
                              for data in ("", ".data")}
    image = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    seg = Segmenter.from_pack(pack)
    assert len(seg.propose(image, points_per_side=3, pred_iou_thresh=0,
                           stability_score_thresh=0, box_nms_thresh=1)) > 0
    data = bytearray((pack / "prop_encoder.onnx.data").read_bytes())
    data[100] ^= 0xFF
    (pack / "prop_encoder.onnx.data").write_bytes(bytes(data))
    with pytest.raises(Exception, match="prop_encoder.onnx.data does not match"):
        Segmenter.from_pack(pack)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_split_decoder_equals_transformers_forward(family):
    """The decoder's two halves, composed, against transformers' own forward: the per-image
    half and the projections moved onto the tokens change only the summation order."""
    import torch

    from zsris_rt.export.onnx_sam import EncoderGraph, transformers_decoder
    from zsris_rt.export.onnx_sam_decoder import DecoderImageGraph, PromptDecoderGraph
    from zsris_rt.export.random_checkpoint import random_sam

    model = random_sam(family, "tiny", seed=4)
    with torch.no_grad():
        embeddings = EncoderGraph(model)(torch.randn(1, 3, 256, 256))
        embeddings = embeddings if isinstance(embeddings, tuple) else (embeddings,)
        points = torch.rand(5, 2, 2) * 256
        labels = torch.tensor([[1, -1], [1, 0], [0, 1], [1, 1], [1, -1]])
        logits, iou = PromptDecoderGraph(model)(*DecoderImageGraph(model)(*embeddings), points,
                                                labels)
    want_logits, want_iou = transformers_decoder(model, dict(enumerate(embeddings)), points,
                                                 labels)
    assert logits.abs().max() > 1
    scale = float(want_logits.abs().max())
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(iou, want_iou, rtol=1e-5, atol=1e-5)


def test_one_graph_decoder_equals_transformers_forward():
    """The one-graph decoder (older packs; the benchmarks' baseline) broadcasts SAM 2's per-image
    maps instead of copying them per prompt; it must still be transformers' own forward."""
    import torch

    from zsris_rt.export.onnx_sam import EncoderGraph, OneGraphDecoder, transformers_decoder
    from zsris_rt.export.random_checkpoint import random_sam

    model = random_sam("sam2", "tiny", seed=4)
    with torch.no_grad():
        embeddings = EncoderGraph(model)(torch.randn(1, 3, 256, 256))
        points = torch.rand(5, 2, 2) * 256
        labels = torch.tensor([[1, -1], [1, 0], [0, 1], [1, 1], [1, -1]])
        logits, iou = OneGraphDecoder(model)(*embeddings, points, labels)
    want_logits, want_iou = transformers_decoder(model, dict(enumerate(embeddings)), points,
                                                 labels)
    assert logits.abs().max() > 1
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou, want_iou, rtol=1e-5, atol=1e-6)
