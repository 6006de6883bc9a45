"""Native TensorRT backend (`--backend trt`): cached engines run through the name-based API.

Each graph's engine is looked up in the engine cache (engine_cache.py) under a key of its ONNX
bytes, TensorRT version, GPU, precision and profile; a missing one is built (engine_build.py), a
cached one that no longer deserialises is rebuilt with a warning. Calls reuse one CUDA stream and
device buffers that only grow; inputs longer than the profile's max along their dynamic leading
axis run in chunks whose outputs are concatenated (a one-row input among them, such as one image's
tokens under K mask grids, goes whole to every chunk and is broadcast by the engine). Works with
TensorRT 8.6 and 10.x.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ZsrisError
from ..pack import Pack, sha256_file
from .base import Backend, run_in_chunks
from .cuda_device import (
    CudaDevice,
    CudaError,
    DeviceBuffer,
    GrowingBuffers,
    device_identity,
    import_cudart,
    visible_devices,
)
from .engine_build import (
    DEFAULT_MAX_MASKS,
    DEFAULT_WORKSPACE_MB,
    PRECISIONS,
    build_plan,
    graph_profile,
    padded_text_ids,
)
from .engine_cache import EngineCache, EngineKey, pack_graph_digests

Calibration = dict[str, Iterable[dict[str, np.ndarray]]]


def tensorrt_unavailable() -> str | None:
    """None when tensorrt and cuda-python import and a CUDA device is visible, else why not
    (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt is not installed ({exc})"
    try:
        count = visible_devices()
    except ImportError as exc:
        return f"cuda-python is not installed ({exc})"
    except CudaError as exc:
        return str(exc)
    return None if count > 0 else "no CUDA device is visible"


def _import_tensorrt() -> Any:
    reason = tensorrt_unavailable()
    if reason is not None:
        raise ZsrisError(f"the TensorRT backend cannot run here: {reason}")
    import tensorrt

    return tensorrt


def engine_key(pack: Pack, graph: str, precision: str, tensorrt: str, gpu: str,
               compute_capability: str, max_masks: int = DEFAULT_MAX_MASKS) -> EngineKey:
    """The cache key of `graph`'s engine (built from the pack's fp32 graph)."""
    digest = pack_graph_digests(pack).get(graph) or sha256_file(pack.graph_path(graph, "fp32"))
    return EngineKey(graph=graph, onnx_sha256=digest, tensorrt=tensorrt, gpu=gpu,
                     compute_capability=compute_capability, precision=precision,
                     profile=graph_profile(pack, graph, max_masks))


def engines_missing(pack: Pack, precision: str, cache_dir: Path | None = None,
                    max_masks: int | None = None) -> list[str]:
    """The graphs of `pack` with no cached engine for this GPU and TensorRT (needs both); with
    `max_masks` None, an engine of any masks profile counts."""
    import tensorrt

    gpu, capability = device_identity(import_cudart())
    cache = EngineCache(cache_dir)
    missing = []
    for graph in pack.graph_names:
        key = engine_key(pack, graph, precision, tensorrt.__version__, gpu, capability,
                         DEFAULT_MAX_MASKS if max_masks is None else max_masks)
        if not cache.plan_path(key).is_file() and \
                (max_masks is not None or cache.with_any_profile(key) is None):
            missing.append(graph)
    return missing


class _Engine:
    """One graph's deserialised engine, its execution context and its growing device buffers."""

    def __init__(self, trt: Any, engine: Any, graph: str, spec: dict[str, Any],
                 device: CudaDevice) -> None:
        self.graph, self.engine = graph, engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ZsrisError(f"{graph}: TensorRT cannot create an execution context")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [o["name"] for o in spec.get("outputs", [])] or \
            [n for n in names if n not in self.inputs]
        self.out_dtypes = {o["name"]: np.dtype(o["dtype"]) for o in spec.get("outputs", [])}
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        leading = {s["name"] for s in spec.get("inputs", [])
                   if s["shape"] and isinstance(s["shape"][0], str)}
        self.batched = [n for n in self.inputs if n in leading]
        self.ranges = {n: [tuple(d) for d in engine.get_tensor_profile_shape(n, 0)]
                       for n in self.inputs if any(d < 0 for d in engine.get_tensor_shape(n))}
        limits = [self.ranges[n][2][0] for n in self.batched if n in self.ranges]
        self.limit = min(limits) if limits else None
        self.buffers = GrowingBuffers(device)


class TrtBackend(Backend):
    """Runs the pack's graphs as TensorRT engines of `precision` on CUDA device 0. Calls are
    serialised (one execution context and stream per graph and backend)."""

    name = "trt"

    def __init__(self, pack: Pack, precision: str = "fp32", cache_dir: Path | None = None,
                 max_masks: int | None = None, build_missing: bool = True,
                 calibration: Calibration | None = None,
                 progress: Callable[[str], None] | None = None,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB) -> None:
        self.trt = _import_tensorrt()
        if precision not in PRECISIONS:
            raise ZsrisError(f"unknown TensorRT precision {precision!r} (fp32, fp16 or int8)")
        self.pack, self.precision = pack, precision
        self.cache = EngineCache(cache_dir)
        # None: reuse an engine of any masks profile (`zsris-export engines --max-masks N`),
        # building one of DEFAULT_MAX_MASKS when there is none.
        self.any_profile = max_masks is None
        self.max_masks = DEFAULT_MAX_MASKS if max_masks is None else int(max_masks)
        self.build_missing, self.calibration = build_missing, calibration or {}
        self.progress, self.workspace_mb = progress, workspace_mb
        self.device = CudaDevice()
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self._engines: dict[str, _Engine] = {}
        self._lock = threading.Lock()
        self.plans: dict[str, Path] = {}

    def key(self, graph: str) -> EngineKey:
        return engine_key(self.pack, graph, self.precision, self.trt.__version__,
                          self.device.name, self.device.compute_capability, self.max_masks)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def _deserialize(self, plan: bytes) -> Any:
        try:
            return self.runtime.deserialize_cuda_engine(plan)
        except Exception:  # noqa: BLE001 - TensorRT raises bare RuntimeErrors on bad plans
            return None

    def build(self, graph: str) -> Path:
        """Build `graph`'s engine now (replacing a cached one) and store it; returns its path."""
        key = self.key(graph)
        path = self.cache.plan_path(key)
        calibration_cache = path.with_suffix(".calib")
        calibration = None
        if self.precision == "int8":
            calibration = self.calibration.get(graph)
            if calibration is not None and graph == "clip_text":
                calibration = padded_text_ids(list(calibration), self.pack.clip.pad_token)
            if calibration is None:
                raise ZsrisError(f"{graph}: an int8 engine needs calibration inputs; build them "
                                 f"with `zsris-export engines {self.pack.root} --precision int8 "
                                 "--calib IMAGES...`")
            calibration_cache.unlink(missing_ok=True)
        self._say(f"building the {self.precision} TensorRT engine of {graph} (once per GPU "
                  "and TensorRT version)")
        start = time.perf_counter()
        plan = build_plan(self.trt, self.pack.graph_path(graph, "fp32"), graph, key.profile,
                          self.precision, self.workspace_mb,
                          self.cache.timing_cache_path(key.tensorrt, key.gpu,
                                                       key.compute_capability),
                          calibration, calibration_cache, self.device)
        return self.cache.store(key, plan, time.perf_counter() - start)

    def engine(self, graph: str) -> _Engine:
        """The graph's engine: from the cache, else built (see `build_missing`)."""
        if graph in self._engines:
            return self._engines[graph]
        if graph not in self.pack.graph_names:
            raise ZsrisError(f"pack {self.pack.root} has no graph {graph!r}")
        path = self.cache.plan_path(self.key(graph))
        if not path.is_file() and self.any_profile:
            path = self.cache.with_any_profile(self.key(graph)) or path
        engine = None
        if path.is_file():
            engine = self._deserialize(path.read_bytes())
            if engine is None:
                warnings.warn(f"{path}: cached TensorRT engine does not load (corrupt, or from "
                              "another TensorRT); rebuilding it", RuntimeWarning, stacklevel=2)
        if engine is None:
            if not self.build_missing:
                raise ZsrisError(f"no {self.precision} TensorRT engine of {graph} in "
                                 f"{self.cache.root}; build the engines with `zsris-export "
                                 f"engines {self.pack.root} --precision {self.precision}`")
            path = self.build(graph)
            engine = self._deserialize(path.read_bytes())
            if engine is None:
                raise ZsrisError(f"{path}: TensorRT cannot load the engine it just built")
        self.plans[graph] = path
        self._engines[graph] = _Engine(self.trt, engine, graph,
                                       self.pack.manifest.graphs.get(graph, {}), self.device)
        return self._engines[graph]

    def prepare(self, graph: str) -> None:
        self.engine(graph)

    def max_batch(self, graph: str) -> int | None:
        return self.engine(graph).limit

    def run(self, graph: str, inputs: dict[str, np.ndarray], *,
            release: bool = False) -> list[np.ndarray]:
        # `release` asks nothing here: the device buffers are grow-only and reused by design.
        with self._lock:
            return self._run(graph, inputs)

    def _run(self, graph: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        engine = self.engine(graph)
        missing = [n for n in engine.inputs if n not in inputs]
        if missing:
            raise ZsrisError(f"{graph}: missing input(s) {', '.join(missing)}")
        arrays = {n: np.asarray(inputs[n]) for n in engine.inputs}
        return run_in_chunks(partial(self._execute, engine), arrays, engine.batched,
                             engine.limit)

    def _execute(self, engine: _Engine, arrays: dict[str, np.ndarray], *,
                 release: bool = False) -> list[np.ndarray]:
        context, device = engine.context, self.device
        hosts = []  # alive until the stream is synchronised: the copies are asynchronous
        for name in engine.inputs:
            host = np.ascontiguousarray(arrays[name], dtype=engine.dtypes[name])
            if not context.set_input_shape(name, host.shape):
                low, _, high = engine.ranges.get(name, (None, None, None))
                raise ZsrisError(f"{engine.graph}: input {name} of shape {host.shape} is outside "
                                 f"the engine's profile (min {low}, max {high})")
            buffer = engine.buffers.get(name, host.nbytes)
            buffer.upload(host)
            self._bind(engine, name, buffer)
            hosts.append(host)
        outputs = []
        for name in engine.outputs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ZsrisError(f"{engine.graph}: TensorRT cannot tell the shape of output "
                                 f"{name} ({shape})")
            host = np.empty(shape, dtype=engine.dtypes[name])
            buffer = engine.buffers.get(name, host.nbytes)
            self._bind(engine, name, buffer)
            outputs.append((name, host, buffer))
        if not context.execute_async_v3(device.stream_handle):
            raise ZsrisError(f"{engine.graph}: TensorRT execution failed (its log above says why)")
        for _, host, buffer in outputs:
            buffer.download(host)
        device.synchronize()
        return [host.astype(engine.out_dtypes.get(name, host.dtype), copy=False)
                for name, host, _ in outputs]

    @staticmethod
    def _bind(engine: _Engine, name: str, buffer: DeviceBuffer) -> None:
        if not engine.context.set_tensor_address(name, buffer.ptr):
            raise ZsrisError(f"{engine.graph}: TensorRT refuses the address of tensor {name}")

    def close(self) -> None:
        """Give back the device buffers and the stream (the engines go with the backend)."""
        with self._lock:
            for engine in self._engines.values():
                engine.buffers.free()
            self._engines.clear()
            self.device.close()

    def details(self) -> dict[str, object]:
        return {"tensorrt": self.trt.__version__, "gpu": self.device.name,
                "compute_capability": self.device.compute_capability,
                "precision": self.precision,
                "engines": {graph: path.name for graph, path in self.plans.items()}}
