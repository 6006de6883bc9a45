"""The proposer's graphs (DESIGN.md §3): an image encoder and the decoder's per-image half, run
once per image, and the decoder's per-prompt half, which takes a whole chunk of point prompts in
one call (the split: onnx_sam_decoder.py).

The decoder stops at the low-resolution logits: upsampling to the image is mask work outside the
graph, so one graph serves every image size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from zsris_rt.errors import ZsrisError
from zsris_rt.pack import ProposerSettings

from .onnx_graph import GraphSpec, export_checked
from .onnx_sam_decoder import IMAGE_STATE, SKIP_MAPS, DecoderImageGraph, PromptDecoderGraph

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
                                embeddings=EMBEDDINGS[family], decoder_state=IMAGE_STATE)
    vision = model.config.vision_config
    size = int(vision.backbone_config.image_size[0])
    return ProposerSettings(family=family, input_size=size,
                            low_res_size=int(vision.backbone_feature_sizes[0][0]),
                            resize="square", resize_filter="bilinear",
                            embeddings=EMBEDDINGS[family], decoder_state=IMAGE_STATE + SKIP_MAPS)


class EncoderGraph(nn.Module):
    """image 1×3×S×S (normalised, padded) → the embeddings the decoder reads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = family_of(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        embeddings = self.model.get_image_embeddings(image)
        return embeddings if self.family == "sam" else tuple(embeddings)


class OneGraphDecoder(nn.Module):
    """embeddings + points N×P×2 (pixels of the S×S input frame) + labels N×P (1 foreground,
    0 background, −1 ignored) → low-res logits N×3×l×l and predicted IoU N×3.

    The decoder as one graph on transformers' own modules, as packs made before the split
    (onnx_sam_decoder.py) hold it; the runtime still runs such packs, and the benchmarks time it
    as the baseline the split is measured against.
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
    encoder, image_half = EncoderGraph(model), DecoderImageGraph(model)

    def embed(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = encoder(pixels)
        return dict(zip(settings.embeddings, out if isinstance(out, tuple) else (out,),
                        strict=True))

    def image_state(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return dict(zip(settings.decoder_state, image_half(*embed(pixels).values()),
                            strict=True))

    points = torch.rand(3, 1, 2, generator=gen) * s
    labels = torch.ones(3, 1, dtype=torch.int64)
    other_points = torch.rand(5, 2, 2, generator=gen) * s
    other_labels = torch.tensor([[1, -1], [1, 0], [0, 1], [1, 1], [1, -1]], dtype=torch.int64)
    prompts = {0: "prompts", 1: "points"}
    other_image = image.flip(-1)
    return [
        GraphSpec("prop_encoder", encoder, {"image": image}, settings.embeddings, {},
                  {"image": other_image}),
        GraphSpec("prop_decoder_image", image_half, embed(image), settings.decoder_state, {},
                  embed(other_image)),
        GraphSpec("prop_decoder", PromptDecoderGraph(model),
                  {**image_state(image), "points": points, "labels": labels},
                  ("low_res_logits", "iou"),
                  {"points": prompts, "labels": prompts, "low_res_logits": {0: "prompts"},
                   "iou": {0: "prompts"}},
                  {**image_state(other_image), "points": other_points, "labels": other_labels}),
    ]


def transformers_decoder(model: nn.Module, embeddings: dict[str, torch.Tensor],
                         points: torch.Tensor, labels: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' own `SamModel` / `Sam2Model` forward on encoder outputs: the decoder the
    split graphs must equal (low-res logits N×3×l×l, IoU N×3)."""
    tensors = list(embeddings.values())
    with torch.no_grad():
        out = model(image_embeddings=tensors[0] if len(tensors) == 1 else tensors,
                    input_points=points[None], input_labels=labels[None], multimask_output=True)
    return out.pred_masks[0], out.iou_scores[0]


def check_split_decoder(model: nn.Module, folder: Path, tolerance: float = 1e-4) -> float:
    """The two exported decoder halves, composed in ONNX Runtime, against transformers' own
    forward on the same encoder outputs (each half is also checked against the module it was
    traced from); raise above `tolerance` relative to the output's scale. Returns the worst."""
    import numpy as np
    import onnxruntime as ort

    specs = {spec.name: spec for spec in proposer_graph_specs(model, seed=1)}
    sessions = {name: ort.InferenceSession(str(folder / f"{name}.onnx"),
                                           providers=["CPUExecutionProvider"])
                for name in ("prop_decoder_image", "prop_decoder")}
    embeddings = specs["prop_decoder_image"].inputs
    state = sessions["prop_decoder_image"].run(None, {k: v.numpy() for k, v in
                                                      embeddings.items()})
    worst = 0.0
    for prompts in (specs["prop_decoder"].inputs, specs["prop_decoder"].variant):
        points, labels = prompts["points"], prompts["labels"]
        got = sessions["prop_decoder"].run(None, {
            **dict(zip(proposer_settings(model).decoder_state, state, strict=True)),
            "points": points.numpy(), "labels": labels.numpy()})
        want = transformers_decoder(model, embeddings, points, labels)
        for name, mine, theirs in zip(("low_res_logits", "iou"), got, want, strict=True):
            expected = theirs.numpy()
            diff = float(np.abs(mine - expected).max()) / max(float(np.abs(expected).max()), 1e-6)
            worst = max(worst, diff)
            if not np.isfinite(diff) or diff > tolerance:
                raise ZsrisError(f"the split decoder disagrees with transformers' forward on "
                                 f"{name} (max relative difference {diff:.2e} > {tolerance:.0e})")
    return worst


def export_proposer_graphs(model: nn.Module, folder: Path,
                           progress: Callable[[str], None] = print) -> dict[str, dict[str, object]]:
    """Write and check the proposer's graphs; returns their manifest `graphs` entries."""
    graphs = {spec.name: export_checked(spec, folder, progress)
              for spec in proposer_graph_specs(model)}
    worst = check_split_decoder(model, folder)
    progress(f"check  prop_decoder_image + prop_decoder: ONNX Runtime vs transformers' forward, "
             f"max relative difference {worst:.1e}")
    graphs["prop_decoder"]["parity_vs_transformers"] = worst
    return graphs
