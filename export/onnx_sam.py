"""The proposer's two graphs (DESIGN.md §3): an image encoder run once per image, and a prompt
decoder that takes a whole chunk of point prompts in one call.

The decoder stops at the low-resolution logits: upsampling to the image is mask work outside the
graph, so one graph serves every image size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from zsris_rt.pack import ProposerSettings

from .onnx_graph import GraphSpec, export_checked

# Encoder outputs by family, in the order transformers returns them; the decoder takes them by
# the same names.
EMBEDDINGS = {"sam": ("image_embeddings",),
              "sam2": ("high_res_feats_0", "high_res_feats_1", "image_embeddings")}


def family_of(model: nn.Module) -> str:
    name = type(model).__name__
    if name == "SamModel":
        return "sam"
    if name == "Sam2Model":
        return "sam2"
    raise TypeError(f"not a SAM-style model: {name}")


def proposer_settings(model: nn.Module) -> ProposerSettings:
    """What the runtime must do around the graphs, read from the model's config.

    SAM was trained on images scaled by their longest side (bicubic, padded bottom-right); SAM 2
    on images squashed to a square (bilinear). Both normalise with ImageNet's mean and std.
    """
    family = family_of(model)
    if family == "sam":
        vision = model.config.vision_config
        size = int(vision.image_size)
        return ProposerSettings(family=family, input_size=size,
                                low_res_size=4 * size // int(vision.patch_size),
                                resize="longest", resize_filter="bicubic",
                                embeddings=EMBEDDINGS[family])
    vision = model.config.vision_config
    size = int(vision.backbone_config.image_size[0])
    return ProposerSettings(family=family, input_size=size,
                            low_res_size=int(vision.backbone_feature_sizes[0][0]),
                            resize="square", resize_filter="bilinear",
                            embeddings=EMBEDDINGS[family])


class EncoderGraph(nn.Module):
    """image 1×3×S×S (normalised, padded) → the embeddings the decoder reads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = family_of(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        embeddings = self.model.get_image_embeddings(image)
        return embeddings if self.family == "sam" else tuple(embeddings)


class DecoderGraph(nn.Module):
    """embeddings + points N×P×2 (pixels of the S×S input frame) + labels N×P (1 foreground,
    0 background, −1 ignored) → low-res logits N×3×l×l and predicted IoU N×3.

    One row of `points` is one prompt; N prompts share the image embedding in one call.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = family_of(model)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *embeddings, points, labels = args
        image_embeddings = embeddings[0] if self.family == "sam" else list(embeddings)
        out = self.model(image_embeddings=image_embeddings, input_points=points[None],
                         input_labels=labels[None], multimask_output=True)
        return out.pred_masks[0], out.iou_scores[0]


def proposer_graph_specs(model: nn.Module, seed: int = 0) -> list[GraphSpec]:
    settings = proposer_settings(model)
    gen = torch.Generator().manual_seed(seed)
    s = settings.input_size
    image = torch.randn(1, 3, s, s, generator=gen)
    encoder = EncoderGraph(model)
    with torch.no_grad():
        out = encoder(image)
    embeddings = dict(zip(settings.embeddings, out if isinstance(out, tuple) else (out,),
                          strict=True))
    points = torch.rand(3, 1, 2, generator=gen) * s
    labels = torch.ones(3, 1, dtype=torch.int64)
    other_points = torch.rand(5, 2, 2, generator=gen) * s
    other_labels = torch.tensor([[1, -1], [1, 0], [0, 1], [1, 1], [1, -1]], dtype=torch.int64)
    prompts = {0: "prompts", 1: "points"}
    return [
        GraphSpec("prop_encoder", encoder, {"image": image}, settings.embeddings, {},
                  {"image": image.flip(-1)}),
        GraphSpec("prop_decoder", DecoderGraph(model),
                  {**embeddings, "points": points, "labels": labels}, ("low_res_logits", "iou"),
                  {"points": prompts, "labels": prompts, "low_res_logits": {0: "prompts"},
                   "iou": {0: "prompts"}},
                  {**embeddings, "points": other_points, "labels": other_labels}),
    ]


def export_proposer_graphs(model: nn.Module, folder: Path,
                           progress: Callable[[str], None] = print) -> dict[str, dict[str, object]]:
    """Write and check both proposer graphs; returns their manifest `graphs` entries."""
    return {spec.name: export_checked(spec, folder, progress)
            for spec in proposer_graph_specs(model)}
