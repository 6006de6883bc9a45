"""Fuzz every `zsris_rt._maskops` entry point with malformed inputs (run by cpp_ext/sanitize.sh).

Each call must return or raise TypeError, ValueError or MemoryError; a crash (under ASan/UBSan:
any memory error or undefined behaviour) ends the process. Before each call its description is
written to the file named by FUZZ_LAST_CALL (when set), so that a crash names its input.

    python cpp_ext/fuzz_entry_points.py [CALLS] [SEED]
"""

from __future__ import annotations

import os
import sys

import numpy as np

from zsris_rt import _maskops

ALLOWED = (TypeError, ValueError, MemoryError)
# FUZZ_BOOL_BYTES=0 leaves out bool arrays holding bytes other than 0 and 1 (a uint8 view).
BOOL_BYTES = os.environ.get("FUZZ_BOOL_BYTES", "1") != "0"
DIMS = (0, 1, 2, 3, 5, 17)
# Sizes past any real memory: numpy refuses them before the C++ loops see them (or they fail a
# check first). Sizes that fit but need gigabytes are left out: they are valid, only slow.
HUGE = (-(2**63), -(2**31), -7, -1, 0, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1)
DTYPES = (np.bool_, np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64,
          np.complex64, object)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, -1e38, 3.4e38, 1e-45, 1.0, -1.0,
                    0.5], dtype=np.float64)


def values(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Random values of `dtype`, floats salted with NaN, ±inf, ±0, extremes and denormals."""
    n = int(np.prod(shape, dtype=np.int64))
    if dtype is np.bool_:
        return rng.random(n).reshape(shape) < 0.4
    if dtype is object:
        return np.array([None] * n, dtype=object).reshape(shape)
    kind = np.dtype(dtype).kind
    if kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = (int(info.min), int(info.max)) if rng.random() < 0.3 else (-3, 40)
        return rng.integers(max(lo, int(info.min)), min(hi, int(info.max)), size=n,
                            endpoint=True).astype(dtype).reshape(shape)
    data = rng.normal(0.0, 3.0, n)
    salt = rng.random(n) < 0.15
    data[salt] = rng.choice(SPECIAL, int(salt.sum()))
    with np.errstate(over="ignore", invalid="ignore"):
        return data.astype(dtype).reshape(shape)


def layout(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    """The same values, often not C-contiguous: Fortran order, reversed, strided, broadcast."""
    pick = rng.integers(0, 7)
    if pick == 0 and a.ndim >= 1:
        return np.asfortranarray(a)
    if pick == 1 and a.ndim >= 1:
        return a[::-1]
    if pick == 2 and a.ndim >= 1:  # every other element of a doubled array: stride 2
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if pick == 3 and a.ndim >= 1 and a.shape[0] >= 1:  # zero stride on axis 0
        return np.broadcast_to(a[:1], a.shape)
    if pick == 4 and a.ndim >= 2:
        return a.swapaxes(-1, -2)
    if pick == 5 and a.dtype == np.bool_ and BOOL_BYTES:  # bool view of bytes other than 0, 1
        raw = np.where(a, rng.integers(1, 256, a.shape), 0).astype(np.uint8)
        return raw.view(np.bool_)
    return a


def array(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    return layout(rng, values(rng, shape, dtype))


def junk(rng: np.random.Generator, shape: tuple[int, ...], dtype):
    """A malformed stand-in for an array argument."""
    pick = rng.integers(0, 8)
    if pick == 0:
        return None
    if pick == 1:
        return "masks"
    if pick == 2:
        return [[1, 0], [0, 1]]
    if pick == 3:
        return float(rng.choice(SPECIAL))
    if pick == 4:  # wrong ndim
        ndim = int(rng.integers(0, 6))
        return array(rng, tuple(int(rng.choice(DIMS)) for _ in range(ndim)), dtype)
    if pick == 5:  # wrong dtype
        return array(rng, shape, DTYPES[int(rng.integers(0, len(DTYPES)))])
    if pick == 6 and shape:  # one axis off
        bad = list(shape)
        axis = int(rng.integers(0, len(bad)))
        bad[axis] = max(0, bad[axis] + int(rng.choice([-2, -1, 1, 2])))
        return array(rng, tuple(bad), dtype)
    return array(rng, shape, dtype)


def scalar(rng: np.random.Generator, sane):
    """An int or float argument: mostly sane, else huge, negative, NaN, inf or not a number."""
    pick = rng.random()
    if pick < 0.6:
        return sane
    if pick < 0.85:
        return int(rng.choice(HUGE))
    return [float("nan"), float("inf"), -float("inf"), 2**80, -(2**80), "3", None, 1.5,
            np.int64(2), np.float32(0.5)][int(rng.integers(0, 10))]


def maybe(rng: np.random.Generator, args: list, build) -> list:
    """Replace each argument, with probability ~1/(2·len), by a malformed one."""
    out = []
    for i, a in enumerate(args):
        out.append(build(i) if rng.random() < 0.5 / len(args) else a)
    return out


def call_tight_boxes(rng):
    shape = (int(rng.choice(DIMS)), int(rng.choice(DIMS)), int(rng.choice(DIMS)))
    masks = array(rng, shape, np.bool_)
    return [masks] if rng.random() < 0.7 else [junk(rng, shape, np.bool_)]


def random_boxes(rng, k: int, h: int, w: int) -> np.ndarray:
    x0 = rng.integers(0, max(w, 1), k)
    y0 = rng.integers(0, max(h, 1), k)
    x1 = x0 + rng.integers(1, max(w, 1) + 1, k)
    y1 = y0 + rng.integers(1, max(h, 1) + 1, k)
    boxes = np.stack([x0, y0, np.minimum(x1, w), np.minimum(y1, h)], axis=1).astype(np.int64)
    if rng.random() < 0.3 and k:  # out of range, empty or inverted
        boxes[int(rng.integers(0, k)), int(rng.integers(0, 4))] = int(
            rng.choice([-1, 0, h, w, h + 1, w + 1, 2**62, -(2**63), 2**63 - 1]))
    return boxes


def call_masked_crops(rng):
    k, h, w = (int(rng.choice(DIMS[:4])) for _ in range(3))
    args = [array(rng, (3, h, w), np.float32), array(rng, (k, h, w), np.bool_),
            layout(rng, random_boxes(rng, k, h, w)), array(rng, (3,), np.float32),
            int(rng.choice([1, 2, 3, 7, 8, 33]))]
    shapes = [((3, h, w), np.float32), ((k, h, w), np.bool_), ((k, 4), np.int64),
              ((3,), np.float32)]
    args = maybe(rng, args, lambda i: scalar(rng, args[i]) if i == 4 else junk(rng, *shapes[i]))
    if rng.random() < 0.4:  # an `out` buffer: right, or of another shape, dtype or layout
        size = args[4] if isinstance(args[4], int) and 0 < args[4] < 64 else 8
        out = array(rng, (k, 3, size, size), np.float32)
        args.append(out if rng.random() < 0.5 else junk(rng, (k, 3, size, size), np.float32))
    return args


def call_mask_grid(rng):
    shape = (int(rng.choice(DIMS)), int(rng.choice(DIMS)), int(rng.choice(DIMS)))
    args = [array(rng, shape, np.bool_), int(rng.choice([1, 2, 3, 8, 16, 33]))]
    return maybe(rng, args, lambda i: scalar(rng, args[i]) if i == 1 else junk(rng, shape,
                                                                                np.bool_))


def logit_map(rng, n: int, side: int) -> np.ndarray:
    """An n×l resampling map: bilinear-like bands, or zeros, NaN, inf or dense noise."""
    pick = rng.integers(0, 4)
    if pick == 0 or side == 0:
        return array(rng, (n, side), np.float32)
    m = np.zeros((n, side), np.float32)
    for o in range(n):
        j = int(rng.integers(0, side))
        m[o, j] = 1.0 - (w := float(rng.random()))
        m[o, min(j + 1, side - 1)] += w
    if pick == 2:
        m[rng.random((n, side)) < 0.1] = rng.choice(SPECIAL[:3])
    if pick == 3:
        m[rng.random(n) < 0.3] = 0.0  # all-zero rows
    return layout(rng, m)


def call_logits(rng, with_offset: bool):
    k, side = int(rng.choice([0, 1, 2, 3])), int(rng.choice([0, 1, 2, 4, 5, 8]))
    h, w = int(rng.choice([0, 1, 2, 7, 33])), int(rng.choice([0, 1, 2, 7, 33]))
    args = [array(rng, (k, side, side), np.float32), logit_map(rng, h, side),
            logit_map(rng, w, side), float(rng.choice([0.0, 0.5, -1.0]))]
    shapes = [((k, side, side), np.float32), ((h, side), np.float32), ((w, side), np.float32)]
    if with_offset:
        args.append(float(rng.choice([0.0, 1.0, 0.25])))
    return maybe(rng, args, lambda i: scalar(rng, args[i]) if i >= 3 else junk(rng, *shapes[i]))


def mask_set(rng, shape: tuple[int, int, int]):
    return array(rng, shape, np.bool_) if rng.random() < 0.7 else junk(rng, shape, np.bool_)


def call_mask_iou(rng):
    k, m, h, w = (int(rng.choice(DIMS)) for _ in range(4))
    if rng.random() < 0.15:  # wider than one 64-pixel word
        w = int(rng.choice([63, 64, 65, 130]))
    a = mask_set(rng, (k, h, w))
    pick = rng.integers(0, 4)
    if pick == 0:
        return [a]
    if pick == 1:
        return [a, None]
    other = (m, h, w) if pick == 2 else (m, int(rng.choice(DIMS)), int(rng.choice(DIMS)))
    return [a, mask_set(rng, other)]


def call_mask_nms(rng):
    k, h, w = (int(rng.choice(DIMS)) for _ in range(3))
    args = [array(rng, (k, h, w), np.bool_), array(rng, (k,), np.float32),
            float(rng.choice([0.0, 0.5, 1.0, -1.0, 2.0]))]
    shapes = [((k, h, w), np.bool_), ((k,), np.float32)]
    return maybe(rng, args, lambda i: scalar(rng, args[i]) if i == 2 else junk(rng, *shapes[i]))


def call_rle_encode(rng):
    shape = (int(rng.choice(DIMS)), int(rng.choice(DIMS)), int(rng.choice(DIMS)))
    return [mask_set(rng, shape)]


def counts_value(x: int, chars: int) -> bytes:
    """`x` as `chars` characters of COCO's compressed counts, 5 bits each, low bits first (too
    few characters for `x`: a wrong value, as fuzz input should be)."""
    return bytes(48 + ((x >> (5 * i)) & 0x1F) + (0x20 if i < chars - 1 else 0)
                 for i in range(chars))


def counts_string(rng, h: int, w: int):
    """One counts string for an H×W mask: valid, edited, huge-claimed, random, or not a string."""
    pick = rng.integers(0, 7)
    if pick <= 1 and h * w:  # valid (as the extension writes it), then maybe edited
        (text,) = _maskops.rle_encode(values(rng, (1, h, w), np.bool_))
        if pick == 1 and text:
            at = int(rng.integers(0, len(text)))
            text = text[:at] + bytes([int(rng.integers(0, 256))]) + text[at + 1:]
        return text
    if pick == 2:  # values up to far past any size, negative, or cut short
        x = int(rng.choice([h * w, h * w + 1, 2**31, 2**32, 2**40, 2**59, -1, -(2**59)]))
        chars = int(rng.integers(1, 15))
        text = b"".join(counts_value(int(v), chars) for v in (x, 0, x, -x))
        return text[:int(rng.integers(0, len(text) + 1))]
    if pick == 3:  # from the alphabet and just outside it
        return bytes(rng.integers(47, 113, int(rng.integers(0, 40))).astype(np.uint8))
    if pick == 4:  # any bytes
        return bytes(rng.integers(0, 256, int(rng.integers(0, 40))).astype(np.uint8))
    if pick == 5:
        return "".join(map(chr, rng.integers(32, 0x2FF, int(rng.integers(0, 12)))))
    return [None, 4, b"", "", bytearray(b"4"), ["4"]][int(rng.integers(0, 6))]


def call_rle_decode(rng):
    h, w = int(rng.choice(DIMS[1:])), int(rng.choice(DIMS[1:]))
    counts = [counts_string(rng, h, w) for _ in range(int(rng.choice([0, 1, 2, 3, 40])))]
    sizes = [(h, w), (w, h), (65536, 65536), (65536, 65537), (h * w, 1)]
    size = sizes[int(rng.integers(0, len(sizes)))] if rng.random() < 0.3 else (h, w)
    args = [counts, *size]
    if rng.random() < 0.1:
        args[0] = [b"4", b"4"] if rng.random() < 0.5 else junk(rng, (2,), np.uint8)
    return maybe(rng, args, lambda i: scalar(rng, args[i]) if i else args[0])


def call_masked_feature_maps(rng):
    c, g, k = int(rng.choice(DIMS)), int(rng.choice(DIMS[:5])), int(rng.choice(DIMS[:5]))
    shapes = [((c, g, g), np.float32), ((k, g, g), np.float32)]
    args = [array(rng, *shape) for shape in shapes]
    return maybe(rng, args, lambda i: junk(rng, *shapes[i]))


ENTRY_POINTS = {
    "tight_boxes": call_tight_boxes,
    "masked_crops": call_masked_crops,
    "mask_grid": call_mask_grid,
    "logit_statistics": lambda rng: call_logits(rng, True),
    "logit_masks": lambda rng: call_logits(rng, False),
    "mask_iou": call_mask_iou,
    "mask_nms": call_mask_nms,
    "rle_encode": call_rle_encode,
    "rle_decode": call_rle_decode,
    "masked_feature_maps": call_masked_feature_maps,
}


def describe(a) -> str:
    if isinstance(a, np.ndarray):
        flags = "C" if a.flags.c_contiguous else "strides=" + str(a.strides)
        text = f"ndarray(shape={a.shape}, dtype={a.dtype}, {flags})"
        if a.size <= 64:
            text += " " + np.array2string(a.view(np.uint8) if a.dtype == np.bool_ else a,
                                          separator=",", threshold=64).replace("\n", "")
        return text
    return repr(a)


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 20261127
    last_call = os.environ.get("FUZZ_LAST_CALL")
    expected = os.environ.get("SANITIZED_MASKOPS")  # set by sanitize.sh
    if expected and os.path.realpath(_maskops.__file__) != os.path.realpath(expected):
        print(f"fuzz: FAIL: zsris_rt._maskops is {_maskops.__file__}, not {expected}")
        return 2
    print(f"fuzz: {_maskops.__file__}")
    rng = np.random.default_rng(seed)
    names = list(ENTRY_POINTS)
    outcomes: dict[str, dict[str, int]] = {n: {"returned": 0, "raised": 0} for n in names}
    failures = []
    for i in range(calls):
        name = names[i % len(names)]
        args = ENTRY_POINTS[name](rng)
        if last_call:
            with open(last_call, "w", encoding="utf-8") as f:
                f.write(f"call {i}: _maskops.{name}(" + ", ".join(map(describe, args)) + ")\n")
        try:
            getattr(_maskops, name)(*args)
        except ALLOWED:
            outcomes[name]["raised"] += 1
        except Exception as exc:  # noqa: BLE001 - anything else is a finding
            failures.append(f"call {i}: {name}: {type(exc).__name__}: {exc}")
        else:
            outcomes[name]["returned"] += 1
    for name, counts in outcomes.items():
        print(f"fuzz {name}: {counts['returned']} returned, {counts['raised']} raised")
    for line in failures[:20]:
        print("fuzz UNEXPECTED EXCEPTION", line)
    print(f"fuzz: {calls} calls (seed {seed}), {len(failures)} unexpected exceptions")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
