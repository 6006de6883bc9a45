"""Proposal masks: validation, file formats, tight boxes and RLE, checked against pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from zsris_rt.errors import MaskError
from zsris_rt.mask_io import (
    from_coco_rle,
    load_masks,
    to_coco_rle,
    validate_masks,
)
from zsris_rt.maskops import tight_boxes

H, W = 12, 17


def random_masks(k: int, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = rng.random((k, h, w)) < 0.3
    masks[:, rng.integers(h), rng.integers(w)] = True  # never empty
    return masks


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Run lengths of the column-major pixel order, starting with a (possibly empty) 0 run."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def assert_one_line(exc: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(exc.value)


# validate_masks


def test_validate_accepts_2d_as_one_mask() -> None:
    mask = random_masks(1)[0]
    out = validate_masks(mask, (H, W))
    assert out.shape == (1, H, W) and out.dtype == bool and out.flags.c_contiguous
    assert np.array_equal(out[0], mask)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_validate_converts_0_1_numbers(dtype: type) -> None:
    masks = random_masks(3)
    out = validate_masks(masks.astype(dtype), (H, W))
    assert out.dtype == bool and np.array_equal(out, masks)


def test_validate_makes_contiguous() -> None:
    masks = random_masks(2, w=H, h=W).transpose(0, 2, 1)
    assert not masks.flags.c_contiguous
    out = validate_masks(masks, (H, W))
    assert out.flags.c_contiguous and np.array_equal(out, masks)


@pytest.mark.parametrize(
    ("masks", "size", "message"),
    [
        (np.ones((1, 2, H, W), bool), (H, W), "got 4 dimensions"),
        (np.ones(W, bool), (H, W), "got 1 dimensions"),
        (np.zeros((0, H, W), bool), (H, W), r"no masks given \(K = 0\)"),
        (
            np.ones((2, 480, 640), bool),
            (481, 640),
            r"masks are 480×640 \(H×W\) but the image is 481×640",
        ),
        (np.full((1, H, W), 255, np.uint8), (H, W), "must be 0 or 1.*has 255 at x=0, y=0"),
        (np.full((1, H, W), 0.5), (H, W), "must be 0 or 1.*has 0.5"),
        (np.full((1, H, W), np.nan), (H, W), "must be 0 or 1"),
        (np.ones((1, H, W), complex), (H, W), "must be bool, integer or float"),
    ],
)
def test_validate_errors(masks: np.ndarray, size: tuple[int, int], message: str) -> None:
    with pytest.raises(MaskError, match=message) as exc:
        validate_masks(masks, size)
    assert_one_line(exc)


def test_validate_names_empty_masks() -> None:
    masks = random_masks(9)
    masks[3] = False
    with pytest.raises(MaskError, match=r"^mask 3 is empty \(all false\)$"):
        validate_masks(masks, (H, W))
    masks[[1, 5]] = False
    with pytest.raises(MaskError, match=r"^masks 1, 3, 5 are empty \(all false\)$"):
        validate_masks(masks, (H, W))
    masks[:] = False
    with pytest.raises(MaskError, match=r"^masks 0, 1, 2, 3, 4 and 4 more are empty"):
        validate_masks(masks.astype(np.uint8), (H, W))


# tight_boxes


def test_tight_boxes_match_nonzero() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((20, H, W), bool)
    for k in range(20):  # small random blobs, some on the border
        y0, x0 = rng.integers(H), rng.integers(W)
        masks[k, y0 : y0 + rng.integers(1, 5), x0 : x0 + rng.integers(1, 5)] = True
        masks[k, rng.integers(H), rng.integers(W)] = True
    masks[0, -1, -1] = True
    masks[1] = False
    masks[1, 0, 0] = True
    boxes = tight_boxes(masks)
    assert boxes.shape == (20, 4) and boxes.dtype == np.int64
    for k in range(20):
        ys, xs = np.nonzero(masks[k])
        assert boxes[k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_tight_boxes_degenerate() -> None:
    assert tight_boxes(np.zeros((0, H, W), bool)).shape == (0, 4)
    masks = np.zeros((2, H, W), bool)
    masks[1] = True
    assert tight_boxes(masks).tolist() == [[0, 0, 0, 0], [0, 0, W, H]]


# RLE


def test_rle_encode_matches_pycocotools_and_is_json_ready() -> None:
    for mask in random_masks(5, seed=2):
        rle = to_coco_rle(mask)
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        json.dumps(rle)
        reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"].encode() == reference["counts"]
        assert np.array_equal(coco_mask.decode(reference).astype(bool), mask)
        assert np.array_equal(from_coco_rle(rle), mask)


def test_rle_follows_coco_column_order() -> None:
    mask = np.zeros((3, 4), bool)
    mask[0, 1:] = True  # first row: column-major runs differ from row-major ones
    assert uncompressed_rle(mask)["counts"] == [3, 1, 2, 1, 2, 1, 2]
    assert np.array_equal(from_coco_rle(uncompressed_rle(mask)), mask)
    assert np.array_equal(from_coco_rle(to_coco_rle(mask)), mask)


def test_rle_decode_uncompressed_matches_compressed() -> None:
    for mask in random_masks(4, seed=3):
        assert np.array_equal(from_coco_rle(uncompressed_rle(mask)), mask)


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [H, W], "counts": "zzzzzzz"},  # runs past the end
        {"size": [H, W], "counts": ""},  # no runs: pycocotools leaves memory uninitialised
        {"size": [H, W], "counts": [H * W + 5]},
        {"size": [H, W], "counts": [-1, 3]},
        {"size": [H, W], "counts": 7},
        {"size": [H], "counts": "abc"},
        {"counts": "abc"},
    ],
)
def test_rle_decode_rejects_bad_rle(rle: dict) -> None:
    with pytest.raises(MaskError) as exc:
        from_coco_rle(rle)
    assert_one_line(exc)


# load_masks: numpy files


def test_load_npz_masks_key_and_single_array(tmp_path: Path) -> None:
    masks = random_masks(3)
    np.savez(tmp_path / "a.npz", masks=masks.astype(np.uint8), other=np.zeros(3))
    np.savez_compressed(tmp_path / "b.npz", proposals=masks)
    assert np.array_equal(load_masks(tmp_path / "a.npz", (H, W)), masks)
    assert np.array_equal(load_masks(str(tmp_path / "b.npz"), (H, W)), masks)


def test_load_npz_ambiguous_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", first=random_masks(1), second=random_masks(1))
    with pytest.raises(MaskError, match="found first, second") as exc:
        load_masks(tmp_path / "a.npz", (H, W))
    assert_one_line(exc)


def test_load_npy(tmp_path: Path) -> None:
    masks = random_masks(2)
    np.save(tmp_path / "m.npy", masks.astype(np.float32))
    assert np.array_equal(load_masks(tmp_path / "m.npy", (H, W)), masks)
    np.save(tmp_path / "one.npy", masks[0])
    assert load_masks(tmp_path / "one.npy", (H, W)).shape == (1, H, W)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.npz", b"PK\x03\x04 not really a zip", "cannot read masks"),
        ("bad.npz", b"\x00\x01garbage", "cannot read masks"),
        ("bad.npy", b"", "cannot read masks"),
        ("bad.npy", b"\x93NUMPY\x01\x00{'descr': broken", "cannot read masks"),
        ("bad.json", b'{"annotations": [', "not valid JSON"),
        ("bad.json", b"\xff\xfe\x00", "not valid JSON"),
        ("masks.png", b"\x89PNG", "unknown mask file type .png"),
    ],
)
def test_load_unreadable_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MaskError, match=message) as exc:
        load_masks(tmp_path / name, (H, W))
    assert_one_line(exc)


def test_load_refuses_pickles(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MaskError, match="cannot read masks"):
        load_masks(tmp_path / "obj.npy", (H, W))


def test_load_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(MaskError, match="mask file not found"):
        load_masks(tmp_path / "nothing.npz", (H, W))
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(MaskError, match="not a file"):
        load_masks(tmp_path / "dir.npy", (H, W))


def test_load_validates(tmp_path: Path) -> None:
    masks = random_masks(4)
    masks[2] = False
    np.save(tmp_path / "m.npy", masks)
    with pytest.raises(MaskError, match=r"m\.npy: mask 2 is empty"):
        load_masks(tmp_path / "m.npy", (H, W))
    np.save(tmp_path / "m.npy", random_masks(2))
    with pytest.raises(MaskError, match="but the image is 13×17"):
        load_masks(tmp_path / "m.npy", (H + 1, W))
    np.save(tmp_path / "m.npy", random_masks(2).astype(np.uint8) * 255)
    with pytest.raises(MaskError, match="has 255"):
        load_masks(tmp_path / "m.npy", (H, W))


# load_masks: COCO-style JSON


def write_json(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(data))
    return path


def polygon_reference(polygons: list[list[float]]) -> np.ndarray:
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, H, W))).astype(bool)


SQUARE = [2.0, 2.0, 8.0, 2.0, 8.0, 7.0, 2.0, 7.0]
TRIANGLE = [10, 1, 16, 1, 13, 10]


def test_load_json_all_forms(tmp_path: Path) -> None:
    a, b = random_masks(2, seed=4)
    compressed = to_coco_rle(a)
    annotations = [
        {"image_id": 7, "segmentation": compressed},
        {"image_id": 7, "segmentation": uncompressed_rle(b), "iscrowd": 1},
        {"image_id": 7, "segmentation": [SQUARE, TRIANGLE]},
    ]
    expected = np.stack([a, b, polygon_reference([SQUARE, TRIANGLE])])
    as_list = load_masks(write_json(tmp_path, annotations), (H, W))
    assert np.array_equal(as_list, expected)
    instances = {"images": [{"id": 7}], "annotations": annotations, "categories": []}
    assert np.array_equal(load_masks(write_json(tmp_path, instances), (H, W)), expected)
    bare = [compressed, uncompressed_rle(b), [SQUARE, TRIANGLE]]
    assert np.array_equal(load_masks(write_json(tmp_path, bare), (H, W)), expected)


def test_load_json_polygons_rasterise_like_coco(tmp_path: Path) -> None:
    masks = load_masks(write_json(tmp_path, [[SQUARE]]), (H, W))
    assert np.array_equal(masks[0], polygon_reference([SQUARE]))
    ys, xs = np.nonzero(masks[0])
    assert 2 <= xs.min() and xs.max() <= 8 and 2 <= ys.min() and ys.max() <= 7
    assert abs(int(masks[0].sum()) - 6 * 5) <= 2 * (6 + 5)  # within a perimeter of the true area


def test_load_json_drops_degenerate_polygon_parts(tmp_path: Path) -> None:
    masks = load_masks(write_json(tmp_path, [[[1, 1, 3, 3], SQUARE]]), (H, W))
    assert np.array_equal(masks[0], polygon_reference([SQUARE]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], r"no masks given \(K = 0\)"),
        ({"annotations": []}, r"no masks given \(K = 0\)"),
        (
            [{"image_id": 1, "segmentation": [SQUARE]}, {"image_id": 2, "segmentation": [SQUARE]}],
            r"annotations are from 2 images \(image_id 1, 2\): give the annotations of one image",
        ),
        (
            [{"size": [H + 1, W], "counts": "abc"}],
            r"mask 0: RLE is 13×17 \(H×W\) but the image is 12×17",
        ),
        ([[SQUARE], {"size": [H, W], "counts": ""}], "RLE 1: counts cover 0 pixels, not 12×17"),
        ([[SQUARE], {"size": [H, W], "counts": "zzzz"}], "RLE 1: the counts string holds"),
        ([{"size": [H, W], "counts": [H * W + 1]}], "RLE 0: a run of 205 pixels"),
        ([{"size": [H, W], "counts": [-1]}], "mask 0: invalid uncompressed RLE"),
        ([[[1, 2, 3, 4, 5, 6, 7]]], "mask 0: polygon has an odd number of coordinates"),
        ([[[1, 2, 3, 4]]], "mask 0: no polygon with at least 3 points"),
        ([[["a", 1, 2, 3, 4, 5]]], "mask 0: a polygon must be a flat list"),
        ([{"image_id": 1, "bbox": [0, 0, 1, 1]}], 'annotation 0 has no "segmentation"'),
        ([5], "mask 0: segmentation must be an RLE dict or a list of polygons"),
        ({"images": []}, 'or a dict with "annotations"'),
        ([[[30, 30, 40, 30, 40, 40]]], r"mask 0 is empty \(all false\)"),  # outside the image
    ],
)
def test_load_json_errors(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(MaskError, match=message) as exc:
        load_masks(write_json(tmp_path, data), (H, W))
    assert str(exc.value).startswith(str(tmp_path / "masks.json"))
    assert_one_line(exc)
