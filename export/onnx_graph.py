"""Export one graph of a pack and prove it right: ONNX Runtime against PyTorch, at two sizes on
every dynamic axis, before the graph may enter a pack."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zsris_rt.errors import ZsrisError

OPSET = 17
# Protobuf cannot hold a model above 2 GiB (SAM ViT-H is 2.5 GB): such weights go to a side file.
EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass
class GraphSpec:
    name: str
    module: nn.Module  # returns one tensor or a tuple, in the order of `outputs`
    inputs: dict[str, torch.Tensor]  # example inputs, also used for the parity check
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    variant: dict[str, torch.Tensor]  # other sizes on the dynamic axes, for the parity check
    # Further input sets the parity check runs (e.g. another combination of the dynamic axes).
    more_variants: tuple[dict[str, torch.Tensor], ...] = ()

    def run_torch(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.module(*inputs.values())
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def io_manifest(self) -> dict[str, list[dict[str, object]]]:
        def describe(name: str, tensor: torch.Tensor) -> dict[str, object]:
            axes = self.dynamic_axes.get(name, {})
            return {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                    "shape": [axes.get(i, int(d)) for i, d in enumerate(tensor.shape)]}

        outputs = self.run_torch(self.inputs)
        return {"inputs": [describe(n, t) for n, t in self.inputs.items()],
                "outputs": [describe(n, t) for n, t in zip(self.outputs, outputs, strict=True)]}


def export_graph(spec: GraphSpec, path: Path) -> list[str]:
    """Write `spec` to `path`; returns the file names written (the graph, and its weights file
    when they exceed `EXTERNAL_DATA_BYTES`)."""
    import onnx

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shapes the graphs keep dynamic
        torch.onnx.export(
            spec.module.eval(), tuple(spec.inputs.values()), str(path),
            input_names=list(spec.inputs), output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes, opset_version=OPSET, dynamo=False,
            do_constant_folding=True,
        )
    weights = sum(p.numel() * p.element_size() for p in spec.module.parameters())
    if weights <= EXTERNAL_DATA_BYTES:
        return [path.name]
    # The exporter scatters large models over one file per tensor; gather them into one.
    model = onnx.load(str(path), load_external_data=True)
    scattered = {Path(entry.value).name for init in model.graph.initializer
                 for entry in init.external_data if entry.key == "location"}
    data_name = f"{path.name}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    for name in scattered - {data_name}:
        (path.parent / name).unlink(missing_ok=True)
    return [path.name, data_name]


def check_graph(spec: GraphSpec, path: Path, tolerance: float = 1e-4) -> float:
    """Run the exported graph with ONNX Runtime against PyTorch, on the spec's inputs and on
    other sizes along the dynamic axes (its variants: catches baked-in sizes); raise if any
    output differs by more than `tolerance` relative to its scale. Returns the worst relative
    difference seen."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # shape-merge chatter on Hiera graphs; errors still raise
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in (spec.inputs, spec.variant, *spec.more_variants):
        expected_all = spec.run_torch(inputs)
        got_all = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        for name, expected_t, got in zip(spec.outputs, expected_all, got_all, strict=True):
            expected = expected_t.numpy()
            if got.shape != expected.shape:
                raise ZsrisError(f"{path.name}: ONNX output {name} has shape {got.shape}, "
                                 f"PyTorch {expected.shape}")
            scale = max(float(np.abs(expected).max()), 1e-6)
            diff = float(np.abs(got - expected).max()) / scale
            worst = max(worst, diff)
            if not np.isfinite(diff) or diff > tolerance:
                raise ZsrisError(f"{path.name}: ONNX Runtime and PyTorch disagree on {name} (max "
                                 f"relative difference {diff:.2e} > {tolerance:.0e}); the export "
                                 "is broken")
    return worst


def export_checked(spec: GraphSpec, folder: Path,
                   progress: Callable[[str], None] = print) -> dict[str, object]:
    """Export and check one graph into `folder`; returns its manifest `graphs` entry."""
    path = folder / f"{spec.name}.onnx"
    progress(f"export {spec.name}")
    files = export_graph(spec, path)
    worst = check_graph(spec, path)
    progress(f"check  {spec.name}: ONNX Runtime vs PyTorch, max relative difference {worst:.1e}")
    return {"file": path.name, "files": files, **spec.io_manifest(),
            "parity_max_rel_diff": worst}
