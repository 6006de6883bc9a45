"""The runtime's files and pictures: zsris_rt.image, drawing, geometry, mask_io, result_json,
atomic_files, progress, pack, refer_data, evaluation and synthetic_refer, each on inputs whose
right answer is known here (hand-made arrays, pycocotools, OpenCV, hashlib)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from zsris_rt import atomic_files, progress
from zsris_rt.drawing import OVERLAY_ALPHA, OVERLAY_RGB, render_overlay
from zsris_rt.errors import ImageError, MaskError, PackError, ZsrisError
from zsris_rt.evaluation import FIELDS, Row, metrics, read_rows
from zsris_rt.geometry import mask_geometry
from zsris_rt.image import as_rgb, encode_png, normalise, read_image
from zsris_rt.mask_io import from_coco_rle, load_masks, to_coco_rle, validate_masks
from zsris_rt.pack import DEMO_PACK, MANIFEST, Manifest, default_pack, load_pack, write_manifest
from zsris_rt.refer_data import ReferDataset
from zsris_rt.result_json import result_to_dict
from zsris_rt.results import Result
from zsris_rt.synthetic_refer import describe, draw_scene, write_synthetic_refer

# --- image -----------------------------------------------------------------------------------


def test_read_image_is_rgb_and_checks_the_file(tmp_path):
    bgr = np.zeros((3, 4, 3), dtype=np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (3, 4, 3) and (rgb[..., 2] == 200).all() and (rgb[..., 0] == 0).all()
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "b.png")
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "c.png")


def test_as_rgb_accepts_grey_and_rgba_and_refuses_the_rest(monkeypatch):
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert (as_rgb(grey) == grey[..., None]).all() and as_rgb(grey).shape == (2, 3, 3)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert as_rgb(rgba).shape == (2, 2, 3)
    with pytest.raises(ImageError, match="must be uint8"):
        as_rgb(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ImageError, match="H×W×3"):
        as_rgb(np.zeros((2, 2, 2), dtype=np.uint8))
    import zsris_rt.image as image_module

    monkeypatch.setattr(image_module, "MAX_PIXELS", 10)
    with pytest.raises(ImageError, match="above the"):
        as_rgb(np.zeros((4, 4, 3), dtype=np.uint8))


def test_normalise_and_png():
    x = normalise(np.full((1, 1, 3), 255, dtype=np.uint8), (0.5, 0.5, 0.5), (0.5, 0.25, 0.5))
    np.testing.assert_allclose(x[:, 0, 0], [1.0, 2.0, 1.0])
    mask = np.array([[True, False], [False, True]])
    decoded = cv2.imdecode(np.frombuffer(encode_png(mask), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, [[255, 0], [0, 255]])
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1], rgb)
    with pytest.raises(ValueError, match="encode_png needs"):
        encode_png(np.zeros((2, 2), dtype=np.float32))


# --- drawing and geometry --------------------------------------------------------------------

def test_overlay_tints_the_mask_and_keeps_the_rest():
    image = np.full((120, 160, 3), 100, dtype=np.uint8)
    mask = np.zeros((120, 160), dtype=bool)
    mask[50:90, 60:120] = True
    out = render_overlay(image, mask, (60, 50, 120, 90), "“the cup” – naïve")
    tint = np.round(100 * (1 - OVERLAY_ALPHA) + np.array(OVERLAY_RGB) * OVERLAY_ALPHA)
    np.testing.assert_array_equal(out[60:80, 70:110], np.broadcast_to(tint, (20, 40, 3)))
    np.testing.assert_array_equal(out[100:, :40], image[100:, :40])  # far from box and label
    assert (out[40:50, 60:120] != 100).any()  # the label sits above the box
    with pytest.raises(MaskError, match="but the image is 120×160"):
        render_overlay(image, mask[:10], (0, 0, 1, 1), "x")
    with pytest.raises(ImageError, match="H×W×3 uint8"):
        render_overlay(image.astype(np.float32), mask, (0, 0, 1, 1), "x")


@pytest.mark.parametrize("fill, angle", [
    ((slice(10, 12), slice(2, 30)), 0.0),  # a horizontal bar
    ((slice(2, 30), slice(10, 12)), 90.0),  # a vertical bar
])
def test_geometry_of_bars(fill, angle):
    mask = np.zeros((32, 32), dtype=bool)
    mask[fill] = True
    g = mask_geometry(mask)
    ys, xs = np.nonzero(mask)
    assert g.area == mask.sum() and g.centroid == (xs.mean(), ys.mean())
    assert g.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert g.angle_deg == pytest.approx(angle)


def test_geometry_of_a_diagonal_and_of_nothing():
    mask = np.eye(20, dtype=bool) | np.eye(20, k=1, dtype=bool)  # top-left to bottom-right
    assert mask_geometry(mask).angle_deg == pytest.approx(45.0, abs=0.5)
    assert mask_geometry(np.fliplr(mask)).angle_deg == pytest.approx(-45.0, abs=0.5)
    square = np.zeros((9, 9), dtype=bool)
    square[2:7, 2:7] = True
    assert mask_geometry(square).angle_deg == 0.0  # no major axis
    with pytest.raises(MaskError, match="empty"):
        mask_geometry(np.zeros((4, 4), dtype=bool))


# --- masks in, JSON out ----------------------------------------------------------------------

def test_validate_masks():
    one = validate_masks(np.ones((3, 4), dtype=np.uint8), (3, 4))
    assert one.shape == (1, 3, 4) and one.dtype == bool
    assert validate_masks(np.ones((2, 3, 4), dtype=np.float32), (3, 4)).dtype == bool
    with pytest.raises(MaskError, match="mask 0 has 255 at x=0, y=0"):
        validate_masks(np.full((1, 3, 4), 255, dtype=np.uint8), (3, 4))
    with pytest.raises(MaskError, match="K = 0"):
        validate_masks(np.zeros((0, 3, 4), dtype=bool), (3, 4))
    empties = np.zeros((8, 3, 4), dtype=bool)
    empties[0] = True
    with pytest.raises(MaskError, match="masks 1, 2, 3, 4, 5 and 2 more are empty"):
        validate_masks(empties, (3, 4))
    with pytest.raises(MaskError, match="bool, integer or float"):
        validate_masks(np.ones((1, 3, 4), dtype=complex), (3, 4))


def test_load_masks_from_each_format(tmp_path):
    truth = np.zeros((2, 6, 8), dtype=bool)
    truth[0, 1:4, 2:6] = True
    truth[1, 3:6, 0:3] = True
    np.save(tmp_path / "m.npy", truth)
    np.savez(tmp_path / "named.npz", other=np.zeros(3), masks=truth)
    np.savez(tmp_path / "single.npz", truth)
    for name in ("m.npy", "named.npz", "single.npz"):
        np.testing.assert_array_equal(load_masks(tmp_path / name, (6, 8)), truth)
    rle = coco_mask.encode(np.asfortranarray(truth[0].astype(np.uint8)))
    uncompressed = {"size": [6, 8], "counts": _runs(truth[1])}
    polygon = [[0.5, 0.5, 7.5, 0.5, 7.5, 5.5, 0.5, 5.5]]  # the whole image
    doc = {"annotations": [
        {"image_id": 7, "segmentation": {"size": [6, 8], "counts": rle["counts"].decode()}},
        {"image_id": 7, "segmentation": uncompressed},
        {"image_id": 7, "segmentation": polygon}]}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    masks = load_masks(tmp_path / "m.json", (6, 8))
    np.testing.assert_array_equal(masks[:2], truth)
    expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygon, 6, 8)))
    np.testing.assert_array_equal(masks[2], expected.astype(bool))


def _runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts, by hand: column-major runs, starting with zeros."""
    flat = mask.ravel(order="F")
    runs, value, length = [], False, 0
    for v in flat:
        if v == value:
            length += 1
        else:
            runs.append(length)
            value, length = v, 1
    return runs + [length]


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('[{"image_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}, {"image_id": 2, '
     '"segmentation": [[0, 0, 1, 0, 1, 1]]}]', "from 2 images"),
    ('[{"segmentation": {"size": [3, 3], "counts": "2"}}]', "RLE is 3×3 (H×W) but the image"),
    ('[{"segmentation": [[0, 0, 1]]}]', "odd number of coordinates"),
    ('[{"id": 1}]', 'annotation 0 has no "segmentation"'),
])
def test_load_masks_refuses_bad_json(tmp_path, content, message):
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(MaskError, match=re.escape(message)):
        load_masks(tmp_path / "m.json", (6, 8))


def test_coco_rle_round_trip():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:6] = True
    rle = to_coco_rle(mask)
    assert rle["size"] == [5, 7]
    np.testing.assert_array_equal(coco_mask.decode(dict(rle, counts=rle["counts"].encode())),
                                  mask)
    np.testing.assert_array_equal(from_coco_rle(rle), mask)
    with pytest.raises(MaskError, match='"size" and "counts"'):
        from_coco_rle({"counts": "x"})


def test_result_to_dict_is_plain_json():
    masks = np.zeros((3, 4, 6), dtype=bool)
    masks[1, 1:3, 2:5] = True
    result = Result(text="the cup", sentence="the cup", noun_phrase="the cup",
                    scores=np.array([1.5, 30.0, -np.inf], dtype=np.float32), index=1,
                    masks=masks, boxes=np.array([[0, 0, 0, 0], [2, 1, 5, 3], [0, 0, 0, 0]]),
                    alpha=0.5, beta=0.25, timings={"text": np.float64(1.5)}, local_computed=2)
    record = json.loads(json.dumps(result_to_dict(result, "cpu", "spacy-x")))
    assert record["scores"] == [1.5, 30.0, None] and record["score"] == 30.0
    assert record["box"] == [2, 1, 5, 3] and record["area"] == 6
    assert record["centroid"] == [3.0, 1.5] and record["num_masks"] == 3
    assert record["timings_ms"] == {"text": 1.5} and record["local_computed"] == 2
    assert (record["backend"], record["spacy_model"]) == ("cpu", "spacy-x")
    assert list(result.scored) == [True, True, False]


# --- atomic files and progress ---------------------------------------------------------------

def test_atomic_writes_leave_all_or_nothing(tmp_path):
    good, bad = tmp_path / "a.bin", tmp_path / "missing" / "b.bin"
    with pytest.raises(ZsrisError, match="output folder does not exist"):
        atomic_files.write_files_atomically({good: b"1", bad: b"2"})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "dir").mkdir()
    with pytest.raises(ZsrisError, match="is a folder"):
        atomic_files.write_files_atomically({tmp_path / "dir": b"x"})
    atomic_files.write_files_atomically({good: b"one", tmp_path / "c.bin": b"two"})
    assert good.read_bytes() == b"one" and (tmp_path / "c.bin").read_bytes() == b"two"
    atomic_files.atomic_write(tmp_path / "new" / "deep.bin", b"3")
    assert (tmp_path / "new" / "deep.bin").read_bytes() == b"3"
    assert not [p for p in tmp_path.rglob(".zsris-*")]


def test_progress_lines_in_a_log():
    stream = io.StringIO()
    with progress.Progress(3, "eval", "sentences", stream=stream) as bar:
        bar.update(2)
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # a log gets no line before 30 s, then the final one
    assert lines[0].startswith("eval: 3/3 sentences (100%), ") and "ETA 00:00" in lines[0]
    quiet = io.StringIO()
    with pytest.raises(RuntimeError), progress.Progress(2, "x", stream=quiet):
        raise RuntimeError("boom")
    assert quiet.getvalue() == ""  # an error: the caller's message alone follows


def test_progress_printer_stamps_seconds(capsys):
    say = progress.progress_printer()
    say("step one")
    assert capsys.readouterr().err.startswith("[   0.0s] step one")


# --- packs -----------------------------------------------------------------------------------

def test_load_pack_checks_every_file(tmp_path, demo_copy):
    with pytest.raises(PackError, match="not a folder"):
        load_pack(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackError, match="no manifest.json"):
        load_pack(tmp_path / "empty")
    (demo_copy / "prop_encoder.onnx").unlink()
    with pytest.raises(PackError, match="missing file prop_encoder.onnx"):
        load_pack(demo_copy)
    manifest = json.loads((demo_copy / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (demo_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="schema 99"):
        load_pack(demo_copy)
    (demo_copy / MANIFEST).write_text("{not json")
    with pytest.raises(PackError, match="unreadable manifest.json"):
        load_pack(demo_copy)


def test_a_manifest_must_list_the_graphs(demo_copy):
    manifest = json.loads((demo_copy / MANIFEST).read_text())
    del manifest["files"]["clip_text.onnx"]
    (demo_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="does not list clip_text.onnx"):
        load_pack(demo_copy)


def test_manifest_round_trip_and_hashes(tmp_path, demo_pack):
    text = demo_pack.manifest.to_json()
    again = Manifest.from_json(text)
    assert again.clip == demo_pack.clip and again.proposer == demo_pack.proposer
    clip = demo_pack.clip
    assert json.loads(text)["clip"]["grid"] == clip.image_size // clip.patch_size
    for name in list(demo_pack.manifest.files)[:3]:
        digest = hashlib.sha256((demo_pack.root / name).read_bytes()).hexdigest()
        assert demo_pack.manifest.files[name] == digest
    (tmp_path / "a.txt").write_text("hello")
    manifest = Manifest(clip=demo_pack.clip, files={"a.txt": ""})
    write_manifest(tmp_path, manifest)
    written = json.loads((tmp_path / MANIFEST).read_text())
    assert written["files"]["a.txt"] == hashlib.sha256(b"hello").hexdigest()


def test_graph_variants_and_precisions(demo_pack):
    variants = {g for g, info in demo_pack.manifest.graphs.items() if info.get("variants")}
    assert variants and demo_pack.precisions() == ["fp32", "int8"]
    graph = sorted(variants)[0]
    assert demo_pack.graph_path(graph, "int8").name == \
        demo_pack.manifest.graphs[graph]["variants"]["int8"]["file"]
    assert demo_pack.graph_path("clip_text", "int8").name == "clip_text.onnx"
    assert demo_pack.graph_precision("clip_text", "int8") == "fp32"
    assert "clip_image" not in demo_pack.graph_names
    assert set(demo_pack.graph_names) >= {"clip_trunk", "clip_masked_head", "clip_text",
                                          "prop_encoder", "prop_decoder"}


def test_default_pack(monkeypatch, tmp_path):
    monkeypatch.delenv("ZSRIS_PACK", raising=False)
    assert default_pack() == DEMO_PACK
    monkeypatch.setenv("ZSRIS_PACK", str(tmp_path))
    assert default_pack() == tmp_path


# --- refer data, evaluation rows, synthetic scenes --------------------------------------------

def test_refer_dataset_reads_what_synth_wrote(synth_root):
    data = ReferDataset(synth_root, "refcoco")
    refs = pickle.loads((synth_root / "refcoco" / "refs(unc).p").read_bytes())
    assert data.splits() == sorted({"train", "val", "testA", "testB"})
    samples = data.samples("val")
    assert len(samples) == sum(len(r["sentences"]) for r in refs if r["split"] == "val")
    doc = json.loads((synth_root / "refcoco" / "instances.json").read_text())
    ann = doc["annotations"][0]
    seg = ann["segmentation"]
    rle = coco_mask.merge(coco_mask.frPyObjects(seg, 240, 320)) if isinstance(seg, list) else \
        dict(seg, counts=seg["counts"].encode())
    np.testing.assert_array_equal(data.mask(ann["id"]), coco_mask.decode(rle).astype(bool))
    ids, masks = data.instance_masks(ann["image_id"])
    assert ids[0] == ann["id"] and masks.shape[1:] == (240, 320)


def test_refer_dataset_refuses_a_pickle_that_names_code(tmp_path, synth_root):
    root = tmp_path / "data"
    shutil.copytree(synth_root / "refcoco", root / "refcoco")
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([{"split": os.getcwd}]))
    with pytest.raises(ZsrisError, match="refuses to load posix.getcwd"):
        ReferDataset(root, "refcoco")
    with pytest.raises(ZsrisError, match="unknown dataset"):
        ReferDataset(root, "imagenet")
    with pytest.raises(ZsrisError, match="dataset folder not found"):
        ReferDataset(root, "refcocog")


def row(iou: float, inter: int, union: int, skipped: bool = False, kind: str = "") -> Row:
    return Row(1, 2, 3, 4, "the cup", iou, inter, union, None if skipped else 0, 5,
               None if skipped else 1.5, skipped, kind)


def test_metrics_by_hand():
    rows = [row(0.5, 5, 10), row(0.0, 0, 10, skipped=True), row(0.9, 9, 10)]
    m = metrics(rows)
    assert m["samples"] == 3
    assert m["oIoU"] == pytest.approx(100 * 14 / 30) and m["mIoU"] == pytest.approx(140 / 3)
    assert (m["P@0.5"], m["P@0.7"], m["P@0.9"]) == pytest.approx((200 / 3, 100 / 3, 100 / 3))
    assert metrics([]) == {"samples": 0, "oIoU": None, "mIoU": None, "P@0.5": None,
                           "P@0.7": None, "P@0.9": None}


def test_rows_round_trip_and_a_cut_last_line(tmp_path):
    rows = [row(0.5, 5, 10, kind="ordinal"), row(0.0, 0, 7, skipped=True)]
    assert [Row.parse([str(v) for v in r.values()]) for r in rows] == rows
    path = tmp_path / "samples.csv"
    lines = [",".join(FIELDS)] + [",".join(str(v) for v in r.values()) for r in rows]
    path.write_text("\n".join(lines) + "\n" + "1,2,3")  # interrupted mid-line
    got, length = read_rows(path)
    assert got == rows and length == len("\n".join(lines)) + 1
    path.write_text(",".join(FIELDS) + "\nnot,a,row\n")
    with pytest.raises(ZsrisError, match="line 2 is corrupt"):
        read_rows(path)


def test_synthetic_scene_objects_and_their_sentences():
    scene = draw_scene(np.random.default_rng([5, 1]))
    masks = np.stack([o.mask for o in scene.objects])
    assert scene.pixels.shape == (240, 320, 3) and 2 <= len(masks) <= 5
    assert masks.sum(axis=0).max() == 1  # visible parts never overlap
    for obj in scene.objects:
        assert len(np.unique(scene.pixels[obj.mask], axis=0)) == 1
        for expression in describe(obj, scene.objects):
            assert expression.holds(obj, True)
            assert not any(expression.holds(o, False) for o in scene.objects if o is not obj)
    with pytest.raises(ZsrisError, match="unknown dataset"):
        write_synthetic_refer("/nonexistent", "imagenet")
