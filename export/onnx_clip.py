"""The four CLIP graphs of a pack (DESIGN.md §3), exported and then checked against PyTorch."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zsris_rt.errors import ZsrisError

from .clip_model import ClipModel

OPSET = 17


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


@dataclass
class GraphSpec:
    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]  # example inputs, also used for the parity check
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    variant: dict[str, torch.Tensor]  # other sizes on the dynamic axes, for the parity check

    def io_manifest(self) -> dict[str, list[dict[str, object]]]:
        def describe(name: str, shape: tuple[int, ...], dtype: str) -> dict[str, object]:
            axes = self.dynamic_axes.get(name, {})
            return {"name": name, "dtype": dtype,
                    "shape": [axes.get(i, int(d)) for i, d in enumerate(shape)]}

        with torch.no_grad():
            out = self.module(*self.inputs.values())
        return {
            "inputs": [describe(n, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                       for n, t in self.inputs.items()],
            "outputs": [describe(self.outputs[0], tuple(out.shape), "float32")],
        }


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
    ids[:, 0] = 49406 if cfg.vocab_size > 49406 else 0
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


def export_graph(spec: GraphSpec, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shapes the graphs keep dynamic
        torch.onnx.export(
            spec.module.eval(), tuple(spec.inputs.values()), str(path),
            input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes, opset_version=OPSET, dynamo=False,
            do_constant_folding=True,
        )


def check_graph(spec: GraphSpec, path: Path, tolerance: float = 1e-4) -> float:
    """Run the exported graph with ONNX Runtime against PyTorch, on the spec's inputs and on
    other sizes along the dynamic axes (catches baked-in sizes); raise if any output differs by
    more than `tolerance` relative to its scale. Returns the worst relative difference seen."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in (spec.inputs, spec.variant):
        with torch.no_grad():
            expected = spec.module(*inputs.values()).numpy()
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        if got.shape != expected.shape:
            raise ZsrisError(f"{path.name}: ONNX output shape {got.shape} != PyTorch "
                             f"{expected.shape}")
        scale = max(float(np.abs(expected).max()), 1e-6)
        diff = float(np.abs(got - expected).max()) / scale
        worst = max(worst, diff)
        if not np.isfinite(diff) or diff > tolerance:
            raise ZsrisError(f"{path.name}: ONNX Runtime and PyTorch disagree (max relative "
                             f"difference {diff:.2e} > {tolerance:.0e}); the export is broken")
    return worst


def export_clip_graphs(model: ClipModel, folder: Path, masked_blocks: int,
                       progress: Callable[[str], None] = print) -> dict[str, dict[str, object]]:
    """Write and check every CLIP graph; returns the manifest's `graphs` section."""
    graphs: dict[str, dict[str, object]] = {}
    for spec in clip_graph_specs(model, masked_blocks):
        path = folder / f"{spec.name}.onnx"
        progress(f"export {spec.name}")
        export_graph(spec, path)
        worst = check_graph(spec, path)
        progress(f"check  {spec.name}: ONNX Runtime vs PyTorch, max relative difference "
                 f"{worst:.1e}")
        graphs[spec.name] = {"file": path.name, **spec.io_manifest(),
                             "parity_max_rel_diff": worst}
    return graphs
