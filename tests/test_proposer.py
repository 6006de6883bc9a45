"""The runtime's proposer against the PyTorch reference generator, on tiny random SAM and SAM 2
packs made by the real exporter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_scene
from zsris_rt import Segmenter
from zsris_rt.errors import NoMaskError, ZsrisError
from zsris_rt.pack import load_pack

FAMILIES = ("sam", "sam2")
# Random weights make huge, overlapping masks: with segment-anything's thresholds one survives.
# These keep every mask (all filters off) or a real filtered subset, so the order is tested.
NO_FILTERS = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                  box_nms_thresh=1.0)
FILTERED = dict(points_per_side=10, pred_iou_thresh=0.0, stability_score_thresh=0.3,
                box_nms_thresh=0.97, points_per_batch=16)


@pytest.fixture(scope="module")
def segmenters(proposer_packs: dict[str, Path]) -> dict[str, Segmenter]:
    return {family: Segmenter.from_pack(pack) for family, pack in proposer_packs.items()}


@pytest.fixture(scope="module")
def models(sam_folders: dict[str, Path]) -> dict[str, torch.nn.Module]:
    from zsris_rt.export.sam_checkpoints import load_proposer

    return {family: load_proposer(folder).model for family, folder in sam_folders.items()}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def assert_same_proposals(got, want, tie: float = 5e-4) -> None:
    """Same set in the same order, every matched pair of masks overlapping > 0.99.

    The order is by predicted IoU, which ONNX Runtime and PyTorch compute ~1e-5 apart; masks whose
    reference scores lie within `tie` of each other may therefore come in either order, and only
    those. Everything else about a matched pair must agree.
    """
    assert len(got) == len(want)
    want_masks, want_iou = np.asarray(want.masks), np.asarray(want.iou)
    want_points = np.asarray(want.points)
    used = np.zeros(len(want), dtype=bool)
    for i in range(len(got)):
        # Counterpart: an unused reference mask of the same grid point with a tied score (the
        # closest score when a point's masks tie among themselves).
        near = np.flatnonzero(~used & (np.abs(want_iou - want_iou[i]) <= tie)
                              & np.all(np.abs(want_points - got.points[i]) < 1e-3, axis=1))
        assert near.size, f"mask {i} of the runtime has no counterpart at its rank"
        match = near[np.argmin(np.abs(want_iou[near] - got.iou[i]))]
        used[match] = True
        assert mask_iou(got.masks[i], want_masks[match]) > 0.99
        assert abs(got.iou[i] - want_iou[match]) <= tie
        assert abs(got.stability[i] - float(want.stability[match])) <= 1e-2
        assert np.abs(got.boxes[i] - np.asarray(want.boxes[match])).max() <= 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("options", [NO_FILTERS, FILTERED], ids=["no-filters", "filtered"])
@pytest.mark.parametrize("size", [(97, 143), (180, 120), (64, 64)])
def test_propose_equals_reference(segmenters, models, family, options, size) -> None:
    from zsris_rt.export.reference_amg import reference_generate

    seg = segmenters[family]
    image, _ = random_scene(np.random.default_rng(size[0] * 7 + size[1]), *size, 1)
    got = seg.propose(image, **options)
    want = reference_generate(models[family], seg.proposer.settings, image, **options)
    assert len(want) >= 1
    assert_same_proposals(got, want)
    assert got.masks.shape[1:] == size and got.masks.dtype == bool
    assert np.all(np.diff(got.iou) <= 0), "ordered by predicted IoU"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("nms", [None, 1.0], ids=["defaults", "defaults-without-nms"])
def test_defaults_equal_reference(segmenters, models, family, nms) -> None:
    """segment-anything's own thresholds (0.88 / 0.95 / 0.7) on the 32×32 grid; with NMS off too,
    since on random weights NMS leaves a single mask (42 and 1024 pass the thresholds)."""
    from zsris_rt.export.reference_amg import reference_generate

    seg = segmenters[family]
    image, _ = random_scene(np.random.default_rng(5), 120, 160, 1)
    options = {} if nms is None else {"box_nms_thresh": nms}
    got = seg.propose(image, **options)
    want = reference_generate(models[family], seg.proposer.settings, image, **options)
    assert len(want) >= (1 if nms is None else 20)
    assert_same_proposals(got, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunk_size_does_not_change_result(segmenters, family) -> None:
    seg = segmenters[family]
    image, _ = random_scene(np.random.default_rng(11), 90, 130, 1)
    results = [seg.propose(image, **{**NO_FILTERS, "points_per_batch": n}) for n in (1, 7, 64,
                                                                                      1000)]
    # A different batch may take other kernels in ONNX Runtime, so logits can move by ~1e-6:
    # the same masks at the same ranks, not necessarily the same bits.
    for other in results[1:]:
        assert len(other) == 3 * 8 * 8
        assert_same_proposals(other, results[0], tie=1e-4)


def test_decoder_calls_are_cut_to_the_memory_budget(segmenters, monkeypatch) -> None:
    """`points_per_batch` is the filter's chunk; a decoder call holds at most
    `DECODER_CALL_BYTES` of activations (estimated), so a tiny budget means one prompt a call."""
    import zsris_rt.proposer.generator as proposer_module

    seg = segmenters["sam2"]
    image, _ = random_scene(np.random.default_rng(13), 60, 80, 1)
    whole = seg.propose(image, **NO_FILTERS)
    embedding = seg.proposer.encode(image)
    per_call = proposer_module.prompts_per_call(embedding, seg.proposer.settings.low_res_size)
    assert per_call >= 64  # the tiny geometry fits a whole chunk in the default budget
    monkeypatch.setattr(proposer_module, "DECODER_CALL_BYTES", 1)
    assert proposer_module.prompts_per_call(embedding, seg.proposer.settings.low_res_size) == 1
    calls: list[int] = []
    releases: list[bool] = []
    original = seg.backend.run_batched

    def counting(graph, inputs, batched, release=False):
        if graph == "prop_decoder":
            calls.append(len(inputs["points"]))
            releases.append(release)
        return original(graph, inputs, batched, release=release)

    monkeypatch.setattr(seg.backend, "run_batched", counting)
    cut = seg.propose(image, **NO_FILTERS)
    assert calls == [1] * 64
    # The decoder's working memory goes back once, after the last call of the walk.
    assert releases == [False] * 63 + [True]
    assert_same_proposals(cut, whole, tie=1e-4)


def test_deterministic_and_encoder_runs_once(segmenters) -> None:
    seg = segmenters["sam"]
    seg.clear_caches()
    calls: list[str] = []
    original = seg.backend.run

    def counting(graph, inputs, release=False):
        calls.append(graph)
        return original(graph, inputs, release=release)

    image, _ = random_scene(np.random.default_rng(2), 70, 50, 1)
    seg.backend.run = counting
    try:
        first = seg.propose(image, **FILTERED)
        second = seg.propose(image.copy(), **FILTERED)
        loose = seg.propose(image, **NO_FILTERS)
    finally:
        del seg.backend.run
    assert calls.count("prop_encoder") == 1
    np.testing.assert_array_equal(first.masks, second.masks)
    np.testing.assert_array_equal(first.iou, second.iou)
    assert len(loose) == 3 * 8 * 8


@pytest.mark.parametrize("family", FAMILIES)
def test_one_graph_decoder_pack_still_runs(proposer_packs, models, family, tmp_path) -> None:
    """A pack exported before the decoder was split (no `prop_decoder_image`; its decoder takes
    the encoder's outputs) proposes the same masks."""
    import json
    import shutil

    from zsris_rt.export.onnx_graph import GraphSpec, export_checked
    from zsris_rt.export.onnx_sam import OneGraphDecoder, proposer_graph_specs
    from zsris_rt.export.reference_amg import reference_generate
    from zsris_rt.pack import write_manifest

    pack = tmp_path / "old"
    shutil.copytree(proposer_packs[family], pack)
    split = {spec.name: spec for spec in proposer_graph_specs(models[family])}
    image_half, decoder = split["prop_decoder_image"], split["prop_decoder"]
    prompts = {"points": decoder.inputs["points"], "labels": decoder.inputs["labels"]}
    other = {"points": decoder.variant["points"], "labels": decoder.variant["labels"]}
    entry = export_checked(GraphSpec(
        "prop_decoder", OneGraphDecoder(models[family]), {**image_half.inputs, **prompts},
        decoder.outputs, decoder.dynamic_axes, {**image_half.variant, **other}), pack, str)
    manifest = load_pack(pack, verify=False).manifest
    for name in ("prop_decoder_image.onnx", "prop_decoder_image.onnx.data"):
        manifest.files.pop(name, None)
        (pack / name).unlink(missing_ok=True)
    del manifest.graphs["prop_decoder_image"]
    manifest.graphs["prop_decoder"] = entry
    write_manifest(pack, manifest)
    raw = json.loads((pack / "manifest.json").read_text())
    del raw["proposer"]["decoder_state"]  # as such packs wrote it
    (pack / "manifest.json").write_text(json.dumps(raw))
    seg = Segmenter.from_pack(pack)
    assert seg.pack.graph_names[-2:] == ("prop_encoder", "prop_decoder")
    image, _ = random_scene(np.random.default_rng(12), 90, 120, 1)
    got = seg.propose(image, **FILTERED)
    assert_same_proposals(got, reference_generate(models[family], seg.proposer.settings, image,
                                                  **FILTERED))


def test_max_masks_keeps_the_best(segmenters) -> None:
    seg = segmenters["sam2"]
    image, _ = random_scene(np.random.default_rng(3), 80, 100, 1)
    full = seg.propose(image, **NO_FILTERS)
    capped = seg.propose(image, **NO_FILTERS, max_masks=5)
    assert len(capped) == 5
    np.testing.assert_array_equal(capped.masks, full.masks[:5])


def test_mask_nms_drops_near_duplicates(segmenters) -> None:
    """mask_nms_thresh after box NMS: the greedy choice over the box-NMS output, best first,
    recomputed here with plain pixel counts; then max_masks caps what is left."""
    seg = segmenters["sam2"]
    image, _ = random_scene(np.random.default_rng(5), 80, 100, 1)
    full = seg.propose(image, **NO_FILTERS)
    kept: list[int] = []
    for i in range(len(full)):
        if all(mask_iou(full.masks[i], full.masks[j]) <= 0.6 for j in kept):
            kept.append(i)
    assert 1 < len(kept) < len(full)  # the setting really drops some masks and keeps several
    pruned = seg.propose(image, **NO_FILTERS, mask_nms_thresh=0.6)
    np.testing.assert_array_equal(pruned.masks, full.masks[kept])
    np.testing.assert_array_equal(pruned.iou, full.iou[kept])
    np.testing.assert_array_equal(pruned.points, full.points[kept])
    capped = seg.propose(image, **NO_FILTERS, mask_nms_thresh=0.6, max_masks=2)
    np.testing.assert_array_equal(capped.masks, full.masks[kept[:2]])
    np.testing.assert_array_equal(seg.propose(image, **NO_FILTERS, mask_nms_thresh=1.0).masks,
                                  full.masks)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["1x1", "gray", "rgba", "large", "tall"])
def test_odd_images_give_proposals(segmenters, models, family, kind) -> None:
    from zsris_rt.export.reference_amg import reference_generate

    rng = np.random.default_rng(4)
    image = {
        "1x1": rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        "gray": rng.integers(0, 256, (60, 90), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (60, 90, 4), dtype=np.uint8),
        "large": random_scene(rng, 1500, 2000, 1)[0],  # ~8× the 256-px encoder input
        "tall": rng.integers(0, 256, (900, 7, 3), dtype=np.uint8),
    }[kind]
    seg = segmenters[family]
    options = dict(NO_FILTERS, points_per_side=4)
    got = seg.propose(image, **options)
    assert got.masks.shape[1:] == image.shape[:2]
    assert all(m.any() for m in got.masks)
    rgb = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image[..., :3]
    assert_same_proposals(got, reference_generate(models[family], seg.proposer.settings, rgb,
                                                  **options))
    if len(got) == 0:  # a 1×1 image may well hold no mask: the pipeline says so, clearly
        with pytest.raises(NoMaskError, match="kept no mask"):
            seg.encode_image(image, **options)


def test_bad_options_are_refused(segmenters) -> None:
    seg = segmenters["sam"]
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="unknown proposer option"):
        seg.propose(image, points_per_sid=4)
    for bad in (dict(points_per_side=0), dict(points_per_batch=-1), dict(max_masks=0),
                dict(box_nms_thresh=1.5), dict(pred_iou_thresh=float("nan")),
                dict(mask_nms_thresh=-0.1), dict(mask_nms_thresh="0.5"),
                dict(points_per_side=2.5)):
        with pytest.raises(ZsrisError):
            seg.propose(image, **bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_takes_multi_point_prompts(segmenters, models, family) -> None:
    """The split decoder's general form: several points per prompt, background and padding
    labels, against transformers' own forward on the same encoder outputs."""
    from zsris_rt.export.onnx_sam import transformers_decoder
    from zsris_rt.proposer.input_frame import prepare_input

    seg = segmenters[family]
    image, _ = random_scene(np.random.default_rng(8), 100, 150, 1)
    embedding = seg.proposer.encode(image)
    assert set(embedding.tensors) == set(seg.proposer.settings.decoder_state)
    pixels, _ = prepare_input(image, seg.proposer.settings)
    encoded = seg.backend.run("prop_encoder", {"image": pixels})
    points = np.array([[[10, 20], [90, 50]], [[140, 90], [0, 0]]], dtype=np.float32)
    labels = np.array([[1, 0], [1, -1]])
    logits, iou = seg.proposer.decode(embedding, points, labels)
    want_logits, want_iou = transformers_decoder(
        models[family], {k: torch.from_numpy(v) for k, v in
                         zip(seg.proposer.settings.embeddings, encoded, strict=True)},
        torch.from_numpy(embedding.frame.to_input(points)), torch.from_numpy(labels))
    assert np.abs(logits).max() > 1
    scale = np.abs(want_logits.numpy()).max()
    np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-4 * scale)
    np.testing.assert_allclose(iou, want_iou.numpy(), atol=1e-4)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 0.97, 1.0])
def test_box_nms_equals_reference(threshold) -> None:
    """Many overlaps, zero-area boxes and exactly tied scores."""
    from zsris_rt.export.reference_amg import box_nms as reference_nms
    from zsris_rt.proposer.box_nms import box_nms

    rng = np.random.default_rng(int(threshold * 100))
    for _ in range(5):
        corner = rng.integers(0, 50, (300, 2))
        boxes = np.concatenate([corner, corner + rng.integers(0, 20, (300, 2))], axis=1)
        scores = (rng.integers(0, 20, 300) / 20).astype(np.float32)
        want = reference_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
        np.testing.assert_array_equal(box_nms(boxes, scores, threshold), want.numpy())


def test_without_preload_graphs_load_when_first_run(proposer_packs, segmenters) -> None:
    """`preload=False` (the one-shot main command): one small graph loads up front, the
    proposer's graphs load for the proposer and CLIP's only after it; the answers are the same."""
    lazy = Segmenter.from_pack(proposer_packs["sam2"], preload=False)
    assert set(lazy.backend._sessions) == {"prop_decoder"}  # the backend's start-up check
    image, _ = random_scene(np.random.default_rng(31), 70, 90, 1)
    proposals = lazy.propose(image, **FILTERED)
    assert set(lazy.backend._sessions) == {"prop_encoder", "prop_decoder_image", "prop_decoder"}
    got = lazy.segment(image, "a red circle", **FILTERED)
    assert {"clip_trunk", "clip_text"} <= set(lazy.backend._sessions)
    want = segmenters["sam2"].segment(image, "a red circle", **FILTERED)
    assert_same_proposals(proposals, segmenters["sam2"].propose(image, **FILTERED))
    assert got.index == want.index
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
