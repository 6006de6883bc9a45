"""Random-weight Hugging Face CLIP folders of real geometries (no weights can be downloaded here).

Used by tests, benchmarks and the README's first command until the demo pack exists.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zsris_rt.errors import ZsrisError

from .choices import GEOMETRIES, RESNET_GEOMETRIES, SAM_GEOMETRIES, random_clip_source


def write_random_clip(folder: Path, geometry: str = "tiny", seed: int = 0) -> Path:
    """Save a seeded random `CLIPModel` (config.json + model.safetensors) into `folder`, or for a
    ResNet geometry an OpenAI-layout state dict `folder/clip.pt`; returns what to export."""
    if geometry in RESNET_GEOMETRIES:
        return _write_random_resnet(folder, geometry, seed)
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


def _write_random_resnet(folder: Path, geometry: str, seed: int) -> Path:
    from .clip_model import ClipConfig, ClipModel, random_init_

    stages, width, size, embed, text_width, text_layers, text_heads = RESNET_GEOMETRIES[geometry]
    config = ClipConfig(embed_dim=embed, image_size=size, patch_size=32, vision_width=width,
                        vision_layers=sum(stages), vision_heads=width * 32 // 64,
                        context_length=77, vocab_size=49408, text_width=text_width,
                        text_layers=text_layers, text_heads=text_heads, vision_stages=stages)
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(random_clip_source(str(folder), geometry))
    torch.save(random_init_(ClipModel(config), seed).state_dict(), path)
    return path


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


def write_random_proposer(out: Path, family: str = "sam", geometry: str = "tiny",
                          fmt: str = "hf", seed: int = 0) -> None:
    """A random SAM / SAM 2 as a Hugging Face folder, or (SAM only) a segment-anything .pth."""
    if geometry not in SAM_GEOMETRIES[family]:
        raise ZsrisError(f"{family} has no geometry {geometry!r}; choose from "
                         + ", ".join(SAM_GEOMETRIES[family]))
    model = random_sam(family, geometry, seed)
    if fmt == "sam":
        from .sam_checkpoints import save_original_sam

        if family != "sam":
            raise ZsrisError("--format sam writes segment-anything's layout, which only SAM has; "
                             "use --format hf for SAM 2")
        out.parent.mkdir(parents=True, exist_ok=True)
        save_original_sam(model, out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
