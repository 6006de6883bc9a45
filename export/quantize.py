"""`zsris-export quantize`: int8 variants of a pack's graphs for ONNX Runtime CPU.

What is quantised: the weights of MatMul, Gemm (and, static only, Conv) per output channel, and
their input activations; MatMuls of two activations (attention) and LayerNormalization, Softmax and
every Gather (the text tower's end-token pick above all) stay fp32: int8 there costs accuracy and
saves little. Per graph, static QDQ (u8 activations × s8 weights, the pair VNNI multiplies
natively; ranges from the graph's real inputs, `zsris_rt.calibration`) and dynamic quantisation
(activation ranges per call) are both built and compared with fp32 on the calibration inputs; the
one whose worst feature cosine is higher is kept, and a graph where static fails gets dynamic.

Measured (ViT-B/32 random-weight pack, ORT 1.32, 1 thread, AVX-512 VNNI): int8 runs the trunk
2.9×, the masked head at K=32 3.3× and the text tower 2.3× faster; dynamic and u8 QDQ are equally
fast (s8 activations are ~2× slower: no VNNI path) and dynamic is the more accurate on every graph
(worst cosine 0.9999 vs 0.9997), so it is what `static` ends up keeping today. Only variants
that run at least half of a graph's MatMul/Gemm/Conv nodes in int8 compete: dynamic quantisation
leaves Conv nodes in float, so a ResNet trunk (all Conv) keeps the static QDQ variant.

Default graphs (DEFAULT_GRAPHS): the trunk and the masked head, which make both the global
features and the crop encoder (~3/4 of a query's FLOPs: the trunk on the crops, then the head
with all-ones grids); their calibration entries come from both uses. A ResNet pack's crop head
(SPEC §7) joins them by default. An older pack's duplicate
tower `clip_image` is never run, so never quantised. Not by default, measured on the demo pack's
synthetic val split: an int8 text tower flips 2 of 700 chosen masks for ~8 ms saved per *new*
expression (text features are cached); an int8 proposer changes the proposals of ~40% of the
images (its IoU and stability thresholds are sharp cut-offs) and costs 0.3 mIoU. Both can be
asked for by name with --graphs.

A pack is changed atomically: new graphs are written under hidden names, renamed in place at the
end, and the manifest is rewritten last; on any failure the pack is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zsris_rt.agreement import row_agreement
from zsris_rt.calibration import Entry, collect_graph_inputs, list_images
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import load_pack, sha256_file, write_manifest

PRECISION = "int8"
DEFAULT_GRAPHS = ("clip_trunk", "clip_masked_head")
QUANTISED_OPS = ("MatMul", "Gemm", "Conv")
KEPT_FP32_OPS = ("LayerNormalization", "Softmax", "Gather", "GatherElements")
METHODS = ("static", "dynamic")


@dataclass
class Quantised:
    """One graph's int8 file (under its temporary name) and what its manifest entry records."""

    graph: str
    temp: Path
    method: str
    fmt: str
    kept_fp32: list[str]
    cosine: tuple[float, float]
    quantised: float = 1.0  # share of the graph's MatMul/Gemm/Conv nodes that run int8
    compared: dict[str, dict[str, object]] = field(default_factory=dict)


def _excluded_nodes(model) -> list[str]:  # model: onnx.ModelProto
    """Names of the Gather-family nodes that pick data rather than shape entries (the text
    tower's end-token pick is a GatherElements on the final LayerNorm's output), kept fp32 by
    name besides by op type, so no quantiser option can reach them."""
    shapes = {out for n in model.graph.node if n.op_type == "Shape" for out in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in ("Gather", "GatherElements") and n.input[0] not in shapes]


def _quantised_share(model, source_compute: int) -> float:  # model: onnx.ModelProto
    """Share of the source's MatMul/Gemm/Conv nodes that run int8 in `model`: integer ops
    (QOperator: MatMulInteger, ConvInteger, QLinear*) or float ops fed by DequantizeLinear (QDQ).
    Dynamic quantisation leaves a ResNet's Conv nodes in float: such a variant is int8 in name
    only, however close its outputs."""
    dequantised = {out for n in model.graph.node if n.op_type == "DequantizeLinear"
                   for out in n.output}
    integer = sum(n.op_type in ("MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv")
                  for n in model.graph.node)
    fed = sum(n.op_type in QUANTISED_OPS and any(i in dequantised for i in n.input)
              for n in model.graph.node)
    return min(1.0, (integer + fed) / max(source_compute, 1))


class _Reader:
    """onnxruntime's CalibrationDataReader over recorded entries."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.rewind()

    def get_next(self) -> Entry | None:
        return next(self._items, None)

    def rewind(self) -> None:
        self._items = iter(self.entries)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def output_cosine(reference: Path, candidate: Path, entries: list[Entry],
                  threads: int = 1) -> tuple[float, float]:
    """(min, mean) cosine between the first outputs of two graphs over `entries`, one value per
    output row (a feature vector, or a flattened mask / embedding)."""
    ref, cand = _session(reference, threads), _session(candidate, threads)
    values = []
    for entry in entries:
        values.extend(row_agreement(cand.run(None, entry)[0], ref.run(None, entry)[0]))
    return float(np.min(values)), float(np.mean(values))


def quantise_file(src: Path, dst: Path, entries: list[Entry], method: str,
                  per_channel: bool = True) -> str:
    """Write the int8 version of ONNX graph `src` to `dst` by `method`; returns its format."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="zsris-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        excluded = _excluded_nodes(onnx.load(str(prepared), load_external_data=False))
        if method == "dynamic":
            quantize_dynamic(str(prepared), str(dst), per_channel=per_channel,
                             weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=excluded,
                             extra_options={"MatMulConstBOnly": True})
            return "QOperator"
        quantize_static(str(prepared), str(dst), _Reader(entries),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTISED_OPS), nodes_to_exclude=excluded,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"MatMulConstBOnly": True})
        return "QDQ"


def _quantise_graph(root: Path, graph: str, src: Path, entries: list[Entry], method: str,
                    per_channel: bool, threads: int, say: Callable[[str], None]) -> Quantised:
    """Static (falling back to dynamic when static fails or is worse), or dynamic alone."""
    import onnx

    tried: list[Quantised] = []
    errors: dict[str, str] = {}
    source_compute = sum(n.op_type in QUANTISED_OPS for n in
                         onnx.load(str(src), load_external_data=False).graph.node)
    for how in (("static", "dynamic") if method == "static" else ("dynamic",)):
        fd, name = tempfile.mkstemp(prefix=f".{graph}.int8-{how}-", suffix=".partial", dir=root)
        os.close(fd)
        temp = Path(name)
        temp.chmod(src.stat().st_mode & 0o777)  # mkstemp's 0600 would hide it from other users
        try:
            fmt = quantise_file(src, temp, entries, how, per_channel)
            # A variant ONNX Runtime cannot run (e.g. dynamic MatMulInteger with per-channel
            # zero points, which onnxruntime 1.32 refuses) fails like one it cannot write.
            cosine = output_cosine(src, temp, entries, threads)
        except Exception as exc:  # onnxruntime raises bare Exceptions
            temp.unlink(missing_ok=True)
            errors[how] = (str(exc).splitlines() or [type(exc).__name__])[0]
            say(f"{graph}: {how} failed: {errors[how]}")
            continue
        variant = onnx.load(str(temp), load_external_data=False)
        share = _quantised_share(variant, source_compute)
        tried.append(Quantised(graph, temp, how, fmt, [*KEPT_FP32_OPS, *_excluded_nodes(variant)],
                               cosine, share))
        say(f"{graph}: {how} {fmt}, cosine vs fp32 min {cosine[0]:.4f} mean {cosine[1]:.4f}, "
            f"{100 * share:.0f} % of MatMul/Gemm/Conv int8")
    if not tried:
        raise ZsrisError(f"cannot quantise {graph}: " +
                         "; ".join(f"{how}: {error}" for how, error in errors.items()))
    # The most accurate of the variants that really run int8 (at least half the compute nodes).
    real = [q for q in tried if q.quantised >= 0.5] or tried
    best = max(real, key=lambda q: q.cosine[0])
    best.compared = {q.method: {"min": q.cosine[0], "mean": q.cosine[1],
                                "quantised_share": round(q.quantised, 3)} for q in tried} | \
        {how: {"failed": error} for how, error in errors.items()}
    for other in tried:
        if other is not best:
            other.temp.unlink(missing_ok=True)
    return best


def image_digest(paths: Sequence[Path]) -> str:
    """sha256 over the sorted sha256 digests of the calibration images (order-independent)."""
    digests = sorted(sha256_file(p) for p in paths)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


@dataclass(frozen=True)
class QuantizeConfig:
    """Everything `quantize_pack` needs; the CLI's options map onto it one to one."""

    pack: Path  # a verified pack, changed in place
    calib: Sequence[str | os.PathLike[str]]  # calibration images: files, folders, glob patterns
    graphs: Sequence[str] = ()  # (): DEFAULT_GRAPHS
    method: str = "static"  # METHODS
    per_channel: bool = True  # per-output-channel weight scales
    force: bool = False  # replace existing int8 variants
    threads: int = 1  # ONNX Runtime threads for calibration
    per_graph: int = 64  # calibration entries per graph


def quantize_pack(config: QuantizeConfig,
                  say: Callable[[str], None] = lambda _: None) -> dict[str, dict]:
    """Add int8 variants of `config.graphs` to a verified pack, calibrated on the images
    `config.calib` names; returns the manifest entries written, by graph."""
    graphs, method, force, calib = config.graphs, config.method, config.force, config.calib
    per_channel, threads, per_graph = config.per_channel, config.threads, config.per_graph
    if method not in METHODS:
        raise ZsrisError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if not calib:
        raise ZsrisError("no calibration images given (--calib IMAGES...)")
    root = Path(config.pack)
    pack = load_pack(root, verify=True)
    manifest = pack.manifest
    available = pack.graph_names
    defaults = (*DEFAULT_GRAPHS, pack.clip.crop_head)
    chosen = list(dict.fromkeys(graphs or defaults))
    unknown = [g for g in chosen if g not in available]
    if unknown:
        raise ZsrisError(f"pack {root} has no graph {', '.join(unknown)} (it has: "
                         f"{', '.join(available)})")
    existing = [g for g in chosen if PRECISION in manifest.graphs[g].get("variants", {})]
    if existing and not force:
        raise ZsrisError(f"pack {root} already has int8 {', '.join(existing)} "
                         "(use --force to replace)")
    images = list_images(calib)
    say(f"calibrate on {len(images)} images")
    inputs = collect_graph_inputs(pack, images, per_graph=per_graph, threads=threads)
    done: list[Quantised] = []
    backups: list[tuple[Path, Path]] = []
    moved: list[Path] = []
    try:
        for graph in chosen:
            src = pack.graph_path(graph, "fp32")
            done.append(_quantise_graph(root, graph, src, inputs[graph], method, per_channel,
                                        threads, say))
        entries = {}
        calibration = {"images": len(images), "sha256": image_digest(images)}
        for q in done:
            final = root / f"{q.graph}.{PRECISION}.onnx"
            if final.exists():
                fd, name = tempfile.mkstemp(prefix=f".{final.name}.old-", dir=root)
                os.close(fd)
                os.replace(final, name)
                backups.append((Path(name), final))
            os.replace(q.temp, final)
            moved.append(final)
            entries[q.graph] = {
                "file": final.name, "files": [final.name], "method": q.method, "format": q.fmt,
                "per_channel": per_channel, "calibration": calibration,
                "kept_fp32": q.kept_fp32,
                "cosine_vs_fp32": {"min": q.cosine[0], "mean": q.cosine[1],
                                   "entries": len(inputs[q.graph])},
                "methods_compared": q.compared,
            }
        for graph, entry in entries.items():
            manifest.graphs[graph].setdefault("variants", {})[PRECISION] = entry
            manifest.files[entry["file"]] = ""
        write_manifest(root, manifest)
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        for backup, final in backups:
            os.replace(backup, final)
        raise
    finally:
        for q in done:
            q.temp.unlink(missing_ok=True)
    for backup, _ in backups:
        backup.unlink(missing_ok=True)
    return entries


__all__ = ["DEFAULT_GRAPHS", "METHODS", "QuantizeConfig", "output_cosine", "quantise_file",
           "quantize_pack"]
