"""Read CLIP checkpoints of three formats into one OpenAI-layout state dict and a `ClipConfig`.

Formats: an OpenAI `.pt` (TorchScript archive or plain state dict), a Hugging Face `CLIPModel`
folder (config.json + safetensors or bin), an open_clip state dict (possibly a training checkpoint
with `state_dict` and `module.` prefixes). Geometry is read from the weights themselves.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from zsris_rt.errors import ZsrisError

from .choices import CLIP_FORMATS as FORMATS
from .clip_model import ClipConfig, ClipModel


@dataclass
class LoadedClip:
    model: ClipModel
    source_format: str


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("constants.pkl") or "/code/" in name for name in names)


def _unwrap(state: object) -> dict[str, torch.Tensor]:
    """Strip training-checkpoint wrappers: {"state_dict": …} and DataParallel `module.` prefixes."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZsrisError("checkpoint is not a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def config_from_openai_state(state: dict[str, torch.Tensor], activation: str,
                             heads: tuple[int | None, int | None] = (None, None)) -> ClipConfig:
    """OpenAI's `build_model` geometry rules; heads = width / 64 unless `heads` says otherwise
    (the weights cannot tell: open_clip ViT-H/14 and bigG/14 use 80-wide heads)."""
    if "visual.attnpool.positional_embedding" in state:
        return _resnet_config(state, activation, heads)
    if "visual.proj" not in state or "visual.conv1.weight" not in state:
        raise ZsrisError("not a CLIP state dict (no visual.proj / visual.conv1 of a ViT, no "
                         "visual.attnpool of a ResNet)")
    vision_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return ClipConfig(
        image_size=patch * grid,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=_count(state, "visual.transformer.resblocks."),
        vision_heads=heads[0] or max(1, vision_width // 64),
        vision_mlp_width=_mlp_width(state, "visual.transformer.resblocks.0."),
        **_text_geometry(state, activation, heads[1]),
    )


def _text_geometry(state: dict[str, torch.Tensor], activation: str, heads: int | None) -> dict:
    """The text tower's part of the config (and the embedding width), for either family."""
    text_width = state["ln_final.weight"].shape[0]
    return dict(embed_dim=state["text_projection"].shape[1],
                context_length=state["positional_embedding"].shape[0],
                vocab_size=state["token_embedding.weight"].shape[0], text_width=text_width,
                text_layers=_count(state, "transformer.resblocks."),
                text_heads=heads or max(1, text_width // 64), activation=activation,
                text_mlp_width=_mlp_width(state, "transformer.resblocks.0."))


def _resnet_config(state: dict[str, torch.Tensor], activation: str,
                   heads: tuple[int | None, int | None]) -> ClipConfig:
    """A ResNet CLIP's geometry from its weights: blocks per stage from the layer names, the stem
    width from layer 1, the resolution from the attention pool's positions (32 × its grid); the
    pool's heads are not recorded, so OpenAI's rule applies (32 × width / 64) unless given."""
    stages = tuple(_count(state, f"visual.layer{stage}.") for stage in (1, 2, 3, 4))
    if not all(stages) or "visual.layer1.0.conv1.weight" not in state:
        raise ZsrisError(f"a ResNet CLIP needs four stages of blocks; found {stages}")
    positions = state["visual.attnpool.positional_embedding"].shape[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise ZsrisError(f"attention pool has {positions} positions: not a square grid plus one")
    width = state["visual.layer1.0.conv1.weight"].shape[0]
    return ClipConfig(image_size=32 * grid, patch_size=32, vision_width=width,
                      vision_layers=sum(stages), vision_heads=heads[0] or width * 32 // 64,
                      vision_stages=stages, **_text_geometry(state, activation, heads[1]))


def _mlp_width(state: dict[str, torch.Tensor], block: str) -> int:
    weight = state.get(f"{block}mlp.c_fc.weight")
    return 0 if weight is None else _nonstandard(int(weight.shape[0]), int(weight.shape[1]))


def _nonstandard(hidden: int, width: int) -> int:
    """ClipConfig's convention: 0 stands for the usual 4 × width MLP."""
    return 0 if hidden == 4 * width else hidden


def _hf_to_openai(hf: dict[str, torch.Tensor], vision_layers: int, text_layers: int) -> dict:
    out: dict[str, torch.Tensor] = {}

    def tower(src: str, dst: str, layers: int) -> None:
        for i in range(layers):
            a, b = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
            out[f"{b}.attn.in_proj_weight"] = torch.cat(
                [hf[f"{a}.self_attn.{p}_proj.weight"] for p in "qkv"])
            out[f"{b}.attn.in_proj_bias"] = torch.cat(
                [hf[f"{a}.self_attn.{p}_proj.bias"] for p in "qkv"])
            for p in ("weight", "bias"):
                out[f"{b}.attn.out_proj.{p}"] = hf[f"{a}.self_attn.out_proj.{p}"]
                out[f"{b}.ln_1.{p}"] = hf[f"{a}.layer_norm1.{p}"]
                out[f"{b}.ln_2.{p}"] = hf[f"{a}.layer_norm2.{p}"]
                out[f"{b}.mlp.c_fc.{p}"] = hf[f"{a}.mlp.fc1.{p}"]
                out[f"{b}.mlp.c_proj.{p}"] = hf[f"{a}.mlp.fc2.{p}"]

    v, t = "vision_model", "text_model"
    tower(v, "visual.transformer", vision_layers)
    tower(t, "transformer", text_layers)
    out["visual.conv1.weight"] = hf[f"{v}.embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = hf[f"{v}.embeddings.class_embedding"]
    out["visual.positional_embedding"] = hf[f"{v}.embeddings.position_embedding.weight"]
    out["visual.proj"] = hf["visual_projection.weight"].t().contiguous()
    out["token_embedding.weight"] = hf[f"{t}.embeddings.token_embedding.weight"]
    out["positional_embedding"] = hf[f"{t}.embeddings.position_embedding.weight"]
    out["text_projection"] = hf["text_projection.weight"].t().contiguous()
    out["logit_scale"] = hf["logit_scale"]
    for p in ("weight", "bias"):
        out[f"visual.ln_pre.{p}"] = hf[f"{v}.pre_layrnorm.{p}"]
        out[f"visual.ln_post.{p}"] = hf[f"{v}.post_layernorm.{p}"]
        out[f"ln_final.{p}"] = hf[f"{t}.final_layer_norm.{p}"]
    return out


def _load_hf_folder(folder: Path) -> ClipModel:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ZsrisError(f"{folder}: no config.json (expected a Hugging Face CLIPModel folder)")
    config = json.loads(config_path.read_text())
    vc, tc = config.get("vision_config", {}), config.get("text_config", {})
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        from safetensors.torch import load_file

        hf: dict[str, torch.Tensor] = {}
        for shard in weights:
            hf.update(load_file(str(shard)))
    elif (folder / "pytorch_model.bin").is_file():
        hf = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ZsrisError(f"{folder}: no *.safetensors or pytorch_model.bin")
    hf = {k.removeprefix("clip."): v for k, v in hf.items()}
    activation = vc.get("hidden_act", "quick_gelu")
    if activation not in ("quick_gelu", "gelu"):
        raise ZsrisError(f"{folder}: unsupported activation {activation!r}")
    cfg = ClipConfig(
        embed_dim=config.get("projection_dim", 512),
        image_size=vc.get("image_size", 224),
        patch_size=vc.get("patch_size", 32),
        vision_width=vc.get("hidden_size", 768),
        vision_layers=vc.get("num_hidden_layers", 12),
        vision_heads=vc.get("num_attention_heads", 12),
        context_length=tc.get("max_position_embeddings", 77),
        vocab_size=tc.get("vocab_size", 49408),
        text_width=tc.get("hidden_size", 512),
        text_layers=tc.get("num_hidden_layers", 12),
        text_heads=tc.get("num_attention_heads", 8),
        activation=activation,
        layer_norm_eps=vc.get("layer_norm_eps", 1e-5),
        vision_mlp_width=_nonstandard(vc.get("intermediate_size", 3072),
                                      vc.get("hidden_size", 768)),
        text_mlp_width=_nonstandard(tc.get("intermediate_size", 2048), tc.get("hidden_size", 512)),
    )
    try:
        state = _hf_to_openai(hf, cfg.vision_layers, cfg.text_layers)
    except KeyError as exc:
        raise ZsrisError(f"{folder}: weights lack {exc.args[0]} (not a CLIPModel?)") from None
    return _build(cfg, state, str(folder))


def _build(cfg: ClipConfig, state: dict[str, torch.Tensor], where: str) -> ClipModel:
    model = ClipModel(cfg)
    state = {k: v.float() for k, v in state.items() if k not in ("input_resolution",
                                                                  "context_length", "vocab_size",
                                                                  "attn_mask", "logit_bias")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ZsrisError(f"{where}: weights do not fit a {cfg.family} CLIP ({detail})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ZsrisError(f"{where}: weights do not fit a {cfg.family} CLIP (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad archive
        raise ZsrisError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") \
            from None


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    if _is_torchscript(path):
        return "openai"
    state = _torch_load(path)
    if isinstance(state, dict) and ("state_dict" in state or any(k.startswith("module.")
                                                                  for k in state)):
        return "open_clip"
    return "openai"


def checked_path(path: str | Path, fmt: str, formats: tuple[str, ...]) -> Path:
    """The checkpoint path, once it exists and `fmt` is one of `formats`."""
    path = Path(path)
    if not path.exists():
        raise ZsrisError(f"checkpoint {path} does not exist")
    if fmt not in formats:
        raise ZsrisError(f"unknown checkpoint format {fmt!r} (choose from {', '.join(formats)})")
    return path


def load_clip(path: str | Path, fmt: str = "auto", activation: str | None = None,
              heads: tuple[int | None, int | None] = (None, None)) -> LoadedClip:
    """Load any supported CLIP checkpoint. `activation` overrides the format's default
    (quick_gelu for OpenAI and HF configs that say so, gelu for open_clip); `heads` (vision,
    text) overrides width / 64 for state dicts, whose weights do not record it."""
    path = checked_path(path, fmt, FORMATS)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "hf":
        model = _load_hf_folder(path)
        if activation and activation != model.config.activation:
            raise ZsrisError("--activation conflicts with the folder's config.json hidden_act")
        if any(heads):
            raise ZsrisError("head counts come from the folder's config.json; drop --*-heads")
        return LoadedClip(model, "hf")
    if path.is_dir():
        raise ZsrisError(f"{path} is a folder; format {fmt} expects a file")
    if fmt == "openai" and _is_torchscript(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state = _torch_load(path)
    state = _unwrap(state)
    act = activation or ("quick_gelu" if fmt == "openai" else "gelu")
    cfg = config_from_openai_state(state, act, heads)
    return LoadedClip(_build(cfg, state, str(path)), fmt)
