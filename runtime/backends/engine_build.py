"""Build a serialized TensorRT plan from one ONNX graph of a pack.

Optimisation profile (min / opt / max of every dynamic axis, from the manifest's symbolic shapes;
what the runtime really sends, see segmenter.py and proposer.py):
- `masks` (clip_masked_head grid masks): 1 / 32 / `max_masks` (default 128); more masks than
  that are split into chunks by the backend, never refused.
- clip_trunk `batch` (the image, or the K masked crops of the crop encoder) and clip_masked_head
  `batch` (its tokens: one image's, broadcast over the masks, or one per crop): 1 / 32 /
  `max_masks`, chunked alike (a one-row input goes whole to every chunk).
- clip_text `batch`: 1 / 2 / 8 (an expression and its noun phrase, or just one when equal);
  `length`: 2 / 16 / context_length (ids are cut after the longest end token: start + end is 2).
- prop_decoder `prompts`: 1 / points_per_batch / points_per_batch (one chunk of the point grid;
  the proposer sends fewer where a call would pass its memory budget, proposer.DECODER_CALL_BYTES:
  7 prompts at SAM 2 Hiera-tiny geometry); `points`: 1 / 1 / 1 (one point per prompt).
A dynamic axis with no rule is refused: an engine with a silent batch-1 profile is the classic
mistake (DESIGN.md §4).

Precision: fp32; fp16 (FP16 with LayerNorm, softmax, float gathers such as CLIP's end-token gather,
and the reduce/elementwise chain of a decomposed LayerNorm pinned to fp32 and obeyed); int8 (INT8 +
FP16, the same layers kept fp32, entropy calibration on recorded graph inputs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import atomic_write
from ..errors import PackError, ZsrisError
from ..pack import Pack
from .base import PRECISIONS
from .cuda_device import GrowingBuffers
from .engine_cache import Profile

DEFAULT_MAX_MASKS = 128
MASKS_OPT = 32
TEXT_BATCH = (1, 2, 8)
TEXT_LENGTH_MIN, TEXT_LENGTH_OPT = 2, 16
DEFAULT_WORKSPACE_MB = 1024
# Elementwise/unary layers this many steps below a reduce are taken as a decomposed LayerNorm
# (mean, x - mean, square, mean, + eps, sqrt, divide, scale, shift).
LAYERNORM_CHAIN = 6


def axis_range(pack: Pack, graph: str, axis: str, max_masks: int) -> tuple[int, int, int]:
    """(min, opt, max) of the symbolic axis `axis` of `graph`; see the module docstring."""
    if axis == "masks" or (graph in ("clip_trunk", "clip_masked_head", "clip_crop_head")
                           and axis == "batch"):
        return 1, min(MASKS_OPT, max_masks), max_masks
    if graph == "clip_text" and axis == "batch":
        return TEXT_BATCH
    if graph == "clip_text" and axis == "length":
        context = pack.clip.context_length
        return min(TEXT_LENGTH_MIN, context), min(TEXT_LENGTH_OPT, context), context
    if axis == "prompts" and pack.proposer is not None:
        per_batch = pack.proposer.generator.points_per_batch
        return 1, per_batch, per_batch
    if axis == "points":
        return 1, 1, 1
    raise PackError(f"pack {pack.root}: graph {graph} has a dynamic axis {axis!r} with no "
                    "TensorRT profile rule")


def graph_profile(pack: Pack, graph: str, max_masks: int = DEFAULT_MAX_MASKS) -> Profile:
    """The optimisation profile of `graph`: min/opt/max shapes of each input with a symbolic
    axis in the manifest (inputs of fixed shape need none)."""
    if max_masks < 1:
        raise ZsrisError(f"max_masks must be a positive integer, got {max_masks}")
    specs = pack.manifest.graphs.get(graph, {}).get("inputs")
    if not specs:
        raise PackError(f"pack {pack.root}: manifest.json lists no inputs for {graph}; "
                        "re-export the pack to build TensorRT engines")
    profile: Profile = {}
    for spec in specs:
        shape = spec["shape"]
        if all(isinstance(d, int) for d in shape):
            continue
        ranges = [axis_range(pack, graph, d, max_masks) if isinstance(d, str) else (d, d, d)
                  for d in shape]
        low, opt, high = (tuple(int(r[i]) for r in ranges) for i in range(3))
        profile[spec["name"]] = (low, opt, high)
    return profile


def parse_network(trt: Any, builder: Any, logger: Any, onnx_path: Path, graph: str
                  ) -> tuple[Any, Any]:
    """An explicit-batch network with the graph parsed into it; a parse failure is one line."""
    if int(trt.__version__.split(".")[0]) >= 10:
        flags = 0  # every TensorRT 10 network is explicit-batch; the flag is deprecated
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else "no error reported"
        raise ZsrisError(f"{graph}: TensorRT's ONNX parser rejects {onnx_path}: "
                         f"{str(first).splitlines()[0] if str(first) else 'unknown error'}")
    return network, parser


def check_profile(network: Any, graph: str, profile: Profile) -> None:
    """Every dynamic network input has a profile of its rank that agrees on the fixed axes."""
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if tensor.name not in profile:
            if any(d < 0 for d in dims):
                raise ZsrisError(f"{graph}: input {tensor.name} has dynamic shape {dims} but the "
                                 "manifest declares none (re-export the pack)")
            continue
        for shape in profile[tensor.name]:
            if len(shape) != len(dims) or any(
                    d >= 0 and d != s for d, s in zip(dims, shape, strict=True)):
                raise ZsrisError(f"{graph}: profile shape {shape} of {tensor.name} does not fit "
                                 f"the graph's {dims}")


def keep_fp32(trt: Any, network: Any) -> list[str]:
    """Pin the layers fp16 breaks to fp32: LayerNorm, softmax, gathers of float data (CLIP's
    end-token gather), the chain of a decomposed LayerNorm or L2 norm after its reduce, and the
    square feeding a reduce (an L2 norm's x·x overflows fp16 above 256: a ResNet's layer-4
    positions, SPEC §7). Returns the pinned layer names."""
    floats = {trt.float32, trt.float16}
    sensitive = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.GATHER}
    chain = {trt.LayerType.ELEMENTWISE, trt.LayerType.UNARY, trt.LayerType.ACTIVATION}
    layers = [network.get_layer(index) for index in range(network.num_layers)]
    reduced = {layer.get_input(i).name for layer in layers if layer.type == trt.LayerType.REDUCE
               for i in range(layer.num_inputs) if layer.get_input(i) is not None}
    depth_of_tensor: dict[str, int] = {}
    pinned = []
    for layer in layers:
        depth: int | None
        feeds_reduce = layer.type in chain and any(
            layer.get_output(i).name in reduced for i in range(layer.num_outputs))
        if layer.type == trt.LayerType.REDUCE or feeds_reduce:
            depth = 0
        elif layer.type in chain:
            depths = [depth_of_tensor[t.name] for t in
                      (layer.get_input(i) for i in range(layer.num_inputs))
                      if t is not None and t.name in depth_of_tensor]
            depth = min(depths) + 1 if depths and min(depths) < LAYERNORM_CHAIN else None
        else:
            depth = None
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if depth is not None:
            for tensor in outputs:
                depth_of_tensor[tensor.name] = depth
        if (layer.type in sensitive or depth is not None) and \
                all(t.dtype in floats for t in outputs):
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                layer.set_output_type(i, trt.float32)
            pinned.append(layer.name)
    return pinned


def calibration_set(entries: Iterable[dict[str, np.ndarray]]
                    ) -> tuple[list[dict[str, np.ndarray]], dict[str, tuple[int, ...]]]:
    """The entries of the most common shape, and that shape per input: TensorRT calibrates a
    dynamic-shape network at one shape (its calibration profile)."""
    entries = list(entries)
    if not entries:
        raise ZsrisError("int8 calibration needs at least one input batch")
    signature = [tuple(sorted((n, a.shape) for n, a in e.items())) for e in entries]
    common = Counter(signature).most_common(1)[0][0]
    return [e for e, s in zip(entries, signature, strict=True) if s == common], dict(common)


def padded_text_ids(entries: list[dict[str, np.ndarray]], pad: int
                    ) -> list[dict[str, np.ndarray]]:
    """Text entries with their ids padded to one length. TensorRT calibrates at a single shape;
    the runtime cuts ids after the end token, so entries differ in length, and padding after the
    end token leaves the pooled features unchanged (causal attention), so all of them count."""
    if not entries:
        return entries
    length = max(e["ids"].shape[1] for e in entries)
    return [{**e, "ids": np.pad(e["ids"], ((0, 0), (0, length - e["ids"].shape[1])),
                                constant_values=pad)} for e in entries]


def make_calibrator(trt: Any, device: Any, batches: list[dict[str, np.ndarray]],
                    dtypes: dict[str, np.dtype], cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 fed from `batches` (input name → array), one per get_batch,
    through reused device buffers; its cache is `cache_path` (read first when present)."""
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = iter(batches)
            self.buffers = GrowingBuffers(device)
            self.served = 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks take the batch from the calibration profile

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.pending, None)
            if batch is None:
                return None
            hosts, pointers = [], []
            for name in names:
                host = np.ascontiguousarray(batch[name], dtype=dtypes[name])
                buffer = self.buffers.get(name, host.nbytes)
                buffer.upload(host)
                hosts.append(host)
                pointers.append(buffer.ptr)
            device.synchronize()
            self.served += 1
            return pointers

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write(cache_path, bytes(cache))

        def free(self) -> None:
            self.buffers.free()

    return EntropyCalibrator()


def _load_timing_cache(config: Any, path: Path | None) -> None:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(data), False):
        # Written by another device or version: start afresh rather than fail the build.
        config.set_timing_cache(config.create_timing_cache(b""), False)


def build_plan(trt: Any, onnx_path: Path, graph: str, profile: Profile, precision: str = "fp32",
               workspace_mb: int = DEFAULT_WORKSPACE_MB, timing_cache: Path | None = None,
               calibration: Iterable[dict[str, np.ndarray]] | None = None,
               calibration_cache: Path | None = None, device: Any = None) -> bytes:
    """The serialized engine of one graph. int8 needs `calibration` (input dicts), a `device`
    for its buffers and a `calibration_cache` path. The timing cache file is read and updated."""
    if precision not in PRECISIONS:
        raise ZsrisError(f"unknown TensorRT precision {precision!r} (known: "
                         f"{', '.join(PRECISIONS)})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, onnx_path, graph)
    check_profile(network, graph, profile)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if profile:
        optimisation = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            optimisation.set_shape(name, low, opt, high)
        config.add_optimization_profile(optimisation)
    _load_timing_cache(config, timing_cache)
    calibrator = None
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        keep_fp32(trt, network)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if precision == "int8":
        if calibration is None or device is None or calibration_cache is None:
            raise ZsrisError(f"{graph}: an int8 engine needs calibration inputs "
                             "(--calib IMAGES)")
        batches, shapes = calibration_set(calibration)
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        dtypes = {t.name: np.dtype(trt.nptype(t.dtype)) for t in inputs}
        missing = sorted(set(dtypes) - set(shapes))
        if missing:
            raise ZsrisError(f"{graph}: calibration inputs lack {', '.join(missing)}")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(trt, device, batches, dtypes, calibration_cache)
        config.int8_calibrator = calibrator
        if profile:
            calibration_profile = builder.create_optimization_profile()
            for name in profile:
                calibration_profile.set_shape(name, shapes[name], shapes[name], shapes[name])
            config.set_calibration_profile(calibration_profile)
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if plan is None:
        raise ZsrisError(f"{graph}: TensorRT could not build the {precision} engine from "
                         f"{onnx_path.name} (its log above says why)")
    if timing_cache is not None:
        atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)
