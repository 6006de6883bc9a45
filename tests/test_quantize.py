"""`zsris-export quantize` and the calibration collector, on copies of the tiny and demo packs.

Thresholds, measured on this machine (ONNX Runtime 1.32, AVX-512 VNNI) with these seeds: the tiny
random pack's int8 features agree with fp32 at cosine ≥ 0.9998 for images and 0.9995 for text on
held-out scenes; 0.998 is asserted (4× the worst measured gap: a wrong scale, a garbled weight or
an int8 LayerNorm lands far below). The demo pack's int8 graphs pick the same mask as fp32 for 33
of 33 example expressions (698 of 700 val sentences of `zsris-rt synth --seed 2026`, 700 of
700 with the text tower left fp32); ≥ 31 is asserted, since near-ties in the demo's scores may
flip on another CPU's int8 kernels.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from zsris_rt import Segmenter
from zsris_rt.calibration import collect_graph_inputs, list_images
from zsris_rt.errors import ImageError, PackError, ZsrisError
from zsris_rt.export.cli import main as export_main
from zsris_rt.export.quantize import QuantizeConfig, quantise_file, quantize_pack
from zsris_rt.pack import DEMO_PACK, load_pack
from zsris_rt.synthetic_refer import draw_scene

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEPT = ("LayerNormalization", "Softmax", "Gather", "GatherElements")
QUANTISED_MARKS = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul",
                   "QuantizeLinear", "QLinearMatMul", "ConvInteger", "QLinearConv")


def _write_scenes(folder: Path, seeds: range) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        scene = draw_scene(np.random.default_rng(seed))
        cv2.imwrite(str(folder / f"scene-{seed}.png"), scene.pixels[:, :, ::-1])
    return folder


def _listing(root: Path) -> dict[str, str]:
    """Every file of a folder (hidden ones too) with its sha256, computed here."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_scenes(tmp_path_factory.mktemp("calib"), range(900, 906))


@pytest.fixture(scope="module")
def tiny_int8(pack_dir: Path, calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("quant") / "tiny"
    shutil.copytree(pack_dir, copy)
    # The committed demo pack has int8 graphs already: made again here, text tower included.
    quantize_pack(QuantizeConfig(copy, [calib], graphs=["clip_trunk", "clip_masked_head",
                                                         "clip_text"], per_graph=16, force=True))
    return copy


@pytest.fixture(scope="module")
def demo_int8(calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("quant") / "demo"
    shutil.copytree(DEMO_PACK, copy)
    # The committed demo pack has int8 graphs already: made again here, text tower included.
    quantize_pack(QuantizeConfig(copy, [calib], graphs=["clip_trunk", "clip_masked_head",
                                                         "clip_text"], per_graph=16, force=True))
    return copy


def test_int8_files_are_listed_with_their_sha256_and_the_pack_verifies(tiny_int8: Path) -> None:
    data = json.loads((tiny_int8 / "manifest.json").read_text())
    assert "clip_image" not in data["graphs"]  # one image tower, quantised once
    for graph in ("clip_trunk", "clip_masked_head", "clip_text"):
        variant = data["graphs"][graph]["variants"]["int8"]
        name = f"{graph}.int8.onnx"
        assert variant["file"] == name and variant["files"] == [name]
        assert data["files"][name] == hashlib.sha256((tiny_int8 / name).read_bytes()).hexdigest()
        assert variant["calibration"]["images"] == 6
        assert 0.99 <= variant["cosine_vs_fp32"]["min"] <= variant["cosine_vs_fp32"]["mean"] <= 1
    pack = load_pack(tiny_int8)
    assert pack.precisions() == ["fp32", "int8"]
    assert not [p for p in tiny_int8.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("graph", ["clip_trunk", "clip_masked_head", "clip_text"])
def test_layernorm_softmax_and_gathers_stay_fp32(tiny_int8: Path, graph: str) -> None:
    _assert_kept_fp32(onnx.load(str(tiny_int8 / f"{graph}.int8.onnx")))


def test_static_qdq_keeps_them_fp32_too(pack_dir: Path, tmp_path: Path) -> None:
    pack = load_pack(pack_dir)
    entries = collect_graph_inputs(pack, [draw_scene(np.random.default_rng(7)).pixels],
                                   per_graph=4, threads=1)["clip_text"]
    out = tmp_path / "text.onnx"
    assert quantise_file(pack_dir / "clip_text.onnx", out, entries, "static") == "QDQ"
    _assert_kept_fp32(onnx.load(str(out)))


def _assert_kept_fp32(model: onnx.ModelProto) -> None:
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    ops = [node.op_type for node in model.graph.node]
    assert any(op in QUANTISED_MARKS for op in ops), "nothing was quantised"
    assert not [op for op in ops if op.startswith("QLinear") and
                op.removeprefix("QLinear") in KEPT]
    kept = [node for node in model.graph.node if node.op_type in KEPT]
    assert any(node.op_type == "LayerNormalization" for node in kept)
    for node in kept:
        data_input = node.input[0]
        assert producer.get(data_input) != "DequantizeLinear", f"{node.name} reads int8 data"


@pytest.fixture(scope="module")
def held_out() -> list:
    return [draw_scene(np.random.default_rng(seed)) for seed in (1001, 1002, 1003)]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_features_match_fp32_on_held_out_scenes(tiny_int8: Path, held_out: list) -> None:
    fp32 = Segmenter.from_pack(tiny_int8, threads=1)
    int8 = Segmenter.from_pack(tiny_int8, threads=1, precision="int8")
    cosines = []
    for scene in held_out:
        masks = np.stack([obj.mask for obj in scene.objects])
        a, b = fp32.encode_image(scene.pixels, masks), int8.encode_image(scene.pixels, masks)
        cosines += [_cosines(a.global_features, b.global_features),
                    _cosines(a.local_features, b.local_features)]
    for text in ("the red circle on the left", "a small blue square"):
        cosines += [_cosines(fp32.encode_text(text)[1], int8.encode_text(text)[1])]
    assert np.concatenate(cosines).min() >= 0.998


def test_demo_pack_int8_picks_the_same_masks_as_fp32(demo_int8: Path) -> None:
    fp32 = Segmenter.from_pack(demo_int8, threads=1)
    int8 = Segmenter.from_pack(demo_int8, threads=1, precision="int8")
    same = total = 0
    for example in json.loads((EXAMPLES / "scenes.json").read_text()):
        masks = np.load(EXAMPLES / example["masks"])["masks"]
        image = str(EXAMPLES / example["image"])
        a, b = fp32.encode_image(image, masks), int8.encode_image(image, masks)
        for expression in example["expressions"]:
            same += fp32.query(a, expression["text"]).index == \
                int8.query(b, expression["text"]).index
            total += 1
    assert total == 33 and same >= 31


def test_refusals_are_one_line_and_leave_the_pack_unchanged(tiny_int8: Path, calib: Path,
                                                           tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_int8, tampered)
    with open(tampered / "clip_trunk.onnx", "ab") as handle:
        handle.write(b"\0")
    unreadable = tmp_path / "bad"
    unreadable.mkdir()
    (unreadable / "broken.png").write_bytes(b"not a png")
    cases = [
        (tiny_int8, [], ZsrisError, "no calibration images"),
        (tiny_int8, [calib], ZsrisError, "already has int8"),
        (tampered, [calib], PackError, "does not match its sha256"),
    ]
    for pack, images, error, words in cases:
        before = _listing(pack)
        with pytest.raises(error) as caught:
            quantize_pack(QuantizeConfig(pack, images, graphs=["clip_trunk"]))
        assert words in str(caught.value) and "\n" not in str(caught.value)
        assert _listing(pack) == before
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_int8, fresh)
    for name in [p.name for p in fresh.iterdir() if ".int8." in p.name]:
        (fresh / name).unlink()
    manifest = json.loads((fresh / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if ".int8." not in k}
    for graph in manifest["graphs"].values():
        graph.pop("variants", None)
    (fresh / "manifest.json").write_text(json.dumps(manifest))
    before = _listing(fresh)
    for images, words in (([unreadable], "broken.png: not a readable image"),
                          ([tmp_path / "nowhere" / "*.png"], "no such image file")):
        with pytest.raises(ImageError, match=words):
            quantize_pack(QuantizeConfig(fresh, images))
        assert _listing(fresh) == before


def test_cli_force_replaces_the_variant(tiny_int8: Path, calib: Path, tmp_path: Path) -> None:
    copy = tmp_path / "pack"
    shutil.copytree(tiny_int8, copy)
    assert export_main(["quantize", str(copy), "--calib", str(calib / "scene-900.png"),
                        "--graphs", "clip_masked_head", "--method", "dynamic", "--force"]) == 0
    variant = load_pack(copy).manifest.graphs["clip_masked_head"]["variants"]["int8"]
    assert variant["method"] == "dynamic" and variant["calibration"]["images"] == 1
    assert variant["calibration"]["sha256"] == hashlib.sha256(
        hashlib.sha256((calib / "scene-900.png").read_bytes()).hexdigest().encode()).hexdigest()


def test_collected_inputs_have_the_declared_shapes_and_dtypes(calib: Path) -> None:
    pack = load_pack(DEMO_PACK)
    images = list_images([calib / "scene-90[01].png"])
    assert [p.name for p in images] == ["scene-900.png", "scene-901.png"]
    recorded = collect_graph_inputs(pack, images, per_graph=8, threads=1)
    assert set(recorded) == set(pack.manifest.graphs)
    for graph, entries in recorded.items():
        declared = pack.manifest.graphs[graph]["inputs"]
        assert 1 <= len(entries) <= 8
        for entry in entries:
            assert list(entry) == [spec["name"] for spec in declared]
            for spec in declared:
                array = entry[spec["name"]]
                assert array.dtype == np.dtype(spec["dtype"])
                assert array.ndim == len(spec["shape"])
                for size, want in zip(array.shape, spec["shape"], strict=True):
                    assert size == want if isinstance(want, int) else size >= 1
    # The trunk and the head serve the crop encoder too: their entries are not only the two
    # images' own (trunk) and their masks' grids (head), but crops and all-ones grids as well.
    assert len(recorded["clip_trunk"]) == 8 and len(recorded["clip_masked_head"]) == 8
    ones = [bool(np.all(e["grid_masks"] == 1)) for e in recorded["clip_masked_head"]]
    assert any(ones) and not all(ones)


def test_a_variant_onnx_runtime_cannot_run_counts_as_failed(pack_dir: Path, calib: Path,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A variant that quantises but will not run (onnxruntime 1.32 refuses the dynamic
    MatMulInteger of the demo's `prop_decoder` with per-channel zero points) is a failed method:
    the other one is kept, and the pack is written, not abandoned."""
    import zsris_rt.export.quantize as quantize

    copy = tmp_path / "pack"
    shutil.copytree(pack_dir, copy)
    measured = quantize.output_cosine

    def refusing(reference: Path, candidate: Path, *args, **kwargs):
        if "-dynamic-" in candidate.name:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : b zero point is not valid")
        return measured(reference, candidate, *args, **kwargs)

    monkeypatch.setattr(quantize, "output_cosine", refusing)
    entries = quantize_pack(QuantizeConfig(copy, [calib], graphs=["clip_masked_head"],
                                           per_graph=4, force=True))
    entry = entries["clip_masked_head"]
    assert entry["method"] == "static"
    assert entry["methods_compared"]["dynamic"] == {
        "failed": "[ONNXRuntimeError] : 1 : FAIL : b zero point is not valid"}
    load_pack(copy, verify=True)
