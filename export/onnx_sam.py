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
        if self.family == "sam2":
            return self._sam2(*embeddings, points, labels)
        out = self.model(image_embeddings=embeddings[0], input_points=points[None],
                         input_labels=labels[None], multimask_output=True)
        return out.pred_masks[0], out.iou_scores[0]

    def _sam2(self, feat_s0: torch.Tensor, feat_s1: torch.Tensor, image: torch.Tensor,
              points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`Sam2Model.forward`'s multimask path with the per-image maps broadcast over the
        prompts instead of copied once per prompt (transformers repeats the two high-resolution
        maps and the positional encoding for every prompt: 16 MB each at 1024² input, a quarter
        of a decoder call spent in `Tile`). Same modules, same arithmetic; the runtime tests hold
        the result to transformers' own forward."""
        model, decoder = self.model, self.model.mask_decoder
        prompts = points.shape[0]
        sparse, dense = model.prompt_encoder(input_points=points[None], input_labels=labels[None],
                                             input_boxes=None, input_masks=None)
        tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight,
                            decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens[None, None].expand(1, prompts, -1, -1), sparse], dim=2)
        # The transformer updates the image tokens per prompt, so those must be one per prompt.
        keys = (image + dense).repeat_interleave(prompts, dim=0)
        queries, keys = decoder.transformer(
            point_embeddings=tokens, image_embeddings=keys,
            image_positional_embeddings=model.get_image_wide_positional_embeddings(),
            attention_similarity=None)
        channels, height, width = image.shape[1:]
        keys = keys.transpose(2, 3).reshape(prompts, channels, height, width)
        upscaled = decoder.activation(decoder.upscale_layer_norm(
            decoder.upscale_conv1(keys) + feat_s1))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled) + feat_s0)
        mask_tokens = queries[0, :, 2:2 + decoder.num_mask_tokens]
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in
                             enumerate(decoder.output_hypernetworks_mlps)], dim=1)
        size = upscaled.shape[-2:]
        masks = (hyper @ upscaled.flatten(2)).unflatten(2, size)
        iou = decoder.iou_prediction_head(queries[0, :, 1])
        return masks[:, 1:], iou[:, 1:]


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
