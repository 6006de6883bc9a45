"""Masked crops and mask grids: the C++ ops equal their NumPy twins bit for bit, and both equal
torch's `F.interpolate(bilinear, align_corners=False, antialias=False)`."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from zsris_rt import maskops
from zsris_rt.errors import MaskError
from zsris_rt.maskops.boxes import tight_boxes
from zsris_rt.maskops.crops import mask_grid as numpy_mask_grid
from zsris_rt.maskops.crops import masked_crops as numpy_masked_crops

# torch sums the four taps in another order than the twins' two lerps: a few float32 ulps apart
# on the unit-scale values of a normalised image.
TORCH_TOL = 1e-5


@pytest.fixture(scope="module")
def maybe_native() -> ModuleType | None:
    """The extension when built; without it the twins are still held to torch."""
    try:
        from zsris_rt import _maskops
    except ImportError:
        return None
    return _maskops


def torch_crops(normalised: np.ndarray, masks: np.ndarray, boxes: np.ndarray, fill: np.ndarray,
                size: int) -> np.ndarray:
    """The reference: fill outside the mask on the whole image, crop the box, resize with torch."""
    crops = [np.zeros((0, 3, size, size), np.float32)]
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        filled = np.where(mask, normalised, fill[:, None, None])[:, y0:y1, x0:x1]
        crops.append(F.interpolate(torch.from_numpy(np.ascontiguousarray(filled))[None],
                                   size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=False).numpy())
    return np.concatenate(crops)


def torch_grid(masks: np.ndarray, grid: int) -> np.ndarray:
    floats = torch.from_numpy(masks.astype(np.float32))[:, None]
    return F.interpolate(floats, size=(grid, grid), mode="bilinear", align_corners=False,
                         antialias=False)[:, 0].numpy()


def random_masks(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """K noisy masks, each inside a random rectangle, none empty: boxes of every size and place."""
    masks = np.zeros((k, h, w), dtype=bool)
    for mask in masks:
        y0, y1 = np.sort(rng.integers(0, h + 1, 2))
        x0, x1 = np.sort(rng.integers(0, w + 1, 2))
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.uniform(0.2, 1.0)
        mask[rng.integers(h), rng.integers(w)] = True
    return masks


def check_crops(native: ModuleType | None, normalised: np.ndarray, masks: np.ndarray,
                size: int, fill: np.ndarray | None = None) -> None:
    fill = np.array([0.25, -1.5, 2.0], np.float32) if fill is None else fill
    boxes = tight_boxes(masks)
    expected = numpy_masked_crops(normalised, masks, boxes, fill, size)
    assert expected.shape == (len(masks), 3, size, size) and expected.dtype == np.float32
    np.testing.assert_allclose(expected, torch_crops(normalised, masks, boxes, fill, size),
                               rtol=0, atol=TORCH_TOL)
    if native is not None:
        got = native.masked_crops(normalised, masks, boxes, fill, size)
        assert got.shape == expected.shape and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)


def check_grid(native: ModuleType | None, masks: np.ndarray, grid: int) -> None:
    expected = numpy_mask_grid(masks, grid)
    assert expected.shape == (len(masks), grid, grid) and expected.dtype == np.float32
    np.testing.assert_allclose(expected, torch_grid(masks, grid), rtol=0, atol=TORCH_TOL)
    if native is not None:
        got = native.mask_grid(masks, grid)
        assert got.shape == expected.shape and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)


SCENES = dict(k=st.integers(0, 5), h=st.integers(1, 48), w=st.integers(1, 48),
              seed=st.integers(0, 2**31))


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 80), **SCENES)
def test_random_crops(maybe_native: ModuleType | None, k: int, h: int, w: int, size: int,
                      seed: int) -> None:
    rng = np.random.default_rng(seed)
    normalised = rng.standard_normal((3, h, w), dtype=np.float32)
    fill = rng.standard_normal(3, dtype=np.float32)
    check_crops(maybe_native, normalised, random_masks(rng, k, h, w), size, fill)


@settings(max_examples=60, deadline=None)
@given(grid=st.integers(1, 70), **SCENES)
def test_random_grids(maybe_native: ModuleType | None, k: int, h: int, w: int, grid: int,
                      seed: int) -> None:
    check_grid(maybe_native, random_masks(np.random.default_rng(seed), k, h, w), grid)


DEGENERATE = {  # name → (k, h, w, paint the masks)
    "one pixel": (1, 9, 13, lambda m: m[:, 4, 7].fill(True)),
    "top border": (1, 9, 13, lambda m: m[:, 0, 3:9].fill(True)),
    "bottom border": (1, 9, 13, lambda m: m[:, -1, :].fill(True)),
    "left border": (1, 9, 13, lambda m: m[:, 2:6, 0].fill(True)),
    "right border": (1, 9, 13, lambda m: m[:, :, -1].fill(True)),
    "corners": (4, 9, 13, lambda m: [m[0, :1, :1].fill(True), m[1, :1, -1:].fill(True),
                                     m[2, -1:, :1].fill(True), m[3, -1:, -1:].fill(True)]),
    "full image": (2, 9, 13, lambda m: m.fill(True)),
    "1x1 image": (1, 1, 1, lambda m: m.fill(True)),
    "K = 0": (0, 9, 13, lambda m: None),
    "K = 1000": (1000, 6, 5, lambda m: [m[::2, 1:4, 2:4].fill(True), m[1::2, 5, :].fill(True)]),
}


@pytest.mark.parametrize("size", [1, 2, 7, 32])
@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate(maybe_native: ModuleType | None, case: str, size: int) -> None:
    k, h, w, paint = DEGENERATE[case]
    masks = np.zeros((k, h, w), dtype=bool)
    paint(masks)
    normalised = np.random.default_rng(0).standard_normal((3, h, w), dtype=np.float32)
    check_crops(maybe_native, normalised, masks, size)
    check_grid(maybe_native, masks, size)


@pytest.mark.parametrize("size", [7, 149, 150, 151, 400])
def test_wide_and_narrow_boxes(maybe_native: ModuleType | None, size: int) -> None:
    """Boxes either side of 2S wide: the C++ row pass reads the tapped columns or all of them."""
    rng = np.random.default_rng(size)
    masks = rng.random((3, 40, 310)) < 0.7
    masks[:, :, [5, 304]] = True  # boxes 300 wide: 2S at S = 150
    masks[2, :, :] = True  # the full image, 310 wide
    check_crops(maybe_native, rng.standard_normal((3, 40, 310), dtype=np.float32), masks, size)


def test_only_masked_pixels_in_the_box_are_read(native: ModuleType) -> None:
    """NaN everywhere but under the mask: no NaN may reach a crop (outside reads as fill)."""
    masks = np.zeros((2, 30, 40), dtype=bool)
    masks[0, 5:20, 8:30:3] = True
    masks[1, 29, 39] = True
    normalised = np.full((3, 30, 40), np.nan, np.float32)
    normalised[:, masks.any(axis=0)] = 0.5
    fill = np.array([1.0, 2.0, 3.0], np.float32)
    for crops in (native.masked_crops(normalised, masks, tight_boxes(masks), fill, 17),
                  numpy_masked_crops(normalised, masks, tight_boxes(masks), fill, 17)):
        assert np.isfinite(crops).all()
        np.testing.assert_array_equal(crops[1], np.full((3, 17, 17), 0.5, np.float32))


def test_wrappers_copy_strided_inputs(native: ModuleType) -> None:
    rng = np.random.default_rng(3)
    masks = random_masks(rng, 6, 20, 30)[::2, :, ::-1]
    normalised = rng.standard_normal((20, 30, 3)).transpose(2, 0, 1)  # float64, strided
    boxes, fill = tight_boxes(masks).astype(np.int32), [0.0, 1.0, -1.0]
    expected = numpy_masked_crops(normalised.astype(np.float32), masks.copy(),
                                  boxes.astype(np.int64), np.float32(fill), 11)
    np.testing.assert_array_equal(maskops.masked_crops(normalised, masks, boxes, fill, 11),
                                  expected)
    np.testing.assert_array_equal(maskops.mask_grid(masks, 5), numpy_mask_grid(masks.copy(), 5))


def crop_args(**change: object) -> dict[str, object]:
    masks = np.zeros((2, 8, 10), dtype=bool)
    masks[0, 1:4, 2:5] = masks[1, 7, 9] = True
    args = dict(normalised=np.zeros((3, 8, 10), np.float32), masks=masks,
                boxes=tight_boxes(masks), fill=np.zeros(3, np.float32), size=4)
    return {**args, **change}


BAD_CROPS = {  # name → (changed arguments, what the C++ message says)
    "image not 3 channels": (dict(normalised=np.zeros((4, 8, 10), np.float32)), "3×H×W"),
    "image size differs": (dict(normalised=np.zeros((3, 8, 11), np.float32)),
                           r"masks' H×W \(8×10\)"),
    "image 2-D": (dict(normalised=np.zeros((8, 10), np.float32)), "3×H×W"),
    "boxes not K×4": (dict(boxes=np.zeros((2, 3), np.int64)), "K×4"),
    "boxes of other K": (dict(boxes=np.array([[2, 1, 5, 4]], np.int64)), r"masks' K \(2\)"),
    "box past the right": (dict(boxes=np.array([[2, 1, 5, 4], [9, 7, 11, 8]])), "outside"),
    "box past the bottom": (dict(boxes=np.array([[2, 1, 5, 9], [9, 7, 10, 8]])), "outside"),
    "box negative": (dict(boxes=np.array([[-1, 1, 5, 4], [9, 7, 10, 8]])), "outside"),
    "box empty": (dict(boxes=np.array([[2, 1, 2, 4], [9, 7, 10, 8]])), "empty"),
    "box reversed": (dict(boxes=np.array([[5, 1, 2, 4], [9, 7, 10, 8]])), "empty"),
    "fill of 4": (dict(fill=np.zeros(4, np.float32)), "3 values"),
    "size 0": (dict(size=0), "must lie in 1..4096"),
    "size negative": (dict(size=-3), "must lie in 1..4096"),
    "size huge": (dict(size=2**31), "must lie in 1..4096"),
}


@pytest.mark.parametrize("case", BAD_CROPS)
def test_bad_crop_inputs_are_refused(native: ModuleType, case: str) -> None:
    change, message = BAD_CROPS[case]
    args = crop_args(**change)
    with pytest.raises(MaskError, match="masked_crops"):  # the wrapper's own check, both paths
        maskops.masked_crops(**args)
    with pytest.raises(ValueError, match=message):
        native.masked_crops(**args)


@pytest.mark.parametrize("change", [dict(normalised=np.zeros((3, 8, 10), np.float64)),
                                    dict(masks=np.zeros((2, 8, 10), np.uint8)),
                                    dict(boxes=np.zeros((2, 4), np.float64)),
                                    dict(fill=np.zeros(3, np.float64))],
                         ids=["float64 image", "uint8 masks", "float boxes", "float64 fill"])
def test_wrong_dtypes_are_refused_by_the_extension(native: ModuleType, change: dict) -> None:
    with pytest.raises(TypeError, match="incompatible function arguments"):
        native.masked_crops(**crop_args(**change))


@pytest.mark.parametrize("masks", [np.zeros((2, 5, 5), np.uint8), np.zeros((5, 5), bool),
                                   np.zeros((1, 2, 5, 5), bool)],
                         ids=["uint8", "2-D", "4-D"])
def test_bad_masks_are_refused(native: ModuleType, masks: np.ndarray) -> None:
    with pytest.raises(MaskError, match="K×H×W bool"):
        maskops.mask_grid(masks, 4)
    with pytest.raises(MaskError, match="K×H×W bool"):
        maskops.masked_crops(**crop_args(masks=masks))
    with pytest.raises((TypeError, ValueError)):
        native.mask_grid(masks, 4)
    with pytest.raises((TypeError, ValueError)):
        native.masked_crops(**crop_args(masks=masks))


@pytest.mark.parametrize(("masks", "grid", "message"),
                         [(np.zeros((2, 5, 5), bool), 0, "must lie in 1..4096"),
                          (np.zeros((2, 5, 5), bool), -1, "must lie in 1..4096"),
                          (np.zeros((5, 1, 17), bool), 2**31, "must lie in 1..4096"),
                          (np.zeros((2, 0, 5), bool), 3, "must not be empty")])
def test_bad_grids_are_refused(native: ModuleType, masks: np.ndarray, grid: int,
                               message: str) -> None:
    with pytest.raises(MaskError, match="mask_grid"):
        maskops.mask_grid(masks, grid)
    with pytest.raises(ValueError, match=message):
        native.mask_grid(masks, grid)


def test_crops_go_into_a_given_buffer(maybe_native: ModuleType | None) -> None:
    """`out` receives the crops (no copy) and equals a fresh result; a buffer that does not fit
    (dtype, shape, strides, read-only) is refused, never written through a silent copy."""
    rng = np.random.default_rng(7)
    normalised = rng.standard_normal((3, 12, 15), dtype=np.float32)
    masks = random_masks(rng, 3, 12, 15)
    boxes, fill = tight_boxes(masks), np.zeros(3, np.float32)
    expected = numpy_masked_crops(normalised, masks, boxes, fill, 6)
    out = np.full((3, 3, 6, 6), np.nan, np.float32)
    assert maskops.masked_crops(normalised, masks, boxes, fill, 6, out) is out
    np.testing.assert_array_equal(out, expected)
    read_only = np.zeros((3, 3, 6, 6), np.float32)
    read_only.flags.writeable = False
    for bad in (np.zeros((3, 3, 6, 6)), np.zeros((2, 3, 6, 6), np.float32),
                np.zeros((3, 3, 6, 12), np.float32)[..., ::2], read_only):
        with pytest.raises(MaskError, match="out must be"):
            maskops.masked_crops(normalised, masks, boxes, fill, 6, bad)
        if maybe_native is not None:
            with pytest.raises((TypeError, ValueError)):
                maybe_native.masked_crops(normalised, masks, boxes, fill, 6, bad)
