"""Low-res mask logits → image-size masks and statistics: the C++ ops against their NumPy twins
(runtime/logit_upsample.py) and against torch's `F.interpolate` (SAM's two resizes around a crop,
SAM 2's one).

Agreement: the C++ ops sum the same products as the twin's matrix products, in another order, so
each image-size value differs by rounding: a few ulps of its terms' magnitude, which is within
TOL · max(1, |value|) for logits the size SAM makes (|logit| ≤ LOGIT_MAX here). A pixel's mask
may therefore differ only where the reference value lies that close to the threshold; area, boxes
and stability are then exactly those of the C++ masks.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from zsris_rt.maskops.logits import logit_masks, logit_statistics, upsample_logits
from zsris_rt.pack import ProposerSettings
from zsris_rt.proposer.input_frame import InputFrame

TOL = 1e-5
LOGIT_MAX = 32.0
EPS = 2.0**-24  # float32 unit roundoff
RESIZES = {"sam": "longest", "sam2": "square"}

Maps = tuple[np.ndarray, np.ndarray]
Shape = tuple[int, ...]


def frame(family: str, input_size: int, low_res: int, height: int, width: int) -> InputFrame:
    settings = ProposerSettings(family, input_size, low_res, RESIZES[family], "bilinear",
                                ("image_embeddings",))
    return InputFrame.for_image(settings, height, width)


def torch_upsample(logits: np.ndarray, where: InputFrame) -> np.ndarray:
    """segment-anything's Sam.postprocess_masks (bilinear to S×S, crop, bilinear to H×W), or
    SAM 2's single bilinear resize to H×W."""
    x = torch.from_numpy(logits)[:, None]
    if where.padded:
        s, (h, w) = where.input_size, where.resized
        x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)[..., :h, :w]
    return F.interpolate(x, where.image_size, mode="bilinear", align_corners=False)[:, 0].numpy()


def near(values: np.ndarray, threshold: float) -> np.ndarray:
    """Where rounding may put a value on either side of the threshold (as NumPy compares it)."""
    return np.abs(values - np.float32(threshold)) <= TOL * np.maximum(1, np.abs(values))


def inclusive_boxes(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if ys.size:
            boxes[i] = xs.min(), ys.min(), xs.max(), ys.max()
    return boxes


def check(native: ModuleType, logits: np.ndarray, maps: Maps, threshold: float, offset: float,
          references: tuple[np.ndarray, ...]) -> None:
    """The C++ ops against reference image-size values, as the module docstring says."""
    rows, cols = maps
    stability, boxes, area = native.logit_statistics(logits, rows, cols, threshold, offset)
    masks = {t: native.logit_masks(logits, rows, cols, t)
             for t in (threshold, threshold + offset, threshold - offset)}
    for t, got in masks.items():
        assert got.dtype == bool and got.shape == (len(logits), len(rows), len(cols))
        for values in references:
            differ = got != (values > np.float32(t))
            assert not (differ & ~near(values, t)).any(), f"masks at {t} differ off the threshold"
    inside = masks[threshold]
    assert stability.dtype == np.float32 and boxes.dtype == area.dtype == np.int64
    np.testing.assert_array_equal(area, inside.sum(axis=(1, 2)))
    np.testing.assert_array_equal(boxes, inclusive_boxes(inside))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = (masks[threshold + offset].sum(axis=(1, 2)).astype(np.float32)
                / masks[threshold - offset].sum(axis=(1, 2)).astype(np.float32))
    np.testing.assert_array_equal(stability, want)
    # Masks with no pixel near any of the three thresholds: exactly the twin's statistics.
    full = references[0]
    clear = ~np.any(near(full, threshold) | near(full, threshold + offset)
                    | near(full, threshold - offset), axis=(1, 2))
    twin = logit_statistics(logits, maps, threshold, offset)
    for got, want in zip((stability, boxes, area), twin, strict=True):
        np.testing.assert_array_equal(got[clear], want[clear])


def random_logits(rng: np.random.Generator, k: int, low_res: int, scale: float) -> np.ndarray:
    """SAM-like logits: smooth blobs plus noise, clipped to ±LOGIT_MAX."""
    yy, xx = np.mgrid[0:low_res, 0:low_res] / max(low_res, 1)
    centres = rng.uniform(0, 1, (k, 2, 1, 1))
    blobs = 1 - ((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) * 8
    noise = rng.standard_normal((k, low_res, low_res))
    return np.clip((blobs + 0.3 * noise) * scale, -LOGIT_MAX, LOGIT_MAX).astype(np.float32)


@settings(max_examples=150, deadline=None)
@given(family=st.sampled_from(sorted(RESIZES)), input_size=st.sampled_from([16, 24, 64]),
       low_res=st.sampled_from([1, 2, 4, 8, 16]), height=st.integers(1, 70),
       width=st.integers(1, 70), k=st.integers(0, 4), scale=st.floats(0.1, LOGIT_MAX),
       threshold=st.floats(-2, 2), offset=st.floats(0, 2), seed=st.integers(0, 2**31))
def test_agrees_with_numpy_and_torch(native: ModuleType, family: str, input_size: int,
                                     low_res: int, height: int, width: int, k: int, scale: float,
                                     threshold: float, offset: float, seed: int) -> None:
    where = frame(family, input_size, low_res, height, width)
    maps = where.logit_maps(low_res)
    logits = random_logits(np.random.default_rng(seed), k, low_res, scale)
    check(native, logits, maps, threshold, offset,
          (upsample_logits(logits, maps), torch_upsample(logits, where)))


@pytest.mark.parametrize("family", sorted(RESIZES))
@pytest.mark.parametrize("size", [(480, 640), (37, 301)])
def test_real_model_sizes(native: ModuleType, family: str, size: tuple[int, int]) -> None:
    where = frame(family, 1024, 256, *size)
    maps = where.logit_maps(256)
    logits = random_logits(np.random.default_rng(7), 3, 256, 20.0)
    check(native, logits, maps, 0.0, 1.0, (upsample_logits(logits, maps),
                                           torch_upsample(logits, where)))


def test_numpy_twin_agrees_with_torch() -> None:
    """The reference the C++ ops are held to, held to torch (runs without the extension)."""
    for family in RESIZES:
        where = frame(family, 64, 16, 45, 70)
        maps = where.logit_maps(16)
        logits = random_logits(np.random.default_rng(3), 5, 16, 10.0)
        full, want = upsample_logits(logits, maps), torch_upsample(logits, where)
        np.testing.assert_allclose(full, want, rtol=TOL, atol=TOL)
        differ = logit_masks(logits, maps, 0.0) != (want > 0)
        assert not (differ & ~near(want, 0.0)).any()


def test_large_logits_stay_within_rounding_of_their_terms(native: ModuleType) -> None:
    """Beyond SAM's range the error scales with the terms, not the value: ±100 alternating
    logits upsample to values near 0 with rounding ~1e-5. Measured ≤ 5.3 ulps of the terms'
    magnitude |rows| · |L| · |cols|ᵀ; allowed 8."""
    where = frame("sam", 64, 16, 45, 70)
    rows, cols = where.logit_maps(16)
    sign = np.where(np.add.outer(np.arange(16), np.arange(16)) % 2, 1.0, -1.0)
    logits = (sign * np.random.default_rng(5).uniform(90, 110, (4, 16, 16))).astype(np.float32)
    full = upsample_logits(logits, (rows, cols))
    magnitude = np.abs(rows) @ np.abs(logits) @ np.abs(cols).T
    got = native.logit_masks(logits, rows, cols, 0.0)
    assert not ((got != (full > 0)) & (np.abs(full) > 8 * EPS * magnitude)).any()


@pytest.mark.parametrize("family", sorted(RESIZES))
@pytest.mark.parametrize("case", ["all negative", "all positive", "at the thresholds",
                                  "1x1 image", "1 pixel wide", "1 pixel tall", "K = 0",
                                  "K = 500"])
def test_degenerate(native: ModuleType, family: str, case: str) -> None:
    size = {"1x1 image": (1, 1), "1 pixel wide": (50, 1), "1 pixel tall": (1, 50)}.get(case,
                                                                                      (23, 31))
    k = {"K = 0": 0, "K = 500": 500}.get(case, 3)
    where = frame(family, 32, 8, *size)
    maps = where.logit_maps(8)
    rng = np.random.default_rng(11)
    logits = {
        "all negative": np.full((k, 8, 8), -10, np.float32),
        "all positive": np.full((k, 8, 8), 10, np.float32),
        # exactly threshold, threshold ± offset: the values land within rounding of them
        "at the thresholds": rng.choice(np.float32([-0.5, 0, 0.5]), (k, 8, 8)),
    }.get(case, random_logits(rng, k, 8, 5.0))
    check(native, logits, maps, 0.0, 0.5, (upsample_logits(logits, maps),
                                           torch_upsample(logits, where)))
    stability, boxes, area = native.logit_statistics(logits, *maps, 0.0, 0.5)
    assert stability.shape == area.shape == (k,) and boxes.shape == (k, 4)
    if case == "all negative":  # empty masks: zero boxes, 0 / 0 stability
        assert not area.any() and not boxes.any() and np.isnan(stability).all()
    if case == "all positive":
        assert (area == size[0] * size[1]).all() and (stability == 1).all()
        assert (boxes == [0, 0, size[1] - 1, size[0] - 1]).all()


def test_zero_logits_exactly_at_the_threshold(native: ModuleType) -> None:
    """0 · anything sums to exactly 0 in any order: not above 0, so nothing is inside."""
    rows, cols = frame("sam", 32, 8, 20, 30).logit_maps(8)
    logits = np.zeros((2, 8, 8), np.float32)
    stability, boxes, area = native.logit_statistics(logits, rows, cols, 0.0, 0.0)
    assert not area.any() and not boxes.any() and np.isnan(stability).all()
    assert not native.logit_masks(logits, rows, cols, 0.0).any()


def test_nan_logits_stay_local(native: ModuleType) -> None:
    """A NaN logit makes the pixels it reaches NaN (outside every mask) and nothing else; no
    crash. (The twin's dense products spread it, 0 · NaN, over the whole image.)"""
    rows, cols = frame("sam2", 32, 8, 40, 50).logit_maps(8)
    logits = random_logits(np.random.default_rng(2), 2, 8, 5.0)
    clean = native.logit_masks(logits, rows, cols, 0.0)
    logits[:, 3, 5] = np.nan
    got = native.logit_masks(logits, rows, cols, 0.0)
    reads = np.outer(rows[:, 3] != 0, cols[:, 5] != 0)  # pixels with a weight on it
    assert not (got & reads).any()
    near_it = reads.copy()  # and their neighbours, whose zero-weight taps may read it too
    near_it[1:] |= reads[:-1]
    near_it[:-1] |= reads[1:]
    near_it[:, 1:] |= near_it[:, :-1].copy()
    near_it[:, :-1] |= near_it[:, 1:].copy()
    np.testing.assert_array_equal(got[:, ~near_it], clean[:, ~near_it])
    stability, boxes, area = native.logit_statistics(logits, rows, cols, 0.0, 1.0)
    np.testing.assert_array_equal(area, got.sum(axis=(1, 2)))
    np.testing.assert_array_equal(boxes, inclusive_boxes(got))


def test_strided_input_is_read_right(native: ModuleType) -> None:
    rows, cols = frame("sam", 32, 8, 20, 30).logit_maps(8)
    logits = random_logits(np.random.default_rng(4), 6, 8, 5.0)
    view = logits[::2, ::-1, :]
    np.testing.assert_array_equal(native.logit_masks(view, rows, cols, 0.0),
                                  native.logit_masks(view.copy(), rows, cols, 0.0))
    for got, want in zip(native.logit_statistics(view, rows, cols, 0.0, 1.0),
                         native.logit_statistics(view.copy(), rows, cols, 0.0, 1.0), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("logits", "rows", "cols", "message"), [
    (np.zeros((2, 8, 8)), (10, 8), (12, 8), "logits must be float32, got float64"),
    ((2, 8, 8), np.zeros((10, 8), np.int32), (12, 8), "rows must be float32, got int32"),
    ((2, 8, 8), (10, 8), np.zeros((12, 8), np.float16), "cols must be float32, got float16"),
    ((8, 8), (10, 8), (12, 8), r"logits must be K×l×l, got shape \(8, 8\)"),
    ((2, 8, 9), (10, 9), (12, 9), r"logits must be K×l×l, got shape \(2, 8, 9\)"),
    ((2, 8, 8), (10, 7), (12, 8), r"rows must be H×l with the logits' l = 8, got shape \(10, 7\)"),
    ((2, 8, 8), (10, 8), (12, 9), r"cols must be W×l with the logits' l = 8, got shape \(12, 9\)"),
    ((2, 8, 8), (8,), (12, 8), r"rows must be H×l with the logits' l = 8, got shape \(8,\)"),
])
def test_bad_inputs_are_refused(native: ModuleType, logits: Shape | np.ndarray,
                                rows: Shape | np.ndarray, cols: Shape | np.ndarray,
                                message: str) -> None:
    """A shape stands for float32 zeros of that shape."""
    logits, rows, cols = (np.zeros(a, np.float32) if isinstance(a, tuple) else a
                          for a in (logits, rows, cols))
    for call in (lambda: native.logit_statistics(logits, rows, cols, 0.0, 1.0),
                 lambda: native.logit_masks(logits, rows, cols, 0.0)):
        with pytest.raises(ValueError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


def test_non_arrays_are_refused(native: ModuleType) -> None:
    rows = np.zeros((10, 1), np.float32)
    for logits in (None, [[[0.5]]]):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            native.logit_masks(logits, rows, rows, 0.0)
