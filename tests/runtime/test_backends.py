"""zsris_rt.backends: the interface's chunking (base), the choice (__init__), ONNX Runtime on the
CPU (ort), and what of TensorRT runs without a GPU: why it is unavailable (tensorrt), engine keys,
profiles and calibration sets (engine_build), the engine cache (engine_cache), and the cudart
wrapper on a fake cudart (cuda_device)."""

from __future__ import annotations

import ctypes
import json
import sys
import types

import numpy as np
import pytest

from zsris_rt.backends import BACKENDS, create_backend, supported_precisions
from zsris_rt.backends.base import PRECISIONS, run_in_chunks
from zsris_rt.backends.engine_build import (
    calibration_set,
    graph_profile,
    padded_text_ids,
)
from zsris_rt.backends.engine_cache import (
    EngineCache,
    EngineKey,
    cached_engines,
    default_cache_dir,
)
from zsris_rt.backends.ort import OrtBackend, OrtFlavour, cuda_flavour, ort_trt_flavour
from zsris_rt.backends.tensorrt import engine_key, tensorrt_unavailable
from zsris_rt.errors import PackError, ZsrisError
from zsris_rt.pack import load_pack

from .fake_backend import FakeBackend

# --- base ------------------------------------------------------------------------------------


def test_run_in_chunks_splits_only_the_batched_rows():
    calls = []

    def run(inputs, release=False):
        calls.append(({n: a.shape for n, a in inputs.items()}, release))
        return [inputs["a"] * 2 + inputs["b"].sum(), inputs["a"][:, :1]]

    inputs = {"a": np.arange(10.0).reshape(5, 2), "b": np.ones((1, 3)), "c": np.zeros(4)}
    whole = run_in_chunks(run, inputs, ("a", "b"), None, release=True)
    chunked = run_in_chunks(run, inputs, ("a", "b"), 2, release=True)
    for got, want in zip(chunked, whole, strict=True):
        np.testing.assert_array_equal(got, want)
    assert [c[0]["a"] for c in calls[1:]] == [(2, 2), (2, 2), (1, 2)]
    assert all(c[0]["b"] == (1, 3) and c[0]["c"] == (4,) for c in calls)  # whole every time
    assert [c[1] for c in calls] == [True, False, False, True]
    calls.clear()
    run_in_chunks(run, inputs, ("a",), 5)
    run_in_chunks(run, inputs, (), 1)
    assert len(calls) == 2  # within the limit, or nothing batched: one call each


def test_backend_run_batched_uses_its_max_batch_and_describe():
    backend = FakeBackend({"clip_text": lambda i: [i["ids"].astype(np.float32)]},
                          limits={"clip_text": 3})
    out = backend.run_batched("clip_text", {"ids": np.arange(7)[:, None],
                                            "end_index": np.zeros(7)}, ("ids", "end_index"))
    np.testing.assert_array_equal(out[0][:, 0], np.arange(7))
    assert [c.rows("ids") for c in backend.calls] == [3, 3, 1]
    assert backend.describe() == {"backend": "fake", "fake": True}
    backend.passed_over = {"trt": "no GPU"}
    assert backend.describe()["passed_over"] == {"trt": "no GPU"}
    assert PRECISIONS == ("fp32", "fp16", "int8")


# --- the choice and ONNX Runtime -------------------------------------------------------------

def test_backend_choice_and_precisions(demo_pack):
    assert BACKENDS == ("auto", "cpu", "cuda", "ort-trt", "trt")
    assert supported_precisions(demo_pack, "cpu") == ["fp32", "int8"]
    assert supported_precisions(demo_pack, "ort-trt") == ["fp32", "fp16", "int8"]
    assert supported_precisions(demo_pack, "trt") == list(PRECISIONS)
    with pytest.raises(ZsrisError, match="unknown backend 'tpu'"):
        create_backend(demo_pack, "tpu")
    with pytest.raises(ZsrisError, match="unknown precision 'fp8'"):
        create_backend(demo_pack, "cpu", precision="fp8")
    with pytest.raises(ZsrisError, match="cannot run pack .* at fp16"):
        create_backend(demo_pack, "cpu", precision="fp16")


def test_auto_says_what_it_passed_over(demo_pack):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() or \
            tensorrt_unavailable() is None:
        pytest.skip("a GPU backend may really run here")
    backend = create_backend(demo_pack, "auto")
    assert backend.name == "cpu"
    assert set(backend.passed_over) == {"trt", "cuda"}
    assert "tensorrt" in backend.passed_over["trt"]
    assert "CUDAExecutionProvider" in backend.passed_over["cuda"]
    assert backend.describe()["passed_over"] == backend.passed_over


def text_inputs(demo_pack):
    s = demo_pack.clip
    ids = np.array([[s.start_token, 517, 604, s.end_token]], dtype=np.int64)
    return {"ids": ids, "end_index": np.array([3], dtype=np.int64)}


def test_ort_cpu_runs_a_graph_and_reports_what_ran(demo_pack):
    backend = create_backend(demo_pack, "cpu", threads=1)
    assert isinstance(backend, OrtBackend)
    (features,) = backend.run("clip_text", text_inputs(demo_pack), release=True)
    assert features.shape == (1, demo_pack.clip.embed_dim) and features.dtype == np.float32
    report = backend.describe()
    assert report["backend"] == "cpu" and report["providers"] == ["CPUExecutionProvider"]
    assert report["graph_precision"] == {"clip_text": "fp32"}  # the graphs loaded so far
    # IO binding (the GPU flavours' path), here bound to the CPU: the same numbers.
    bound = OrtBackend(demo_pack, OrtFlavour("cpu", [("CPUExecutionProvider", {})],
                                             "CPUExecutionProvider", io_binding=True))
    np.testing.assert_array_equal(bound.run("clip_text", text_inputs(demo_pack))[0], features)


def test_ort_refuses_an_unloadable_graph_in_one_line(demo_copy):
    (demo_copy / "clip_text.onnx").write_bytes(b"not a graph")
    pack = load_pack(demo_copy, verify=False)
    with pytest.raises(ZsrisError) as caught:
        create_backend(pack, "cpu").prepare("clip_text")
    message = str(caught.value)
    assert "clip_text.onnx: ONNX Runtime cannot load it" in message and "\n" not in message


def test_gpu_flavours_ask_for_their_providers():
    cuda = cuda_flavour(1)
    assert cuda.required == "CUDAExecutionProvider" and cuda.io_binding
    assert cuda.providers[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert cuda.arena_devices == "cpu:0;gpu:1"
    trt = ort_trt_flavour("/cache", "fp16")
    options = dict(trt.providers)["TensorrtExecutionProvider"]
    assert options["trt_fp16_enable"] and not options["trt_int8_enable"]
    assert options["trt_engine_cache_path"] == "/cache" and trt.notes == {"engine_cache": "/cache"}
    assert [p for p, _ in trt.providers] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                             "CPUExecutionProvider"]


# --- TensorRT without a GPU ------------------------------------------------------------------

def test_tensorrt_says_why_it_cannot_run(demo_pack):
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT runs here")
    assert "\n" not in reason and ("tensorrt" in reason or "cuda" in reason.lower())
    from zsris_rt.backends.tensorrt import TrtBackend

    with pytest.raises(ZsrisError, match="the TensorRT backend cannot run here"):
        TrtBackend(demo_pack)


def test_profiles_cover_every_dynamic_axis(demo_pack):
    head = graph_profile(demo_pack, "clip_masked_head")
    assert head == {"tokens": ((1, 50, 64), (32, 50, 64), (128, 50, 64)),
                    "grid_masks": ((1, 7, 7), (32, 7, 7), (128, 7, 7))}
    assert graph_profile(demo_pack, "clip_text", max_masks=8) == {
        "ids": ((1, 2), (2, 16), (8, 77)), "end_index": ((1,), (2,), (8,))}
    decoder = graph_profile(demo_pack, "prop_decoder")
    assert decoder == {"points": ((1, 1, 2), (64, 1, 2), (64, 1, 2)),
                       "labels": ((1, 1), (64, 1), (64, 1))}  # fixed-shape inputs need none
    assert graph_profile(demo_pack, "prop_encoder") == {}
    assert graph_profile(demo_pack, "clip_trunk", max_masks=16)["image"][2] == (16, 3, 224, 224)
    with pytest.raises(ZsrisError, match="max_masks must be a positive integer"):
        graph_profile(demo_pack, "clip_trunk", max_masks=0)


def test_an_axis_without_a_rule_is_refused(demo_copy):
    manifest = json.loads((demo_copy / "manifest.json").read_text())
    manifest["graphs"]["clip_trunk"]["inputs"][0]["shape"][2] = "height"
    (demo_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="dynamic axis 'height' with no TensorRT profile rule"):
        graph_profile(load_pack(demo_copy, verify=False), "clip_trunk")


def test_calibration_sets():
    a = {"x": np.zeros((1, 3))}
    b = {"x": np.zeros((1, 5))}
    chosen, shapes = calibration_set([a, b, dict(a), dict(a)])
    assert len(chosen) == 3 and shapes == {"x": (1, 3)}
    with pytest.raises(ZsrisError, match="at least one input batch"):
        calibration_set([])
    padded = padded_text_ids([{"ids": np.array([[5, 6]]), "end_index": np.array([1])},
                              {"ids": np.array([[5, 7, 8, 9]]), "end_index": np.array([3])}], 0)
    assert [e["ids"].tolist() for e in padded] == [[[5, 6, 0, 0]], [[5, 7, 8, 9]]]


def key(graph="clip_text", precision="fp16", profile=None, gpu="Orin") -> EngineKey:
    return EngineKey(graph, "ab" * 32, "10.3.0", gpu, "8.7", precision,
                     profile or {"ids": ((1, 2), (2, 16), (8, 77))})


def test_engine_keys_and_the_cache(tmp_path, demo_pack):
    k = key()
    assert k.file_name == f"clip_text-fp16-{k.digest[:16]}.plan"
    assert len({key().digest, key(precision="int8").digest, key(gpu="A100").digest,
                key(profile={"ids": ((1, 2), (2, 16), (4, 77))}).digest}) == 4
    assert key(graph="other").digest == k.digest  # the name names the file only
    cache = EngineCache(tmp_path)
    assert cache.load(k) is None and cache.with_any_profile(k) is None
    path = cache.store(k, b"PLAN", 1.23456)
    assert cache.load(k) == b"PLAN" and path == tmp_path / k.file_name
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["key"] == k.digest and sidecar["plan_bytes"] == 4
    assert sidecar["build_seconds"] == 1.235
    assert cache.with_any_profile(key(profile={"ids": ((1, 2), (2, 2), (2, 77))})) == path
    assert cache.with_any_profile(key(precision="int8")) is None
    assert cache.timing_cache_path("10.3.0", "NVIDIA Jetson AGX Orin", "8.7").name == \
        "timing-nvidia-jetson-agx-orin-sm87-trt10.3.0.cache"
    (tmp_path / "broken.json").write_text("{")  # another process writing one: skipped
    ours = engine_key(demo_pack, "clip_text", "fp32", "10.3.0", "Orin", "8.7")
    assert ours.onnx_sha256 == demo_pack.manifest.files["clip_text.onnx"]
    assert ours.profile == graph_profile(demo_pack, "clip_text")
    cache.store(ours, b"X", 2.0)
    listed = cached_engines(demo_pack, tmp_path)
    assert [(e["graph"], e["precision"], e["gpu"]) for e in listed] == [("clip_text", "fp32",
                                                                         "Orin")]


def test_default_engine_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ZSRIS_ENGINE_CACHE", str(tmp_path / "e"))
    assert default_cache_dir() == tmp_path / "e"
    monkeypatch.delenv("ZSRIS_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "zsris-rt" / "engines"


# --- cudart, faked ---------------------------------------------------------------------------

class FakeCudart(types.ModuleType):
    """cuda-python's runtime calls the wrapper makes: (error, value...) tuples, device memory as
    host buffers (so copies are real memmoves), one device."""

    class cudaError_t(int):  # noqa: N801 - cudart's names
        pass

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self, memory_left: int = 1 << 20) -> None:
        super().__init__("cuda.bindings.runtime")
        self.cudaError_t.cudaSuccess = self.cudaError_t(0)
        self.memory_left = memory_left
        self.buffers: dict[int, np.ndarray] = {}
        self.log: list[str] = []

    def _ok(self, *values):
        return (self.cudaError_t.cudaSuccess, *values)

    def cudaGetErrorName(self, error):
        return self._ok({2: b"cudaErrorMemoryAllocation"}.get(int(error), b"cudaErrorUnknown"))

    def cudaGetDeviceCount(self):
        return self._ok(1)

    def cudaSetDevice(self, index):
        return self._ok()

    def cudaGetDeviceProperties(self, index):
        return self._ok(types.SimpleNamespace(name=b"Fake GPU\x00\x00junk", major=8, minor=7))

    def cudaStreamCreate(self):
        return self._ok(41)

    def cudaStreamSynchronize(self, stream):
        return self._ok()

    def cudaStreamDestroy(self, stream):
        self.log.append("destroy")
        return self._ok()

    def cudaMalloc(self, nbytes):
        if nbytes > self.memory_left:
            return (self.cudaError_t(2), 0)
        self.memory_left -= nbytes
        buffer = np.zeros(nbytes, dtype=np.uint8)
        self.buffers[buffer.ctypes.data] = buffer
        self.log.append(f"malloc {nbytes}")
        return self._ok(buffer.ctypes.data)

    def cudaFree(self, ptr):
        self.memory_left += self.buffers.pop(ptr).nbytes
        self.log.append("free")
        return self._ok()

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return self._ok()


@pytest.fixture
def cudart(monkeypatch):
    fake = FakeCudart()
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = fake
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake)
    return fake


def test_cuda_device_buffers_and_copies(cudart):
    from zsris_rt.backends.cuda_device import CudaDevice, GrowingBuffers, visible_devices

    assert visible_devices() == 1
    device = CudaDevice(0)
    assert (device.name, device.compute_capability, device.stream_handle) == ("Fake GPU", "8.7",
                                                                              41)
    buffer = device.malloc(32)
    data = np.arange(8, dtype=np.float32)
    buffer.upload(data)
    back = np.empty_like(data)
    buffer.download(back)
    device.synchronize()
    np.testing.assert_array_equal(back, data)
    with pytest.raises(ValueError, match="do not fit"):
        buffer.upload(np.zeros(9, dtype=np.float32))
    buffers = GrowingBuffers(device)
    first = buffers.get("x", 64)
    assert buffers.get("x", 16) is first  # smaller: reused
    assert buffers.get("x", 128) is not first and cudart.log.count("free") == 1
    buffers.free()
    device.close()
    device.close()
    assert cudart.log.count("destroy") == 1


def test_cuda_errors_name_the_call(cudart):
    from zsris_rt.backends.cuda_device import CudaDevice, CudaError

    device = CudaDevice(0)
    with pytest.raises(CudaError, match="CUDA cudaMalloc failed: cudaErrorMemoryAllocation"):
        device.malloc(1 << 30)
    with pytest.raises(CudaError, match="CUDA device 3 does not exist \\(1 visible\\)"):
        CudaDevice(3)


def test_without_cuda_python(monkeypatch):
    from zsris_rt.backends.cuda_device import CudaDevice, CudaError

    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of each fails
    with pytest.raises(CudaError, match="cuda-python is not installed"):
        CudaDevice()

