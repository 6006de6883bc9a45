"""ONNX Runtime backends: CPU (the default everywhere), CUDA, and ORT's own TensorRT provider.

Sessions are made lazily, one per graph. onnxruntime-gpu silently falls back to the CPU when a
provider cannot start (missing CUDA libraries, a driver mismatch), so every session is checked
against what it really got (`session.get_providers()`), never against what the wheel claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ZsrisError
from ..pack import Pack
from .base import Backend


@dataclass(frozen=True)
class OrtFlavour:
    """One way of running the pack on ONNX Runtime: the providers asked for, in order, the one
    that must really run (else the backend refuses), and the device outputs are bound to."""

    name: str
    providers: list[tuple[str, dict[str, Any]]]
    required: str
    device: str = "cpu"
    io_binding: bool = False
    arena_devices: str = "cpu:0"  # the arenas a releasing run shrinks (ORT's "dev:id;..." form)
    notes: dict[str, Any] = field(default_factory=dict)


def cpu_flavour() -> OrtFlavour:
    return OrtFlavour("cpu", [("CPUExecutionProvider", {})], "CPUExecutionProvider")


def cuda_flavour(device_id: int = 0) -> OrtFlavour:
    """CUDA EP with IO binding: inputs copied in once, outputs allocated on the GPU by ORT and
    copied back once, so no graph pays ORT's per-run staging copies."""
    return OrtFlavour("cuda", [("CUDAExecutionProvider", {"device_id": device_id}),
                               ("CPUExecutionProvider", {})],
                      "CUDAExecutionProvider", device="cuda", io_binding=True,
                      arena_devices=f"cpu:0;gpu:{device_id}")


def ort_trt_flavour(cache_dir: str, precision: str, device_id: int = 0) -> OrtFlavour:
    """ORT's TensorRT EP: TensorRT builds engines per graph inside ONNX Runtime (first run is
    slow) and keeps them in `cache_dir`; CUDA then CPU take what TensorRT cannot run."""
    options = {"device_id": device_id, "trt_engine_cache_enable": True,
               "trt_engine_cache_path": cache_dir, "trt_timing_cache_enable": True,
               "trt_timing_cache_path": cache_dir, "trt_fp16_enable": precision == "fp16",
               "trt_int8_enable": precision == "int8"}
    return OrtFlavour("ort-trt", [("TensorrtExecutionProvider", options),
                                  ("CUDAExecutionProvider", {"device_id": device_id}),
                                  ("CPUExecutionProvider", {})],
                      "TensorrtExecutionProvider", device="cuda", io_binding=True,
                      arena_devices=f"cpu:0;gpu:{device_id}", notes={"engine_cache": cache_dir})


class OrtBackend(Backend):
    def __init__(self, pack: Pack, flavour: OrtFlavour | None = None,
                 threads: int | None = None, precision: str = "fp32") -> None:
        import onnxruntime as ort

        self._ort = ort
        self.pack = pack
        self.flavour = flavour or cpu_flavour()
        self.name = self.flavour.name
        self.threads = threads
        self.precision = precision
        # Graphs run from the pack's files; fp16 on ort-trt is an engine flag, not a variant.
        self.graph_precision = "fp32" if precision == "fp16" else precision
        self._sessions: dict[str, Any] = {}
        # A run with these options hands its arena's free chunks back to the system at its end
        # (shrinking after every call of a loop would cost ~30 % of the prompt decoder's time).
        self._releasing = ort.RunOptions()
        self._releasing.add_run_config_entry("memory.enable_memory_arena_shrinkage",
                                             self.flavour.arena_devices)

    def session(self, graph: str):  # -> onnxruntime.InferenceSession
        if graph not in self._sessions:
            options = self._ort.SessionOptions()
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads:
                options.intra_op_num_threads = self.threads
            options.log_severity_level = 3
            path = self.pack.graph_path(graph, self.graph_precision)
            wanted = self.flavour.required
            if wanted not in self._ort.get_available_providers():
                raise ZsrisError(f"backend {self.name}: this onnxruntime ({self._ort.__version__}"
                                 f") has no {wanted} (pip install onnxruntime-gpu, in place of "
                                 "onnxruntime; see the README's \"GPU / Jetson\" section)")
            try:
                session = self._ort.InferenceSession(
                    str(path), sess_options=options, providers=self.flavour.providers)
            except Exception as exc:  # ORT raises its own types for bad graphs
                raise ZsrisError(f"{path}: ONNX Runtime cannot load it ({exc})".splitlines()[0]) \
                    from None
            if wanted not in session.get_providers():
                raise ZsrisError(f"backend {self.name}: {wanted} is installed but did not start "
                                 f"for {path.name} (the session fell back to "
                                 f"{', '.join(session.get_providers())}); `zsris-rt doctor` "
                                 "shows why")
            self._sessions[graph] = session
        return self._sessions[graph]

    def prepare(self, graph: str) -> None:
        self.session(graph)

    def run(self, graph: str, inputs: dict[str, np.ndarray], *,
            release: bool = False) -> list[np.ndarray]:
        session = self.session(graph)
        options = self._releasing if release else None
        if not self.flavour.io_binding:
            return session.run(None, inputs, options)
        binding = session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for output in session.get_outputs():
            binding.bind_output(output.name, self.flavour.device)
        session.run_with_iobinding(binding, options)
        return binding.copy_outputs_to_cpu()

    def details(self) -> dict[str, object]:
        used = sorted({p for s in self._sessions.values() for p in s.get_providers()})
        graphs = sorted(self._sessions) or sorted(self.pack.manifest.graphs)
        return {"providers": used or [p for p, _ in self.flavour.providers],
                "precision": self.precision,
                "graph_precision": {g: self.pack.graph_precision(g, self.graph_precision)
                                    for g in graphs},
                **self.flavour.notes}
