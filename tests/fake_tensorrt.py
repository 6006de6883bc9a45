"""Fakes of `tensorrt` (the 8.6 / 10.x Python API) and of cuda-python's `cudart`, for tests
without a GPU.

Faithful where zsris-rt depends on it: the same names, signatures and return conventions (cudart
returns `(error, value...)` tuples; TensorRT returns None or False on failure and logs why). The
ONNX parser reads the real graph with `onnx` and exposes one layer per node typed after its op;
the builder refuses a dynamic input without a profile, bad profiles, float output types on integer
tensors, int8 without a calibrator or calibration profile, and records per-layer precision; a
plan is magic + JSON header + the ONNX bytes, refused by a Runtime of another version or device.
Execution really computes: inputs are read from fake device memory, the graph runs on ONNX
Runtime CPU (one thread) and outputs are written back. Device memory is NumPy bytes behind fake
pointers; every copy must stay inside one allocation; stream work runs at synchronisation, so
a caller that forgets to synchronise reads garbage. Every call is recorded for the tests.
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx

PLAN_MAGIC = b"FAKETRT1"
DEVICE_BASE = 1 << 48  # above every user-space host address on x86_64
FLOAT_OPS = {"float32", "float16"}

OP_LAYERS = {
    "LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "Gather": "GATHER",
    "GatherElements": "GATHER", "GatherND": "GATHER", "ReduceMean": "REDUCE",
    "ReduceSum": "REDUCE", "ReduceMax": "REDUCE", "ReduceL2": "REDUCE", "Clip": "ACTIVATION",
    "MatMul": "MATRIX_MULTIPLY",
    "Gemm": "MATRIX_MULTIPLY", "Einsum": "EINSUM", "Conv": "CONVOLUTION", "AveragePool": "POOLING",
    "ConvTranspose": "DECONVOLUTION", "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE",
    "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE", "Equal": "ELEMENTWISE",
    "Mod": "ELEMENTWISE", "Sqrt": "UNARY", "Exp": "UNARY", "Neg": "UNARY", "Sin": "UNARY",
    "Cos": "UNARY", "Erf": "UNARY", "Not": "UNARY", "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION", "Reshape": "SHUFFLE", "Transpose": "SHUFFLE",
    "Flatten": "SHUFFLE", "Squeeze": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Identity": "IDENTITY",
    "Cast": "CAST", "Constant": "CONSTANT", "ConstantOfShape": "FILL", "Range": "FILL",
    "Shape": "SHAPE", "Slice": "SLICE", "Split": "SLICE", "Expand": "SLICE", "Tile": "SLICE",
    "Pad": "SLICE", "Concat": "CONCATENATION", "Where": "SELECT", "Resize": "RESIZE",
    "ScatterND": "SCATTER", "OneHot": "ONE_HOT", "Greater": "ELEMENTWISE",
    "GreaterOrEqual": "ELEMENTWISE", "Less": "ELEMENTWISE", "MaxPool": "POOLING", "Size": "SHAPE",
    "If": "CONDITION",
}
LAYER_TYPES = sorted(set(OP_LAYERS.values()) | {"PLUGIN_V2"})
ONNX_TYPES = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF",
              onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64",
              onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.INT8: "INT8",
              onnx.TensorProto.UINT8: "UINT8"}
NUMPY_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
            "BOOL": np.bool_, "INT8": np.int8, "UINT8": np.uint8}


class FakeGpu:
    """The shared state of both fakes: device memory, streams, the device, and call records."""

    def __init__(self, name: str = "NVIDIA H100 80GB HBM3", capability: tuple[int, int] = (9, 0),
                 count: int = 1, memory: int = 1 << 30) -> None:
        self.name, self.capability, self.count, self.memory = name, capability, count, memory
        self.allocations: dict[int, np.ndarray] = {}
        self.next_ptr = DEVICE_BASE
        self.streams: dict[int, list[Any]] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.builds: list[dict[str, Any]] = []  # plan headers, one per successful build
        self.executions: list[dict[str, Any]] = []  # graph file and input shapes per execute
        self.log: list[tuple[str, str]] = []  # TensorRT log lines (severity, message)
        self.calibration_reads: list[dict[str, np.ndarray]] = []
        self.trt: types.ModuleType | None = None
        self.cudart: types.ModuleType | None = None

    def used(self) -> int:
        return sum(a.nbytes for a in self.allocations.values())

    def region(self, ptr: int, nbytes: int) -> memoryview | None:
        """The bytes [ptr, ptr + nbytes) when they lie inside one allocation, else None."""
        for base, block in self.allocations.items():
            if base <= ptr and ptr + nbytes <= base + block.nbytes:
                return memoryview(block)[ptr - base:ptr - base + nbytes]
        return None

    def is_device(self, ptr: int) -> bool:
        return any(base <= ptr < base + b.nbytes for base, b in self.allocations.items())

    def count_calls(self, name: str) -> int:
        return sum(1 for call, _ in self.calls if call == name)


# ---------------------------------------------------------------------------------- cudart


def make_cudart(gpu: FakeGpu) -> types.ModuleType:
    cudart = types.ModuleType("cuda.bindings.runtime")

    class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2
        cudaErrorInvalidDevicePointer = 17
        cudaErrorInvalidMemcpyDirection = 21
        cudaErrorNoDevice = 100
        cudaErrorInvalidDevice = 101
        cudaErrorInvalidResourceHandle = 400
        cudaErrorIllegalAddress = 700

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToHost = 0
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3
        cudaMemcpyDefault = 4

    class cudaStream_t:  # noqa: N801
        def __init__(self, handle: int = 0) -> None:
            self._handle = handle

        def __int__(self) -> int:
            return self._handle

        def getPtr(self) -> int:  # noqa: N802
            return self._handle

    class cudaDeviceProp:  # noqa: N801
        def __init__(self) -> None:
            self.name = gpu.name.encode().ljust(256, b"\x00")
            self.major, self.minor = gpu.capability
            self.totalGlobalMem = gpu.memory

    ok = cudaError_t.cudaSuccess
    state = {"device": 0, "next_stream": 0x5000}

    def record(name: str, *args: Any) -> None:
        gpu.calls.append((name, args))

    def cudaGetErrorName(error: cudaError_t) -> tuple[cudaError_t, bytes]:  # noqa: N802
        return ok, cudaError_t(error).name.encode()

    def cudaGetDeviceCount() -> tuple[cudaError_t, int]:  # noqa: N802
        record("cudaGetDeviceCount")
        if gpu.count == 0:
            return cudaError_t.cudaErrorNoDevice, 0
        return ok, gpu.count

    def cudaSetDevice(device: int) -> tuple[cudaError_t]:  # noqa: N802
        record("cudaSetDevice", device)
        if not 0 <= device < gpu.count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        state["device"] = device
        return (ok,)

    def cudaGetDeviceProperties(device: int) -> tuple[cudaError_t, Any]:  # noqa: N802
        record("cudaGetDeviceProperties", device)
        if not 0 <= device < gpu.count:
            return cudaError_t.cudaErrorInvalidDevice, None
        return ok, cudaDeviceProp()

    def cudaStreamCreate() -> tuple[cudaError_t, Any]:  # noqa: N802
        record("cudaStreamCreate")
        state["next_stream"] += 16
        gpu.streams[state["next_stream"]] = []
        return ok, cudaStream_t(state["next_stream"])

    def cudaStreamDestroy(stream: Any) -> tuple[cudaError_t]:  # noqa: N802
        record("cudaStreamDestroy", int(stream))
        if gpu.streams.pop(int(stream), None) is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (ok,)

    def cudaStreamSynchronize(stream: Any) -> tuple[cudaError_t]:  # noqa: N802
        record("cudaStreamSynchronize", int(stream))
        queue = gpu.streams.get(int(stream))
        if queue is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        failed = None
        while queue:
            if not queue.pop(0)():
                failed = cudaError_t.cudaErrorIllegalAddress
        return (failed or ok,)

    def cudaMalloc(size: int) -> tuple[cudaError_t, int]:  # noqa: N802
        record("cudaMalloc", size)
        if size < 0 or gpu.used() + size > gpu.memory:
            return cudaError_t.cudaErrorMemoryAllocation, 0
        ptr = gpu.next_ptr
        gpu.next_ptr += max((size + 255) // 256 * 256, 256)
        gpu.allocations[ptr] = np.zeros(size, dtype=np.uint8)
        return ok, ptr

    def cudaFree(ptr: int) -> tuple[cudaError_t]:  # noqa: N802
        record("cudaFree", ptr)
        if gpu.allocations.pop(int(ptr), None) is None:
            return (cudaError_t.cudaErrorInvalidDevicePointer,)
        return (ok,)

    def cudaMemcpyAsync(dst: int, src: int, count: int, kind: cudaMemcpyKind,  # noqa: N802
                        stream: Any) -> tuple[cudaError_t]:
        record("cudaMemcpyAsync", dst, src, count, cudaMemcpyKind(kind), int(stream))
        queue = gpu.streams.get(int(stream))
        if queue is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            if gpu.region(dst, count) is None or gpu.is_device(src):
                return (cudaError_t.cudaErrorInvalidValue,)

            def run() -> bool:
                gpu.region(dst, count)[:] = ctypes.string_at(src, count)
                return True
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            if gpu.region(src, count) is None or gpu.is_device(dst):
                return (cudaError_t.cudaErrorInvalidValue,)

            def run() -> bool:
                ctypes.memmove(dst, bytes(gpu.region(src, count)), count)
                return True
        else:
            return (cudaError_t.cudaErrorInvalidMemcpyDirection,)
        queue.append(run)
        return (ok,)

    for item in (cudaError_t, cudaMemcpyKind, cudaStream_t, cudaGetErrorName,
                 cudaGetDeviceCount, cudaSetDevice, cudaGetDeviceProperties, cudaStreamCreate,
                 cudaStreamDestroy, cudaStreamSynchronize, cudaMalloc, cudaFree, cudaMemcpyAsync):
        setattr(cudart, item.__name__, item)
    return cudart


# -------------------------------------------------------------------------------- tensorrt


class IHostMemory(bytes):
    """TensorRT's serialized blob: a buffer with `nbytes`."""

    @property
    def nbytes(self) -> int:
        return len(self)


class Dims(tuple):
    """trt.Dims: iterable ints, -1 for a dynamic axis."""


def make_tensorrt(gpu: FakeGpu, version: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    type_names = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + \
        (["INT64"] if major >= 10 else [])
    DataType = enum.IntEnum("DataType", type_names, start=0)  # noqa: N806
    trt.DataType = DataType
    for alias, name in (("float32", "FLOAT"), ("float16", "HALF"), ("int8", "INT8"),
                        ("int32", "INT32"), ("bool", "BOOL"), ("uint8", "UINT8"),
                        ("int64", "INT64")):
        if name in DataType.__members__:
            setattr(trt, alias, DataType[name])

    def engine_type(onnx_type: int) -> Any:
        """TensorRT 8.6 runs int64 tensors as int32; 10.x keeps int64."""
        name = ONNX_TYPES.get(onnx_type, "FLOAT")
        if name == "INT64" and major < 10:
            name = "INT32"
        return DataType[name]

    def nptype(dtype: Any) -> type:
        return NUMPY_OF[DataType(dtype).name]

    trt.nptype = nptype

    class Logger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        INTERNAL_ERROR, ERROR, WARNING = Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING
        INFO, VERBOSE = Severity.INFO, Severity.VERBOSE

        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            self.min_severity = min_severity

        def log(self, severity: Any, msg: str) -> None:
            gpu.log.append((Logger.Severity(severity).name, msg))
            if severity <= self.min_severity:
                print(f"[TRT] [{Logger.Severity(severity).name[0]}] {msg}", file=sys.stderr)

    trt.Logger = Logger
    trt.ILogger = Logger
    flags = ["EXPLICIT_BATCH"] + (["STRONGLY_TYPED"] if major >= 10 else [])
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags,
                                                     start=0)
    LayerType = enum.IntEnum("LayerType", LAYER_TYPES, start=0)  # noqa: N806
    trt.LayerType = LayerType
    BuilderFlag = enum.IntEnum("BuilderFlag", ["FP16", "INT8", "DEBUG", "GPU_FALLBACK",  # noqa: N806
                                               "REFIT", "DISABLE_TIMING_CACHE", "TF32",
                                               "SPARSE_WEIGHTS", "SAFETY_SCOPE",
                                               "OBEY_PRECISION_CONSTRAINTS",
                                               "PREFER_PRECISION_CONSTRAINTS"], start=0)
    trt.BuilderFlag = BuilderFlag
    MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM",  # noqa: N806
                                                     "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM",
                                                     "TACTIC_DRAM"], start=0)
    trt.MemoryPoolType = MemoryPoolType
    TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)  # noqa: N806
    trt.TensorIOMode = TensorIOMode
    ErrorCode = enum.IntEnum("ErrorCode", ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED",  # noqa: N806
                                           "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
                                           "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH",
                                           "UNSUPPORTED_NODE"], start=0)
    trt.ErrorCode = ErrorCode

    class ITensor:
        def __init__(self, name: str, dtype: Any, shape: tuple[int, ...] = ()) -> None:
            self.name, self.dtype, self.shape = name, dtype, Dims(shape)

    class ILayer:
        def __init__(self, name: str, kind: Any, inputs: list[Any], outputs: list[Any]) -> None:
            self.name, self.type = name, kind
            self._inputs, self._outputs = inputs, outputs
            self._precision: Any = None
            self._output_types: dict[int, Any] = {}

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, index: int) -> Any:
            return self._inputs[index]

        def get_output(self, index: int) -> Any:
            return self._outputs[index]

        @property
        def precision(self) -> Any:
            return DataType.FLOAT if self._precision is None else self._precision

        @precision.setter
        def precision(self, dtype: Any) -> None:
            self._precision = DataType(dtype)

        @property
        def precision_is_set(self) -> bool:
            return self._precision is not None

        def set_output_type(self, index: int, dtype: Any) -> None:
            if not 0 <= index < len(self._outputs):
                raise IndexError(f"layer {self.name} has no output {index}")
            self._output_types[index] = DataType(dtype)

        def get_output_type(self, index: int) -> Any:
            return self._output_types.get(index, self._outputs[index].dtype)

        def output_type_is_set(self, index: int) -> bool:
            return index in self._output_types

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.explicit = major >= 10 or bool(flags & (1 << 0))
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []
            self._layers: list[ILayer] = []
            self.onnx_bytes = b""
            self.source = ""

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))
        num_layers = property(lambda self: len(self._layers))

        def get_input(self, index: int) -> Any:
            return self._inputs[index]

        def get_output(self, index: int) -> Any:
            return self._outputs[index]

        def get_layer(self, index: int) -> Any:
            return self._layers[index]

    class ParserError:
        def __init__(self, code: Any, desc: str, node: int = -1) -> None:
            self._code, self._desc, self._node = code, desc, node

        def code(self) -> Any:
            return self._code

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def __str__(self) -> str:
            return f"In node {self._node} ({self._code.name}): {self._desc}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self.network, self.logger = network, logger
            self._errors: list[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def _fail(self, code: Any, desc: str, node: int = -1) -> bool:
            self._errors.append(ParserError(code, desc, node))
            self.logger.log(Logger.ERROR, f"ModelImporter: {desc}")
            return False

        def parse_from_file(self, model: str) -> bool:
            try:
                data = Path(model).read_bytes()
            except OSError as exc:
                return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED,
                                  f"Failed to open file {model}: {exc.strerror}")
            self.network.source = Path(model).name
            return self.parse(data, model)

        def parse(self, model: bytes, path: str | None = None) -> bool:
            network = self.network
            if not network.explicit:
                return self._fail(ErrorCode.INVALID_GRAPH, "The ONNX parser only supports "
                                  "networks with an explicit batch dimension")
            try:
                inferred = onnx.load_from_string(bytes(model))
            except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds on bad bytes
                return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED,
                                  f"Failed to parse ONNX model ({type(exc).__name__})")
            try:
                inferred = onnx.shape_inference.infer_shapes(inferred)
            except Exception:  # noqa: BLE001 - unknown ops: the importer below names them
                pass
            graph = inferred.graph
            types_of = {v.name: v.type.tensor_type.elem_type for v in
                        list(graph.input) + list(graph.output) + list(graph.value_info)}
            weights = {w.name for w in graph.initializer}
            tensors: dict[str, ITensor] = {}
            for value in graph.input:
                if value.name in weights:
                    continue
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                             for d in value.type.tensor_type.shape.dim)
                tensors[value.name] = ITensor(value.name, engine_type(types_of[value.name]), dims)
                network._inputs.append(tensors[value.name])
            for w in graph.initializer:
                tensors[w.name] = ITensor(w.name, engine_type(w.data_type))
            for index, node in enumerate(graph.node):
                kind = OP_LAYERS.get(node.op_type)
                if kind is None or node.domain not in ("", "ai.onnx"):
                    return self._fail(ErrorCode.UNSUPPORTED_NODE, f"No importer registered for "
                                      f"op: {node.op_type}", index)
                outputs = [ITensor(o, engine_type(types_of.get(o, onnx.TensorProto.FLOAT)))
                           for o in node.output]
                inputs = [tensors.get(i) for i in node.input]
                tensors.update({t.name: t for t in outputs})
                network._layers.append(ILayer(node.name or f"{node.op_type}_{index}",
                                              LayerType[kind], inputs, outputs))
            for value in graph.output:
                tensor = tensors[value.name]
                tensor.shape = Dims(d.dim_value if d.HasField("dim_value") else -1
                                    for d in value.type.tensor_type.shape.dim)
                network._outputs.append(tensor)
            network.onnx_bytes = bytes(model)
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[Dims]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
            self.shapes[input] = [Dims(int(d) for d in s) for s in (min, opt, max)]

    class ITimingCache:
        def __init__(self, entries: list[str], origin: tuple[str, str]) -> None:
            self.entries, self.origin = entries, origin

        def serialize(self) -> IHostMemory:
            return IHostMemory(json.dumps({"trt": self.origin[0], "gpu": self.origin[1],
                                           "entries": self.entries}).encode())

    here = (version, gpu.name)

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set[Any] = set()
            self.pools: dict[Any, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.int8_calibrator: Any = None
            self.calibration_profile: IOptimizationProfile | None = None
            self.timing_cache: ITimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self.pools[MemoryPoolType(pool)] = int(pool_size)

        def set_flag(self, flag: Any) -> None:
            self.flags.add(BuilderFlag(flag))

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self.calibration_profile = profile
            return True

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            data = bytes(serialized_timing_cache)
            if not data:
                return ITimingCache([], here)
            try:
                blob = json.loads(data)
                return ITimingCache(list(blob["entries"]), (blob["trt"], blob["gpu"]))
            except (ValueError, KeyError, TypeError):
                return ITimingCache([], here)

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache.origin != here and not ignore_mismatch:
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.timing_cache

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            self._trt_base_initialised = True

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    def check_profile(profile: IOptimizationProfile, network: INetworkDefinition,
                      logger: Logger, what: str) -> bool:
        for tensor in network._inputs:
            dynamic = any(d < 0 for d in tensor.shape)
            shapes = profile.shapes.get(tensor.name)
            if shapes is None:
                if dynamic:
                    logger.log(Logger.ERROR, f"4: [network.cpp::validate] Error Code 4: "
                               f"{what} has no shape for dynamic input {tensor.name} "
                               f"{tuple(tensor.shape)}")
                    return False
                continue
            low, opt, high = shapes
            if not len(low) == len(opt) == len(high) == len(tensor.shape) or any(
                    not (0 <= a <= b <= c) or (d >= 0 and not a == b == c == d)
                    for a, b, c, d in zip(low, opt, high, tensor.shape, strict=True)):
                logger.log(Logger.ERROR, f"4: {what}: invalid dimensions {low} {opt} {high} "
                           f"for input {tensor.name} {tuple(tensor.shape)}")
                return False
        return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def _error(self, message: str) -> None:
            self.logger.log(Logger.ERROR, message)

        def build_serialized_network(self, network: INetworkDefinition,
                                     config: IBuilderConfig) -> IHostMemory | None:
            dynamic = any(d < 0 for t in network._inputs for d in t.shape)
            if dynamic and not config.profiles:
                self._error("4: [network.cpp::validate] Error Code 4: Network has dynamic or "
                            "shape inputs, but no optimization profile has been defined.")
                return None
            for index, profile in enumerate(config.profiles):
                if not check_profile(profile, network, self.logger, f"profile {index}"):
                    return None
            floats = {DataType.FLOAT, DataType.HALF}
            for layer in network._layers:
                for index, dtype in layer._output_types.items():
                    if dtype in floats and layer._outputs[index].dtype not in floats:
                        self._error(f"4: layer {layer.name}: output {index} is "
                                    f"{layer._outputs[index].dtype.name}; it cannot be set to "
                                    f"{dtype.name}")
                        return None
            calibration = None
            if BuilderFlag.INT8 in config.flags:
                calibration = self._calibrate(network, config, dynamic)
                if calibration is None:
                    return None
            obey = {BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                    BuilderFlag.PREFER_PRECISION_CONSTRAINTS} & config.flags
            layers = []
            for layer in network._layers:
                is_float = all(t.dtype in floats for t in layer._outputs)
                if layer.precision_is_set and obey:
                    precision = layer._precision.name
                elif is_float and BuilderFlag.INT8 in config.flags and layer.type in (
                        LayerType.MATRIX_MULTIPLY, LayerType.CONVOLUTION):
                    precision = "INT8"
                elif is_float and BuilderFlag.FP16 in config.flags:
                    precision = "HALF"
                elif is_float:
                    precision = "FLOAT"
                else:
                    precision = layer._outputs[0].dtype.name if layer._outputs else "FLOAT"
                outputs = []
                for i, tensor in enumerate(layer._outputs):
                    if layer.output_type_is_set(i) and obey:
                        outputs.append(layer.get_output_type(i).name)
                    elif tensor.dtype in floats and precision in ("HALF", "INT8"):
                        outputs.append("HALF")
                    else:
                        outputs.append(tensor.dtype.name)
                layers.append({"name": layer.name, "type": layer.type.name,
                               "precision": precision, "outputs": outputs})
            hits = 0
            if config.timing_cache is not None:
                signatures = [f"{layer['type']}:{layer['precision']}" for layer in layers]
                hits = sum(1 for s in signatures if s in config.timing_cache.entries)
                config.timing_cache.entries = sorted(set(config.timing_cache.entries) |
                                                     set(signatures))
            io = [{"name": t.name, "mode": "INPUT", "dtype": t.dtype.name, "shape": list(t.shape)}
                  for t in network._inputs]
            io += [{"name": t.name, "mode": "OUTPUT", "dtype": t.dtype.name,
                    "shape": list(t.shape)} for t in network._outputs]
            header = {"version": version, "capability": list(gpu.capability),
                      "source": network.source,
                      "flags": sorted(f.name for f in config.flags),
                      "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
                      "profiles": [{n: [list(s) for s in shapes] for n, shapes in
                                    p.shapes.items()} for p in config.profiles],
                      "io": io, "layers": layers, "calibration": calibration,
                      "timing_cache_hits": hits}
            gpu.builds.append(header)
            text = json.dumps(header).encode()
            return IHostMemory(PLAN_MAGIC + struct.pack("<Q", len(text)) + text +
                               network.onnx_bytes)

        def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig,
                       dynamic: bool) -> dict[str, Any] | None:
            calibrator = config.int8_calibrator
            if calibrator is None:
                self._error("4: INT8 requested without a calibrator or dynamic ranges")
                return None
            if not getattr(calibrator, "_trt_base_initialised", False):
                raise TypeError("calibrator: the base class __init__ was not called")
            profile = config.calibration_profile
            if dynamic and profile is None:
                self._error("4: calibration profile must be set to calibrate a network with "
                            "dynamic shapes")
                return None
            if profile is not None and not check_profile(profile, network, self.logger,
                                                         "calibration profile"):
                return None
            cached = calibrator.read_calibration_cache()
            if cached:
                scales = dict(line.split(": ") for line in bytes(cached).decode().splitlines()[1:])
                return {"batches": 0, "from_cache": True, "scales": scales}
            calibrator.get_batch_size()
            names = [t.name for t in network._inputs]
            absmax = dict.fromkeys(names, 0.0)
            batches = 0
            while True:
                pointers = calibrator.get_batch(names)
                if not pointers:
                    break
                batch = {}
                for tensor, ptr in zip(network._inputs, pointers, strict=True):
                    shape = tuple(profile.shapes[tensor.name][1]) if profile is not None and \
                        tensor.name in profile.shapes else tuple(tensor.shape)
                    dtype = np.dtype(nptype(tensor.dtype))
                    region = gpu.region(int(ptr), int(np.prod(shape)) * dtype.itemsize)
                    if region is None:
                        self._error(f"1: calibration batch for {tensor.name}: bad device pointer")
                        return None
                    batch[tensor.name] = np.frombuffer(region, dtype=dtype).reshape(shape).copy()
                    absmax[tensor.name] = max(absmax[tensor.name],
                                              float(np.abs(batch[tensor.name]).max(initial=0)))
                gpu.calibration_reads.append(batch)
                batches += 1
            if batches == 0:
                self._error("2: calibration failure: the calibrator gave no batch")
                return None
            scales = {n: struct.pack(">f", v / 127.0).hex() for n, v in absmax.items()}
            calibrator.write_calibration_cache(IHostMemory(
                (f"TRT-{version.replace('.', '')}-EntropyCalibration2\n" +
                 "".join(f"{n}: {s}\n" for n, s in scales.items())).encode()))
            return {"batches": batches, "from_cache": False, "scales": scales}

    class ICudaEngine:
        def __init__(self, header: dict[str, Any], onnx_bytes: bytes) -> None:
            self.header, self.onnx_bytes = header, onnx_bytes
            self.io = header["io"]
            self._session: Any = None
            self._shape_cache: dict[Any, dict[str, tuple[int, ...]]] = {}

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def _spec(self, name: str) -> dict[str, Any]:
            for spec in self.io:
                if spec["name"] == name:
                    return spec
            raise KeyError(name)

        def get_tensor_name(self, index: int) -> str:
            return self.io[index]["name"]

        def get_tensor_mode(self, name: str) -> Any:
            try:
                return TensorIOMode[self._spec(name)["mode"]]
            except KeyError:
                return TensorIOMode.NONE

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType[self._spec(name)["dtype"]]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._spec(name)["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            profiles = self.header["profiles"]
            if not 0 <= profile_index < len(profiles) or name not in profiles[profile_index]:
                raise ValueError(f"no profile {profile_index} shape for {name}")
            return [Dims(s) for s in profiles[profile_index][name]]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

        def session(self) -> Any:
            if self._session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                self._session = ort.InferenceSession(self.onnx_bytes, sess_options=options,
                                                     providers=["CPUExecutionProvider"])
            return self._session

        def feed(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            """Engine-typed inputs as the ONNX graph wants them (int32 back to int64)."""
            wanted = {i.name: i.type for i in self.session().get_inputs()}
            return {n: a.astype(np.int64) if wanted[n] == "tensor(int64)" else a
                    for n, a in arrays.items()}

        def output_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
            """What TensorRT's shape inference would say: one dry run at these input shapes."""
            key = tuple(sorted(shapes.items()))
            if key not in self._shape_cache:
                zeros = {n: np.zeros(s, dtype=nptype(self.get_tensor_dtype(n)))
                         for n, s in shapes.items()}
                names = [o.name for o in self.session().get_outputs()]
                results = self.session().run(names, self.feed(zeros))
                self._shape_cache[key] = {n: r.shape for n, r in zip(names, results, strict=True)}
            return self._shape_cache[key]

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            engine = self.engine
            if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
                return False
            shape = tuple(int(d) for d in shape)
            fixed = engine.get_tensor_shape(name)
            if len(shape) != len(fixed) or any(f >= 0 and f != s for f, s in
                                               zip(fixed, shape, strict=True)):
                return False
            if any(f < 0 for f in fixed):
                low, _, high = engine.get_tensor_profile_shape(name, 0)
                if any(not lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
                    gpu.log.append(("ERROR", f"3: setInputShape: {name} {shape} is outside the "
                                             f"profile [{tuple(low)}, {tuple(high)}]"))
                    return False
            self.shapes[name] = shape
            return True

        def _input_shapes(self) -> dict[str, tuple[int, ...]] | None:
            shapes = {}
            for spec in self.engine.io:
                if spec["mode"] != "INPUT":
                    continue
                shape = self.shapes.get(spec["name"], tuple(spec["shape"]))
                if any(d < 0 for d in shape):
                    return None
                shapes[spec["name"]] = shape
            return shapes

        def get_tensor_shape(self, name: str) -> Dims:
            if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
                return Dims(self.shapes.get(name, self.engine.get_tensor_shape(name)))
            shapes = self._input_shapes()
            if shapes is None:
                return self.engine.get_tensor_shape(name)
            return Dims(self.engine.output_shapes(shapes)[name])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
                return False
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            queue = gpu.streams.get(int(stream_handle))
            shapes = self._input_shapes()
            unset = [s["name"] for s in self.engine.io if not self.addresses.get(s["name"])]
            if queue is None or shapes is None or unset:
                gpu.log.append(("ERROR", f"3: enqueueV3: stream {stream_handle}, shapes "
                                         f"{shapes}, unset addresses {unset}"))
                return False
            addresses, engine = dict(self.addresses), self.engine
            gpu.executions.append({"source": engine.header["source"], "shapes": shapes})

            def run() -> bool:
                arrays = {}
                for name, shape in shapes.items():
                    dtype = np.dtype(nptype(engine.get_tensor_dtype(name)))
                    region = gpu.region(addresses[name], int(np.prod(shape)) * dtype.itemsize)
                    if region is None:
                        return False
                    arrays[name] = np.frombuffer(region, dtype=dtype).reshape(shape).copy()
                names = [o.name for o in engine.session().get_outputs()]
                results = engine.session().run(names, engine.feed(arrays))
                for name, result in zip(names, results, strict=True):
                    data = np.ascontiguousarray(result,
                                                dtype=nptype(engine.get_tensor_dtype(name)))
                    region = gpu.region(addresses[name], data.nbytes)
                    if region is None:
                        return False
                    region[:] = data.tobytes()
                return True

            queue.append(run)
            return True

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
            data = bytes(serialized_engine)
            try:
                if not data.startswith(PLAN_MAGIC):
                    raise ValueError("magic tag")
                (size,) = struct.unpack("<Q", data[8:16])
                header = json.loads(data[16:16 + size])
                onnx_bytes = data[16 + size:]
            except (ValueError, struct.error):
                self.logger.log(Logger.ERROR, "1: [stdArchiveReader.cpp] Error Code 1: "
                                "Serialization assertion failed (magic tag does not match)")
                return None
            if header.get("version") != version:
                self.logger.log(Logger.ERROR, f"6: The engine plan file is not compatible with "
                                f"this version of TensorRT, expecting library version {version} "
                                f"got {header.get('version')}, please rebuild.")
                return None
            if tuple(header.get("capability", ())) != gpu.capability:
                self.logger.log(Logger.ERROR, "6: The engine plan file is generated on an "
                                "incompatible device, please rebuild.")
                return None
            return ICudaEngine(header, onnx_bytes)

    for item in (Builder, Runtime, OnnxParser, IBuilderConfig, IOptimizationProfile,
                 INetworkDefinition, ICudaEngine, IExecutionContext, ITimingCache, ILayer,
                 ITensor, ParserError):
        setattr(trt, item.__name__, item)
    trt.IHostMemory = IHostMemory
    trt.Dims = Dims
    return trt


def read_plan_header(plan: bytes) -> dict[str, Any]:
    """The JSON header of a fake plan (what the engine inspector would show)."""
    assert plan.startswith(PLAN_MAGIC)
    (size,) = struct.unpack("<Q", plan[8:16])
    return json.loads(plan[16:16 + size])


def install(monkeypatch: Any, version: str = "10.3.0", gpu: FakeGpu | None = None,
            cuda_layout: str = "bindings") -> FakeGpu:
    """Put the fakes in sys.modules for one test: `tensorrt`, and cuda-python as
    `cuda.bindings.runtime` ("bindings", ≥ 12.6) or `cuda.cudart` ("legacy")."""
    gpu = gpu or FakeGpu()
    gpu.trt, gpu.cudart = make_tensorrt(gpu, version), make_cudart(gpu)
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []
    monkeypatch.setitem(sys.modules, "tensorrt", gpu.trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    if cuda_layout == "bindings":
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = gpu.cudart
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", gpu.cudart)
    else:
        gpu.cudart.__name__ = "cuda.cudart"
        cuda.cudart = gpu.cudart
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        monkeypatch.setitem(sys.modules, "cuda.cudart", gpu.cudart)
    return gpu
