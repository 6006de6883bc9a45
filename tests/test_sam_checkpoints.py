"""`load_proposer` / `save_original_sam`, checked against segment-anything's own model code.

The original checkpoint test builds an original `Sam` from segment-anything's classes, saves its
state dict and compares the transformers model the loader built from that file with it, output for
output: so a wrong key mapping or a wrong geometry guess fails here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch

from zsris_rt.errors import ZsrisError
from zsris_rt.export.random_checkpoint import (
    SAM_GEOMETRIES,
    random_sam,
    realistic_init_,
    write_random_sam,
)
from zsris_rt.export.sam_checkpoints import (
    geometry_name,
    load_proposer,
    sam_from_original,
    save_original_sam,
)

RTOL = 1e-4


@pytest.fixture(scope="module")
def modeling() -> types.ModuleType:
    """segment_anything's model classes without its package `__init__`, which imports
    torchvision (broken here): a bare package object stands in for it."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        assert spec is not None and spec.submodule_search_locations
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = package
    module = importlib.import_module("segment_anything.modeling")
    assert "torchvision" not in sys.modules
    return module


def original_tiny_sam(modeling: types.ModuleType, seed: int = 0) -> torch.nn.Module:
    """segment-anything's `Sam` in SAM_GEOMETRIES["sam"]["tiny"], at a scale whose outputs vary."""
    sam = modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            img_size=256, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
            out_chans=32, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=4, global_attn_indexes=(1,)),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256),
            mask_in_chans=16),
        mask_decoder=modeling.MaskDecoder(
            transformer_dim=32, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=32,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64,
                                                   num_heads=2)),
    )
    # Also draws rel_pos / pos_embed, which segment-anything starts at zero.
    return realistic_init_(sam, seed=seed).eval()


def rel_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-6))


@pytest.fixture(scope="module")
def original(modeling: types.ModuleType, tmp_path_factory: pytest.TempPathFactory):
    sam = original_tiny_sam(modeling)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def test_original_checkpoint_geometry(original) -> None:
    loaded = load_proposer(original[1])
    assert (loaded.family, loaded.fmt, loaded.geometry) == ("sam", "sam", "tiny")
    reference = random_sam("sam", "tiny").config
    assert loaded.model.config.vision_config.to_dict() == reference.vision_config.to_dict()
    assert (loaded.model.config.prompt_encoder_config.to_dict()
            == reference.prompt_encoder_config.to_dict())
    decoder = loaded.model.config.mask_decoder_config.to_dict()
    assert decoder.pop("layer_norm_eps") == 1e-5  # the original's nn.LayerNorm default
    assert {**decoder, "layer_norm_eps": 1e-6} == reference.mask_decoder_config.to_dict()
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


@torch.no_grad()
def test_original_checkpoint_matches_segment_anything(original) -> None:
    sam, path = original
    model = load_proposer(path).model
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 256, 256, generator=gen)
    expected = sam.image_encoder(images)
    got = model.get_image_embeddings(images)
    assert expected.std() > 0.1
    assert rel_diff(got, expected) < RTOL

    embedding = expected[:1]
    single = (torch.rand(5, 1, 2, generator=gen) * 256, torch.ones(5, 1, dtype=torch.long))
    negative = (torch.tensor([[[40.0, 200.0], [180.0, 30.5]]]), torch.tensor([[1, 0]]))
    for coords, labels in (single, negative):
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, iou = sam.mask_decoder(
            image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
        out = model(image_embeddings=embedding, input_points=coords[None],
                    input_labels=labels[None], multimask_output=True)
        assert masks.shape == (len(coords), 3, 64, 64)
        assert masks.std() > 0.5 and masks.flatten(0, 1).std(0).max() > 0.5  # not ~0, varied
        assert rel_diff(out.pred_masks[0], masks) < RTOL
        assert rel_diff(out.iou_scores[0], iou) < RTOL


def test_wrapped_original_checkpoint(original, tmp_path: Path) -> None:
    wrapped = tmp_path / "wrapped.pth"
    state = {**original[0].state_dict(), "pixel_mean": torch.zeros(3, 1, 1),
             "pixel_std": torch.ones(3, 1, 1)}  # in some released checkpoints
    torch.save({"model": state, "epoch": 3}, wrapped)
    assert load_proposer(wrapped, fmt="sam").geometry == "tiny"


@pytest.mark.parametrize("geometry,builder", [("vit-b", "vit_b"), ("vit-l", "vit_l"),
                                              ("vit-h", "vit_h")])
def test_released_geometries_read_from_weights(modeling: types.ModuleType, geometry: str,
                                               builder: str) -> None:
    from segment_anything.build_sam import sam_model_registry

    with torch.device("meta"):  # shapes only: no weights to allocate or initialise
        state = sam_model_registry[builder]().state_dict()
    config = sam_from_original(state).config
    assert geometry_name("sam", config) == geometry
    assert config.vision_config.num_attention_heads == {"vit-b": 12}.get(geometry, 16)


def test_save_original_round_trip(modeling: types.ModuleType, tmp_path: Path) -> None:
    source = random_sam("sam", "tiny", seed=3)
    path = save_original_sam(source, tmp_path / "tiny.pth")
    original_tiny_sam(modeling).load_state_dict(torch.load(path, weights_only=True))  # strict
    loaded = load_proposer(path)
    expected, got = source.state_dict(), loaded.model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_hf_folder(family: str, tmp_path: Path) -> None:
    folder = write_random_sam(tmp_path / family, family, "tiny", seed=2)
    loaded = load_proposer(folder)
    assert (loaded.family, loaded.fmt, loaded.geometry) == (family, "hf", "tiny")
    assert type(loaded.model).__name__ == {"sam": "SamModel", "sam2": "Sam2Model"}[family]
    expected, got = random_sam(family, "tiny", seed=2).state_dict(), loaded.model.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert load_proposer(folder, fmt="hf").family == family


def test_hf_default_geometry_names() -> None:
    from transformers import Sam2Config

    assert geometry_name("sam2", Sam2Config(**SAM_GEOMETRIES["sam2"]["hiera-tiny"])) == \
        "hiera-tiny"


def _write(kind: str, folder: Path, original: tuple) -> Path:
    path = folder / "ckpt.pth"
    state = original[0].state_dict()
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes(original[1].read_bytes()[:5000])
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "clip":
        torch.save({"visual.conv1.weight": torch.zeros(8, 3, 32, 32),
                    "visual.proj": torch.zeros(8, 4)}, path)
    elif kind == "key removed":
        del state["mask_decoder.transformer.layers.1.mlp.lin2.bias"]
        torch.save(state, path)
    elif kind == "wrong shape":
        state["mask_decoder.iou_prediction_head.layers.1.weight"] = torch.zeros(32, 31)
        torch.save(state, path)
    elif kind == "sam2 original":
        torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}}, path)
    elif kind == "clip folder":
        path = folder / "clip"
        path.mkdir()
        (path / "config.json").write_text('{"model_type": "clip"}')
    elif kind == "corrupt hf weights":
        path = write_random_sam(folder / "sam", "sam", "tiny")
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:3000])
    elif kind == "hf config deeper than weights":
        path = write_random_sam(folder / "sam", "sam", "tiny")
        config = json.loads((path / "config.json").read_text())
        config["vision_config"]["num_hidden_layers"] = 3
        (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("text", "not a readable PyTorch checkpoint"),
    ("truncated", "not a readable PyTorch checkpoint"),
    ("tensor", "not a state dict"),
    ("clip", "not an original SAM checkpoint (no image_encoder.patch_embed.proj.weight; keys "
             "start visual.conv1.weight"),
    ("key removed", "missing ['mask_decoder.transformer.layers.1.mlp.lin2.bias']"),
    ("wrong shape", "mask_decoder.iou_prediction_head.layers.1.weight has shape (32, 31), the "
                    "geometry the other weights imply needs (32, 32)"),
    ("sam2 original", "original SAM 2 checkpoint"),
    ("clip folder", "model_type 'clip' is not a supported proposer (supported: sam, sam2)"),
    ("corrupt hf weights", "cannot load the sam folder (SafetensorError"),
    ("hf config deeper than weights", "weights do not fit config.json (missing "
                                      "['vision_encoder.layers.2."),
])
def test_bad_checkpoints(kind: str, message: str, original, tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pth" if kind == "missing" else _write(kind, tmp_path, original)
    with pytest.raises(ZsrisError) as info:
        load_proposer(path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert kind == "missing" or text.startswith(str(path))


def test_bad_format_requests(original, tmp_path: Path) -> None:
    with pytest.raises(ZsrisError, match="unknown checkpoint format"):
        load_proposer(original[1], fmt="onnx")
    with pytest.raises(ZsrisError, match="expects a folder"):
        load_proposer(original[1], fmt="hf")
    with pytest.raises(ZsrisError, match="expects an original .pth file"):
        load_proposer(tmp_path, fmt="sam")
    with pytest.raises(ZsrisError, match="no config.json"):
        load_proposer(tmp_path)
