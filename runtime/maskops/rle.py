"""COCO run-length encoding of masks, byte for byte what pycocotools writes (its layout, not its
code): runs over the pixels down each column, left to right, alternating 0s and 1s from 0s.
Compressed counts store each run from the third on as its difference to the run two before, five
bits per character (48 + bits, 0x20 while more follow, 0x10 of the last group the sign)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import MaskError

_MAX_GROUPS = 12  # 60 bits: a longer value is corrupt input


def _runs(mask: np.ndarray) -> np.ndarray:
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges)
    return np.concatenate([[0], runs]) if flat[0] else runs


def _compress(runs: np.ndarray) -> bytes:
    values = runs.astype(np.int64)
    values[3:] -= runs[1:-2]
    out = bytearray()
    for x in values.tolist():
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append((c | 0x20 if more else c) + 48)
    return bytes(out)


def rle_encode(masks: np.ndarray) -> list[bytes]:
    """K×H×W bool → K compressed counts strings."""
    return [_compress(_runs(mask)) for mask in masks]


def _decompress(counts: bytes, pixels: int) -> list[int]:
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x = groups = 0
        more = True
        while more:
            if p >= len(counts):
                raise ValueError("the counts string ends inside a value")
            c = counts[p] - 48
            if not 0 <= c <= 63:
                raise ValueError(f"the counts string holds a character outside '0'..'o' at "
                                 f"byte {p}")
            if groups == _MAX_GROUPS:
                raise ValueError(f"the counts string holds a value too long at byte {p}")
            x |= (c & 0x1F) << (5 * groups)
            more = bool(c & 0x20)
            p += 1
            groups += 1
            if not more and c & 0x10:
                x -= 1 << (5 * groups)
        if len(runs) > 2:
            x += runs[-2]
        if not 0 <= x <= pixels:
            raise ValueError(f"a run of {x} pixels")
        runs.append(x)
    return runs


def rle_decode(counts: Sequence[bytes | str], height: int, width: int) -> np.ndarray:
    """K compressed counts strings of H×W masks → K×H×W bool; each must cover H·W exactly."""
    pixels = height * width
    out = np.empty((len(counts), height, width), dtype=bool)
    for i, text in enumerate(counts):
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        try:
            runs = _decompress(raw, pixels)
        except ValueError as exc:
            raise MaskError(f"RLE {i}: {exc}") from None
        total = sum(runs)
        if total != pixels:
            covered = f"more than {pixels}" if total > pixels else str(total)
            raise MaskError(f"RLE {i}: counts cover {covered} pixels, not {height}×{width}")
        values = np.arange(len(runs)) % 2 == 1
        out[i] = np.repeat(values, runs).reshape(width, height).T
    return out
