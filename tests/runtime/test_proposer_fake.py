"""zsris_rt.proposer (generator, modes) and the segmenter's proposer path on a fake backend: the
encoder once per image (cached by content), the decoder in chunks of points_per_batch prompts
with the release flag on the walk's last call, segment-anything's filters and box NMS, the fast
mode's subset of prompts. The scenes are boxes; where each grid point falls is worked out here
from the grid's definition (cell centres, x fastest)."""

from __future__ import annotations

import numpy as np
import pytest

import zsris_rt.proposer.generator as generator_module
import zsris_rt.segmenter as segmenter_module
from zsris_rt.errors import NoMaskError, ZsrisError
from zsris_rt.maskops import mask_iou
from zsris_rt.proposer import Proposer, generator_options, point_grid, proposer_mode
from zsris_rt.proposer.modes import FAST, grid_levels
from zsris_rt.segmenter import Segmenter

from .fake_backend import ClipWorld, FakeBackend, ProposerWorld, fake_pack, proposer_settings

SIZE = 64
BOXES = [(4, 4, 28, 28), (36, 8, 60, 24), (8, 40, 24, 60)]
IOUS = [0.95, 0.93, 0.91]


def box_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def first_grid_point(box, side: int) -> tuple[float, float]:
    """The first point of the n×n grid (cell centres, x fastest) inside the box."""
    centres = (np.arange(side) + 0.5) * SIZE / side
    x0, y0, x1, y1 = box
    y = next(c for c in centres if y0 <= c < y1)
    x = next(c for c in centres if x0 <= c < x1)
    return x, y


def setup(demo_pack, boxes=BOXES, ious=IOUS, limits=None, **settings):
    proposer = proposer_settings(**settings)
    pack = fake_pack(demo_pack, proposer=proposer)
    world = ProposerWorld(proposer, SIZE, list(boxes), list(ious))
    clip = ClipWorld(pack.clip, np.ones((49, 4), np.float32), np.ones((49, 4), np.float32),
                     lambda ids: np.ones(4))
    handlers = {**world.handlers(), "clip_trunk": _tokens(pack), "clip_masked_head": _features,
                "clip_text": clip.text_tower}
    backend = FakeBackend(handlers, limits)
    return Segmenter(pack, backend), backend


def _tokens(pack):
    def trunk(inputs):
        return [np.zeros((len(inputs["image"]), pack.clip.tokens, pack.clip.width), np.float32)]
    return trunk


def _features(inputs):
    return [np.ones((len(inputs["grid_masks"]), 4), np.float32)]


def scene_image() -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), 200, dtype=np.uint8)
    for j, box in enumerate(BOXES):
        image[box_mask(box)] = (50 * j, 100, 30)
    return image


def test_exact_finds_each_box_once_from_its_first_grid_point(demo_pack):
    seg, backend = setup(demo_pack)
    proposals = seg.propose(scene_image())
    assert len(proposals) == 3 and proposals.prompts == proposals.grid_points == 16
    for j, box in enumerate(BOXES):  # best predicted IoU first
        assert mask_iou(proposals.masks[j:j + 1], box_mask(box)[None])[0, 0] > 0.9
        assert tuple(proposals.points[j]) == first_grid_point(box, 4)
    np.testing.assert_allclose(proposals.iou, IOUS, rtol=1e-6)
    # Logits ±10 move by 5 a pixel across an edge: ±1 around 0 shifts only edge pixels.
    assert np.all((proposals.stability > 0.95) & (proposals.stability <= 1.0))
    assert proposals.mode["name"] == "exact"
    assert backend.graphs() == ["prop_encoder", "prop_decoder"]
    encoder, decoder = backend.calls
    assert encoder.shapes["image"] == (1, 3, 64, 64) and encoder.release
    assert decoder.shapes["points"] == (16, 1, 2) and decoder.shapes["labels"] == (16, 1)
    assert decoder.dtypes["labels"] == "int64" and decoder.release


def test_decoder_chunks_of_points_per_batch_release_on_the_last(demo_pack):
    seg, backend = setup(demo_pack, points_per_batch=5)
    seg.propose(scene_image())
    decoder = backend.calls_to("prop_decoder")
    assert [c.rows("points") for c in decoder] == [5, 5, 5, 1]
    assert [c.release for c in decoder] == [False, False, False, True]
    points = np.concatenate([i["points"][:, 0] for i in backend.inputs_to("prop_decoder")])
    np.testing.assert_allclose(points, point_grid(4) * SIZE)  # input frame = image here


def test_calls_are_cut_to_the_memory_budget_and_to_the_backend_limit(demo_pack, monkeypatch):
    seg, backend = setup(demo_pack, points_per_batch=16, limits={"prop_decoder": 3})
    monkeypatch.setattr(generator_module, "DECODER_CALL_BYTES", 1)  # one prompt per call
    seg.propose(scene_image())
    decoder = backend.calls_to("prop_decoder")
    assert [c.rows("points") for c in decoder] == [1] * 16
    assert [c.release for c in decoder] == [False] * 15 + [True]


def test_decoder_per_image_half_runs_once(demo_pack):
    seg, backend = setup(demo_pack, decoder_state=True)
    assert backend.prepared[-3:] == ["prop_encoder", "prop_decoder_image", "prop_decoder"]
    proposals = seg.propose(scene_image())
    assert len(proposals) == 3
    assert backend.graphs() == ["prop_encoder", "prop_decoder_image", "prop_decoder"]
    assert set(backend.calls[1].shapes) == {"image_embeddings"} and backend.calls[1].release
    assert {"dec_a", "dec_b"} <= set(backend.calls[2].shapes)
    assert "image_embeddings" not in backend.calls[2].shapes


def test_encoder_runs_once_per_image_content(demo_pack):
    seg, backend = setup(demo_pack)
    images = [scene_image()]
    for value in (1, 2):
        other = scene_image()
        other[0, 0] = value
        images.append(other)
    seg.propose(images[0])
    seg.propose(images[0].copy(), pred_iou_thresh=0.5)  # same content, other options
    seg.propose(images[0], mode="fast")
    assert len(backend.calls_to("prop_encoder")) == 1
    for image in images[1:]:
        seg.propose(image)
    seg.propose(images[0])  # the cache keeps the last two images: this one was evicted
    assert len(backend.calls_to("prop_encoder")) == 4


def test_filters_max_masks_and_no_mask(demo_pack):
    seg, _ = setup(demo_pack)
    image = scene_image()
    assert len(seg.propose(image, pred_iou_thresh=0.94)) == 1
    assert len(seg.propose(image, max_masks=2)) == 2
    assert len(seg.propose(image, mask_nms_thresh=0.5)) == 3  # the boxes do not overlap
    empty = seg.propose(image, pred_iou_thresh=0.99)
    assert len(empty) == 0 and empty.masks.shape == (0, SIZE, SIZE)
    with pytest.raises(NoMaskError, match="kept no mask"):
        seg.encode_image(image, pred_iou_thresh=0.99)


def test_box_nms_drops_a_box_inside_a_better_one(demo_pack):
    # Box 1 holds box 0 (box IoU 0.75) and the grid points of row y = 28 besides; with the
    # better predicted IoU it suppresses box 0 at a threshold of 0.7, not at 0.9.
    boxes = [(4, 4, 28, 28), (4, 4, 28, 36)]
    seg, _ = setup(demo_pack, boxes=boxes, ious=[0.9, 0.95], points_per_side=8)
    assert len(seg.propose(scene_image())) == 1
    assert len(seg.propose(scene_image(), box_nms_thresh=0.9)) == 2


def test_fast_decodes_a_subset_of_the_grid_for_the_same_masks(demo_pack):
    seg, backend = setup(demo_pack, points_per_side=16)
    exact = seg.propose(scene_image(), mode="exact")
    backend.forget()
    fast = seg.propose(scene_image(), mode="fast")
    assert exact.prompts == 256 and fast.prompts < exact.prompts
    decoded = np.concatenate([i["points"][:, 0] for i in backend.inputs_to("prop_decoder")])
    grid = point_grid(16) * SIZE
    assert len(np.unique(decoded, axis=0)) == len(decoded) == fast.prompts
    assert all(np.any(np.all(np.isclose(grid, p), axis=1)) for p in decoded)
    assert fast.mode == FAST.describe()
    assert len(fast) == len(exact) == 3
    np.testing.assert_array_equal(mask_iou(fast.masks, exact.masks).max(axis=1) >= 0.99, True)


def test_scene_from_the_proposer(demo_pack):
    seg, backend = setup(demo_pack)
    scene = seg.encode_image(scene_image())
    assert backend.graphs()[:2] == ["prop_encoder", "prop_decoder"]
    assert backend.graphs()[2:] == ["clip_trunk", "clip_masked_head", "clip_trunk",
                                    "clip_masked_head"]
    assert scene.proposals is not None and scene.num_masks == 3
    np.testing.assert_array_equal(scene.masks, scene.proposals.masks)
    assert {"prop_encoder", "prop_decoder", "prop_filter", "prop_nms"} <= set(scene.timings)
    segmenter_module.Segmenter.clear_caches(seg)
    seg.encode_image(scene_image())
    assert len(backend.calls_to("prop_encoder")) == 2  # clear_caches forgets encodings too


@pytest.mark.parametrize("overrides, error", [
    ({"points_per_side": 0}, "points_per_side must be a positive integer"),
    ({"points_per_batch": 2.5}, "points_per_batch must be a positive integer"),
    ({"max_masks": 0}, "max_masks must be a positive integer or None"),
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh must be a finite number"),
    ({"box_nms_thresh": 1.5}, r"box_nms_thresh must lie in \[0, 1\]"),
    ({"mask_nms_thresh": -1.0}, r"mask_nms_thresh must lie in \[0, 1\] or be None"),
])
def test_generator_options_are_checked(overrides, error):
    defaults = proposer_settings().generator
    with pytest.raises(ZsrisError, match=error):
        generator_options(defaults, overrides)


def test_unknown_generator_option_is_a_type_error():
    with pytest.raises(TypeError, match="unknown proposer option"):
        generator_options(proposer_settings().generator, {"points_per_sid": 4})


def test_point_grid_and_levels():
    grid = point_grid(2)
    np.testing.assert_allclose(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    for side in (4, 16, 32):
        levels = grid_levels(side, coarse_to_fine=True)
        together = np.concatenate(levels)
        assert sorted(together.tolist()) == list(range(side * side))  # each point once
        assert len(levels[0]) >= 16 or len(levels) == 1  # the coarsest has ≥ 4 points a side
    assert [len(level) for level in grid_levels(32, True)] == [16, 48, 192, 768]
    assert len(grid_levels(32, False)) == 1
    assert proposer_mode("exact").name == "exact" and proposer_mode(FAST) is FAST


def test_proposer_prepares_its_graphs():
    settings = proposer_settings(decoder_state=True)
    backend = FakeBackend({g: _features for g in ("prop_encoder", "prop_decoder_image",
                                                   "prop_decoder")})
    Proposer(settings, backend).prepare()
    assert backend.prepared == ["prop_encoder", "prop_decoder_image", "prop_decoder"]
