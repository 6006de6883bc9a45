"""The demo proposer trainer: reproducible to the byte, and it writes an exportable Sam2Model (or
SamModel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zsris_rt.export import demo_proposer
from zsris_rt.export.choices import SAM_GEOMETRIES
from zsris_rt.export.demo_proposer import (
    DEMO_GEOMETRY,
    TOUCH_GAP,
    TOUCHING_WEIGHT,
    _prompt_weights,
    train_proposer,
)
from zsris_rt.export.sam_checkpoints import load_proposer
from zsris_rt.synthetic_refer import SceneObject, Shape, SyntheticScene


def test_same_seed_same_weights_and_loadable(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    first = train_proposer(tmp_path / "a", steps=3, batch=2, seed=5)
    train_proposer(tmp_path / "b", steps=3, batch=2, seed=5)
    assert torch.get_num_threads() == threads  # the trainer puts the thread count back
    weights = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert weights
    for name in weights:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["steps"] == 3 and first["parameters"] > 0
    assert set(first) >= {"seconds", "mask_loss", "iou_loss"}

    loaded = load_proposer(tmp_path / "a")
    assert loaded.family == "sam2" and loaded.fmt == "hf"
    assert type(loaded.model).__name__ == "Sam2Model"
    backbone = DEMO_GEOMETRY["vision_config"]["backbone_config"]
    assert loaded.model.config.vision_config.backbone_config.hidden_size == \
        backbone["hidden_size"]


def test_other_seed_other_weights(tmp_path: Path) -> None:
    train_proposer(tmp_path / "a", steps=1, batch=1, seed=0)
    train_proposer(tmp_path / "b", steps=1, batch=1, seed=1)
    name = next((tmp_path / "a").glob("*.safetensors")).name
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_the_sam_family_still_trains(tmp_path: Path) -> None:
    """SAM's architecture (the first demo proposer) stays a choice of the trainer."""
    geometry = SAM_GEOMETRIES["sam"]["tiny"]
    facts = train_proposer(tmp_path / "sam", steps=2, batch=1, geometry=geometry, family="sam")
    assert facts["steps"] == 2
    assert type(load_proposer(tmp_path / "sam").model).__name__ == "SamModel"


def _scene(*shapes: Shape) -> SyntheticScene:
    objects = [SceneObject(shape, shape.draw(120, 160), None) for shape in shapes]
    return SyntheticScene(np.zeros((120, 160, 3), np.uint8), objects, "plain")


def test_touching_shapes_of_one_colour_get_more_prompts() -> None:
    """Hard examples: a shape within TOUCH_GAP pixels of another of its colour is prompted
    (1 + TOUCHING_WEIGHT)× as often; touching another colour, or nearly touching, does not count."""
    left = Shape("circle", "yellow", "big", (40, 40), 15)
    right = Shape("circle", "yellow", "big", (40 + 30 + TOUCH_GAP, 40), 15)  # a 1-pixel gap
    red = Shape("square", "red", "big", (40, 64), 12)  # overlaps `left`, another colour
    far = Shape("circle", "yellow", "small", (140, 100), 8)
    weights = _prompt_weights(_scene(left, right, red, far))
    hard = 1 + TOUCHING_WEIGHT
    np.testing.assert_allclose(weights, np.array([hard, hard, 1, 1]) / (2 * hard + 2))

    apart = Shape("circle", "yellow", "big", (40 + 30 + TOUCH_GAP + 2, 40), 15)
    np.testing.assert_allclose(_prompt_weights(_scene(left, apart, red)), [1 / 3] * 3)


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(next(folder.glob("*.safetensors")))


def test_the_image_encoder_trains_after_its_frozen_steps(tmp_path: Path, monkeypatch) -> None:
    """Frozen for the first ENCODER_FROZEN of the steps (the decoder still learns), then trained;
    v1–v3 never trained it, because transformers' get_image_embeddings runs under no_grad."""
    monkeypatch.setattr(demo_proposer, "ENCODER_FROZEN", 0.5)
    train_proposer(tmp_path / "thawed", steps=2, batch=1, seed=3)  # step 0 frozen, step 1 not
    monkeypatch.setattr(demo_proposer, "ENCODER_FROZEN", 1.0)
    train_proposer(tmp_path / "frozen", steps=2, batch=1, seed=3)
    train_proposer(tmp_path / "one", steps=1, batch=1, seed=3)
    thawed, frozen, one = (_weights(tmp_path / name) for name in ("thawed", "frozen", "one"))
    encoder = [name for name in frozen if name.startswith("vision_encoder.")]
    assert len(encoder) > 50
    for name in encoder:  # frozen: still the initialisation after two steps
        np.testing.assert_array_equal(frozen[name], one[name])
    changed = [name for name in encoder if not np.array_equal(thawed[name], frozen[name])]
    assert len(changed) > 0.9 * len(encoder)
    decoder = "mask_decoder.iou_prediction_head.proj_out.weight"
    assert not np.array_equal(frozen[decoder], one[decoder])  # the decoder learnt meanwhile
