"""What a pack records about how it was made: the checkpoint's digest and the exporter's stamp."""

from __future__ import annotations

import hashlib
from pathlib import Path

from zsris_rt import __version__
from zsris_rt.pack import sha256_file

EXPORTER = f"zsris-rt {__version__}"


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint file; for a folder, of its sorted "name sha256" listing."""
    if not path.is_dir():
        return sha256_file(path)
    listing = "".join(f"{p.name} {sha256_file(p)}\n" for p in sorted(path.iterdir()) if p.is_file())
    return hashlib.sha256(listing.encode()).hexdigest()
