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
