"""The native TensorRT backend, against the fakes of fake_tensorrt.py (TensorRT 10.3 and 8.6, and
cuda-python's cudart); ONNX Runtime CPU is the independent reference. One test runs the real
TensorRT where a GPU, tensorrt and cuda-python are present."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fake_tensorrt import PLAN_MAGIC, FakeGpu, install, read_plan_header
from onnx import TensorProto, helper

from zsris_rt.backends import engine_build
from zsris_rt.backends.engine_build import build_plan, graph_profile
from zsris_rt.backends.engine_cache import EngineKey, cached_engines, default_cache_dir
from zsris_rt.backends.ort import OrtBackend
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "engines" / "demo"
SCENE = ROOT / "examples" / "scene-1.png"
VERSIONS = ("10.3.0", "8.6.1")


@pytest.fixture(params=VERSIONS)
def fake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    return install(monkeypatch, request.param)


@pytest.fixture
def fake10(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    return install(monkeypatch, "10.3.0")


@pytest.fixture(scope="module")
def demo():
    return load_pack(DEMO)


def backend(pack, cache: Path, **options):
    from zsris_rt.backends.tensorrt import TrtBackend

    return TrtBackend(pack, cache_dir=cache, **options)


def ort_run(path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A plain ONNX Runtime CPU session on the graph file: the independent reference."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def executions(gpu: FakeGpu, source: str) -> list[dict]:
    return [e for e in gpu.executions if e["source"] == source]


# ------------------------------------------------------------------------- profiles, builds


def test_every_dynamic_axis_has_a_profile(fake: FakeGpu, pack_dir: Path, demo,
                                          tmp_path: Path) -> None:
    tiny = load_pack(pack_dir)
    s, g, ctx = tiny.clip.image_size, tiny.clip.grid, tiny.clip.context_length
    t, d = tiny.clip.tokens, tiny.clip.width
    # The trunk and the head serve the crop encoder too: up to max-masks crops, one grid each.
    expected = {
        "clip_trunk": {"image": [[1, 3, s, s], [32, 3, s, s], [128, 3, s, s]]},
        "clip_masked_head": {"tokens": [[1, t, d], [32, t, d], [128, t, d]],
                             "grid_masks": [[1, g, g], [32, g, g], [128, g, g]]},
        "clip_text": {"ids": [[1, 2], [2, 16], [8, ctx]], "end_index": [[1], [2], [8]]},
    }
    trt = backend(tiny, tmp_path / "tiny")
    for graph, profile in expected.items():
        trt.prepare(graph)
        header = fake.builds[-1]
        assert header["source"] == f"{graph}.onnx"
        assert header["profiles"] == [profile]
        dynamic = {io["name"] for io in header["io"] if io["mode"] == "INPUT" and -1 in io["shape"]}
        assert dynamic == set(profile)
    assert trt.max_batch("clip_trunk") == trt.max_batch("clip_masked_head") == 128
    demo_trt = backend(demo, tmp_path / "demo")
    demo_trt.prepare("prop_decoder")
    assert fake.builds[-1]["profiles"] == [{"points": [[1, 1, 2], [64, 1, 2], [64, 1, 2]],
                                            "labels": [[1, 1], [64, 1], [64, 1]]}]
    demo_trt.prepare("prop_encoder")  # all of its axes are fixed: no profile needed
    assert fake.builds[-1]["profiles"] == []
    assert fake.builds[-1]["workspace"] == 1024 << 20


def test_a_missing_profile_fails_the_build(fake: FakeGpu, demo, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    profile = graph_profile(demo, "clip_text")
    del profile["end_index"]
    with pytest.raises(ZsrisError, match="end_index has dynamic shape"):
        build_plan(fake.trt, DEMO / "clip_text.onnx", "clip_text", profile)
    monkeypatch.setattr(engine_build, "check_profile", lambda *args: None)
    with pytest.raises(ZsrisError, match="TensorRT could not build the fp32 engine"):
        build_plan(fake.trt, DEMO / "clip_text.onnx", "clip_text", profile)
    assert any("end_index" in message for _, message in fake.log)


def test_max_masks_and_bad_axes(demo) -> None:
    assert graph_profile(demo, "clip_trunk", max_masks=8)["image"] == (
        (1, 3, 224, 224), (8, 3, 224, 224), (8, 3, 224, 224))
    assert graph_profile(demo, "clip_masked_head", max_masks=8)["tokens"] == (
        (1, 50, 64), (8, 50, 64), (8, 50, 64))
    with pytest.raises(ZsrisError, match="max_masks"):
        graph_profile(demo, "clip_trunk", max_masks=0)


def _onnx_file(path: Path, nodes: list, inputs: list, outputs: list, weights: list) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "toy", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def _decomposed_layernorm(path: Path) -> Path:
    """x → LayerNorm written out (mean, centre, square, mean, +eps, sqrt, divide, scale, shift)
    → MatMul → Softmax."""
    f = TensorProto.FLOAT
    names = ["mean", "centred", "square", "var", "var_eps", "std", "normed", "scaled", "shifted"]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="ln_mean", axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="ln_sub"),
        helper.make_node("Pow", ["centred", "two"], ["square"], name="ln_pow"),
        helper.make_node("ReduceMean", ["square"], ["var"], name="ln_var", axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="ln_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="ln_sqrt"),
        helper.make_node("Div", ["centred", "std"], ["normed"], name="ln_div"),
        helper.make_node("Mul", ["normed", "gamma"], ["scaled"], name="ln_scale"),
        helper.make_node("Add", ["scaled", "beta"], ["shifted"], name="ln_shift"),
        helper.make_node("MatMul", ["shifted", "w"], ["proj"], name="proj"),
        helper.make_node("Softmax", ["proj"], ["y"], name="softmax", axis=-1),
    ]
    assert [n.output[0] for n in nodes[:9]] == names
    weights = [helper.make_tensor("two", f, [], [2.0]), helper.make_tensor("eps", f, [], [1e-5]),
               helper.make_tensor("gamma", f, [8], np.ones(8)),
               helper.make_tensor("beta", f, [8], np.zeros(8)),
               helper.make_tensor("w", f, [8, 4], np.ones(32))]
    return _onnx_file(path, nodes, [helper.make_tensor_value_info("x", f, ["n", 8])],
                      [helper.make_tensor_value_info("y", f, ["n", 4])], weights)


def test_fp16_keeps_layernorm_softmax_and_gathers_fp32(fake: FakeGpu, demo,
                                                       tmp_path: Path) -> None:
    backend(demo, tmp_path, precision="fp16").prepare("clip_text")
    header = fake.builds[-1]
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(header["flags"])
    layers = header["layers"]
    text = onnx.load(str(DEMO / "clip_text.onnx")).graph.node
    norms = [la for la in layers if la["type"] == "NORMALIZATION"]
    assert len(norms) == sum(n.op_type == "LayerNormalization" for n in text) > 0
    for layer in norms + [la for la in layers if la["type"] == "SOFTMAX"]:
        assert layer["precision"] == "FLOAT" and layer["outputs"] == ["FLOAT"], layer
    end_gather = [n.name for n in text if n.op_type == "GatherElements"]
    assert len(end_gather) == 1
    float_gathers = [la for la in layers if la["type"] == "GATHER"
                     and la["outputs"][0] in ("FLOAT", "HALF")]
    assert end_gather[0] in {la["name"] for la in float_gathers}
    assert all(la["precision"] == "FLOAT" for la in float_gathers)
    assert {la["precision"] for la in layers if la["type"] == "MATRIX_MULTIPLY"} == {"HALF"}

    toy = _decomposed_layernorm(tmp_path / "toy.onnx")
    plan = build_plan(fake.trt, toy, "toy", {"x": ((1, 8), (4, 8), (16, 8))}, "fp16")
    precision = {la["name"]: la["precision"] for la in read_plan_header(plan)["layers"]}
    assert {precision[n] for n in ("ln_mean", "ln_sub", "ln_pow", "ln_var", "ln_eps", "ln_sqrt",
                                   "ln_div", "ln_scale", "ln_shift", "softmax")} == {"FLOAT"}
    assert precision["proj"] == "HALF"
    plan = build_plan(fake.trt, toy, "toy", {"x": ((1, 8), (4, 8), (16, 8))}, "fp32")
    assert {la["precision"] for la in read_plan_header(plan)["layers"]} == {"FLOAT"}


def test_fp16_keeps_an_l2_norm_fp32_square_included(fake: FakeGpu, tmp_path: Path) -> None:
    """A ResNet pack's unit-length positions (SPEC §7) as TensorRT's parser lowers ReduceL2:
    x·x, sum, sqrt, clamp, divide. The square before the reduce overflows fp16 above 256, so it
    is pinned with the rest; the MatMul after stays fp16."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["square"], name="l2_square"),
        helper.make_node("ReduceSum", ["square", "axes"], ["sum"], name="l2_sum", keepdims=1),
        helper.make_node("Sqrt", ["sum"], ["norm"], name="l2_sqrt"),
        helper.make_node("Clip", ["norm", "floor"], ["safe"], name="l2_clamp"),
        helper.make_node("Div", ["x", "safe"], ["unit"], name="l2_div"),
        helper.make_node("MatMul", ["unit", "w"], ["y"], name="proj"),
    ]
    weights = [helper.make_tensor("axes", TensorProto.INT64, [1], [-1]),
               helper.make_tensor("floor", f, [], [1e-12]),
               helper.make_tensor("w", f, [8, 4], np.ones(32))]
    toy = _onnx_file(tmp_path / "l2.onnx", nodes, [helper.make_tensor_value_info("x", f, ["n", 8])],
                     [helper.make_tensor_value_info("y", f, ["n", 4])], weights)
    plan = build_plan(fake.trt, toy, "toy", {"x": ((1, 8), (4, 8), (16, 8))}, "fp16")
    precision = {la["name"]: la["precision"] for la in read_plan_header(plan)["layers"]}
    assert {precision[n] for n in ("l2_square", "l2_sum", "l2_sqrt", "l2_clamp", "l2_div")} == \
        {"FLOAT"}
    assert precision["proj"] == "HALF"


def test_parser_errors_are_one_line(fake: FakeGpu, tmp_path: Path) -> None:
    f = TensorProto.FLOAT
    path = _onnx_file(tmp_path / "odd.onnx",
                      [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                      [helper.make_tensor_value_info("x", f, [2])],
                      [helper.make_tensor_value_info("y", f, [2])], [])
    with pytest.raises(ZsrisError, match=r"^toy: TensorRT's ONNX parser rejects .*odd.onnx: No "
                                         r"importer registered for op: Frobnicate$"):
        build_plan(fake.trt, path, "toy", {})


def test_int8_calibrates_on_the_given_batches(fake: FakeGpu, demo, tmp_path: Path) -> None:
    from zsris_rt.backends.cuda_device import CudaDevice

    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(1, 50, 64)).astype(np.float32)
    batches = [{"tokens": tokens, "grid_masks": rng.random((1, 7, 7), dtype=np.float32) * (i + 1)}
               for i in range(5)]
    odd = {"tokens": tokens, "grid_masks": np.full((2, 7, 7), 100.0, dtype=np.float32)}
    trt = backend(demo, tmp_path, precision="int8",
                  calibration={"clip_masked_head": batches[:3] + [odd] + batches[3:]})
    trt.prepare("clip_masked_head")
    header = fake.builds[-1]
    assert {"INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(header["flags"])
    assert header["calibration"]["batches"] == 5 and not header["calibration"]["from_cache"]
    assert len(fake.calibration_reads) == 5  # the batch of another shape is left out
    for read, batch in zip(fake.calibration_reads, batches, strict=True):
        np.testing.assert_array_equal(read["grid_masks"], batch["grid_masks"])
        np.testing.assert_array_equal(read["tokens"], tokens)
    absmax = max(float(b["grid_masks"].max()) for b in batches)
    expected_scale = struct.pack(">f", absmax / 127.0).hex()
    assert header["calibration"]["scales"]["grid_masks"] == expected_scale
    layers = header["layers"]
    assert {la["precision"] for la in layers if la["type"] == "NORMALIZATION"} == {"FLOAT"}
    assert {la["precision"] for la in layers if la["type"] == "MATRIX_MULTIPLY"} == {"INT8"}
    cache = trt.plans["clip_masked_head"].with_suffix(".calib")
    assert cache.read_text().startswith(f"TRT-{fake.trt.__version__.replace('.', '')}-Entropy")
    # A calibration cache is used as is: no batch is read again.
    device = CudaDevice()
    plan = build_plan(fake.trt, DEMO / "clip_masked_head.onnx", "clip_masked_head",
                      graph_profile(demo, "clip_masked_head"), "int8", calibration=batches,
                      calibration_cache=cache, device=device)
    assert read_plan_header(plan)["calibration"]["from_cache"]
    assert len(fake.calibration_reads) == 5
    assert not any(fake.log[i][0] == "ERROR" for i in range(len(fake.log)))
    with pytest.raises(ZsrisError, match="int8 engine needs calibration"):
        backend(demo, tmp_path / "other", precision="int8").prepare("clip_text")


# ----------------------------------------------------------------------------------- cache


def test_cache_key_changes_with_each_part() -> None:
    profile = {"ids": ((1, 2), (2, 16), (8, 77)), "end_index": ((1,), (2,), (8,))}
    key = EngineKey("clip_text", "ab" * 32, "10.3.0", "NVIDIA H100 80GB HBM3", "9.0", "fp16",
                    profile)
    changes = {"onnx_sha256": "cd" * 32, "tensorrt": "8.6.1", "gpu": "Orin",
               "compute_capability": "8.7", "precision": "fp32",
               "profile": {**profile, "ids": ((1, 2), (2, 16), (8, 64))}}
    digests = {key.digest}
    for field, value in changes.items():
        digests.add(dataclasses.replace(key, **{field: value}).digest)
    assert len(digests) == len(changes) + 1
    same = EngineKey("clip_text", "ab" * 32, "10.3.0", "NVIDIA H100 80GB HBM3", "9.0", "fp16",
                     dict(reversed(list(profile.items()))))
    assert same.digest == key.digest and same.file_name == key.file_name
    assert key.file_name == f"clip_text-fp16-{key.digest[:16]}.plan"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZSRIS_ENGINE_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ZSRIS_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "zsris-rt" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "zsris-rt" / "engines"


def test_engine_key_of_a_pack(fake10: FakeGpu, demo, tmp_path: Path) -> None:
    trt = backend(demo, tmp_path)
    key = trt.key("clip_text")
    assert key.onnx_sha256 == hashlib.sha256((DEMO / "clip_text.onnx").read_bytes()).hexdigest()
    assert (key.tensorrt, key.gpu, key.compute_capability) == ("10.3.0",
                                                               "NVIDIA H100 80GB HBM3", "9.0")
    assert backend(demo, tmp_path, max_masks=64).key("clip_trunk").digest != \
        trt.key("clip_trunk").digest


def test_a_cached_plan_is_reused(fake10: FakeGpu, demo, tmp_path: Path) -> None:
    from zsris_rt.backends.tensorrt import engines_missing

    with pytest.raises(ZsrisError, match=r"zsris-export engines .* --precision fp16"):
        backend(demo, tmp_path, precision="fp16", build_missing=False).prepare("clip_text")
    first = backend(demo, tmp_path, precision="fp16")
    first.prepare("clip_text")
    first.prepare("clip_masked_head")
    assert len(fake10.builds) == 2
    assert fake10.builds[0]["timing_cache_hits"] == 0
    assert fake10.builds[1]["timing_cache_hits"] > 0  # the shared timing cache was loaded
    assert len(list(tmp_path.glob("timing-nvidia-h100-80gb-hbm3-sm90-trt10.3.0.cache"))) == 1
    again = backend(demo, tmp_path, precision="fp16", build_missing=False)
    again.prepare("clip_text")
    assert len(fake10.builds) == 2
    plan = again.plans["clip_text"]
    assert again.describe()["engines"] == {"clip_text": plan.name}
    sidecar = json.loads(plan.with_suffix(".json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["plan_bytes"] == plan.stat().st_size
    assert sidecar["key"].startswith(plan.stem.rsplit("-", 1)[1])
    listed = {(e["graph"], e["precision"]) for e in cached_engines(demo, tmp_path)}
    assert listed == {("clip_text", "fp16"), ("clip_masked_head", "fp16")}
    assert set(engines_missing(demo, "fp16", tmp_path)) == \
        {"clip_trunk", "prop_encoder", "prop_decoder_image", "prop_decoder"}


def test_an_engine_of_another_masks_profile_is_found(fake10: FakeGpu, demo,
                                                     tmp_path: Path) -> None:
    """`zsris-export engines --max-masks 64`, then `--backend trt` (no max given): the runtime
    and `auto` use that engine instead of building one of the default profile."""
    from zsris_rt.backends.tensorrt import engines_missing

    backend(demo, tmp_path, max_masks=64).prepare("clip_trunk")
    assert len(fake10.builds) == 1
    assert "clip_trunk" not in engines_missing(demo, "fp32", tmp_path)
    assert "clip_trunk" in engines_missing(demo, "fp32", tmp_path, max_masks=128)
    runtime = backend(demo, tmp_path, build_missing=False)
    runtime.prepare("clip_trunk")
    assert len(fake10.builds) == 1 and runtime.max_batch("clip_trunk") == 64
    with pytest.raises(ZsrisError, match="no fp32 TensorRT engine of clip_trunk"):
        backend(demo, tmp_path, max_masks=128, build_missing=False).prepare("clip_trunk")


def _plan_with_version(plan: bytes, version: str) -> bytes:
    header = read_plan_header(plan)
    header["version"] = version
    text = json.dumps(header).encode()
    (size,) = struct.unpack("<Q", plan[8:16])
    return PLAN_MAGIC + struct.pack("<Q", len(text)) + text + plan[16 + size:]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other version"])
def test_a_bad_plan_is_rebuilt_with_a_warning(fake10: FakeGpu, demo, tmp_path: Path,
                                              damage: str) -> None:
    first = backend(demo, tmp_path)
    first.prepare("clip_text")
    path = first.plans["clip_text"]
    plan = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not a plan", "truncated": plan[:12],
                      "other version": _plan_with_version(plan, "10.0.1")}[damage])
    second = backend(demo, tmp_path)
    with pytest.warns(RuntimeWarning, match=path.name):
        second.prepare("clip_text")
    assert len(fake10.builds) == 2
    rebuilt = read_plan_header(path.read_bytes())
    assert rebuilt.pop("timing_cache_hits") > 0
    assert rebuilt == {k: v for k, v in read_plan_header(plan).items() if k != "timing_cache_hits"}
    ids = np.array([[608, 5, 6, 609]])
    np.testing.assert_allclose(
        second.run("clip_text", {"ids": ids, "end_index": np.array([3])})[0],
        ort_run(DEMO / "clip_text.onnx", {"ids": ids, "end_index": np.array([3])})[0],
        rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------- execution


def test_chunks_above_the_profile_max_match_onnxruntime(fake: FakeGpu, demo,
                                                        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    trt = backend(demo, tmp_path, max_masks=4)
    inputs = {"tokens": rng.normal(size=(1, 50, 64)).astype(np.float32),
              "grid_masks": rng.random((10, 7, 7), dtype=np.float32)}
    got = trt.run("clip_masked_head", inputs)
    np.testing.assert_allclose(got[0], ort_run(DEMO / "clip_masked_head.onnx", inputs)[0],
                               rtol=0, atol=1e-6)
    runs = executions(fake, "clip_masked_head.onnx")
    assert [r["shapes"]["grid_masks"][0] for r in runs] == [4, 4, 2]
    assert all(r["shapes"]["tokens"] == (1, 50, 64) for r in runs)  # one image's, whole
    # The crop encoder's head: one row of tokens per grid, chunked together.
    crops = {"tokens": rng.normal(size=(10, 50, 64)).astype(np.float32),
             "grid_masks": np.ones((10, 7, 7), dtype=np.float32)}
    np.testing.assert_allclose(trt.run("clip_masked_head", crops)[0],
                               ort_run(DEMO / "clip_masked_head.onnx", crops)[0],
                               rtol=0, atol=1e-6)
    runs = executions(fake, "clip_masked_head.onnx")[3:]
    assert [(r["shapes"]["tokens"][0], r["shapes"]["grid_masks"][0]) for r in runs] == \
        [(4, 4), (4, 4), (2, 2)]
    images = {"image": rng.normal(size=(6, 3, 224, 224)).astype(np.float32)}
    np.testing.assert_allclose(trt.run("clip_trunk", images)[0],
                               ort_run(DEMO / "clip_trunk.onnx", images)[0], rtol=0, atol=1e-5)
    assert [r["shapes"]["image"][0] for r in executions(fake, "clip_trunk.onnx")] == [4, 2]

    ids = rng.integers(1, 608, size=(11, 9))
    ids[:, 0], end = 608, rng.integers(1, 9, size=11)
    ids[np.arange(11), end] = 609
    text = {"ids": ids, "end_index": end}
    np.testing.assert_allclose(trt.run("clip_text", text)[0],
                               ort_run(DEMO / "clip_text.onnx", text)[0], rtol=0, atol=1e-6)
    assert [r["shapes"]["ids"] for r in executions(fake, "clip_text.onnx")] == [(8, 9), (3, 9)]
    int_type = np.int64 if fake.trt.__version__.startswith("10") else np.int32
    assert trt.engine("clip_text").dtypes["ids"] == int_type

    state = {entry["name"]: rng.normal(size=entry["shape"]).astype(np.float32)
             for entry in demo.manifest.graphs["prop_decoder"]["inputs"]
             if entry["name"] in demo.proposer.decoder_state}
    points = rng.uniform(0, 256, size=(70, 1, 2)).astype(np.float32)
    prompts = {**state, "points": points, "labels": np.ones((70, 1), dtype=np.int64)}
    got = trt.run_batched("prop_decoder", prompts, ("points", "labels"))
    for mine, reference in zip(got, ort_run(DEMO / "prop_decoder.onnx", prompts), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-5)
    assert [r["shapes"]["points"][0] for r in executions(fake, "prop_decoder.onnx")] == [64, 6]


def test_inputs_outside_the_profile_are_refused(fake10: FakeGpu, demo, tmp_path: Path) -> None:
    trt = backend(demo, tmp_path)
    ids = np.zeros((1, 78), dtype=np.int64)
    with pytest.raises(ZsrisError, match=r"clip_text: input ids of shape \(1, 78\) is outside"):
        trt.run("clip_text", {"ids": ids, "end_index": np.array([3])})
    with pytest.raises(ZsrisError, match="missing input"):
        trt.run("clip_text", {"ids": ids})


def test_device_buffers_are_reused(fake: FakeGpu, demo, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    trt = backend(demo, tmp_path)
    tokens = rng.normal(size=(1, 50, 64)).astype(np.float32)

    def call(k: int) -> np.ndarray:
        inputs = {"tokens": tokens, "grid_masks": rng.random((k, 7, 7), dtype=np.float32)}
        out = trt.run("clip_masked_head", inputs)[0]
        np.testing.assert_allclose(out, ort_run(DEMO / "clip_masked_head.onnx", inputs)[0],
                                   rtol=0, atol=1e-6)
        return out

    call(6)
    mallocs, frees = fake.count_calls("cudaMalloc"), fake.count_calls("cudaFree")
    call(6)
    call(3)
    assert fake.count_calls("cudaMalloc") == mallocs and fake.count_calls("cudaFree") == frees
    call(9)  # bigger: grid_masks and features grow, tokens keeps its buffer
    assert fake.count_calls("cudaMalloc") == mallocs + 2
    assert fake.count_calls("cudaFree") == frees + 2
    assert fake.count_calls("cudaStreamCreate") == 1
    assert fake.count_calls("cudaStreamSynchronize") == 4
    trt.close()
    assert not fake.allocations and not fake.streams


def test_segmenter_on_trt_matches_the_cpu_backend(fake10: FakeGpu, demo, tmp_path: Path) -> None:
    from zsris_rt.segmenter import Segmenter

    cpu = Segmenter(demo, OrtBackend(demo, threads=1))
    trt = Segmenter(demo, backend(demo, tmp_path))
    cpu_scene, trt_scene = cpu.encode_image(SCENE), trt.encode_image(SCENE)
    np.testing.assert_array_equal(trt_scene.masks, cpu_scene.masks)
    for text in ("the green circle", "the big yellow square"):
        want, got = cpu.query(cpu_scene, text), trt.query(trt_scene, text)
        assert got.index == want.index
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-4)
    assert {e["source"] for e in fake10.executions} == {f"{g}.onnx" for g in (
        "clip_trunk", "clip_masked_head", "clip_text", "prop_encoder",
        "prop_decoder_image", "prop_decoder")}
    crops = [e["shapes"]["image"][0] for e in executions(fake10, "clip_trunk.onnx")]
    assert crops == [1, len(cpu_scene.masks)]  # the image, then its crops in one call
    described = trt.backend.describe()
    assert described["backend"] == "trt" and described["compute_capability"] == "9.0"
    assert set(described["engines"]) == set(demo.manifest.graphs)


def test_crop_encoder_on_trt_in_chunks_and_on_an_old_pack(fake10: FakeGpu, pack_dir: Path,
                                                          clip_folder: Path,
                                                          tmp_path: Path) -> None:
    """More masks than the engines' max: the trunk takes the crops and the head their tokens
    (all-ones grids) in chunks, and the global head one image's tokens under each chunk of
    grids. An old pack (clip_image beside a head of one image's tokens) runs its crops through
    the head one by one and never builds an engine of clip_image."""
    from legacy_pack import make_two_tower_pack

    from conftest import random_scene
    from zsris_rt.segmenter import Segmenter

    image, masks = random_scene(np.random.default_rng(4), 60, 80, 7)
    pack = load_pack(pack_dir)
    old = load_pack(make_two_tower_pack(pack_dir, clip_folder, tmp_path / "old", int8=False))
    cpu = Segmenter(pack, OrtBackend(pack, threads=1))
    want = cpu.query(cpu.encode_image(image, masks), "a red circle")
    for which, max_masks in ((pack, 3), (old, 128)):
        trt = Segmenter(which, backend(which, tmp_path / "cache", max_masks=max_masks))
        got = trt.query(trt.encode_image(image, masks), "a red circle")
        assert got.index == want.index
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-4)
    shapes = [(r["shapes"]["tokens"][0], r["shapes"]["grid_masks"][0])
              for r in executions(fake10, "clip_masked_head.onnx")]
    assert shapes[:6] == [(1, 3), (1, 3), (1, 1), (3, 3), (3, 3), (1, 1)]
    assert shapes[6:] == [(1, 7)] + [(1, 1)] * 7  # the old head: one crop per call
    assert [r["shapes"]["image"][0] for r in executions(fake10, "clip_trunk.onnx")] == \
        [1, 3, 3, 1, 1, 7]
    assert not executions(fake10, "clip_image.onnx")
    assert not [b for b in fake10.builds if b["source"] == "clip_image.onnx"]


# ------------------------------------------------------------------------ CUDA, availability


@pytest.mark.parametrize("layout", ["bindings", "legacy"])
def test_cuda_device_and_its_errors(monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    from zsris_rt.backends.cuda_device import CudaDevice, CudaError

    gpu = install(monkeypatch, "10.3.0", FakeGpu(name="Orin", capability=(8, 7), memory=4096),
                  cuda_layout=layout)
    device = CudaDevice()
    assert (device.name, device.compute_capability) == ("Orin", "8.7")
    buffer = device.malloc(64)
    host = np.arange(16, dtype=np.float32)
    back = np.zeros_like(host)
    buffer.upload(host)
    buffer.download(back)
    assert not back.any()  # nothing moves before the stream is synchronised
    device.synchronize()
    np.testing.assert_array_equal(back, host)
    with pytest.raises(CudaError, match="cudaMemcpyAsync failed: cudaErrorInvalidValue"):
        device.call("cudaMemcpyAsync", buffer.ptr + 8, host.ctypes.data, host.nbytes,
                    device.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, device.stream)
    with pytest.raises(CudaError, match="^CUDA cudaMalloc failed: cudaErrorMemoryAllocation$"):
        device.malloc(8192)
    buffer.free()
    with pytest.raises(CudaError, match="cudaErrorInvalidDevicePointer"):
        device.call("cudaFree", buffer.ptr or 1 << 48)
    assert gpu.count_calls("cudaMalloc") == 2


def test_tensorrt_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from zsris_rt.backends.tensorrt import TrtBackend, tensorrt_unavailable

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert tensorrt_unavailable().startswith("tensorrt is not installed")
    with pytest.raises(ZsrisError, match="TensorRT backend cannot run here: tensorrt is not"):
        TrtBackend(load_pack(DEMO, verify=False))
    install(monkeypatch, "10.3.0", FakeGpu(count=0))
    assert "cudaErrorNoDevice" in tensorrt_unavailable()
    install(monkeypatch, "10.3.0")
    assert tensorrt_unavailable() is None
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    assert tensorrt_unavailable().startswith("cuda-python is not installed")


# -------------------------------------------------------------------------------------- CLI


def engines_cli(argv: list[str]) -> int:
    """`zsris-export engines ...` through its real entry point."""
    from zsris_rt.export.cli import main

    return main(["engines", *argv])


def test_engines_command(fake10: FakeGpu, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    common = [str(DEMO), "--cache-dir", str(cache), "--graphs", "clip_text", "prop_decoder"]
    assert engines_cli([*common, "--precision", "fp16", "--max-masks", "16"]) == 0
    out, err = capsys.readouterr()
    plans = [Path(line) for line in out.splitlines()]
    assert [p.name.split("-fp16-")[0] for p in plans] == ["clip_text", "prop_decoder"]
    assert all(p.is_file() and p.parent == cache for p in plans)
    assert "building the fp16 TensorRT engine of clip_text" in err and "s)" in err
    assert engines_cli([*common, "--precision", "fp16", "--max-masks", "16"]) == 0
    assert len(fake10.builds) == 2  # cached
    assert engines_cli([*common, "--precision", "fp16", "--max-masks", "16", "--force"]) == 0
    assert len(fake10.builds) == 4
    capsys.readouterr()

    assert engines_cli([str(DEMO), "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calib" in err
    assert engines_cli([str(DEMO), "--graphs", "clip_trunk", "--max-masks", "0"]) == 2
    assert "--max-masks" in capsys.readouterr().err


def test_engines_command_int8_on_recorded_inputs(fake10: FakeGpu, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert engines_cli([str(DEMO), "--cache-dir", str(tmp_path), "--precision", "int8",
                        "--calib", str(SCENE), "--per-graph", "6",
                        "--graphs", "clip_masked_head", "clip_text"]) == 0
    from collections import Counter

    from zsris_rt.calibration import collect_graph_inputs

    assert [h["source"] for h in fake10.builds] == ["clip_masked_head.onnx", "clip_text.onnx"]
    recorded = collect_graph_inputs(load_pack(DEMO), [SCENE], per_graph=6, threads=1)
    heads = recorded["clip_masked_head"]
    assert 1 <= len(heads) <= 6 and fake10.builds[0]["calibration"]["batches"] == len(heads)
    lengths = Counter(entry["ids"].shape for entry in recorded["clip_text"])
    assert len(lengths) > 1  # the runtime cuts ids after the end token: lengths differ
    assert fake10.builds[1]["calibration"]["batches"] == len(recorded["clip_text"])
    np.testing.assert_array_equal(fake10.calibration_reads[0]["grid_masks"],
                                  heads[0]["grid_masks"])
    assert len(list(tmp_path.glob("*.calib"))) == 2
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_padded_text_ids_keep_the_features() -> None:
    """Padding after the end token (to calibrate every text entry at one shape) leaves the text
    tower's output as it was: ONNX Runtime on both."""
    from zsris_rt.backends.engine_build import padded_text_ids
    from zsris_rt.calibration import collect_graph_inputs

    entries = collect_graph_inputs(load_pack(DEMO), [SCENE], per_graph=8, threads=1)["clip_text"]
    padded = padded_text_ids(entries, 0)
    assert len({e["ids"].shape for e in padded}) == 1
    for before, after in zip(entries, padded, strict=True):
        np.testing.assert_allclose(ort_run(DEMO / "clip_text.onnx", after)[0],
                                   ort_run(DEMO / "clip_text.onnx", before)[0], atol=1e-5)


def test_engines_command_without_tensorrt(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert engines_cli([str(DEMO)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensorrt is not installed" in err and "README" in err


def test_engines_command_imports_no_torch() -> None:
    import subprocess

    code = ("import sys; from zsris_rt.export import cli, engines; "
            "import zsris_rt.backends.tensorrt; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------ real GPU


@pytest.mark.gpu
def test_real_tensorrt_matches_onnxruntime(demo, tmp_path: Path) -> None:
    from zsris_rt.backends.tensorrt import TrtBackend, tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason is not None:
        pytest.skip(reason)
    trt = TrtBackend(demo, cache_dir=tmp_path, max_masks=8)
    rng = np.random.default_rng(3)
    inputs = {"tokens": rng.normal(size=(1, 50, 64)).astype(np.float32),
              "grid_masks": rng.random((11, 7, 7), dtype=np.float32)}
    np.testing.assert_allclose(trt.run("clip_masked_head", inputs)[0],
                               ort_run(DEMO / "clip_masked_head.onnx", inputs)[0],
                               rtol=0, atol=1e-3)
    # The same engine on the crop encoder's inputs: a batch of tokens, one all-ones grid each
    # (one image's tokens above are broadcast over the grids at run time).
    crops = {"tokens": rng.normal(size=(11, 50, 64)).astype(np.float32),
             "grid_masks": np.ones((11, 7, 7), dtype=np.float32)}
    np.testing.assert_allclose(trt.run("clip_masked_head", crops)[0],
                               ort_run(DEMO / "clip_masked_head.onnx", crops)[0],
                               rtol=0, atol=1e-3)
    text = {"ids": np.array([[608, 5, 6, 609], [608, 7, 609, 0]]), "end_index": np.array([3, 2])}
    np.testing.assert_allclose(trt.run("clip_text", text)[0],
                               ort_run(DEMO / "clip_text.onnx", text)[0], rtol=0, atol=1e-3)
