"""A scene's f^L rows (SPEC §3), computed on first need and kept for every later query.

The crop encoder is the expensive part of a scene (a whole CLIP image tower per mask), so a
segmenter that prunes it (runtime/local_pruning.py) encodes only the rows a query needs; rows
that one expression needed are reused by the next expression asked of the same scene.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

# (mask indices, timings to add the crop stages to) → len(indices)×E f^L rows.
LocalEncoder = Callable[[np.ndarray, dict[str, float]], np.ndarray]


class LocalFeatures:
    """K×E f^L rows of which `computed` are known; `ensure` encodes missing ones on demand."""

    def __init__(self, count: int, encoder: LocalEncoder | None = None,
                 rows: np.ndarray | None = None) -> None:
        if (encoder is None) == (rows is None):
            raise ValueError("give either the rows or an encoder for them")
        self.count = count
        self._rows = rows
        self.computed = np.full(count, rows is not None)
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        return bool(self.computed.all())

    def ensure(self, indices: np.ndarray, timings: dict[str, float]) -> int:
        """Encode those of `indices` not known yet, in one encoder call, adding its stages to
        `timings`; returns how many rows that call encoded."""
        with self._lock:
            indices = np.asarray(indices, dtype=np.int64)
            missing = indices[~self.computed[indices]]
            if missing.size == 0:
                return 0
            assert self._encoder is not None  # only a complete cache has no encoder
            rows = self._encoder(missing, timings)
            if self._rows is None:
                self._rows = np.zeros((self.count, rows.shape[1]), dtype=rows.dtype)
            self._rows[missing] = rows
            self.computed[missing] = True
            if self.computed.all():
                self._encoder = None  # frees the normalised image the encoder holds
            return int(missing.size)

    @property
    def nbytes(self) -> int:
        """Memory this holds: the rows, and the arrays a pending encoder keeps (the normalised
        image and the masks, until every row is known)."""
        held = 0 if self._rows is None else int(self._rows.nbytes)
        for value in getattr(self._encoder, "args", ()):
            held += int(value.nbytes) if isinstance(value, np.ndarray) else 0
        return held

    def rows(self) -> np.ndarray:
        """K×E: the known rows, zeros where not computed (check `computed`)."""
        if self._rows is None:
            raise ValueError("no f^L row is computed yet")
        return self._rows
