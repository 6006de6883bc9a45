"""The CLIP graphs of a pack (DESIGN.md §3), exported and then checked against PyTorch.

The vision tower is held once, split where SPEC §2 applies the masks: `clip_trunk` (blocks
0 .. L−k−1) and `clip_masked_head` (the last k blocks, patch tokens weighted by a g×g grid,
then `ln_post` and `proj`). The global features are the trunk on the image, then the head with
the K mask grids; the local features (the crop encoder) are the trunk on the K crops, then the
head with all-ones grids: a weight of 1 changes no token, so that is the plain CLIP image
embedding, and `check_crop_encoder` holds the composed graphs to PyTorch's `visual(images)`.
Packs exported before held the tower a second time as `clip_image` (`zsris-export migrate`
drops it: export/pack_migration.py).

A ResNet tower (SPEC §7) has the same trunk and head inputs, with the layer-4 map's positions as
the tokens, and a third graph, `clip_crop_head`, because its local branch pools the crop's map
as it is while the global one pools unit-length, masked positions. Each graph gives the feature
§7 defines: f^G unnormalised, f^L and each text feature L2-normalised (the runtime then scores
with a plain dot product).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from zsris_rt.errors import ZsrisError
from zsris_rt.pack import crop_head

from .clip_model import ClipModel
from .onnx_graph import GraphSpec, export_checked


class TrunkGraph(nn.Module):
    """image 1×3×S×S → tokens 1×T×D after blocks 0 .. L−k−1."""

    def __init__(self, model: ClipModel, masked_blocks: int) -> None:
        super().__init__()
        self.visual = model.visual
        self.stop = len(model.visual.transformer.resblocks) - masked_blocks

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual.run_blocks(self.visual.embed(image), 0, self.stop)


class MaskedHeadGraph(nn.Module):
    """tokens B×T×D + grid masks K×g×g → K×E: token zeroing before each of the last k blocks.

    B = 1: one image's tokens under each of K masks (f^G, SPEC §2; the tokens are broadcast, not
    copied). B = K: K images' tokens, one grid each; with all-ones grids, the crop encoder."""

    def __init__(self, model: ClipModel, masked_blocks: int) -> None:
        super().__init__()
        self.visual = model.visual
        self.start = len(model.visual.transformer.resblocks) - masked_blocks

    def forward(self, tokens: torch.Tensor, grid_masks: torch.Tensor) -> torch.Tensor:
        weights = grid_masks.flatten(1).unsqueeze(-1)  # K×g²×1, row-major like the patch tokens
        x = tokens
        for block in self.visual.transformer.resblocks[self.start:]:
            patches = x[:, 1:] * weights  # B×g²×D · K×g²×1 → K×g²×D (B is 1 or K)
            cls = x[:, :1].expand(patches.shape[0], -1, -1)
            x = block(torch.cat([cls, patches], dim=1))
        return self.visual.pool(x)


def _unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / max(‖x‖, 1e-12) along `dim`: F.normalize, written out for the exporter."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


class ResNetTrunkGraph(nn.Module):
    """image B×3×S×S → the layer-4 map as positions B×g²×C (row-major, the grid's order)."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual.feature_map(image).flatten(2).transpose(1, 2)


class ResNetMaskedHeadGraph(nn.Module):
    """positions B×g²×C + grid masks K×g×g → f^G K×E (§7): each position's channels at unit
    length, times the grid, through the unmodified attention pool (B is 1, broadcast, or K)."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.attnpool = model.visual.attnpool

    def forward(self, tokens: torch.Tensor, grid_masks: torch.Tensor) -> torch.Tensor:
        return self.attnpool(_unit(tokens) * grid_masks.flatten(1).unsqueeze(-1))


class ResNetCropHeadGraph(nn.Module):
    """positions B×g²×C of B crops → f^L B×E (§7): the attention pool, L2-normalised."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.attnpool = model.visual.attnpool

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return _unit(self.attnpool(tokens))


class TextGraph(nn.Module):
    """ids B×L (L ≤ 77, up to the last end token) + end index B (integers) → B×E."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_text(ids, end_index)
        return _unit(features) if self.model.config.family == "resnet" else features


def clip_graph_specs(model: ClipModel, masked_blocks: int, seed: int = 0) -> list[GraphSpec]:
    cfg = model.config
    if cfg.family == "resnet":
        return _resnet_specs(model, seed)
    if not 1 <= masked_blocks <= cfg.vision_layers:
        raise ZsrisError(f"masked blocks k={masked_blocks} must lie in 1..{cfg.vision_layers}")
    gen = torch.Generator().manual_seed(seed)
    s, g = cfg.image_size, cfg.grid
    images = torch.randn(3, 3, s, s, generator=gen)
    with torch.no_grad():
        tokens = TrunkGraph(model, masked_blocks)(images)
    text = _text_spec(model, gen)
    batch = {0: "batch"}
    grids = torch.rand(3, g, g, generator=gen)
    ones = torch.ones(2, g, g)
    return [
        GraphSpec("clip_trunk", TrunkGraph(model, masked_blocks), {"image": images[:1]},
                  ("tokens",), {"image": batch, "tokens": batch}, {"image": images[1:]}),
        # Traced on one image's tokens under three grids (the global path); checked also on
        # one grid, and on two images' tokens with all-ones grids (the crop encoder).
        GraphSpec("clip_masked_head", MaskedHeadGraph(model, masked_blocks),
                  {"tokens": tokens[:1], "grid_masks": grids}, ("features",),
                  {"tokens": batch, "grid_masks": {0: "masks"}, "features": {0: "masks"}},
                  {"tokens": tokens[:1], "grid_masks": grids[:1]},
                  ({"tokens": tokens[1:], "grid_masks": ones},)),
        text,
    ]


def _text_spec(model: ClipModel, gen: torch.Generator) -> GraphSpec:
    cfg = model.config
    ids = torch.randint(1, cfg.vocab_size - 2, (2, cfg.context_length), generator=gen)
    end = torch.tensor([5, cfg.context_length - 1])
    ids[:, 0] = cfg.vocab_size - 2  # the start token: CLIP's vocabularies end with both specials
    ids[0, 5], ids[0, 6:] = cfg.vocab_size - 1, 0
    ids[1, -1] = cfg.vocab_size - 1
    return GraphSpec("clip_text", TextGraph(model), {"ids": ids, "end_index": end}, ("features",),
                     {"ids": {0: "batch", 1: "length"}, "end_index": {0: "batch"},
                      "features": {0: "batch"}},
                     {"ids": ids[:1, :6], "end_index": end[:1]})


def _resnet_specs(model: ClipModel, seed: int) -> list[GraphSpec]:
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    s, g = cfg.image_size, cfg.grid
    images = torch.randn(3, 3, s, s, generator=gen)
    with torch.no_grad():
        tokens = ResNetTrunkGraph(model)(images)
    text = _text_spec(model, gen)
    tokens[0, 0] = 0.0  # a position with no activation: its unit vector must stay zero
    batch = {0: "batch"}
    grids = torch.rand(3, g, g, generator=gen)
    return [
        GraphSpec("clip_trunk", ResNetTrunkGraph(model), {"image": images[:1]}, ("tokens",),
                  {"image": batch, "tokens": batch}, {"image": images[1:]}),
        GraphSpec("clip_masked_head", ResNetMaskedHeadGraph(model),
                  {"tokens": tokens[:1], "grid_masks": grids}, ("features",),
                  {"tokens": batch, "grid_masks": {0: "masks"}, "features": {0: "masks"}},
                  {"tokens": tokens[:1], "grid_masks": grids[:1]},
                  ({"tokens": tokens[1:], "grid_masks": grids[1:]},)),
        GraphSpec("clip_crop_head", ResNetCropHeadGraph(model), {"tokens": tokens},
                  ("features",), {"tokens": batch, "features": batch}, {"tokens": tokens[:1]}),
        text,
    ]


def check_crop_encoder(model: ClipModel, folder: Path, seed: int = 1,
                       tolerance: float = 1e-4) -> float:
    """The crop encoder as the runtime runs it — the exported trunk on a batch of images, then
    the exported head (ViT: the masked head with one all-ones grid per image; ResNet: the crop
    head), in ONNX Runtime — against PyTorch's plain `visual(images)` (the CLIP image embedding of
    SPEC §3.4; L2-normalised for a ResNet, §7), at two batch sizes; raise above `tolerance`
    relative to the output's scale. Returns the worst relative difference."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    cfg = model.config
    names = ("clip_trunk", crop_head(cfg.family))
    trunk, head = (ort.InferenceSession(str(folder / f"{name}.onnx"), sess_options=options,
                                        providers=["CPUExecutionProvider"]) for name in names)
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for count in (3, 1):
        images = torch.randn(count, 3, cfg.image_size, cfg.image_size, generator=gen)
        tokens = trunk.run(None, {"image": images.numpy()})[0]
        inputs = {"tokens": tokens}
        if cfg.family == "vit":
            inputs["grid_masks"] = np.ones((count, cfg.grid, cfg.grid), dtype=np.float32)
        got = head.run(None, inputs)[0]
        with torch.no_grad():
            expected = model.visual(images)
            if cfg.family == "resnet":
                expected = _unit(expected)
        expected = expected.numpy()
        if got.shape != expected.shape:
            raise ZsrisError(f"the crop encoder ({' + '.join(names)}) gives shape {got.shape}, "
                             f"PyTorch's image tower {expected.shape}")
        diff = float(np.abs(got - expected).max()) / max(float(np.abs(expected).max()), 1e-6)
        worst = max(worst, diff)
        if not np.isfinite(diff) or diff > tolerance:
            raise ZsrisError(f"the crop encoder ({' + '.join(names)}) disagrees with PyTorch's "
                             f"image tower (max relative difference {diff:.2e} > "
                             f"{tolerance:.0e}); the export is broken")
    return worst


def export_clip_graphs(model: ClipModel, folder: Path, masked_blocks: int,
                       progress: Callable[[str], None] = print) -> dict[str, dict[str, object]]:
    """Write and check every CLIP graph, and the crop encoder they compose; returns the
    manifest's `graphs` section."""
    graphs: dict[str, dict[str, object]] = {}
    for spec in clip_graph_specs(model, masked_blocks):
        graphs[spec.name] = export_checked(spec, folder, progress)
    worst = check_crop_encoder(model, folder)
    head = crop_head(model.config.family)
    progress(f"check  crop encoder (clip_trunk + {head}): ONNX Runtime vs PyTorch's image tower, "
             f"max relative difference {worst:.1e}")
    graphs[head]["crop_encoder_parity_max_rel_diff"] = worst
    return graphs
