"""What the export commands offer, importable without PyTorch: checkpoint formats, the geometries
of the random checkpoints, the demo pack's training steps. The CLI parses against these, the bench
names its random packs by them, and the torch modules build from them.
"""

from __future__ import annotations

CLIP_FORMATS = ("auto", "openai", "hf", "open_clip")
SAM_FORMATS = ("auto", "sam", "hf")

CLIP_STEPS = 4000  # demo CLIP training steps, 8 scenes each
PROPOSER_STEPS = 10000  # 71.5 minutes measured on one thread (a third frozen); CLIP 21 beside it

# (vision width, layers, heads, patch; text width, layers, heads; embed dim)
GEOMETRIES: dict[str, tuple[int, int, int, int, int, int, int, int]] = {
    "tiny": (64, 4, 2, 32, 64, 2, 2, 64),
    "ViT-B/32": (768, 12, 12, 32, 512, 12, 8, 512),
    "ViT-B/16": (768, 12, 12, 16, 512, 12, 8, 512),
    "ViT-L/14": (1024, 24, 16, 14, 768, 12, 12, 768),
}

# ResNet CLIPs, OpenAI's: (blocks per stage, stem width, resolution, embed dim; text width,
# layers, heads). The attention pool has 32 × width / 64 heads.
RESNET_GEOMETRIES: dict[str, tuple[tuple[int, int, int, int], int, int, int, int, int, int]] = {
    "RN-tiny": ((1, 1, 1, 1), 8, 224, 64, 64, 2, 1),
    "RN50": ((3, 4, 6, 3), 64, 224, 1024, 512, 12, 8),
    "RN101": ((3, 4, 23, 3), 64, 224, 512, 512, 12, 8),
    "RN50x4": ((4, 6, 10, 6), 80, 288, 640, 640, 12, 10),
    "RN50x16": ((6, 8, 18, 8), 96, 384, 768, 768, 12, 12),
    "RN50x64": ((3, 15, 36, 10), 128, 448, 1024, 1024, 12, 16),
}
CLIP_RANDOM_GEOMETRIES = (*GEOMETRIES, *RESNET_GEOMETRIES)


def random_clip_source(folder: str, geometry: str) -> str:
    """What a random checkpoint of `geometry` written into `folder` is exported from: the
    folder itself (a Hugging Face CLIPModel), or the OpenAI state dict in it for a ResNet,
    which Hugging Face has no class for."""
    return f"{folder}/clip.pt" if geometry in RESNET_GEOMETRIES else folder


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
