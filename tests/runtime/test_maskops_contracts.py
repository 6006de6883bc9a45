"""A few torch-free checks of each mask op's contract (zsris_rt.maskops and its NumPy twins
boxes, crops, feature_maps, iou, logits, rle), of the resampling (zsris_rt.bilinear,
zsris_rt.proposer.antialias), box NMS (zsris_rt.proposer.box_nms) and the proposer's input frame
(zsris_rt.proposer.input_frame), on values worked out by hand or by pycocotools. The C++ ops are
held equal to the twins on random and degenerate inputs by tests/test_maskops*.py; here each
check runs on the dispatcher (C++ where built) and on the twin alike."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from zsris_rt import maskops
from zsris_rt.bilinear import resize_bilinear
from zsris_rt.errors import MaskError
from zsris_rt.maskops import boxes, crops, feature_maps, iou, logits, rle
from zsris_rt.pack import ProposerSettings
from zsris_rt.proposer.antialias import antialias_taps, resize_antialiased
from zsris_rt.proposer.box_nms import box_nms
from zsris_rt.proposer.input_frame import InputFrame, bilinear_matrix, prepare_input

IMPLEMENTATIONS = ("dispatch", "twin")


def op(which: str, name: str):
    """maskops.<name> (argument checks, then C++ or the twin) or the twin function itself."""
    twins = {"tight_boxes": boxes.tight_boxes, "mask_iou": iou.mask_iou,
             "mask_nms": iou.mask_nms, "mask_grid": crops.mask_grid,
             "masked_crops": crops.masked_crops,
             "masked_feature_maps": feature_maps.masked_feature_maps}
    return getattr(maskops, name) if which == "dispatch" else twins[name]


@pytest.mark.parametrize("which", IMPLEMENTATIONS)
def test_tight_boxes(which):
    masks = np.zeros((3, 6, 8), dtype=bool)
    masks[0, 2:5, 3:7] = True
    masks[2, 5, 7] = True  # one pixel in the far corner
    got = op(which, "tight_boxes")(masks)
    np.testing.assert_array_equal(got, [[3, 2, 7, 5], [0, 0, 0, 0], [7, 5, 8, 6]])
    assert got.dtype == np.int64
    assert op(which, "tight_boxes")(np.zeros((0, 4, 4), dtype=bool)).shape == (0, 4)


@pytest.mark.parametrize("which", IMPLEMENTATIONS)
def test_mask_iou_and_nms(which):
    a = np.zeros((3, 4, 4), dtype=bool)
    a[0, :2, :2] = True  # 4 px
    a[1, :2, 1:3] = True  # 4 px, 2 shared with mask 0: IoU 2/6
    table = op(which, "mask_iou")(a)
    np.testing.assert_allclose(table, [[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 0]])
    other = np.ones((1, 4, 4), dtype=bool)
    np.testing.assert_allclose(op(which, "mask_iou")(a, other), [[4 / 16], [4 / 16], [0]])
    kept = op(which, "mask_nms")(a, np.array([0.5, 0.9, 0.1]), 0.3)
    np.testing.assert_array_equal(kept, [1, 2])  # mask 0 overlaps the better mask 1 by 1/3
    np.testing.assert_array_equal(op(which, "mask_nms")(a, np.array([0.5, 0.9, 0.1]), 0.5),
                                  [1, 0, 2])


@pytest.mark.parametrize("which", IMPLEMENTATIONS)
def test_mask_grid_is_a_soft_half_pixel_downscale(which):
    masks = np.zeros((2, 14, 14), dtype=bool)
    masks[0, :, :7] = True  # the left half
    masks[1] = True
    grid = op(which, "mask_grid")(masks, 7)
    assert grid.shape == (2, 7, 7) and grid.dtype == np.float32
    # Output column j samples source column 2j + 0.5: columns 6 and 7 straddle the edge.
    np.testing.assert_allclose(grid[0], np.tile([1, 1, 1, 0.5, 0, 0, 0], (7, 1)))
    np.testing.assert_array_equal(grid[1], 1.0)


@pytest.mark.parametrize("which", IMPLEMENTATIONS)
def test_masked_crops_fill_outside_the_mask(which):
    image = np.zeros((3, 4, 5), dtype=np.float32)
    image[:, 1, 2] = [1.0, 2.0, 3.0]
    image[:, 1, 3] = [7.0, 7.0, 7.0]
    masks = np.zeros((2, 4, 5), dtype=bool)
    masks[0, 1, 2] = True  # one pixel: the crop is that pixel everywhere
    masks[1, 1, 2] = True  # box 1×2 with only its left pixel in the mask
    box = np.array([[2, 1, 3, 2], [2, 1, 4, 2]])
    fill = np.array([-1.0, -2.0, -3.0], dtype=np.float32)
    out = op(which, "masked_crops")(image, masks, box, fill, 2)
    assert out.shape == (2, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], np.broadcast_to([[[1.0]], [[2.0]], [[3.0]]],
                                                          (3, 2, 2)))
    # Two source columns to two output columns: the pixel, then the fill (never the 7s).
    np.testing.assert_array_equal(out[1, :, :, 0], [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_array_equal(out[1, :, :, 1], [[-1, -1], [-2, -2], [-3, -3]])


def test_masked_crops_refuse_what_does_not_fit():
    image = np.zeros((3, 4, 4), dtype=np.float32)
    masks = np.ones((1, 4, 4), dtype=bool)
    fill = np.zeros(3)
    with pytest.raises(MaskError, match="inside the image"):
        maskops.masked_crops(image, masks, np.array([[0, 0, 5, 4]]), fill, 8)
    with pytest.raises(MaskError, match="do not fit together"):
        maskops.masked_crops(image, masks, np.array([[0, 0, 4, 4]]), fill, 0)
    with pytest.raises(MaskError, match="out must be"):
        maskops.masked_crops(image, masks, np.array([[0, 0, 4, 4]]), fill, 8,
                             np.zeros((1, 3, 8, 8), dtype=np.float64))
    with pytest.raises(MaskError, match="K×H×W bool"):
        maskops.tight_boxes(np.ones((4, 4), dtype=bool))


@pytest.mark.parametrize("which", IMPLEMENTATIONS)
def test_masked_feature_maps_normalise_then_weigh(which):
    features = np.array([[[3.0, 0.0]], [[4.0, 0.0]]], dtype=np.float32)  # C=2, 1×2 positions
    grids = np.array([[[1.0, 1.0]], [[0.5, 0.0]]], dtype=np.float32)
    out = op(which, "masked_feature_maps")(features, grids)
    np.testing.assert_allclose(out[0, :, 0, 0], [0.6, 0.8])
    np.testing.assert_allclose(out[1, :, 0, 0], [0.3, 0.4])
    np.testing.assert_array_equal(out[:, :, 0, 1], 0.0)  # a zero vector stays zero, no NaN


def test_logit_statistics_and_masks_with_identity_maps():
    values = np.array([[[2.0, 0.5], [-0.5, -2.0]]], dtype=np.float32)
    maps = (np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32))
    for stats in (maskops.logit_statistics(values, maps, 0.0, 1.0),
                  logits.logit_statistics(values, maps, 0.0, 1.0)):
        stability, box, area = stats
        np.testing.assert_allclose(stability, [1 / 3])  # |> 1| = 1 over |> -1| = 3
        np.testing.assert_array_equal(box, [[0, 0, 1, 0]])  # inclusive, segment-anything's
        np.testing.assert_array_equal(area, [2])
    for masks in (maskops.logit_masks(values, maps, 0.0), logits.logit_masks(values, maps, 0.0)):
        np.testing.assert_array_equal(masks, [[[True, True], [False, False]]])


def test_rle_matches_pycocotools_both_ways():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 7, 5)) < 0.4
    masks[1] = False
    masks[2] = True
    ours = maskops.rle_encode(masks)
    theirs = [coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
              for m in masks]
    assert ours == theirs
    assert [c.decode() for c in rle.rle_encode(masks)] == theirs
    np.testing.assert_array_equal(maskops.rle_decode(theirs, (7, 5)), masks)
    np.testing.assert_array_equal(rle.rle_decode(theirs, 7, 5), masks)


@pytest.mark.parametrize("counts, size, message", [
    (["0"], (2, 2), "counts cover 0 pixels, not 2×2"),
    (["~"], (2, 2), "outside '0'..'o'"),
    ("abc", (2, 2), "must be a list"),
    (["1"], (0, 2), "is not a mask size"),
])
def test_rle_decode_refuses_bad_counts(counts, size, message):
    with pytest.raises(MaskError, match=message):
        maskops.rle_decode(counts, size)


def test_forced_numpy_twins_are_reported_and_agree():
    probe = ("import numpy as np\nfrom zsris_rt import maskops\n"
             "m = np.zeros((1, 5, 6), bool); m[0, 1:3, 2:5] = True\n"
             "print(maskops.implementation()); print(maskops.tight_boxes(m).tolist())\n"
             "print(maskops.rle_encode(m))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "ZSRIS_MASKOPS": "numpy"}, timeout=60)
    assert done.returncode == 0, done.stderr
    implementation, box, counts = done.stdout.splitlines()
    assert implementation == "numpy (forced by ZSRIS_MASKOPS=numpy)"
    assert box == "[[2, 1, 5, 3]]"
    m = np.zeros((5, 6), np.uint8)
    m[1:3, 2:5] = 1
    assert counts == repr([coco_mask.encode(np.asfortranarray(m))["counts"].decode()])


def test_bilinear_half_pixel_without_antialias():
    x = np.array([[0.0, 1.0]], dtype=np.float32)
    # out j samples (j + 0.5)/2 - 0.5: -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    np.testing.assert_allclose(resize_bilinear(x, (1, 4)), [[0, 0.25, 0.75, 1]])
    np.testing.assert_allclose(resize_bilinear(np.arange(6.0).reshape(2, 3), (2, 3)),
                               np.arange(6.0).reshape(2, 3))
    masks = np.ones((2, 3, 3), dtype=bool)
    assert resize_bilinear(masks, (5, 5)).dtype == np.float32


def test_antialiased_resize_as_pytorch():
    x = np.arange(4, dtype=np.float32)[None]
    # Triangle filter of half-width 2 source pixels: weights 3/7, 3/7, 1/7 for output 0.
    np.testing.assert_allclose(resize_antialiased(x, (1, 2), "bilinear"), [[5 / 7, 16 / 7]],
                               rtol=1e-6)
    constant = np.full((3, 9, 7), 0.25, dtype=np.float32)
    for kernel in ("bilinear", "bicubic"):
        np.testing.assert_allclose(resize_antialiased(constant, (4, 5), kernel), 0.25,
                                   rtol=1e-6)
        first, weights = antialias_taps(9, 4, kernel)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
        assert first.min() >= 0 and first.max() + weights.shape[1] <= 9
    with pytest.raises(ValueError, match="unknown resampling kernel"):
        antialias_taps(4, 2, "lanczos")


def test_box_nms_as_torchvision():
    b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7])
    # IoU of the first two: 81 / 119 = 0.68.
    np.testing.assert_array_equal(box_nms(b, scores, 0.5), [0, 2])
    np.testing.assert_array_equal(box_nms(b, scores, 0.7), [0, 1, 2])
    np.testing.assert_array_equal(box_nms(b, np.array([0.5, 0.5, 0.9]), 0.5), [2, 0])
    assert box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def settings(resize: str) -> ProposerSettings:
    return ProposerSettings(family="sam" if resize == "longest" else "sam2", input_size=256,
                            low_res_size=64, resize=resize, resize_filter="bilinear",
                            embeddings=("e",))


def test_input_frame_longest_side_and_square():
    sam = InputFrame.for_image(settings("longest"), 240, 320)
    assert sam.resized == (192, 256) and sam.padded
    np.testing.assert_allclose(sam.to_input(np.array([[320.0, 240.0], [0, 0]])),
                               [[256, 192], [0, 0]])
    sam2 = InputFrame.for_image(settings("square"), 240, 320)
    assert sam2.resized == (256, 256) and not sam2.padded
    np.testing.assert_allclose(sam2.to_input(np.array([[160.0, 60.0]])), [[128, 64]])
    for frame in (sam, sam2):
        rows, cols = frame.logit_maps(64)
        assert rows.shape == (240, 64) and cols.shape == (320, 64)
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)  # a constant stays one
        np.testing.assert_allclose(cols.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(bilinear_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75],
                                                       [0, 1]])


def test_prepare_input_pads_bottom_right():
    rgb = np.full((240, 320, 3), 255, dtype=np.uint8)
    image, frame = prepare_input(rgb, settings("longest"))
    assert image.shape == (1, 3, 256, 256) and frame.resized == (192, 256)
    expected = (1.0 - 0.485) / 0.229  # white, normalised, red channel
    np.testing.assert_allclose(image[0, 0, :192], expected, rtol=1e-5)
    np.testing.assert_array_equal(image[0, :, 192:], 0.0)
