"""Outputs: mask geometry against shapes with known answers, overlay, PNG, atomic files, JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from zsris_rt.atomic_files import write_files_atomically
from zsris_rt.drawing import OVERLAY_RGB, render_overlay
from zsris_rt.errors import ImageError, MaskError, ZsrisError
from zsris_rt.geometry import mask_geometry
from zsris_rt.image import encode_png
from zsris_rt.mask_io import from_coco_rle
from zsris_rt.maskops import tight_boxes
from zsris_rt.result_json import result_to_dict
from zsris_rt.results import Result

H, W = 60, 80


def geom(mask: np.ndarray) -> dict:
    """mask_geometry as a dict of plain lists, as the JSON record holds it."""
    g = mask_geometry(mask)
    return {"area": g.area, "centroid": list(g.centroid), "angle_deg": g.angle_deg,
            "box": list(g.box)}


def blank() -> np.ndarray:
    return np.zeros((H, W), bool)


def axis_equal(a: float, b: float, tol: float = 1e-6) -> bool:
    """Angles of axes (not directions) compare modulo 180°."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d) <= tol


# mask_geometry


def test_geometry_horizontal_and_vertical_bars() -> None:
    bar = blank()
    bar[20:23, 10:50] = True
    g = geom(bar)
    assert g == {"area": 120, "centroid": [29.5, 21.0], "angle_deg": 0.0, "box": [10, 20, 50, 23]}
    bar = blank()
    bar[5:45, 30] = True
    g = geom(bar)
    assert g["angle_deg"] == 90.0 and g["centroid"] == [30.0, 24.5] and g["box"] == [30, 5, 31, 45]


def test_geometry_diagonal_bands_sign() -> None:
    ys, xs = np.mgrid[:H, :W]
    square = (xs >= 5) & (xs < 51) & (ys >= 5) & (ys < 51)  # symmetric about both diagonals
    down_right = (np.abs(xs - ys) <= 1) & square  # image y down: top-left to bottom-right
    assert geom(down_right)["angle_deg"] == pytest.approx(45.0)
    up_right = (np.abs(xs + ys - 55) <= 1) & square
    assert geom(up_right)["angle_deg"] == pytest.approx(-45.0)


@pytest.mark.parametrize("angle", [-60.0, -30.0, 15.0, 30.0, 75.0])
def test_geometry_rotated_ellipse(angle: float) -> None:
    canvas = np.zeros((200, 200), np.uint8)  # cv2 angles also turn from +x towards +y
    cv2.ellipse(canvas, (100, 100), (80, 15), angle, 0, 360, 1, cv2.FILLED)
    g = geom(canvas.astype(bool))
    assert g["angle_deg"] == pytest.approx(angle, abs=1.0)
    assert g["centroid"] == pytest.approx([100.0, 100.0], abs=0.05)


def test_geometry_matches_nonzero_statistics() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((H, W)) < 0.2
    g = geom(mask)
    ys, xs = np.nonzero(mask)
    assert g["area"] == xs.size
    assert g["centroid"] == pytest.approx([xs.mean(), ys.mean()])
    assert g["box"] == tight_boxes(mask[None])[0].tolist()
    cov = np.cov(np.stack([xs, ys]).astype(float))
    vals, vecs = np.linalg.eigh(cov)
    major = vecs[:, np.argmax(vals)]
    assert axis_equal(g["angle_deg"], np.degrees(np.arctan2(major[1], major[0])), tol=1e-6)
    assert -90.0 < g["angle_deg"] <= 90.0


def test_geometry_isotropic_shapes_have_angle_zero() -> None:
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (40, 30), 12, 1, cv2.FILLED)
    square = blank()
    square[10:20, 30:40] = True
    pixel = blank()
    pixel[H - 1, W - 1] = True
    for mask in (disc.astype(bool), square, pixel):
        assert geom(mask)["angle_deg"] == 0.0
    assert geom(pixel) == {
        "area": 1,
        "centroid": [W - 1.0, H - 1.0],
        "angle_deg": 0.0,
        "box": [W - 1, H - 1, W, H],
    }


def test_geometry_values_are_plain_python() -> None:
    bar = blank()
    bar[1:3, 1:9] = True
    g = geom(bar)
    assert type(g["area"]) is int and all(type(v) is float for v in g["centroid"])
    assert type(g["angle_deg"]) is float and all(type(v) is int for v in g["box"])


def test_geometry_of_empty_mask_is_an_error() -> None:
    with pytest.raises(MaskError, match="empty"):
        geom(blank())


# render_overlay


def test_overlay_tints_mask_and_leaves_the_rest() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    mask = np.zeros((240, 320), bool)
    mask[100:200, 120:220] = True
    out = render_overlay(image, mask, (120, 100, 220, 200), '"the red mug" 31.2')
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    inner = out[110:190, 130:210].astype(int)
    expected = image[110:190, 130:210] * 0.55 + np.array(OVERLAY_RGB) * 0.45
    assert np.abs(inner - expected).max() <= 1
    assert np.array_equal(out[:, :100], image[:, :100])  # far from mask, box and label
    assert np.array_equal(out[210:], image[210:])
    label_band = out[60:100, 120:220]  # the label sits just above the box
    assert (np.all(label_band == OVERLAY_RGB, axis=2)).mean() > 0.2


def test_overlay_label_below_box_at_the_top_edge() -> None:
    image = np.full((240, 320, 3), 90, np.uint8)
    mask = np.zeros((240, 320), bool)
    mask[0:40, 250:320] = True
    out = render_overlay(image, mask, (250, 0, 320, 40), "a long label that does not fit")
    below = out[41:80]
    assert np.all(below == OVERLAY_RGB, axis=2).any()
    assert np.array_equal(out[100:], image[100:])


@pytest.mark.parametrize(("y", "x"), [(0, 0), (0, 7), (7, 0), (7, 7), (3, 4)])
def test_overlay_tiny_image_one_pixel_mask(y: int, x: int) -> None:
    image = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[y, x] = True
    out = render_overlay(image, mask, (x, y, x + 1, y + 1), '"thé “mug”" 31.2')
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8


def test_overlay_accepts_grey_and_rejects_bad_shapes() -> None:
    mask = blank()
    mask[5:10, 5:10] = True
    out = render_overlay(np.zeros((H, W), np.uint8), mask, (5, 5, 10, 10), "x")
    assert out.shape == (H, W, 3)
    with pytest.raises(ImageError):
        render_overlay(np.zeros((H, W, 4), np.uint8), mask, (5, 5, 10, 10), "x")
    with pytest.raises(MaskError):
        render_overlay(np.zeros((H, W, 3), np.uint8), mask[1:], (5, 5, 10, 10), "x")


# encode_png


def test_png_rgb_round_trip() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    png = encode_png(image)
    assert png.startswith(b"\x89PNG")
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded[..., ::-1], image)


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_png_mask_is_single_channel_0_255(dtype: type) -> None:
    mask = np.random.default_rng(3).random((H, W)) < 0.5
    decoded = cv2.imdecode(
        np.frombuffer(encode_png(mask.astype(dtype)), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert decoded.shape == (H, W) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, mask.astype(np.uint8) * 255)


def test_png_rejects_other_arrays() -> None:
    with pytest.raises(ValueError):
        encode_png(np.zeros((H, W, 3), np.float32))


# write_files_atomically


def test_write_files(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_bytes(b"old")
    files = {tmp_path / "a.png": b"\x89PNG...", tmp_path / "b.json": b"{}"}
    write_files_atomically(files)
    assert {p.name for p in tmp_path.iterdir()} == {"a.png", "b.json"}
    assert all(path.read_bytes() == data for path, data in files.items())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_missing_folder_writes_nothing(tmp_path: Path) -> None:
    files = {tmp_path / "a.png": b"a", tmp_path / "missing" / "b.json": b"b"}
    with pytest.raises(ZsrisError, match="output folder does not exist") as exc:
        write_files_atomically(files)
    assert "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_write_failure_leaves_no_file(tmp_path: Path) -> None:
    files = {tmp_path / "a.png": b"a", tmp_path / ("x" * 300 + ".json"): b"b"}
    with pytest.raises(ZsrisError, match="cannot write") as exc:
        write_files_atomically(files)
    assert "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_write_failure_while_writing_cleans_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def fail_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(ZsrisError, match="No space left on device"):
        write_files_atomically({tmp_path / "a.png": b"a", tmp_path / "b.json": b"b"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_folder_as_target(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    with pytest.raises(ZsrisError, match="is a folder"):
        write_files_atomically({tmp_path / "a.json": b"a", tmp_path / "out.png": b"b"})
    assert not (tmp_path / "a.json").exists()


# result_to_dict


def make_result() -> Result:
    masks = np.zeros((3, H, W), bool)
    masks[0, 5:10, 5:30] = True
    masks[1, 20:50, 40:45] = True
    masks[2, 0, 0] = True
    return Result(
        text="the tall thing",
        sentence="a photo of the tall thing",
        noun_phrase="the tall thing",
        scores=np.array([12.5, 31.25, -3.0], np.float32),
        index=1,
        masks=masks,
        boxes=tight_boxes(masks),
        alpha=np.float32(0.85),
        beta=0.5,
        truncated=False,
        timings={"text": np.float64(1.5), "score": 0.25},
    )


def test_result_to_dict() -> None:
    result = make_result()
    record = result_to_dict(result, backend="cpu", spacy_model="en_core_web_sm")
    assert list(record) == [
        "text",
        "sentence",
        "noun_phrase",
        "index",
        "score",
        "box",
        "area",
        "centroid",
        "angle_deg",
        "rle",
        "scores",
        "local_computed",
        "num_masks",
        "alpha",
        "beta",
        "truncated",
        "backend",
        "spacy_model",
        "timings_ms",
    ]
    round_trip = json.loads(json.dumps(record, allow_nan=False))
    assert round_trip == record
    assert record["index"] == 1 and record["score"] == 31.25
    assert record["box"] == [40, 20, 45, 50]
    assert record["area"] == 150 and record["centroid"] == [42.0, 34.5]
    assert record["angle_deg"] == 90.0
    assert np.array_equal(from_coco_rle(record["rle"]), result.mask)
    assert record["scores"] == [12.5, 31.25, -3.0] and record["num_masks"] == 3
    assert record["alpha"] == pytest.approx(0.85) and type(record["alpha"]) is float
    assert record["timings_ms"] == {"text": 1.5, "score": 0.25}
    assert record["backend"] == "cpu" and record["spacy_model"] == "en_core_web_sm"


def test_pruned_scores_are_null_in_json() -> None:
    """Masks a pruned query never scored in full hold -inf: JSON gets null, still valid."""
    result = make_result()
    result.scores = np.array([-np.inf, 31.25, -np.inf], np.float32)
    result.local_computed = 1
    record = result_to_dict(result, backend="cpu", spacy_model="en_core_web_sm")
    assert json.loads(json.dumps(record, allow_nan=False))["scores"] == [None, 31.25, None]
    assert record["local_computed"] == 1
