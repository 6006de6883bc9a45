"""Read SAM-style mask proposers into a transformers `SamModel` / `Sam2Model`.

Formats: an original segment-anything `.pth` state dict (`sam_vit_b_01ec64.pth` …), mapped here onto
`SamModel`, and a Hugging Face folder (`SamModel` or `Sam2Model`). The original checkpoints carry
no config, so their geometry is read from the weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from zsris_rt.errors import ZsrisError

from .checkpoints import checked_path
from .choices import SAM_FORMATS, SAM_GEOMETRIES

if TYPE_CHECKING:
    from transformers import PretrainedConfig, SamConfig, SamModel


FAMILIES = ("sam", "sam2")

# Buffers some original checkpoints carry; the preprocessing lives outside the model here.
_IGNORED = frozenset({"pixel_mean", "pixel_std"})

# The original `TwoWayTransformer` uses `nn.LayerNorm`'s default eps; transformers says 1e-6.
_ORIGINAL_DECODER_EPS = 1e-5

_GAUSSIAN = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"

# transformers module names → segment-anything module names, for whole-module renames.
_MODULES = {
    "vision_encoder.patch_embed.projection": "image_encoder.patch_embed.proj",
    "vision_encoder.neck.conv1": "image_encoder.neck.0",
    "vision_encoder.neck.layer_norm1": "image_encoder.neck.1",
    "vision_encoder.neck.conv2": "image_encoder.neck.2",
    "vision_encoder.neck.layer_norm2": "image_encoder.neck.3",
    "shared_image_embedding.positional_embedding": _GAUSSIAN,
    "prompt_encoder.shared_embedding.positional_embedding": _GAUSSIAN,
    "prompt_encoder.mask_embed.conv1": "prompt_encoder.mask_downscaling.0",
    "prompt_encoder.mask_embed.layer_norm1": "prompt_encoder.mask_downscaling.1",
    "prompt_encoder.mask_embed.conv2": "prompt_encoder.mask_downscaling.3",
    "prompt_encoder.mask_embed.layer_norm2": "prompt_encoder.mask_downscaling.4",
    "prompt_encoder.mask_embed.conv3": "prompt_encoder.mask_downscaling.6",
    "prompt_encoder.point_embed": "prompt_encoder.point_embeddings",
    "mask_decoder.upscale_conv1": "mask_decoder.output_upscaling.0",
    "mask_decoder.upscale_layer_norm": "mask_decoder.output_upscaling.1",
    "mask_decoder.upscale_conv2": "mask_decoder.output_upscaling.3",
    "mask_decoder.transformer.layer_norm_final_attn": "mask_decoder.transformer.norm_final_attn",
}
_HEAD = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\."
                   r"(proj_in|proj_out|layers\.(\d+))\.")


@dataclass
class LoadedProposer:
    """A proposer ready to export, with what the exporter reports about it."""

    model: torch.nn.Module  # transformers SamModel / Sam2Model, float32, eval mode
    family: str  # "sam" | "sam2"
    fmt: str  # the format read: "sam" | "hf"
    geometry: str  # a SAM_GEOMETRIES name ("vit-b", "hiera-tiny", …) or "custom"


def _original_key(key: str, iou_head_depth: int) -> str:
    """The segment-anything name of a `SamModel` state-dict key."""
    for hf, original in _MODULES.items():
        if key == hf or key.startswith(hf + "."):
            return original + key[len(hf):]
    head = _HEAD.match(key)
    if head:
        # The original MLP keeps all its Linear layers in one list: in, hidden…, out.
        depth = iou_head_depth if head.group(1).endswith("iou_prediction_head") else 3
        index = {"proj_in": 0, "proj_out": depth - 1}.get(head.group(2))
        index = int(head.group(3)) + 1 if index is None else index
        return f"{head.group(1)}.layers.{index}.{key[head.end():]}"
    key = re.sub(r"^vision_encoder\.layers\.(\d+)\.layer_norm", r"vision_encoder.layers.\1.norm",
                 key)
    key = re.sub(r"^vision_encoder\.layers\.", "image_encoder.blocks.", key)
    key = re.sub(r"^vision_encoder\.", "image_encoder.", key)
    return re.sub(r"^(mask_decoder\.transformer\.layers\.\d+)\.layer_norm", r"\1.norm", key)


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _need(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ZsrisError(f"weights lack {key} (not an original SAM checkpoint?)")
    return state[key]


def config_from_original_sam(state: dict[str, torch.Tensor]) -> SamConfig:
    """The `SamConfig` an original state dict implies (the `.pth` files carry no config).

    Vision heads come from the rel-pos tables' head width; global-attention blocks are the ones
    whose rel-pos tables span the whole grid. Decoder heads are not in the weights: 8, as in every
    released SAM, or fewer for decoders narrower than 128 so that heads stay 16 wide.
    """
    from transformers import SamConfig

    if any(k.startswith("image_encoder.trunk.") for k in state):
        raise ZsrisError("an original SAM 2 checkpoint; convert it to a Hugging Face Sam2Model "
                         "folder first")
    if "image_encoder.patch_embed.proj.weight" not in state:
        raise ZsrisError("not an original SAM checkpoint (no image_encoder.patch_embed.proj.weight;"
                         f" keys start {', '.join(list(state)[:3])})")
    enc, dec = "image_encoder.", "mask_decoder."
    proj = state[f"{enc}patch_embed.proj.weight"]
    width, patch = int(proj.shape[0]), int(proj.shape[-1])
    grid = int(_need(state, f"{enc}pos_embed").shape[1])
    depth = _count(state, f"{enc}blocks.")
    tables = [_need(state, f"{enc}blocks.{i}.attn.rel_pos_h").shape for i in range(depth)]
    global_blocks = [i for i, table in enumerate(tables) if table[0] == 2 * grid - 1]
    windows = {(table[0] + 1) // 2 for table in tables if table[0] != 2 * grid - 1}
    if len(windows) > 1:
        raise ZsrisError(f"windowed blocks disagree on the window size ({sorted(windows)})")
    window = windows.pop() if windows else 0
    head_dim = int(tables[0][1]) if tables else width
    if width % head_dim:
        raise ZsrisError(f"rel-pos head width {head_dim} does not divide the width {width}")
    hidden = int(_need(state, f"{dec}iou_token.weight").shape[1])
    cross = int(_need(state, f"{dec}transformer.layers.0.cross_attn_token_to_image.q_proj.weight")
                .shape[0])
    try:
        return SamConfig(
            vision_config=dict(
                hidden_size=width, num_hidden_layers=depth, num_attention_heads=width // head_dim,
                image_size=grid * patch, patch_size=patch, window_size=window,
                global_attn_indexes=global_blocks,
                output_channels=int(_need(state, f"{enc}neck.0.weight").shape[0]),
                mlp_dim=int(_need(state, f"{enc}blocks.0.mlp.lin1.weight").shape[0]),
                num_pos_feats=int(_need(state, _GAUSSIAN).shape[1])),
            prompt_encoder_config=dict(
                hidden_size=int(_need(state, "prompt_encoder.no_mask_embed.weight").shape[1]),
                image_size=grid * patch, patch_size=patch,
                mask_input_channels=int(
                    _need(state, "prompt_encoder.mask_downscaling.3.weight").shape[0]),
                num_point_embeddings=_count(state, "prompt_encoder.point_embeddings.")),
            mask_decoder_config=dict(
                hidden_size=hidden, num_attention_heads=max(1, min(8, hidden // 16)),
                mlp_dim=int(_need(state, f"{dec}transformer.layers.0.mlp.lin1.weight").shape[0]),
                num_hidden_layers=_count(state, f"{dec}transformer.layers."),
                attention_downsample_rate=hidden // cross,
                num_multimask_outputs=int(_need(state, f"{dec}mask_tokens.weight").shape[0]) - 1,
                iou_head_depth=_count(state, f"{dec}iou_prediction_head.layers."),
                iou_head_hidden_dim=int(
                    _need(state, f"{dec}iou_prediction_head.layers.0.weight").shape[0]),
                layer_norm_eps=_ORIGINAL_DECODER_EPS),
        )
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise ZsrisError(f"weights imply no valid SAM geometry ({exc})") from None


def sam_from_original(state: dict[str, torch.Tensor]) -> SamModel:
    """A float32 `SamModel` holding an original state dict's weights (shared, not copied).

    Built on the meta device so that a ViT-H is not randomly initialised first.
    """
    from transformers import SamModel

    config = config_from_original_sam(state)
    try:
        with torch.device("meta"):
            model = SamModel(config)
    except ValueError as exc:  # e.g. heads that do not divide a width
        raise ZsrisError(f"weights imply no valid SAM geometry ({exc})") from None
    depth = config.mask_decoder_config.iou_head_depth
    expected = model.state_dict()
    names = {key: _original_key(key, depth) for key in expected}
    missing = sorted({name for name in names.values() if name not in state})
    unexpected = sorted(set(state) - set(names.values()) - _IGNORED)
    if missing or unexpected:
        raise ZsrisError(f"weights do not fit a SAM of the geometry they imply (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")
    for key, name in names.items():
        if state[name].shape != expected[key].shape:
            raise ZsrisError(f"{name} has shape {tuple(state[name].shape)}, the geometry the "
                             f"other weights imply needs {tuple(expected[key].shape)}")
    model.load_state_dict({k: state[name].float() for k, name in names.items()}, assign=True)
    # `assign` replaced the tied parameter object; the prompt encoder must read the same one.
    model.prompt_encoder.shared_embedding.positional_embedding = \
        model.shared_image_embedding.positional_embedding
    return model.eval()


def save_original_sam(model: SamModel, path: str | Path) -> Path:
    """Write a `SamModel` as an original segment-anything state dict (what `sam_model_registry`
    loads), so that tests and the CLI can make original-format checkpoints from random weights."""
    from transformers import SamModel

    if not isinstance(model, SamModel):
        raise ZsrisError(f"only a SAM v1 SamModel has an original layout, not "
                         f"{type(model).__name__}")
    depth = model.config.mask_decoder_config.iou_head_depth
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = _original_key(key, depth)
        if name in out and not torch.equal(out[name], value):
            raise ZsrisError(f"{key} differs from the tensor it is tied to; the original layout "
                             "has one positional matrix")
        out[name] = value.detach().float()
    path = Path(path)
    torch.save(out, path)
    return path


def _signature(family: str, config: PretrainedConfig) -> tuple:
    """The numbers that tell geometries apart (lists made tuples: JSON turns tuples to lists)."""
    def pick(sub: object, fields: str) -> tuple:
        return tuple(tuple(v) if isinstance(v, (list, tuple)) else v
                     for v in (getattr(sub, f) for f in fields.split()))

    decoder = pick(config.mask_decoder_config, "hidden_size mlp_dim num_attention_heads")
    if family == "sam":
        return decoder + pick(config.vision_config, "hidden_size num_hidden_layers "
                              "num_attention_heads image_size patch_size window_size "
                              "global_attn_indexes output_channels mlp_dim")
    return decoder + (config.vision_config.fpn_hidden_size,) + pick(
        config.vision_config.backbone_config, "hidden_size image_size blocks_per_stage "
        "embed_dim_per_stage num_attention_heads_per_stage window_size_per_stage "
        "global_attention_blocks")


def geometry_name(family: str, config: PretrainedConfig) -> str:
    """The `SAM_GEOMETRIES` name whose architecture `config` has, else "custom"."""
    from transformers import Sam2Config, SamConfig

    config_class = {"sam": SamConfig, "sam2": Sam2Config}[family]
    wanted = _signature(family, config)
    for name, overrides in SAM_GEOMETRIES[family].items():
        if _signature(family, config_class(**overrides)) == wanted:
            return name
    return "custom"


def _load_hf_folder(folder: Path) -> tuple[torch.nn.Module, str]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ZsrisError("no config.json (expected a Hugging Face SamModel / Sam2Model folder)")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise ZsrisError("config.json is not a JSON object") from None
    if model_type not in FAMILIES:
        raise ZsrisError(f"model_type {model_type!r} is not a supported proposer (supported: "
                         f"{', '.join(FAMILIES)})")
    if not any(folder.glob("*.safetensors")) and not (folder / "pytorch_model.bin").is_file():
        raise ZsrisError("no *.safetensors or pytorch_model.bin")
    from transformers import Sam2Model, SamModel

    model_class = SamModel if model_type == "sam" else Sam2Model
    try:
        model, info = model_class.from_pretrained(str(folder), local_files_only=True,
                                                  dtype=torch.float32, output_loading_info=True)
    except Exception as exc:  # transformers raises many types for a bad folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ZsrisError(f"cannot load the {model_type} folder ({type(exc).__name__}: "
                         f"{first[:200]})") from None
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    mismatched = sorted(str(k[0]) if isinstance(k, tuple) else str(k)
                        for k in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        # transformers would leave these randomly initialised: refuse rather than propose noise.
        raise ZsrisError(f"weights do not fit config.json (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}, wrong shape {mismatched[:3]})")
    return model.float().eval(), model_type


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad archive
        raise ZsrisError(f"not a readable PyTorch checkpoint ({type(exc).__name__})") from None


def _unwrap(state: object) -> dict[str, torch.Tensor]:
    """Strip a training wrapper ({"model": …} or {"state_dict": …})."""
    if isinstance(state, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZsrisError("checkpoint is not a state dict of tensors")
    return state


def load_proposer(path: str | Path, fmt: str = "auto") -> LoadedProposer:
    """Load a SAM / SAM 2 proposer: "sam" is an original segment-anything `.pth`, "hf" a Hugging
    Face folder; "auto" picks hf for a folder and sam for a file."""
    path = checked_path(path, fmt, SAM_FORMATS)
    if fmt == "auto":
        fmt = "hf" if path.is_dir() else "sam"
    try:
        if fmt == "hf":
            if not path.is_dir():
                raise ZsrisError("format hf expects a folder")
            model, family = _load_hf_folder(path)
        else:
            if path.is_dir():
                raise ZsrisError("is a folder; format sam expects an original .pth file")
            model, family = sam_from_original(_unwrap(_torch_load(path))), "sam"
    except ZsrisError as exc:
        raise ZsrisError(f"{path}: {exc}") from None
    return LoadedProposer(model, family, fmt, geometry_name(family, model.config))
