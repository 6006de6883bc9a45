"""Random-weight packs of real geometry, built on the fly (no weights can be downloaded) and
cached: a random CLIP checkpoint and, optionally, a random SAM / SAM 2 proposer, exported by the
project's own exporter into one pack."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zsris_rt.export.choices import CLIP_RANDOM_GEOMETRIES, SAM_GEOMETRIES, random_clip_source

from .log import say
from .stats import Json

# The random checkpoints' geometries (export/choices.py, torch-free), ViT then ResNet, "tiny"
# last.
CLIP_GEOMETRIES = tuple(sorted(CLIP_RANDOM_GEOMETRIES,
                               key=lambda name: ("tiny" in name, name == "tiny")))
PROPOSERS = tuple(f"{family}-{geometry}" for family, geometries in SAM_GEOMETRIES.items()
                  for geometry in geometries)


@dataclass(frozen=True)
class RandomPack:
    """Where a random pack and the checkpoints behind it live under the work folder."""

    root: Path
    clip_geometry: str
    proposer: str | None  # "sam2-hiera-tiny", ... or None
    seed: int

    @classmethod
    def under(cls, work: Path, clip_geometry: str, proposer: str | None, seed: int) -> RandomPack:
        name = clip_geometry.replace("/", "-") + (f"+{proposer}" if proposer else "")
        return cls(work / f"{name}_seed{seed}", clip_geometry, proposer, seed)

    @property
    def pack(self) -> Path:
        return self.root / "pack"

    @property
    def clip_folder(self) -> Path:
        return self.root / "clip-checkpoint"

    @property
    def clip_checkpoint(self) -> Path:
        """What the pack is exported from and the reference loads (random_clip_source)."""
        return Path(random_clip_source(str(self.clip_folder), self.clip_geometry))

    @property
    def proposer_checkpoint(self) -> Path:
        return self.root / "proposer-checkpoint"

    def ready(self) -> bool:
        """The pack and the checkpoints the reference loads are all there."""
        manifest = self.pack / "manifest.json"
        clip = self.clip_checkpoint
        if not (manifest.is_file() and (clip.is_file() or (clip / "config.json").is_file())):
            return False
        return self.proposer is None or (
            (self.proposer_checkpoint / "config.json").is_file()
            and bool(json.loads(manifest.read_text()).get("proposer")))

    def spec(self) -> Json:
        return {"root": str(self.root), "clip_geometry": self.clip_geometry,
                "proposer": self.proposer, "seed": self.seed}


def split_proposer(name: str) -> tuple[str, str]:
    """"sam2-hiera-tiny" → ("sam2", "hiera-tiny")."""
    family, geometry = name.split("-", 1)
    return family, geometry


def ensure_pack(target: RandomPack, force: bool, spawn: Callable[[str, Json, str], Json]) -> Json:
    """Export the pack unless it is there already (`spawn(mode, spec, tag)` runs a worker);
    returns the export's timings ({} when reused)."""
    if target.ready() and not force:
        say(f"reuse pack {target.pack} (--force-export to redo)")
        return {}
    say(f"random {target.clip_geometry} CLIP" + (f" + {target.proposer}" if target.proposer
                                                 else "") + f" (seed {target.seed}) → pack "
        f"{target.pack}")
    return spawn("export", target.spec(), "export")
