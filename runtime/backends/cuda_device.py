"""A thin wrapper over cuda-python's runtime API (cudart): the device, one stream, device buffers.

TensorRT needs nothing more than raw device pointers and a stream, so owning these few calls
avoids a dependency on PyCUDA or torch. cudart returns `(error, value...)` tuples; every error
becomes a ZsrisError that names the call and CUDA's error name. cuda-python is imported lazily:
`cuda.bindings.runtime` since cuda-python 12.6, `cuda.cudart` before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ZsrisError


class CudaError(ZsrisError):
    """A CUDA runtime call failed (no device, out of memory, bad pointer, ...)."""


def import_cudart() -> Any:
    """cuda-python's runtime module; ImportError when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def check(cudart: Any, call: str, result: tuple[Any, ...]) -> Any:
    """The value(s) of a cudart result tuple, or a CudaError naming `call` and the error."""
    error, values = result[0], result[1:]
    if error != cudart.cudaError_t.cudaSuccess:
        found, name = cudart.cudaGetErrorName(error)
        label = name.decode() if found == cudart.cudaError_t.cudaSuccess else str(int(error))
        raise CudaError(f"CUDA {call} failed: {label}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class DeviceBuffer:
    """`nbytes` of device memory at `ptr`, owned: free() gives it back."""

    def __init__(self, device: CudaDevice, nbytes: int) -> None:
        self.device = device
        self.nbytes = nbytes
        # cudaMalloc(0) may return a null pointer, which TensorRT refuses as a tensor address.
        self.ptr = int(device.call("cudaMalloc", max(nbytes, 1)))

    def upload(self, array: np.ndarray) -> None:
        """Queue a copy of the C-contiguous `array` to the start of this buffer; the caller keeps
        `array` alive until the stream is synchronised."""
        self._fits(array)
        self.device.call("cudaMemcpyAsync", self.ptr, array.ctypes.data, array.nbytes,
                         self.device.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                         self.device.stream)

    def download(self, array: np.ndarray) -> None:
        """Queue a copy of the start of this buffer into the C-contiguous `array`."""
        self._fits(array)
        self.device.call("cudaMemcpyAsync", array.ctypes.data, self.ptr, array.nbytes,
                         self.device.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                         self.device.stream)

    def free(self) -> None:
        if self.ptr:
            self.device.call("cudaFree", self.ptr)
            self.ptr = 0

    def _fits(self, array: np.ndarray) -> None:
        if not array.flags.c_contiguous:
            raise ValueError("device copies need a C-contiguous array")
        if array.nbytes > self.nbytes:
            raise ValueError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte buffer")


class GrowingBuffers:
    """Device buffers by tensor name that only grow: a call no bigger than an earlier one reuses
    its memory, so steady-state calls allocate nothing."""

    def __init__(self, device: CudaDevice) -> None:
        self.device = device
        self._buffers: dict[str, DeviceBuffer] = {}

    def get(self, name: str, nbytes: int) -> DeviceBuffer:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            if buffer is not None:
                buffer.free()
            buffer = self._buffers[name] = self.device.malloc(nbytes)
        return buffer

    def free(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()


class CudaDevice:
    """One CUDA device and one stream on it; every copy and launch of a backend goes there."""

    def __init__(self, index: int = 0) -> None:
        try:
            self.cudart = import_cudart()
        except ImportError as exc:
            raise CudaError(f"cuda-python is not installed ({exc})") from None
        self.index = index
        count = self.call("cudaGetDeviceCount")
        if index >= count:
            raise CudaError(f"CUDA device {index} does not exist ({count} visible)")
        self.call("cudaSetDevice", index)
        self.name, self.compute_capability = device_identity(self.cudart, index)
        self.stream = self.call("cudaStreamCreate")

    @property
    def stream_handle(self) -> int:
        """The stream as the integer handle TensorRT's execute_async_v3 takes."""
        return int(self.stream)

    def call(self, name: str, *args: Any) -> Any:
        return check(self.cudart, name, getattr(self.cudart, name)(*args))

    def malloc(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self, nbytes)

    def synchronize(self) -> None:
        self.call("cudaStreamSynchronize", self.stream)

    def close(self) -> None:
        if self.stream is not None:
            self.call("cudaStreamDestroy", self.stream)
            self.stream = None


def device_identity(cudart: Any, index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of device `index`."""
    props = check(cudart, "cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(index))
    name = props.name
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return text.split("\x00")[0].strip(), f"{props.major}.{props.minor}"


def visible_devices() -> int:
    """How many CUDA devices cudart sees; ImportError without cuda-python, CudaError on a
    driver problem."""
    cudart = import_cudart()
    return int(check(cudart, "cudaGetDeviceCount", cudart.cudaGetDeviceCount()))
