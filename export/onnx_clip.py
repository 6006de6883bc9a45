"""The four CLIP graphs of a pack (DESIGN.md §3), exported and then checked against PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from zsris_rt.errors import ZsrisError

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
    """tokens 1×T×D + grid masks K×g×g → f^G K×E: token zeroing before each of the last k blocks."""

    def __init__(self, model: ClipModel, masked_blocks: int) -> None:
        super().__init__()
        self.visual = model.visual
        self.start = len(model.visual.transformer.resblocks) - masked_blocks

    def forward(self, tokens: torch.Tensor, grid_masks: torch.Tensor) -> torch.Tensor:
        weights = grid_masks.flatten(1).unsqueeze(-1)  # K×g²×1, row-major like the patch tokens
        x = tokens
        for block in self.visual.transformer.resblocks[self.start:]:
            patches = x[:, 1:] * weights
            cls = x[:, :1].expand(patches.shape[0], -1, -1)
            x = block(torch.cat([cls, patches], dim=1))
        return self.visual.pool(x)


class ImageGraph(nn.Module):
    """images K×3×S×S → f^L K×E (the plain CLIP image embedding, unnormalised)."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


class TextGraph(nn.Module):
    """ids B×L (L ≤ 77, up to the last end token) + end index B (integers) → B×E."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids, end_index)


def clip_graph_specs(model: ClipModel, masked_blocks: int, seed: int = 0) -> list[GraphSpec]:
    cfg = model.config
    if not 1 <= masked_blocks <= cfg.vision_layers:
        raise ZsrisError(f"masked blocks k={masked_blocks} must lie in 1..{cfg.vision_layers}")
    gen = torch.Generator().manual_seed(seed)
    s, g = cfg.image_size, cfg.grid
    images = torch.randn(3, 3, s, s, generator=gen)
    with torch.no_grad():
        tokens = TrunkGraph(model, masked_blocks)(images[:1])
    ids = torch.randint(1, cfg.vocab_size - 2, (2, cfg.context_length), generator=gen)
    end = torch.tensor([5, cfg.context_length - 1])
    ids[:, 0] = cfg.vocab_size - 2  # the start token: CLIP's vocabularies end with both specials
    ids[0, 5], ids[0, 6:] = cfg.vocab_size - 1, 0
    ids[1, -1] = cfg.vocab_size - 1
    batch = {0: "batch"}
    grids = torch.rand(3, g, g, generator=gen)
    return [
        GraphSpec("clip_trunk", TrunkGraph(model, masked_blocks), {"image": images[:1]},
                  ("tokens",), {"image": batch, "tokens": batch}, {"image": images[1:]}),
        GraphSpec("clip_masked_head", MaskedHeadGraph(model, masked_blocks),
                  {"tokens": tokens, "grid_masks": grids},
                  ("features",), {"grid_masks": {0: "masks"}, "features": {0: "masks"}},
                  {"tokens": tokens, "grid_masks": grids[:1]}),
        GraphSpec("clip_image", ImageGraph(model), {"images": images}, ("features",),
                  {"images": {0: "masks"}, "features": {0: "masks"}}, {"images": images[:1]}),
        GraphSpec("clip_text", TextGraph(model), {"ids": ids, "end_index": end}, ("features",),
                  {"ids": {0: "batch", 1: "length"}, "end_index": batch, "features": batch},
                  {"ids": ids[:1, :6], "end_index": end[:1]}),
    ]


def export_clip_graphs(model: ClipModel, folder: Path, masked_blocks: int,
                       progress: Callable[[str], None] = print) -> dict[str, dict[str, object]]:
    """Write and check every CLIP graph; returns the manifest's `graphs` section."""
    graphs: dict[str, dict[str, object]] = {}
    for spec in clip_graph_specs(model, masked_blocks):
        graphs[spec.name] = export_checked(spec, folder, progress)
    return graphs
