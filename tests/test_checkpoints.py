"""`zsris-export clip` from each checkpoint format, built from random weights in the test.

For every format the exported crop encoder (`clip_trunk.onnx` on the images, then
`clip_masked_head.onnx` with all-ones grids: the image tower, held once) and `clip_text.onnx` are
run with ONNX Runtime and compared with the *source* model (the one whose weights were written),
not with the model the exporter loaded: so the test fails if the weights did not come through the
converter.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from zsris_rt.export.checkpoints import load_clip
from zsris_rt.export.cli import main
from zsris_rt.export.clip_model import ClipConfig, ClipModel, random_init_

GRAPHS = ("clip_trunk", "clip_masked_head", "clip_text")
START, END = 49406, 49407
RTOL = 1e-4


def tiny_config(activation: str = "quick_gelu", vision_layers: int = 4,
                text_layers: int = 2) -> ClipConfig:
    # OpenAI's geometry rule reads heads as width / 64, so width 64 has one head.
    return ClipConfig(embed_dim=48, image_size=224, patch_size=32, vision_width=64,
                      vision_layers=vision_layers, vision_heads=1, context_length=77,
                      vocab_size=49408, text_width=64, text_layers=text_layers, text_heads=1,
                      activation=activation)


def source_model(cfg: ClipConfig, seed: int) -> ClipModel:
    return random_init_(ClipModel(cfg), seed).eval()


class TorchScriptClip(ClipModel):
    """What OpenAI ships: a TorchScript CLIP with OpenAI parameter names and the three
    bookkeeping entries `clip.load` deletes from the state dict."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("input_resolution", torch.tensor(cfg.image_size))
        self.register_buffer("context_length", torch.tensor(cfg.context_length))
        self.register_buffer("vocab_size", torch.tensor(cfg.vocab_size))

    def forward(self, images: torch.Tensor, ids: torch.Tensor,
                end_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(ids, end_index)


def sample_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 224, 224, generator=gen)
    lengths = [1, 9, 75]
    ids = torch.zeros(len(lengths), 77, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = START
        ids[row, 1:n + 1] = torch.randint(1, START, (n,), generator=gen)
        ids[row, n + 1] = END
    return images, ids, torch.tensor([n + 1 for n in lengths])


def rel_diff(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float(np.abs(got - expected).max()) / max(float(np.abs(expected).max()), 1e-6)


def onnx_features(pack: Path) -> tuple[np.ndarray, np.ndarray]:
    images, ids, end = sample_inputs()
    trunk, head, text = (ort.InferenceSession(str(pack / f"{graph}.onnx"),
                                              providers=["CPUExecutionProvider"])
                         for graph in ("clip_trunk", "clip_masked_head", "clip_text"))
    (end_input,) = [i for i in text.get_inputs() if i.name == "end_index"]
    assert end_input.type == "tensor(int64)"  # SPEC §5.4: an integer index, never a float
    tokens = trunk.run(None, {"image": images.numpy()})[0]
    grid = 224 // 32
    f_image = head.run(None, {"tokens": tokens, "grid_masks": np.ones(
        (len(images), grid, grid), dtype=np.float32)})[0]
    f_text = text.run(None, {"ids": ids.numpy(), "end_index": end.numpy()})[0]
    return f_image, f_text


def torch_features(model: ClipModel) -> tuple[np.ndarray, np.ndarray]:
    images, ids, end = sample_inputs()
    with torch.no_grad():
        return model.encode_image(images).numpy(), model.encode_text(ids, end).numpy()


def export(args: list[str]) -> int:
    return main(["clip", *args])


def check_pack(pack: Path, expected_format: str, activation: str, embed_dim: int = 48) -> None:
    manifest = json.loads((pack / "manifest.json").read_text())
    files = set(manifest["files"])
    assert files == {f"{g}.onnx" for g in GRAPHS} | {"tokenizer.json"}
    for name in files:
        assert (pack / name).is_file()
    assert set(manifest["graphs"]) == set(GRAPHS)
    assert manifest["provenance"]["checkpoint_format"] == expected_format
    assert manifest["provenance"]["activation"] == activation
    clip = manifest["clip"]
    assert (clip["image_size"], clip["patch_size"], clip["width"], clip["layers"]) == \
        (224, 32, 64, 4)
    assert clip["embed_dim"] == embed_dim and clip["context_length"] == 77
    leftovers = [p.name for p in pack.parent.iterdir() if ".partial-" in p.name]
    assert leftovers == []


def assert_weights_came_through(pack: Path, source: ClipModel) -> tuple[float, float]:
    got_image, got_text = onnx_features(pack)
    want_image, want_text = torch_features(source)
    d_image, d_text = rel_diff(got_image, want_image), rel_diff(got_text, want_text)
    assert d_image <= RTOL, d_image
    assert d_text <= RTOL, d_text
    # Rows differ: a graph that ignored its input would not pass by matching a constant.
    assert np.abs(want_image[0] - want_image[1]).max() > 1e-3
    assert np.abs(want_text[0] - want_text[1]).max() > 1e-3
    return d_image, d_text


# --------------------------------------------------------------------------- formats


def test_export_hf_folder(tmp_path: Path):
    from transformers import CLIPModel

    from zsris_rt.export.random_checkpoint import write_random_clip

    folder = write_random_clip(tmp_path / "hf", "tiny", seed=3)
    hf = CLIPModel.from_pretrained(str(folder)).eval()
    pack = tmp_path / "packs" / "hf"
    assert export([str(folder), "--out", str(pack)]) == 0
    check_pack(pack, "hf", "quick_gelu", embed_dim=64)
    images, ids, _ = sample_inputs()
    with torch.no_grad():
        want_image = hf.get_image_features(pixel_values=images)
        want_text = hf.get_text_features(input_ids=ids)
    want_image = getattr(want_image, "pooler_output", want_image).numpy()
    want_text = getattr(want_text, "pooler_output", want_text).numpy()
    got_image, got_text = onnx_features(pack)
    assert rel_diff(got_image, want_image) <= RTOL
    assert rel_diff(got_text, want_text) <= RTOL


def test_export_openai_state_dict(tmp_path: Path):
    source = source_model(tiny_config(), seed=4)
    ckpt = tmp_path / "ViT-tiny.pt"
    torch.save(source.state_dict(), ckpt)
    pack = tmp_path / "packs" / "openai"
    assert export([str(ckpt), "--out", str(pack)]) == 0
    check_pack(pack, "openai", "quick_gelu")
    assert_weights_came_through(pack, source)


def test_export_openai_torchscript(tmp_path: Path):
    cfg = tiny_config()
    source = random_init_(TorchScriptClip(cfg), seed=5).eval()
    images, ids, end = sample_inputs()
    with torch.no_grad():
        traced = torch.jit.trace(source, (images[:1], ids[:1], end[:1]), check_trace=False)
    ckpt = tmp_path / "ViT-tiny-jit.pt"
    traced.save(str(ckpt))
    # The archive keeps every parameter, both towers, under OpenAI's names.
    keys = set(torch.jit.load(str(ckpt)).state_dict())
    assert set(source.state_dict()) <= keys
    assert "transformer.resblocks.1.mlp.c_proj.weight" in keys and "text_projection" in keys
    pack = tmp_path / "packs" / "openai-jit"
    assert export([str(ckpt), "--out", str(pack)]) == 0
    check_pack(pack, "openai", "quick_gelu")
    assert_weights_came_through(pack, source)


def test_export_open_clip_training_checkpoint_uses_gelu(tmp_path: Path):
    source = source_model(tiny_config("gelu"), seed=6)
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "tiny",
                "state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, ckpt)
    pack = tmp_path / "packs" / "open_clip"
    assert export([str(ckpt), "--out", str(pack)]) == 0
    check_pack(pack, "open_clip", "gelu")
    assert_weights_came_through(pack, source)

    # The same weights read with quick_gelu give other features: gelu really was used above.
    quick = load_clip(ckpt, activation="quick_gelu").model
    assert quick.config.activation == "quick_gelu"
    got_quick, _ = torch_features(quick)
    got_gelu, _ = onnx_features(pack)
    assert rel_diff(got_quick, got_gelu) > 1e-3  # measured ≈1e-2
    quick_source = source_model(tiny_config("quick_gelu"), seed=0)
    quick_source.load_state_dict(source.state_dict())
    assert rel_diff(got_quick, torch_features(quick_source)[0]) <= 1e-6


def test_open_clip_activation_flag_overrides(tmp_path: Path):
    source = source_model(tiny_config("quick_gelu"), seed=7)
    ckpt = tmp_path / "openclip-quickgelu.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, ckpt)
    pack = tmp_path / "packs" / "quick"
    assert export([str(ckpt), "--out", str(pack), "--format", "open_clip",
                   "--activation", "quick_gelu"]) == 0
    check_pack(pack, "open_clip", "quick_gelu")
    assert_weights_came_through(pack, source)


def test_mlp_width_other_than_four_times_is_read_from_the_weights(tmp_path: Path):
    """open_clip ViT-bigG-14 has mlp_ratio 4.9231: the hidden width comes from the weights."""
    cfg = dataclasses.replace(tiny_config(), vision_mlp_width=200, text_mlp_width=136)
    source = source_model(cfg, seed=12)
    ckpt = tmp_path / "odd-mlp.pt"
    torch.save(source.state_dict(), ckpt)
    pack = tmp_path / "packs" / "odd"
    assert export([str(ckpt), "--out", str(pack)]) == 0
    assert_weights_came_through(pack, source)


@pytest.mark.parametrize("vision_layers,text_layers", [(4, 2), (3, 5), (12, 12), (6, 1)])
def test_state_dict_geometry_is_read_from_the_weights(tmp_path: Path, vision_layers,
                                                      text_layers):
    """Layer counts come from the keys: any count, not only the tiny test's."""
    cfg = tiny_config(vision_layers=vision_layers, text_layers=text_layers)
    source = source_model(cfg, seed=8)
    ckpt = tmp_path / "model.pt"
    torch.save(source.state_dict(), ckpt)
    loaded = load_clip(ckpt).model
    assert loaded.config == cfg
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


# --------------------------------------------------------------------------- errors


def assert_clean_failure(code: int, capsys: pytest.CaptureFixture[str], out_parent: Path,
                         pack: Path) -> str:
    assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("zsris-export clip: error:")]
    assert len(errors) == 1, err
    assert not pack.exists()
    if out_parent.exists():
        assert [p.name for p in out_parent.iterdir() if p.name != "keep"] == []
    return errors[0]


def write_resnet_like(path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    state = {
        "visual.conv1.weight": torch.randn(32, 3, 3, 3, generator=g),
        "visual.bn1.weight": torch.ones(32),
        "visual.layer1.0.conv1.weight": torch.randn(64, 32, 1, 1, generator=g),
        "visual.attnpool.positional_embedding": torch.randn(50, 256, generator=g),
        "visual.attnpool.c_proj.weight": torch.randn(48, 256, generator=g),
        "token_embedding.weight": torch.randn(49408, 8, generator=g),
        "positional_embedding": torch.randn(77, 8, generator=g),
        "ln_final.weight": torch.ones(8),
        "text_projection": torch.randn(8, 48, generator=g),
    }
    torch.save(state, path)


BAD_CHECKPOINTS = {
    "missing": None,
    "random-bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "empty-file": lambda p: p.write_bytes(b""),
    "resnet-like": write_resnet_like,
    "garbage-dict": lambda p: torch.save({"foo": torch.zeros(3), "bar": torch.ones(2, 2)}, p),
    "not-tensors": lambda p: torch.save({"epoch": 3, "name": "x"}, p),
    "a-list": lambda p: torch.save([torch.zeros(2)], p),
    "hf-folder-without-config": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("fmt", ["auto", "openai", "open_clip"])
@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_fails_cleanly(tmp_path: Path, capsys, kind: str, fmt: str):
    ckpt = tmp_path / f"{kind}.pt"
    make = BAD_CHECKPOINTS[kind]
    if make is not None:
        make(ckpt)
    out_parent = tmp_path / "out"
    pack = out_parent / "pack"
    args = [str(ckpt), "--out", str(pack)]
    if fmt != "auto":
        args += ["--format", fmt]
    line = assert_clean_failure(export(args), capsys, out_parent, pack)
    if kind == "missing":
        assert "does not exist" in line


def saved_state_dict(folder: Path, seed: int) -> Path:
    ckpt = folder / "model.pt"
    torch.save(source_model(tiny_config(), seed=seed).state_dict(), ckpt)
    return ckpt


def test_failure_after_loading_leaves_no_partial_folder(tmp_path: Path, capsys):
    """k larger than the number of blocks fails inside the staging folder: nothing is left."""
    ckpt = saved_state_dict(tmp_path, seed=9)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    (out_parent / "keep").write_text("unrelated")
    pack = out_parent / "pack"
    code = export([str(ckpt), "--out", str(pack), "--masked-blocks", "9"])
    assert_clean_failure(code, capsys, out_parent, pack)
    assert (out_parent / "keep").read_text() == "unrelated"


def test_existing_pack_is_not_replaced_without_force(tmp_path: Path, capsys):
    ckpt = saved_state_dict(tmp_path, seed=10)
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "mine.txt").write_text("keep me")
    assert export([str(ckpt), "--out", str(pack)]) != 0
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
    assert [p.name for p in pack.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []
