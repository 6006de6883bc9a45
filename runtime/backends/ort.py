"""ONNX Runtime backend: CPU (the default everywhere); sessions are made lazily, one per graph."""

from __future__ import annotations

import numpy as np

from ..errors import ZsrisError
from ..pack import Pack
from .base import Backend


class OrtBackend(Backend):
    def __init__(self, pack: Pack, providers: list[str] | None = None,
                 threads: int | None = None, name: str = "cpu", precision: str = "fp32") -> None:
        import onnxruntime as ort

        self._ort = ort
        self.pack = pack
        self.name = name
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.precision = precision
        self._sessions: dict[str, object] = {}

    def session(self, graph: str):  # -> onnxruntime.InferenceSession
        if graph not in self._sessions:
            options = self._ort.SessionOptions()
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads:
                options.intra_op_num_threads = self.threads
            options.log_severity_level = 3
            path = self.pack.graph_path(graph, self.precision)
            try:
                self._sessions[graph] = self._ort.InferenceSession(
                    str(path), sess_options=options, providers=self.providers)
            except Exception as exc:  # ORT raises its own types for bad graphs
                raise ZsrisError(f"{path}: ONNX Runtime cannot load it ({exc})".splitlines()[0]) \
                    from None
        return self._sessions[graph]

    def prepare(self, graph: str) -> None:
        self.session(graph)

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session(graph).run(None, inputs)

    def describe(self) -> dict[str, object]:
        used = sorted({p for s in self._sessions.values() for p in s.get_providers()})
        return {"backend": self.name, "providers": used or self.providers}
