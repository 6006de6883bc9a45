"""Backend choice (DESIGN.md §4): `cpu`, `cuda` and `ort-trt` on ONNX Runtime, `trt` on native
TensorRT engines, and `auto`, which picks the best that really works here and says why it passed
over the others (`describe()["passed_over"]`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ZsrisError
from ..pack import Pack
from .base import PRECISIONS, Backend

BACKENDS = ("auto", "cpu", "cuda", "ort-trt", "trt")


def supported_precisions(pack: Pack, name: str) -> list[str]:
    """What `name` can run this pack at: ONNX Runtime runs the pack's graph variants (fp32, and
    int8 once `zsris-export quantize` made them); TensorRT also makes fp16 (and int8) engines."""
    if name == "trt":
        return list(PRECISIONS)  # native TensorRT builds each from the fp32 graphs
    if name == "ort-trt":
        return sorted(set(pack.precisions()) | {"fp16"}, key=PRECISIONS.index)
    return pack.precisions()


def _check_precision(pack: Pack, name: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ZsrisError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    supported = supported_precisions(pack, name)
    if precision not in supported:
        hint = ("make int8 graphs with `zsris-export quantize PACK --calib IMAGES`"
                if precision == "int8" else "fp16 runs on --backend trt or ort-trt")
        raise ZsrisError(f"backend {name} cannot run pack {pack.root} at {precision} (it can: "
                         f"{', '.join(supported)}); {hint}")


def create_backend(pack: Pack, name: str = "cpu", threads: int | None = None,
                   precision: str = "fp32",
                   engine_cache: str | os.PathLike[str] | None = None) -> Backend:
    """The backend `name` for `pack`; a backend that cannot really run here is a ZsrisError
    (`auto` moves on to the next instead)."""
    if name not in BACKENDS:
        raise ZsrisError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    if name == "auto":
        return _auto(pack, threads, precision, engine_cache)
    _check_precision(pack, name, precision)
    if name == "trt":
        from .tensorrt import TrtBackend

        return TrtBackend(pack, precision=precision,
                          cache_dir=Path(engine_cache) if engine_cache else None)
    from .ort import OrtBackend, cpu_flavour, cuda_flavour, ort_trt_flavour

    if name == "cuda":
        flavour = cuda_flavour()
    elif name == "ort-trt":
        from .engine_cache import default_cache_dir

        flavour = ort_trt_flavour(str(Path(engine_cache or default_cache_dir()) / "ort-trt"),
                                  precision)
    else:
        flavour = cpu_flavour()
    return OrtBackend(pack, flavour, threads=threads, precision=precision)


def _auto(pack: Pack, threads: int | None, precision: str,
          engine_cache: str | os.PathLike[str] | None) -> Backend:
    """TensorRT when its engines for this pack are built, else ONNX Runtime CUDA when a session
    really gets the GPU, else the CPU. Each candidate is tried on a real graph, never assumed."""
    passed_over: dict[str, str] = {}
    from .tensorrt import engines_missing, tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason is None:
        missing = engines_missing(pack, precision, Path(engine_cache) if engine_cache else None)
        reason = (f"no {precision} engines built for {', '.join(missing)} (zsris-export engines "
                  f"PACK --precision {precision})" if missing else None)
    if reason is not None:
        passed_over["trt"] = reason
    for name in ("trt", "cuda") if reason is None else ("cuda",):
        try:
            backend = create_backend(pack, name, threads, precision, engine_cache)
            backend.prepare("clip_text")
        except ZsrisError as exc:
            passed_over[name] = str(exc)
            continue
        backend.passed_over = passed_over
        return backend
    backend = create_backend(pack, "cpu", threads, precision, engine_cache)
    backend.passed_over = passed_over
    return backend


__all__ = ["BACKENDS", "PRECISIONS", "Backend", "create_backend", "supported_precisions"]
