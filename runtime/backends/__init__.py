"""Backend choice: `cpu` (ONNX Runtime CPU) today; `auto` picks the best that really works."""

from __future__ import annotations

from ..errors import ZsrisError
from ..pack import Pack
from .base import Backend

BACKENDS = ("auto", "cpu")


def create_backend(pack: Pack, name: str = "cpu", threads: int | None = None,
                   precision: str = "fp32") -> Backend:
    if precision not in pack.precisions():
        raise ZsrisError(f"pack {pack.root} has no {precision} graphs (it has: "
                         f"{', '.join(pack.precisions())}); make them with `zsris-export quantize`")
    if name not in BACKENDS:
        raise ZsrisError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    from .ort import OrtBackend

    return OrtBackend(pack, ["CPUExecutionProvider"], threads=threads, name="cpu",
                      precision=precision)


__all__ = ["BACKENDS", "Backend", "create_backend"]
