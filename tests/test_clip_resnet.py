"""The ResNet CLIP (SPEC §7's family) against OpenAI's own architecture code.

OpenAI's `clip/model.py` (the openai-clip package, loaded by file path: importing `clip` pulls in
torchvision) is an independent implementation of the same network: a random ResNet CLIP is built
here, its weights loaded into OpenAI's `CLIP`, and both towers compared; the loader must read the
geometry back from the weights alone, as it must for a real RN50 checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from zsris_rt.errors import ZsrisError
from zsris_rt.export.checkpoints import load_clip
from zsris_rt.export.clip_model import ClipConfig, ClipModel, random_init_


def openai_model_module() -> ModuleType:
    files = importlib.metadata.files("openai-clip") or []
    path = next(Path(str(f.locate())) for f in files if f.name == "model.py")
    spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_resnet(stages: tuple[int, ...] = (1, 2, 1, 1), width: int = 8, grid: int = 3,
                text_width: int = 64) -> ClipConfig:
    """OpenAI's rules: the pool has 32·width/64 heads, the text tower width/64."""
    return ClipConfig(embed_dim=32, image_size=32 * grid, patch_size=32, vision_width=width,
                      vision_layers=sum(stages), vision_heads=width * 32 // 64, context_length=77,
                      vocab_size=600, text_width=text_width, text_layers=2,
                      text_heads=text_width // 64, vision_stages=stages)


def source_model(cfg: ClipConfig, seed: int = 0) -> ClipModel:
    return random_init_(ClipModel(cfg), seed).eval()


def openai_twin(module: ModuleType, cfg: ClipConfig, state: dict) -> torch.nn.Module:
    model = module.CLIP(cfg.embed_dim, cfg.image_size, cfg.vision_stages, cfg.vision_width, None,
                        cfg.context_length, cfg.vocab_size, cfg.text_width, cfg.text_heads,
                        cfg.text_layers)
    model.load_state_dict(state)  # strict: every name and shape must match OpenAI's
    return model.eval()


def text_ids(cfg: ClipConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows with the end token (the largest id, as OpenAI's argmax pooling needs) placed."""
    ids = torch.randint(1, cfg.vocab_size - 2, (2, cfg.context_length), generator=gen)
    ids[:, 0] = cfg.vocab_size - 2
    ids[0, 7], ids[0, 8:] = cfg.vocab_size - 1, 0
    ids[1, -1] = cfg.vocab_size - 1
    return ids, torch.tensor([7, cfg.context_length - 1])


@pytest.mark.parametrize("stages,width,grid", [((1, 2, 1, 1), 8, 3), ((2, 1, 1, 2), 16, 2)])
def test_towers_equal_openai_clip(stages: tuple[int, ...], width: int, grid: int):
    cfg = tiny_resnet(stages, width, grid)
    ours = source_model(cfg, seed=sum(stages))
    theirs = openai_twin(openai_model_module(), cfg, ours.state_dict())
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size, generator=gen)
    ids, end = text_ids(cfg, gen)
    with torch.no_grad():
        want_image, want_text = theirs.encode_image(images), theirs.encode_text(ids)
        got_image, got_text = ours.encode_image(images), ours.encode_text(ids, end)
        maps = ours.visual.feature_map(images)
    assert maps.shape == (3, 32 * width, grid, grid)
    assert want_image.abs().max() > 1e-3  # not a degenerate (zeroed) network
    torch.testing.assert_close(got_image, want_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_text, want_text, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wrapped", [False, True])
def test_geometry_is_read_from_the_weights(tmp_path: Path, wrapped: bool):
    """An OpenAI state dict, and an open_clip training checkpoint of the same weights: the loader
    finds the family, stages, width, resolution and heads without being told."""
    cfg = tiny_resnet((1, 2, 1, 1), 8, 3)
    source = source_model(cfg, seed=3)
    state = source.state_dict()
    path = tmp_path / "RN-tiny.pt"
    if wrapped:
        state = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 2}
    torch.save(state, path)
    loaded = load_clip(path, activation="quick_gelu")
    assert loaded.source_format == ("open_clip" if wrapped else "openai")
    assert loaded.model.config == cfg
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_image(images), source.encode_image(images))


def test_a_resnet_without_four_stages_is_refused(tmp_path: Path):
    state = source_model(tiny_resnet()).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("visual.layer4.")}
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ZsrisError, match="four stages"):
        load_clip(tmp_path / "broken.pt")


def openai_layer4(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """OpenAI's ModifiedResNet up to layer 4 (its forward without the attention pool)."""
    visual = model.visual
    x = visual.relu1(visual.bn1(visual.conv1(images)))
    x = visual.relu2(visual.bn2(visual.conv2(x)))
    x = visual.avgpool(visual.relu3(visual.bn3(visual.conv3(x))))
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def test_reference_of_spec_7_against_openai_modules():
    """The §7 reference's three features, rebuilt from OpenAI's modules: f^G as OpenAI's own
    attention pool on the unit-length, masked layer-4 map; f^L of a whole-image mask as OpenAI's
    normalised `encode_image`; t as OpenAI's `encode_text`."""
    import numpy as np

    from zsris_rt.export.reference import GlobalLocalReference, bilinear

    cfg = tiny_resnet((1, 2, 1, 1), 8, 3)
    ours = source_model(cfg, seed=11)
    theirs = openai_twin(openai_model_module(), cfg, ours.state_dict())
    reference = GlobalLocalReference(ours)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    masks = np.zeros((3, cfg.image_size, cfg.image_size), dtype=bool)
    masks[0] = True
    masks[1, 10:50, 20:90] = True
    masks[2, 40, 40] = True
    xn = reference.normalise(image)
    m = torch.from_numpy(masks)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(openai_layer4(theirs, xn), dim=1)
        grids = bilinear(m.float()[:, None], (cfg.grid, cfg.grid))
        want_global = theirs.visual.attnpool(unit * grids)
        want_local = torch.nn.functional.normalize(theirs.encode_image(xn), dim=-1)
        ids, end = text_ids(cfg, torch.Generator().manual_seed(1))
        want_text = theirs.encode_text(ids)
    torch.testing.assert_close(reference.global_features(xn, m), want_global, rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(reference.local_features(xn, m[:1])[0], want_local[0], rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(reference.text_features(ids, end), want_text, rtol=1e-5,
                               atol=1e-5)


def test_torchscript_archive_loads(tmp_path: Path):
    """OpenAI ships its RN checkpoints as TorchScript archives (with the bookkeeping buffers
    `clip.load` deletes): the loader reads the state dict out of the archive."""
    from test_checkpoints import TorchScriptClip

    cfg = tiny_resnet((1, 1, 2, 1), 8, 2)
    source = random_init_(TorchScriptClip(cfg), seed=8).eval()
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=gen)
    ids, end = text_ids(cfg, gen)
    with torch.no_grad():
        traced = torch.jit.trace(source, (images[:1], ids[:1], end[:1]), check_trace=False)
    path = tmp_path / "RN-jit.pt"
    traced.save(str(path))
    loaded = load_clip(path)
    assert loaded.source_format == "openai" and loaded.model.config == cfg
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_image(images), source.encode_image(images))
        torch.testing.assert_close(loaded.model.encode_text(ids, end), source.encode_text(ids, end))
