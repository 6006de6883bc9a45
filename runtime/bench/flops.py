"""The compute floor: a graph's FLOPs (2 × the multiply-adds of every MatMul, Gemm and Conv,
counted on the ONNX graph at the shapes of the run) over this machine's best measured fp32
matrix-multiply rate. A stage cannot run faster than its floor without doing less arithmetic.

Both workers need the `onnx` package (the `export` extra); without it the floors are left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..pack import load_pack
from .stats import Json

COUNTED_OPS = ("MatMul", "Gemm", "Conv")
INLINE_LIMIT = 4096  # initializers above this many values become shaped inputs for inference


def count_flops(model: Any) -> Json:
    """FLOPs of the MatMul/Gemm/Conv nodes of a shape-inferred ONNX model; a node whose shapes
    inference left unknown is counted in "unknown_nodes", not guessed."""
    import numpy as np

    graph = model.graph
    shapes: dict[str, list[int | None]] = {
        v.name: [d.dim_value if d.HasField("dim_value") else None
                 for d in v.type.tensor_type.shape.dim]
        for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    flops, unknown, nodes = 0, 0, 0
    for node in graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        nodes += 1
        a, b, y = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if not a or not b or not y or None in a + b + y:
            unknown += 1
            continue
        ia, ib, iy = ([int(d) for d in dims if d is not None] for dims in (a, b, y))
        if node.op_type == "Conv":  # per output element: C_in/groups × kernel area
            flops += 2 * int(np.prod(iy)) * int(np.prod(ib[1:]))
        elif node.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            flops += 2 * int(np.prod(iy)) * (ia[0] if trans_a else ia[-1])
        else:
            flops += 2 * int(np.prod(iy)) * ia[-1]
    return {"flops": flops, "nodes": nodes, "unknown_nodes": unknown}


def _shapes_only(model: Any) -> None:
    """Turn the large initializers into shaped inputs: shape inference needs their shapes, not
    their values, and runs much faster without them."""
    import numpy as np
    import onnx

    for tensor in [t for t in model.graph.initializer if np.prod(t.dims) > INLINE_LIMIT]:
        model.graph.input.append(onnx.helper.make_tensor_value_info(
            tensor.name, tensor.data_type, list(tensor.dims)))
        model.graph.initializer.remove(tensor)


def graph_flops(model: Any, dims: dict[str, int], scratch: Path) -> Json:
    """FLOPs of `model` with its named dynamic input axes fixed to `dims`, counted on the graph
    ONNX Runtime runs: its basic optimisations (constant folding) resolve the shape-dependent
    `If` nodes that symbolic shape inference cannot follow (SAM 2's exports have some)."""
    import copy

    import onnx
    import onnxruntime as ort
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    fixed = copy.deepcopy(model)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_value = dims[dim.dim_param]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(scratch)
    options.log_severity_level = 3
    ort.InferenceSession(fixed.SerializeToString(), sess_options=options,
                         providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(scratch))
    scratch.unlink()
    _shapes_only(optimised)
    return count_flops(SymbolicShapeInference.infer_shapes(optimised))


# The crop encoder's key: no graph of its own, but the trunk on the crops (batch = the crops) and
# then the masked head (one all-ones grid per crop), or a ResNet pack's crop head; its FLOPs are
# counted as that sum.
CROP_ENCODER = "crop_encoder"
# Axes a count may leave out: the head's tokens are one image's on the global path.
IMPLIED_DIMS = {"clip_masked_head": {"batch": 1}}


def count_pack_flops(spec: Json) -> Json:
    """Worker: spec["counts"] = {graph: {key: dims}} → {graph: {"parameters", key: counted}}.
    CROP_ENCODER's dims are {"masks": crops}, whichever graphs encode the crops."""
    import numpy as np
    import onnx

    pack = Path(spec["pack"])
    scratch = Path(spec["result"]).with_suffix(".optimised.onnx")
    models: dict[str, Any] = {}

    def model(graph: str) -> Any:
        if graph not in models:
            models[graph] = onnx.load(str(pack / f"{graph}.onnx"))
        return models[graph]

    def parameters(*graphs: str) -> int:
        return sum(int(np.prod(t.dims)) for g in graphs for t in model(g).graph.initializer)

    def counted(graph: str, dims: dict[str, int]) -> Json:
        return graph_flops(model(graph), {**IMPLIED_DIMS.get(graph, {}), **dims}, scratch)

    out: Json = {}
    for graph, runs in spec["counts"].items():
        if graph == CROP_ENCODER:
            head = load_pack(pack, verify=False).clip.crop_head
            out[graph] = {"parameters": parameters("clip_trunk", head)}
            for key, dims in runs.items():
                crops = dims["masks"]
                parts = [counted("clip_trunk", {"batch": crops}),
                         counted(head, {"batch": crops, "masks": crops})]
                out[graph][key] = {name: sum(p[name] for p in parts) for name in parts[0]}
            continue
        out[graph] = {"parameters": parameters(graph),
                      **{key: counted(graph, dims) for key, dims in runs.items()}}
    return out


def matmul_rate(spec: Json) -> Json:
    """Worker: best fp32 square-matmul rate (GFLOP/s) of numpy and of ONNX Runtime's MatMul at
    spec["threads"] threads (ONNX Runtime's only where `onnx` can build the graph)."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    result: Json = {"numpy": {}, "onnxruntime": {}}
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.log_severity_level = 3
    for n in spec["sizes"]:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        runners: dict[str, Callable[[], Any]] = {"numpy": partial(np.matmul, a, b)}
        session = _matmul_session(n, options)
        if session is not None:
            runners["onnxruntime"] = partial(session.run, None, {"a": a, "b": b})
        for name, fn in runners.items():
            fn()
            fastest = min(_seconds(fn) for _ in range(spec["tries"]))
            result[name][str(n)] = 2 * n**3 / fastest / 1e9
    best = {name: max(rates.values()) for name, rates in result.items() if rates}
    return {**result, "best_gflops": best, "rate_gflops": max(best.values())}


def _matmul_session(n: int, options: Any) -> Any:
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
