"""COCO RLE encode/decode: the C++ ops and their NumPy twins write byte for byte what pycocotools
writes, read back what it writes, and refuse malformed counts exactly where a strict decoder
written here (pycocotools itself validates nothing) does."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pycocotools.mask as coco
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import native_maskops, native_or_twin, varied_masks
from zsris_rt import maskops
from zsris_rt.errors import MaskError
from zsris_rt.maskops import rle as twin

EncodeOp = Callable[[np.ndarray], list[bytes]]
# Longest value a counts string may hold: 12 characters of 5 bits (the implementations' limit).
MAX_VALUE_CHARS = 12
# pycocotools shifts each character's bits as a C int: a value of more than 6 characters (6 in a
# row with the continuation bit 0x20, i.e. 'P'..'o') is beyond it.
PYCOCOTOOLS_MISREADS = re.compile(rb"[P-o]{6}")


@dataclass(frozen=True)
class Decoder:
    """One way to decode, and the error it raises on malformed counts."""

    decode: Callable[[list[bytes], int, int], np.ndarray]
    error: type[Exception]


@pytest.fixture(scope="module", params=["c++", "numpy"])
def encode(request: pytest.FixtureRequest) -> EncodeOp:
    return native_or_twin(request.param, "rle_encode", twin.rle_encode)


@pytest.fixture(scope="module", params=["c++", "numpy", "maskops"])
def decoder(request: pytest.FixtureRequest) -> Decoder:
    if request.param == "maskops":
        return Decoder(lambda counts, h, w: maskops.rle_decode(counts, (h, w)), MaskError)
    if request.param == "c++":
        return Decoder(native_maskops().rle_decode, ValueError)
    return Decoder(twin.rle_decode, MaskError)


def coco_counts(masks: np.ndarray) -> list[bytes]:
    if not len(masks):
        return []
    rles = coco.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [r["counts"] for r in rles]


def column_runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts: run lengths down each column, left to right, from 0s."""
    runs, value, length = [], False, 0
    for pixel in mask.T.ravel().tolist():
        if pixel != value:
            runs.append(length)
            value, length = pixel, 0
        length += 1
    return [*runs, length]


def strict_decode(counts: bytes, h: int, w: int) -> np.ndarray | None:
    """The compressed counts format read from its description, refusing anything malformed: None
    unless every character is in '0'..'o', every value ends and has at most 12 characters, every
    run (after adding the run two before, from the fourth on) is in 0..H·W, and the runs cover
    H·W exactly."""
    runs: list[int] = []
    value = chars = 0
    for byte in counts:
        digit = byte - ord("0")
        if not 0 <= digit < 64 or chars == MAX_VALUE_CHARS:
            return None
        value += (digit & 0x1F) << (5 * chars)
        chars += 1
        if digit & 0x20:
            continue
        if digit & 0x10:
            value -= 1 << (5 * chars)
        if len(runs) >= 3:
            value += runs[-2]
        if not 0 <= value <= h * w:
            return None
        runs.append(value)
        value = chars = 0
    if chars or sum(runs) != h * w:
        return None
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(w, h).T


def check_encode(encode: EncodeOp, masks: np.ndarray) -> list[bytes]:
    """`encode` writes what pycocotools writes, and what it makes of uncompressed counts."""
    got = encode(masks)
    assert got == coco_counts(masks)
    h, w = masks.shape[1:]
    for counts, mask in zip(got, masks, strict=True):
        compressed = coco.frPyObjects({"counts": column_runs(mask), "size": [h, w]}, h, w)
        assert counts == compressed["counts"]
    return got


def check_decode(decoder: Decoder, counts: list[bytes], h: int, w: int) -> None:
    """`decoder` gives what the strict decoder gives, or raises its error where that refuses."""
    expected = [strict_decode(c, h, w) for c in counts]
    if any(e is None for e in expected):
        with pytest.raises(decoder.error, match="RLE"):
            decoder.decode(counts, h, w)
        return
    for c, e in zip(counts, expected, strict=True):  # the strict decoder agrees with pycocotools
        if not PYCOCOTOOLS_MISREADS.search(c):
            np.testing.assert_array_equal(coco.decode({"counts": c, "size": [h, w]}), e)
    got = decoder.decode(counts, h, w)
    assert got.dtype == np.bool_ and got.shape == (len(counts), h, w)
    np.testing.assert_array_equal(got, np.array(expected, dtype=bool).reshape(-1, h, w))


@settings(max_examples=50, deadline=None)
@given(k=st.integers(0, 5), h=st.integers(1, 30), w=st.integers(1, 30),
       seed=st.integers(0, 2**32 - 1))
def test_encode_equals_pycocotools(encode: EncodeOp, k: int, h: int, w: int, seed: int) -> None:
    check_encode(encode, varied_masks(np.random.default_rng(seed), k, h, w))


@settings(max_examples=50, deadline=None)
@given(k=st.integers(0, 5), h=st.integers(1, 30), w=st.integers(1, 30),
       seed=st.integers(0, 2**32 - 1))
def test_decode_round_trips_pycocotools(decoder: Decoder, k: int, h: int, w: int,
                                        seed: int) -> None:
    masks = varied_masks(np.random.default_rng(seed), k, h, w)
    got = decoder.decode(coco_counts(masks), h, w)
    assert got.shape == (k, h, w) and got.dtype == np.bool_
    np.testing.assert_array_equal(got, masks)


def degenerate_masks(case: str) -> np.ndarray:
    """One or more masks of each awkward kind; runs long enough for many-character values."""
    if case == "1x1":
        return np.array([False, True]).reshape(2, 1, 1)
    if case == "k=0":
        return np.zeros((0, 3, 4), bool)
    if case == "k=1000":
        return varied_masks(np.random.default_rng(11), 1000, 3, 5)
    masks = np.zeros((12, 300, 301), dtype=bool)  # 90300 pixels: runs of 4 characters
    masks[1] = True
    masks[2, 0, 0] = masks[3, -1, -1] = masks[4, 150, 150] = True
    masks[5, 0], masks[6, -1], masks[7, :, 0], masks[8, :, -1] = True, True, True, True
    masks[9, 1:-1, 1:-1] = True
    masks[10, :, ::2] = True
    masks[11, :, :150] = np.random.default_rng(0).random((300, 150)) < 0.5
    return masks


@pytest.mark.parametrize("case", ["borders", "1x1", "k=0", "k=1000"])
def test_degenerate_masks(encode: EncodeOp, decoder: Decoder, case: str) -> None:
    masks = degenerate_masks(case)
    counts = check_encode(encode, masks)
    check_decode(decoder, counts, *masks.shape[1:])


@pytest.mark.parametrize("counts, h, w", [
    (b"4", 2, 2), (b"04", 2, 2), (b"13", 2, 2), (b"0112", 1, 5),  # well formed
    (b"", 2, 2), (b"3", 2, 2), (b"5", 2, 2),  # covering too little or too much
    (b"8", 2, 2), (b"O", 2, 2), (b"0" * 6 + b"O", 1, 4),  # run too long, negative run
    (b"p", 2, 2), (b"/", 2, 2), (b"4\x00", 2, 2), (b"\xff", 2, 2), (b"4 ", 2, 2),  # bad bytes
    (b"P", 2, 2), (b"4P", 2, 2), (b"41PP", 2, 2),  # ending inside a value
    (b"P" * 11 + b"0" + b"4", 2, 2), (b"P" * 12 + b"0" + b"4", 2, 2),  # 12 characters, 13
    (b"P" * 12 + b"4", 2, 2),
    (b"o" * 11 + b"?", 2, 2), (b"o" * 20, 2, 2),  # the largest values that fit, and longer
    (b"11" + b"O" * 40, 1, 2)])  # runs of 0 then long deltas of -1 below zero
def test_hand_picked_counts(decoder: Decoder, counts: bytes, h: int, w: int) -> None:
    check_decode(decoder, [counts], h, w)


def test_one_bad_string_among_good_ones(decoder: Decoder) -> None:
    masks = varied_masks(np.random.default_rng(2), 4, 6, 7)
    counts = coco_counts(masks)
    with pytest.raises(decoder.error, match="RLE 2"):
        decoder.decode([*counts[:2], counts[2] + b"1", counts[3]], 6, 7)


COUNT_CHARS = st.sampled_from(b"0123456789:;<=>?@ABOPQo/p\x00\xff")


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6),
       counts=st.lists(st.binary(max_size=10) | st.lists(COUNT_CHARS, max_size=10).map(bytes),
                       min_size=1, max_size=3))
def test_random_counts(decoder: Decoder, h: int, w: int, counts: list[bytes]) -> None:
    check_decode(decoder, counts, h, w)


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       edit=st.tuples(st.integers(0, 3), st.integers(0, 100), st.integers(0, 255)))
def test_edited_counts(decoder: Decoder, h: int, w: int, seed: int,
                       edit: tuple[int, int, int]) -> None:
    """A pycocotools counts string with one byte replaced, inserted or dropped, or cut short."""
    (counts,) = coco_counts(varied_masks(np.random.default_rng(seed), 1, h, w))
    how, at, byte = edit
    at %= len(counts)
    edited = [counts[:at] + bytes([byte]) + counts[at + 1:], counts[:at] + bytes([byte]) +
              counts[at:], counts[:at] + counts[at + 1:], counts[:at]][how]
    check_decode(decoder, [edited], h, w)


def write_value(x: int, chars: int) -> bytes:
    """`x` as `chars` characters of the compressed format, five bits each, low bits first, 0x20
    on all but the last; past the shortest form this pads, as the format allows."""
    return bytes(48 + ((x >> (5 * i)) & 0x1F) + (0x20 if i < chars - 1 else 0)
                 for i in range(chars))


def shortest(x: int) -> int:
    """Characters of the shortest form of `x`: the last group's bit 0x10 must carry its sign."""
    chars = 1
    while x >> (5 * chars - 1) not in (0, -1):
        chars += 1
    return chars


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40),
       cuts=st.lists(st.integers(0, 2**20), max_size=9),
       pads=st.lists(st.sampled_from([0, 0, 0, 1, 2, 9, 10, 11, 12]), min_size=10,
                     max_size=10))
def test_unusual_well_formed_counts(decoder: Decoder, h: int, w: int, cuts: list[int],
                                    pads: list[int]) -> None:
    """Counts pycocotools never writes but may read: runs of 0 anywhere, values padded to more
    characters than needed (13 or more: refused)."""
    edges = sorted(c % (h * w + 1) for c in cuts)
    runs = np.diff([0, *edges, h * w]).tolist()
    values = [r - runs[i - 2] if i > 2 else r for i, r in enumerate(runs)]
    lengths = [shortest(x) + pad for x, pad in zip(values, pads, strict=False)]
    counts = b"".join(write_value(x, n) for x, n in zip(values, lengths, strict=True))
    if max(lengths) <= MAX_VALUE_CHARS:
        mask = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(w, h).T
        np.testing.assert_array_equal(strict_decode(counts, h, w), mask)
    check_decode(decoder, [counts], h, w)


def test_str_counts_and_sizes_through_maskops() -> None:
    masks = varied_masks(np.random.default_rng(4), 3, 5, 8)
    counts = maskops.rle_encode(masks)
    assert counts == [c.decode("ascii") for c in coco_counts(masks)]
    np.testing.assert_array_equal(maskops.rle_decode(counts, (5, 8)), masks)
    with pytest.raises(MaskError, match="RLE 0"):
        maskops.rle_decode(["é"], (1, 1))
    for size in [(0, 4), (4, 0), (-1, 4), (65537, 1), (1, 2**40)]:
        with pytest.raises(MaskError, match="not a mask size"):
            maskops.rle_decode([b"4"], size)
    assert maskops.rle_decode([], (65536, 65536)).shape == (0, 65536, 65536)


def test_native_refuses_bad_sizes_and_arguments(native: ModuleType) -> None:
    for h, w in [(0, 4), (4, 0), (-1, 4), (65537, 1), (1, 65537)]:
        with pytest.raises(ValueError, match="size"):
            native.rle_decode([b"4"], h, w)
    with pytest.raises(ValueError, match="RLE 0"):  # claims 2^32 pixels, holds 4
        native.rle_decode([b"4"], 65536, 65536)
    for bad in [b"4", "4", [4], [None]]:
        with pytest.raises(TypeError):
            native.rle_decode(bad, 2, 2)


def test_strided_views_are_read_right(native: ModuleType) -> None:
    base = varied_masks(np.random.default_rng(9), 6, 11, 17)
    for view in (base[::2, ::-1], base.transpose(0, 2, 1), np.broadcast_to(base[:1], base.shape)):
        expected = [c.decode("ascii") for c in coco_counts(np.ascontiguousarray(view))]
        assert maskops.rle_encode(view) == expected
        assert [c.decode("ascii") for c in native.rle_encode(view)] == expected


def test_bool_bytes_other_than_one_read_as_true(encode: EncodeOp) -> None:
    rng = np.random.default_rng(6)
    clean = varied_masks(rng, 6, 13, 41)
    raw = np.where(clean, rng.integers(1, 256, clean.shape), 0).astype(np.uint8).view(bool)
    assert encode(raw) == coco_counts(clean)


@pytest.mark.parametrize("bad", [np.zeros((2, 5, 5), np.uint8), np.zeros((5, 5), bool),
                                 np.zeros((1, 2, 5, 5), bool), np.zeros((2, 0, 5), bool),
                                 np.zeros((2, 5, 0), bool)])
def test_bad_masks_are_refused(native: ModuleType, bad: np.ndarray) -> None:
    with pytest.raises(MaskError, match="rle_encode|K×H×W bool"):
        maskops.rle_encode(bad)
    with pytest.raises((TypeError, ValueError)):
        native.rle_encode(bad)


@pytest.mark.parametrize(("counts", "size"), [
    ("44", (2, 2)), ([4], (2, 2)), ([10**12], (2, 2)), (["\ud800"], (1, 1)), ([b"4"], (2.7, 2)),
    ([b"4"], (True, 4)), ([b"4"], (2, 2, 1))])
def test_maskops_refuses_what_is_not_a_counts_list(counts: object, size: tuple) -> None:
    """A bare string, ints, unencodable text or a non-integer size: a MaskError, never a guess."""
    with pytest.raises(MaskError):
        maskops.rle_decode(counts, size)
