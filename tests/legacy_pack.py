"""Packs as the exporter wrote them while packs held the CLIP image tower twice: `clip_image`
(crops → f^L) beside the trunk and a masked head whose `tokens` input is one image's (1×T×D).
Built here from a current pack and its checkpoint with that exporter's own graph specs, so tests
of old packs (they must still load and run) and of `zsris-export migrate` need no stored copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from zsris_rt.export.checkpoints import load_clip
from zsris_rt.export.onnx_clip import MaskedHeadGraph, TrunkGraph
from zsris_rt.export.onnx_graph import GraphSpec, export_checked
from zsris_rt.export.quantize import quantise_file
from zsris_rt.pack import MANIFEST, Manifest, write_manifest


class ImageGraph(nn.Module):
    """The old `clip_image`: images K×3×S×S → the plain CLIP image embedding K×E."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def legacy_specs(model, masked_blocks: int, seed: int = 0) -> list[GraphSpec]:
    """The old exporter's specs of the two graphs that changed: the head (tokens fixed at one
    image) and the duplicate tower."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, cfg.image_size, cfg.image_size, generator=gen)
    with torch.no_grad():
        tokens = TrunkGraph(model, masked_blocks)(images[:1])
    grids = torch.rand(3, cfg.grid, cfg.grid, generator=gen)
    return [
        GraphSpec("clip_masked_head", MaskedHeadGraph(model, masked_blocks),
                  {"tokens": tokens, "grid_masks": grids}, ("features",),
                  {"grid_masks": {0: "masks"}, "features": {0: "masks"}},
                  {"tokens": tokens, "grid_masks": grids[:1]}),
        GraphSpec("clip_image", ImageGraph(model.visual), {"images": images}, ("features",),
                  {"images": {0: "masks"}, "features": {0: "masks"}}, {"images": images[:1]}),
    ]


def make_two_tower_pack(pack: Path, checkpoint: Path, out: Path, int8: bool = True,
                        tower_checkpoint: Path | None = None) -> Path:
    """`out`: a copy of `pack` in the old layout, with dynamic int8 variants of the head and of
    `clip_image` when `int8`. `tower_checkpoint` exports `clip_image` from another model (a pack
    whose duplicate is no duplicate, which a migration must refuse)."""
    shutil.copytree(pack, out)
    manifest = Manifest.from_json((out / MANIFEST).read_text())
    model = load_clip(checkpoint).model.eval()
    specs = legacy_specs(model, manifest.clip.masked_blocks)
    if tower_checkpoint is not None:
        specs[1] = legacy_specs(load_clip(tower_checkpoint).model.eval(),
                                manifest.clip.masked_blocks)[1]
    for spec in specs:
        entry = export_checked(spec, out, progress=lambda _: None)
        manifest.graphs[spec.name] = entry
        manifest.files.update(dict.fromkeys(entry["files"], ""))
        if int8:
            name = f"{spec.name}.int8.onnx"
            quantise_file(out / f"{spec.name}.onnx", out / name, [], "dynamic")
            entry["variants"] = {"int8": {"file": name, "files": [name], "method": "dynamic",
                                          "format": "QOperator"}}
            manifest.files[name] = ""
    write_manifest(out, manifest)
    return out
