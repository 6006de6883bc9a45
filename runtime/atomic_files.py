"""Files written whole or not at all: a temporary name beside each target, then renames. Every
file the runtime writes (outputs, manifests, engine plans, eval summaries) goes through here."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ZsrisError


def write_files_atomically(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary name beside it, then rename them all into place.

    A reader (or the next pipeline stage) never sees a half-written file, and a failure while
    writing leaves none of the outputs behind. Each rename is atomic; the set is not, so a failure
    between renames (rare: same folder, names checked first) can leave earlier files replaced.
    """
    targets = [Path(p) for p in files]
    temps: list[Path] = []
    current: Path | None = None
    try:
        for current in targets:
            if not current.parent.is_dir():
                raise ZsrisError(f"output folder does not exist: {current.parent}")
            if current.is_dir():
                raise ZsrisError(f"output path is a folder: {current}")
        for current, data in zip(targets, files.values(), strict=True):
            temp = current.parent / f".zsris-{secrets.token_hex(6)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours umask
            temps.append(temp)
            with open(fd, "wb") as f:
                f.write(data)
        for temp, current in zip(temps, targets, strict=True):
            os.replace(temp, current)
    except BaseException as exc:
        for temp in temps:
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ZsrisError(f"cannot write {current}: {exc.strerror or exc}") from None
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """One file, its folder made first (engine caches are created on first use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_files_atomically({path: data})
