"""Where built TensorRT engines live, and the key that says when one may be reused.

A plan only runs on the TensorRT version and GPU model that built it, for the graph bytes,
precision and optimisation profile it was built with: all of these go into the key, so a change
of any one builds a new engine instead of loading a stale or incompatible one. Each engine is
`<graph>-<precision>-<key16>.plan` beside a JSON sidecar (the key's parts, build time, sizes);
both are written atomically, so an interrupted build never leaves a half plan behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic_files import atomic_write
from ..pack import Pack

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def default_cache_dir() -> Path:
    """$ZSRIS_ENGINE_CACHE, else $XDG_CACHE_HOME/zsris-rt/engines, else
    ~/.cache/zsris-rt/engines."""
    if os.environ.get("ZSRIS_ENGINE_CACHE"):
        return Path(os.environ["ZSRIS_ENGINE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zsris-rt" / "engines"


@dataclass(frozen=True)
class EngineKey:
    """Everything a plan depends on."""

    graph: str
    onnx_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    profile: Profile

    def parts(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = {name: [list(dims) for dims in shapes]
                           for name, shapes in sorted(self.profile.items())}
        return data

    @property
    def digest(self) -> str:
        parts = self.parts()
        del parts["graph"]  # the graph's bytes are in the key; its name only names the file
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.graph}-{self.precision}-{self.digest[:16]}.plan"


class EngineCache:
    """The cache folder: plans, their sidecars and the timing caches."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def plan_path(self, key: EngineKey) -> Path:
        return self.root / key.file_name

    def load(self, key: EngineKey) -> bytes | None:
        path = self.plan_path(key)
        return path.read_bytes() if path.is_file() else None

    def store(self, key: EngineKey, plan: bytes, build_seconds: float) -> Path:
        """Write the plan, then its sidecar; returns the plan's path."""
        path = self.plan_path(key)
        atomic_write(path, plan)
        sidecar = {**key.parts(), "key": key.digest, "plan_bytes": len(plan),
                   "build_seconds": round(build_seconds, 3),
                   "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write(path.with_suffix(".json"), json.dumps(sidecar, indent=2).encode())
        return path

    def with_any_profile(self, key: EngineKey) -> Path | None:
        """A plan matching `key` in everything but the profile (built with another
        `--max-masks`), the newest; None when there is none."""
        wanted = {k: v for k, v in key.parts().items() if k != "profile"}
        found = [(str(info.get("built_at", "")), plan)
                 for info, plan in plans(self.root, f"{key.graph}-{key.precision}-*.json")
                 if all(info.get(k) == v for k, v in wanted.items())]
        return max(found)[1] if found else None

    def timing_cache_path(self, tensorrt: str, gpu: str, compute_capability: str) -> Path:
        """One timing cache per GPU model and TensorRT version, shared by all graphs."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
        sm = compute_capability.replace(".", "")
        return self.root / f"timing-{slug}-sm{sm}-trt{tensorrt}.cache"


def pack_graph_digests(pack: Pack) -> dict[str, str]:
    """sha256 of each fp32 graph file of the pack (the bytes TensorRT builds from)."""
    digests = {}
    for graph in pack.manifest.graphs:
        name = pack.graph_path(graph, "fp32").name
        if name in pack.manifest.files:
            digests[graph] = pack.manifest.files[name]
    return digests


def cached_engines(pack: Pack, cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """The cached engines built from this pack's graphs (any GPU, version or precision), from
    their sidecars, for `zsris-rt doctor`: each has graph, precision, tensorrt, gpu,
    compute_capability, plan (path), plan_bytes, build_seconds, built_at."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wanted = set(pack_graph_digests(pack).values())
    return [{name: info.get(name) for name in
             ("graph", "precision", "tensorrt", "gpu", "compute_capability", "plan_bytes",
              "build_seconds", "built_at")} | {"plan": str(plan)}
            for info, plan in plans(root, "*.json") if info.get("onnx_sha256") in wanted]


def plans(root: Path, pattern: str) -> Iterator[tuple[dict[str, Any], Path]]:
    """(sidecar, plan path) of each readable sidecar matching `pattern` whose plan exists, in
    name order; unreadable sidecars are skipped (another process may be writing one)."""
    for sidecar in sorted(root.glob(pattern)):
        try:
            info = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        plan = sidecar.with_suffix(".plan")
        if isinstance(info, dict) and plan.is_file():
            yield info, plan
