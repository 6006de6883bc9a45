"""`zsris-export engines`: build a pack's TensorRT engines into the engine cache.

Engines are specific to the GPU model and TensorRT version, so they are built on the machine that
runs them (a Jetson included) rather than shipped in the pack; this command does it ahead of the
first query. It needs only the runtime modules (no PyTorch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zsris_rt.backends.engine_build import DEFAULT_MAX_MASKS, DEFAULT_WORKSPACE_MB
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import load_pack

GPU_SECTION = "the README's \"GPU / Jetson\" section"


@dataclass(frozen=True)
class EnginesConfig:
    """Everything `build_engines` needs."""

    pack: Path
    precision: str = "fp32"  # fp32, fp16 or int8 (int8 needs `calib`)
    max_masks: int = DEFAULT_MAX_MASKS  # most masks per engine call; more run in chunks
    calib: Sequence[str] = ()  # int8 calibration images: files, folders or glob patterns
    per_graph: int = 64  # int8: calibration inputs per graph
    cache_dir: Path | None = None  # None: $ZSRIS_ENGINE_CACHE, else ~/.cache/zsris-rt/engines
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    graphs: Sequence[str] = ()  # () : every graph of the pack
    force: bool = False  # rebuild engines already cached


def _check(config: EnginesConfig) -> None:
    if config.precision == "int8" and not config.calib:
        raise ZsrisError("int8 engines need calibration images: pass --calib IMAGES...")
    if config.calib and config.precision != "int8":
        raise ZsrisError("--calib applies to --precision int8 only")
    for name in ("max_masks", "workspace_mb", "per_graph"):
        if getattr(config, name) < 1:
            raise ZsrisError(f"--{name.replace('_', '-')} must be a positive integer")


def build_engines(config: EnginesConfig) -> list[Path]:
    """Build (or find) each requested engine; returns the plan paths."""
    from zsris_rt.backends.tensorrt import TrtBackend, tensorrt_unavailable

    _check(config)
    reason = tensorrt_unavailable()
    if reason is not None:
        raise ZsrisError(f"TensorRT cannot run here: {reason}; see {GPU_SECTION}")
    pack = load_pack(config.pack)
    available = pack.graph_names
    graphs = config.graphs or list(available)
    absent = [g for g in graphs if g not in available]
    if absent:
        raise ZsrisError(f"pack {pack.root} has no {', '.join(absent)} graph (it has: "
                         f"{', '.join(available)})")
    from zsris_rt.progress import progress_printer

    say = progress_printer()
    calibration = None
    if config.precision == "int8":
        from zsris_rt.calibration import collect_graph_inputs, list_images

        images = list_images(config.calib)
        say(f"recording calibration inputs on {len(images)} image(s)")
        calibration = collect_graph_inputs(pack, images, per_graph=config.per_graph, threads=1)
    backend = TrtBackend(pack, config.precision, config.cache_dir,
                         config.max_masks, calibration=calibration, progress=say,
                         workspace_mb=config.workspace_mb)
    plans = []
    for graph in graphs:
        tick = time.perf_counter()
        cached = backend.cache.plan_path(backend.key(graph))
        if config.force or not cached.is_file():
            backend.build(graph)
        backend.prepare(graph)  # loads it: a plan that does not deserialise is rebuilt
        plans.append(backend.plans[graph])
        say(f"{graph}: {backend.plans[graph].name} ({time.perf_counter() - tick:.1f} s)")
    return plans
