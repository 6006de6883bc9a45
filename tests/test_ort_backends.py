"""ONNX Runtime backends and `--backend auto`: a provider counts only once a session really got it.

This machine has the CPU onnxruntime wheel, so CUDA is exercised two ways: for real where the wheel
lacks it (the refusal a user sees), and through a stand-in onnxruntime that claims CUDA and then
either falls back silently (what onnxruntime-gpu does without a working CUDA) or reports it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from zsris_rt.backends import create_backend
from zsris_rt.backends.ort import OrtBackend, OrtFlavour
from zsris_rt.commands.main import main
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import load_pack

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def pack(pack_dir):
    return load_pack(pack_dir)


def text_inputs(rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 400, (rows, 9)).astype(np.int64)
    return {"ids": ids, "end_index": np.full(rows, 8, dtype=np.int64)}


def test_io_binding_gives_the_plain_run_outputs(pack):
    """The IO-binding path (what cuda and ort-trt use), run on the CPU device."""
    bound = OrtBackend(pack, OrtFlavour("cpu-bound", [("CPUExecutionProvider", {})],
                                        "CPUExecutionProvider", device="cpu", io_binding=True))
    plain = create_backend(pack, "cpu")
    rng = np.random.default_rng(1)
    for graph, inputs in [("clip_text", text_inputs()),
                          ("clip_trunk", {"image": rng.standard_normal((2, 3, 224, 224),
                                                                       dtype=np.float32)})]:
        got, want = bound.run(graph, inputs), plain.run(graph, inputs)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_releasing_run_gives_the_same_outputs_and_frees_the_arena(tmp_path):
    """`release=True` shrinks ONNX Runtime's arena at the end of the run: same outputs, and the
    256 MiB intermediate the arena holds after a plain run goes back to the system."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [65536, 1024])
    graph = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["big"]),
                               helper.make_node("Sin", ["big"], ["wave"]),
                               helper.make_node("ReduceSum", ["wave"], ["y"], keepdims=0)],
                              "big_intermediate", [x], [y], initializer=[shape])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    pack = SimpleNamespace(graph_path=lambda graph, precision: path)
    backend = OrtBackend(pack)  # type: ignore[arg-type]  # only graph_path is read here
    inputs = {"x": np.linspace(0, 1, 1024, dtype=np.float32)[None]}
    kept = backend.run("big", inputs)[0]
    held = resident_bytes()
    released = backend.run("big", inputs, release=True)[0]
    np.testing.assert_array_equal(kept, released)
    assert held - resident_bytes() > 128 * 2 ** 20


def resident_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has the CUDA provider")
def test_cuda_without_the_gpu_wheel_is_one_clear_line(pack):
    backend = create_backend(pack, "cuda")
    with pytest.raises(ZsrisError, match="no CUDAExecutionProvider.*onnxruntime-gpu") as info:
        backend.prepare("clip_text")
    assert "\n" not in str(info.value)


class ClaimingOrt:
    """An onnxruntime that lists CUDA as available; its sessions run on the CPU and report either
    the CPU alone (silent fallback) or CUDA too (`really_cuda`)."""

    def __init__(self, really_cuda: bool) -> None:
        self.really_cuda = really_cuda
        self.asked: list[list] = []

    def __getattr__(self, name: str):
        return getattr(ort, name)

    def get_available_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, sess_options=None, providers=None):  # noqa: N802 - ORT's name
        self.asked.append(providers)
        session = ort.InferenceSession(path, sess_options=sess_options,
                                       providers=["CPUExecutionProvider"])
        got = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.really_cuda else \
            ["CPUExecutionProvider"]
        session.get_providers = lambda: got
        return session


def claiming(monkeypatch, really_cuda: bool) -> ClaimingOrt:
    fake = ClaimingOrt(really_cuda)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", fake)
    return fake


def test_silent_cpu_fallback_is_refused(monkeypatch, pack):
    fake = claiming(monkeypatch, really_cuda=False)
    backend = create_backend(pack, "cuda")
    with pytest.raises(ZsrisError, match="did not start.*fell back to CPUExecutionProvider"):
        backend.prepare("clip_text")
    assert fake.asked[0][0][0] == "CUDAExecutionProvider"


def test_auto_passes_over_a_fallen_back_cuda(monkeypatch, pack):
    claiming(monkeypatch, really_cuda=False)
    backend = create_backend(pack, "auto")
    report = backend.describe()
    assert report["backend"] == "cpu"
    assert "fell back" in report["passed_over"]["cuda"]
    assert "trt" in report["passed_over"]


def test_auto_takes_cuda_when_a_session_really_gets_it(monkeypatch, pack):
    fake = claiming(monkeypatch, really_cuda=True)
    backend = create_backend(pack, "auto")
    assert backend.name == "cuda" and set(backend.passed_over) == {"trt"}
    assert backend.describe()["providers"] == ["CPUExecutionProvider", "CUDAExecutionProvider"]
    assert [p for p, _ in fake.asked[-1]] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_ort_trt_asks_for_the_engine_cache_and_fp16(monkeypatch, pack, tmp_path):
    fake = claiming(monkeypatch, really_cuda=False)
    backend = create_backend(pack, "ort-trt", precision="fp16", engine_cache=tmp_path)
    with pytest.raises(ZsrisError, match="has no TensorrtExecutionProvider"):
        backend.prepare("clip_text")
    fake.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"]
    with pytest.raises(ZsrisError, match="TensorrtExecutionProvider is installed but did not"):
        backend.prepare("clip_text")
    name, options = fake.asked[-1][0]
    assert name == "TensorrtExecutionProvider"
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == str(tmp_path / "ort-trt")


@pytest.mark.parametrize("backend, precision, message", [
    ("cpu", "fp16", "cannot run .* at fp16.*trt or ort-trt"),
    ("cpu", "int8", "cannot run .* at int8.*zsris-export quantize"),
    ("cuda", "int8", "cannot run .* at int8"),
    ("cpu", "bf16", "unknown precision"),
    ("tpu", "fp32", "unknown backend 'tpu'"),
])
def test_unsupported_precision_or_backend(pack, backend, precision, message):
    with pytest.raises(ZsrisError, match=message):
        create_backend(pack, backend, precision=precision)


def test_cli_names_the_backend_auto_chose(capsys, pack_dir, tmp_path):
    import cv2

    from conftest import random_scene

    image, masks = random_scene(np.random.default_rng(3), 64, 80, 3)
    cv2.imwrite(str(tmp_path / "image.png"), image[:, :, ::-1])
    np.save(tmp_path / "masks.npy", masks)
    code = main([str(tmp_path / "image.png"), "a cat", "--pack", str(pack_dir), "--masks",
                 str(tmp_path / "masks.npy"), "--backend", "auto", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    expected = "cuda" if HAS_CUDA_EP else "cpu"
    assert report["backend"] == expected and report["results"][0]["backend"] == expected
    assert "trt" in report["passed_over"]


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime has the CUDA provider")
def test_cli_cuda_here_is_exit_2_and_one_line(capsys, pack_dir, tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "image.png"), np.zeros((32, 32, 3), np.uint8))
    code = main([str(tmp_path / "image.png"), "a cat", "--pack", str(pack_dir), "--backend",
                 "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "CUDAExecutionProvider" in err
