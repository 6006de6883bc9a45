"""Random-weight Hugging Face CLIP folders of real geometries (no weights can be downloaded here).

Used by tests, benchmarks and the README's first command until the demo pack exists.
"""

from __future__ import annotations

from pathlib import Path

import torch

# (vision width, layers, heads, patch; text width, layers, heads; embed dim)
GEOMETRIES: dict[str, tuple[int, int, int, int, int, int, int, int]] = {
    "tiny": (64, 4, 2, 32, 64, 2, 2, 64),
    "ViT-B/32": (768, 12, 12, 32, 512, 12, 8, 512),
    "ViT-B/16": (768, 12, 12, 16, 512, 12, 8, 512),
    "ViT-L/14": (1024, 24, 16, 14, 768, 12, 12, 768),
}


def write_random_clip(folder: Path, geometry: str = "tiny", seed: int = 0) -> Path:
    """Save a seeded random `CLIPModel` (config.json + model.safetensors) into `folder`."""
    from transformers import CLIPConfig, CLIPModel

    vw, vl, vh, patch, tw, tl, th, embed = GEOMETRIES[geometry]
    config = CLIPConfig(
        vision_config=dict(hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=vl,
                           num_attention_heads=vh, patch_size=patch, image_size=224),
        text_config=dict(hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=tl,
                         num_attention_heads=th, vocab_size=49408, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
        projection_dim=embed,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    return folder


def _tiny_sam_parts() -> dict:
    return dict(prompt_encoder_config=dict(hidden_size=32, image_size=256, patch_size=16),
                mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2,
                                         iou_head_hidden_dim=32))


def _sam_vit(width: int, layers: int, heads: int, global_blocks: list[int]) -> dict:
    return dict(vision_config=dict(hidden_size=width, num_hidden_layers=layers,
                                   num_attention_heads=heads, global_attn_indexes=global_blocks))


# Config overrides of transformers' SamConfig / Sam2Config; `{}` is the library default.
SAM_GEOMETRIES: dict[str, dict[str, dict]] = {
    "sam": {
        # 256-px input, 16×16 embedding, 64×64 low-res masks: small enough for the CI suite.
        "tiny": dict(vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=256, patch_size=16, output_channels=32,
                                        window_size=4, global_attn_indexes=[1], num_pos_feats=16,
                                        mlp_dim=64),
                     **_tiny_sam_parts()),
        "vit-b": _sam_vit(768, 12, 12, [2, 5, 8, 11]),
        "vit-l": _sam_vit(1024, 24, 16, [5, 11, 17, 23]),
        "vit-h": _sam_vit(1280, 32, 16, [7, 15, 23, 31]),
    },
    "sam2": {
        "tiny": dict(vision_config=dict(
            backbone_config=dict(model_type="sam2_hiera_det_model", image_size=[256, 256],
                                 hidden_size=16, blocks_per_stage=[1, 2, 2, 1],
                                 embed_dim_per_stage=[16, 32, 64, 128],
                                 num_attention_heads_per_stage=[1, 1, 2, 2],
                                 window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[4],
                                 window_positional_embedding_background_size=[4, 4]),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]], fpn_hidden_size=32),
            **_tiny_sam_parts()),
        "hiera-tiny": {},  # transformers' Sam2Config defaults are SAM 2.1 Hiera-tiny
    },
}


def realistic_init_(model: torch.nn.Module, gain: float = 2.0, seed: int = 0) -> torch.nn.Module:
    """Re-draw every weight at a scale that keeps activations alive.

    transformers initialises SAM with `initializer_range=1e-10`, so a random SAM predicts ~0
    everywhere; with fan-in scaled weights (gain 2) the masks vary from prompt to prompt and the
    logits cross the ±1 stability thresholds, which is what the generator tests need.
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = (module.weight.shape[0] if isinstance(module, torch.nn.ConvTranspose2d)
                          else module.weight[0].numel())
                torch.nn.init.normal_(module.weight, std=gain / fan_in ** 0.5)
                if module.bias is not None:
                    torch.nn.init.normal_(module.bias, std=0.1)
            elif isinstance(module, torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, std=1.0)
            elif "LayerNorm" in type(module).__name__ and weight is not None:
                torch.nn.init.normal_(module.weight, 1.0, 0.1)
                torch.nn.init.normal_(module.bias, std=0.1)
        for name, param in model.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                torch.nn.init.normal_(param, std=0.1)
    return model


def random_sam(family: str = "sam", geometry: str = "tiny", seed: int = 0) -> torch.nn.Module:
    """A seeded random transformers `SamModel` / `Sam2Model` of a named geometry, in eval mode."""
    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

    config_class, model_class = {"sam": (SamConfig, SamModel),
                                 "sam2": (Sam2Config, Sam2Model)}[family]
    torch.manual_seed(seed)
    model = model_class(config_class(**SAM_GEOMETRIES[family][geometry]))
    return realistic_init_(model, seed=seed).eval()


def write_random_sam(folder: Path, family: str = "sam", geometry: str = "tiny",
                     seed: int = 0) -> Path:
    """Save a random `SamModel` / `Sam2Model` as a Hugging Face folder."""
    folder.mkdir(parents=True, exist_ok=True)
    random_sam(family, geometry, seed).save_pretrained(str(folder))
    return folder
