"""Mask IoU matrix and greedy mask NMS: the C++ ops and their NumPy twins equal, exactly,
pycocotools' IoU, a plain pixel count written here, and a brute-force greedy NMS written here."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pycocotools.mask as coco
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import native_or_twin, varied_masks
from zsris_rt import maskops
from zsris_rt.errors import MaskError
from zsris_rt.maskops import iou as twin

IouOp = Callable[..., np.ndarray]
NmsOp = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
BOTH = ["c++", "numpy"]


@pytest.fixture(scope="module", params=BOTH)
def iou(request: pytest.FixtureRequest) -> IouOp:
    return native_or_twin(request.param, "mask_iou", twin.mask_iou)


@pytest.fixture(scope="module", params=BOTH)
def nms(request: pytest.FixtureRequest) -> NmsOp:
    return native_or_twin(request.param, "mask_nms", twin.mask_nms)


def counted_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a ∧ b| / |a ∨ b| by counting pixels, 0 where both masks are empty."""
    inter = np.logical_and(a[:, None], b[None]).sum(axis=(2, 3))
    union = np.logical_or(a[:, None], b[None]).sum(axis=(2, 3))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def coco_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """pycocotools' IoU of the masks as it encodes them (crowd flags all 0)."""
    def rles(masks: np.ndarray) -> list[dict]:
        return coco.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return np.asarray(coco.iou(rles(a), rles(b), [0] * len(b)), dtype=np.float64)


def check_iou(iou: IouOp, a: np.ndarray, b: np.ndarray | None) -> None:
    """`iou` equals both references bit for bit, as a K×M float64 array."""
    other = a if b is None else b
    expected = counted_iou(a, other)
    np.testing.assert_array_equal(coco_iou(a, other), expected)
    got = iou(a) if b is None else iou(a, b)
    assert got.dtype == np.float64 and got.shape == (len(a), len(other))
    np.testing.assert_array_equal(got, expected)


def greedy_nms(masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook greedy NMS: visit masks best score first (a stable sort keeps ties in index
    order), keep each one not yet suppressed and suppress every later one overlapping it more
    than `threshold`."""
    order = sorted(range(len(masks)), key=lambda i: -float(scores[i]))
    overlaps = counted_iou(masks, masks)
    suppressed: set[int] = set()
    kept = []
    for rank, i in enumerate(order):
        if i in suppressed:
            continue
        kept.append(i)
        suppressed.update(j for j in order[rank + 1:] if overlaps[i, j] > threshold)
    return kept


def check_nms(nms: NmsOp, masks: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """`nms` equals the brute-force greedy and has the properties that define it."""
    scores = scores.astype(np.float64)
    got = nms(masks, scores, threshold)
    assert got.dtype == np.int64 and got.ndim == 1
    assert got.tolist() == greedy_nms(masks, scores, threshold)
    overlaps = counted_iou(masks, masks)
    kept = got.tolist()
    assert all(overlaps[i, j] <= threshold for i in kept for j in kept if i != j)
    ranks = {i: r for r, i in enumerate(sorted(range(len(masks)), key=lambda i: -scores[i]))}
    for j in set(range(len(masks))) - set(kept):
        assert any(overlaps[i, j] > threshold and ranks[i] < ranks[j] for i in kept)
    return got


@settings(max_examples=50, deadline=None)
@given(k=st.integers(0, 7), m=st.integers(0, 7), h=st.integers(1, 24), w=st.integers(1, 70),
       seed=st.integers(0, 2**32 - 1), self_iou=st.booleans())
def test_iou_equals_references(iou: IouOp, k: int, m: int, h: int, w: int, seed: int,
                               self_iou: bool) -> None:
    masks = varied_masks(np.random.default_rng(seed), k + m, h, w)
    check_iou(iou, masks[:k], None if self_iou else masks[k:])


def test_both_empty_is_zero(iou: IouOp) -> None:
    """The documented convention (pycocotools has the same): two empty masks have IoU 0, not
    NaN; an empty mask against a full one too."""
    masks = np.zeros((3, 4, 5), dtype=bool)
    masks[2] = True
    got = iou(masks[:2], masks)
    np.testing.assert_array_equal(got, np.zeros((2, 3)))
    np.testing.assert_array_equal(coco_iou(masks[:2], masks), got)


def border_masks() -> np.ndarray:
    """On a 9×13 image: empty, one pixel (centre and each corner), each border, full."""
    masks = np.zeros((11, 9, 13), dtype=bool)
    masks[1, 4, 7] = masks[2, 0, 0] = masks[3, 0, -1] = masks[4, -1, 0] = masks[5, -1, -1] = True
    masks[6, 0], masks[7, -1], masks[8, :, 0], masks[9, :, -1] = True, True, True, True
    masks[10] = True
    return masks


@pytest.mark.parametrize("case", ["borders", "1x1", "k=0", "m=0", "k=m=0", "k=1000"])
def test_iou_degenerate(iou: IouOp, case: str) -> None:
    one_by_one = np.array([False, True]).reshape(2, 1, 1)
    many = varied_masks(np.random.default_rng(7), 1000, 5, 6)
    a, b = {"borders": (border_masks(), None), "1x1": (one_by_one, None),
            "k=0": (np.zeros((0, 3, 4), bool), border_masks()[:, :3, :4]),
            "m=0": (border_masks()[:, :3, :4], np.zeros((0, 3, 4), bool)),
            "k=m=0": (np.zeros((0, 3, 4), bool), None), "k=1000": (many, many[:40])}[case]
    check_iou(iou, a, b)
    if b is None:
        check_iou(iou, a, a)


@settings(max_examples=50, deadline=None)
@given(k=st.integers(0, 12), h=st.integers(1, 9), w=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1),
       scores=st.lists(st.sampled_from([0.0, -0.0, 0.5, 1.0, -2.0]) | st.floats(width=32,
                       allow_nan=False), min_size=12, max_size=12),
       threshold=st.sampled_from([-0.5, 0.0, 0.25, 0.5, 1.0, 1.5]) | st.floats(-0.1, 1.1))
def test_nms_equals_greedy(nms: NmsOp, k: int, h: int, w: int, seed: int, scores: list[float],
                           threshold: float) -> None:
    masks = varied_masks(np.random.default_rng(seed), k, h, w)
    check_nms(nms, masks, np.array(scores[:k]), threshold)


@pytest.mark.parametrize("threshold", [1.0, 1.5, np.inf])
def test_nms_threshold_one_keeps_all_in_stable_order(nms: NmsOp, threshold: float) -> None:
    masks = np.ones((6, 3, 3), dtype=bool)  # all identical: IoU 1 everywhere
    scores = np.array([0.2, 0.9, 0.2, -1.0, 0.9, 0.5])
    got = check_nms(nms, masks, scores, threshold)
    assert got.tolist() == [1, 4, 5, 0, 2, 3]


@pytest.mark.parametrize("threshold", [-1e-9, -0.5, -np.inf])
def test_nms_negative_threshold_keeps_only_the_first(nms: NmsOp, threshold: float) -> None:
    masks = np.zeros((5, 4, 4), dtype=bool)  # disjoint or empty: IoU 0 everywhere
    masks[1, 0, 0] = masks[2, 3, 3] = True
    got = check_nms(nms, masks, np.array([0.1, 0.7, 0.7, 0.3, 0.7]), threshold)
    assert got.tolist() == [1]


def test_nms_ties_keep_the_lower_index(nms: NmsOp) -> None:
    masks = np.zeros((4, 5, 5), dtype=bool)
    masks[:, 1:4, 1:4] = True  # 0, 1 and 3 identical; 2 a different, disjoint one
    masks[2] = ~masks[2]
    assert check_nms(nms, masks, np.full(4, 0.5), 0.5).tolist() == [0, 2]
    assert check_nms(nms, masks[::-1], np.full(4, 0.5), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("k", [0, 1, 1000])
def test_nms_sizes(nms: NmsOp, k: int) -> None:
    rng = np.random.default_rng(k)
    check_nms(nms, varied_masks(rng, k, 4, 5), rng.normal(size=k), 0.3)


def test_strided_views_are_read_right(native: ModuleType) -> None:
    """A strided or zero-stride view: the wrapper copies it, the extension converts it; either
    way the result is that of its contiguous copy, never of misread memory."""
    base = varied_masks(np.random.default_rng(3), 8, 10, 22)
    scores = np.linspace(1.0, 0.0, 8, dtype=np.float32)
    for view in (base[::2, :, ::-1], base.transpose(0, 2, 1),
                 np.broadcast_to(base[:1], base.shape)):
        copy = np.ascontiguousarray(view)
        for op in (maskops.mask_iou, native.mask_iou):
            np.testing.assert_array_equal(op(view), counted_iou(copy, copy))
            np.testing.assert_array_equal(op(view, view[:3]), counted_iou(copy, copy[:3]))
        for op in (maskops.mask_nms, native.mask_nms):
            assert op(view, scores[::-1][:len(view)], 0.4).tolist() == \
                greedy_nms(copy, scores[::-1][:len(view)], 0.4)


def test_bool_bytes_other_than_one_read_as_true(iou: IouOp, nms: NmsOp) -> None:
    """A bool array holding any nonzero byte (a view of uint8) reads as true, as NumPy does."""
    rng = np.random.default_rng(5)
    clean = varied_masks(rng, 6, 7, 37)
    raw = np.where(clean, rng.integers(1, 256, clean.shape), 0).astype(np.uint8).view(bool)
    np.testing.assert_array_equal(iou(raw), counted_iou(clean, clean))
    np.testing.assert_array_equal(iou(raw, clean), counted_iou(clean, clean))
    scores = rng.normal(size=6).astype(np.float32)
    assert nms(raw, scores, 0.3).tolist() == greedy_nms(clean, scores, 0.3)


BAD_MASKS = [np.zeros((2, 5, 5), np.uint8), np.zeros((2, 5, 5), np.float32),
             np.zeros((5, 5), bool), np.zeros((1, 2, 5, 5), bool)]


@pytest.mark.parametrize("bad", BAD_MASKS)
def test_bad_masks_are_refused(native: ModuleType, bad: np.ndarray) -> None:
    good = np.zeros((2, 5, 5), bool)
    for call in (lambda op: op(bad), lambda op: op(good, bad)):
        with pytest.raises(MaskError, match="K×H×W bool"):
            call(maskops.mask_iou)
        with pytest.raises((TypeError, ValueError)):
            call(native.mask_iou)
    with pytest.raises(MaskError, match="K×H×W bool"):
        maskops.mask_nms(bad, np.zeros(len(bad)), 0.5)
    with pytest.raises((TypeError, ValueError)):
        native.mask_nms(bad, np.zeros(len(bad), np.float64), 0.5)


def test_different_sizes_are_refused(native: ModuleType) -> None:
    a, b = np.zeros((2, 5, 6), bool), np.zeros((2, 6, 5), bool)
    with pytest.raises(MaskError, match="differ in H×W"):
        maskops.mask_iou(a, b)
    with pytest.raises(ValueError, match="same H×W"):
        native.mask_iou(a, b)


@pytest.mark.parametrize("scores, threshold", [
    ([0.5, np.nan, 0.1], 0.5), ([0.5, 0.2, 0.1], np.nan), ([0.5, 0.2], 0.5),
    ([0.5, 0.2, 0.1, 0.0], 0.5), ([[0.5, 0.2, 0.1]], 0.5)])
def test_bad_scores_are_refused(native: ModuleType, scores: list, threshold: float) -> None:
    masks = np.ones((3, 2, 2), bool)
    with pytest.raises(MaskError, match="mask_nms"):
        maskops.mask_nms(masks, np.array(scores), threshold)
    with pytest.raises(ValueError):
        native.mask_nms(masks, np.array(scores, np.float64), threshold)
    with pytest.raises(TypeError):
        native.mask_nms(masks, np.array(scores, np.complex128), threshold)


def test_float64_scores_are_ranked_unrounded() -> None:
    """Scores closer than float32 can tell apart still rank by their float64 values."""
    masks = np.ones((2, 3, 3), bool)
    assert maskops.mask_nms(masks, np.array([0.1, 0.1 + 1e-12]), 0.5).tolist() == [1]
