"""zsris_rt.segmenter on a fake backend: which graphs run, how often, on what shapes, chunked how;
the text cache; global-first pruning (`local_top`, `local_bound`); the errors. Expectations come
from the design (one engine call per stage, chunks of at most max_batch rows, the release flag on
a batch's last call) and from SPEC's formula recomputed here, never from the code under test."""

from __future__ import annotations

import numpy as np
import pytest

import zsris_rt.segmenter as segmenter_module
from zsris_rt.errors import MaskError, TextError, ZsrisError
from zsris_rt.segmenter import Segmenter

from .fake_backend import ClipWorld, FakeBackend, cell_masks, cell_scene, fake_pack

E = 4
RNG = np.random.default_rng(7)


def spec_scores(g: np.ndarray, local: np.ndarray, t_s: np.ndarray, t_np: np.ndarray,
                alpha: float, beta: float) -> np.ndarray:
    """SPEC §4–6 written out: 100·cos(α f^G + (1−α) f^L, β t(s') + (1−β) t(NP))."""
    f = alpha * g.astype(np.float64) + (1 - alpha) * local
    t = beta * t_s.astype(np.float64) + (1 - beta) * t_np
    return 100 * (f @ t) / (np.linalg.norm(f, axis=1) * np.linalg.norm(t))


def world(demo_pack, global_rows=None, local_rows=None, text=None, **pack_options):
    pack = fake_pack(demo_pack, **pack_options)
    g = RNG.standard_normal((49, E)) if global_rows is None else global_rows
    loc = RNG.standard_normal((49, E)) if local_rows is None else local_rows
    clip = ClipWorld(pack.clip, np.asarray(g, np.float32), np.asarray(loc, np.float32),
                     text or (lambda ids: np.eye(E)[0]))
    return pack, clip


def make(demo_pack, limits=None, failures=None, segmenter_options=None, **world_options):
    pack, clip = world(demo_pack, **world_options)
    backend = FakeBackend(clip.handlers(), limits, failures)
    return Segmenter(pack, backend, **(segmenter_options or {})), backend, clip


def test_one_engine_call_per_stage_and_features_routed_to_their_masks(demo_pack):
    seg, backend, clip = make(demo_pack)
    assert sorted(backend.prepared) == ["clip_masked_head", "clip_text", "clip_trunk"]
    cells = [3, 10, 11, 24, 30, 41, 42, 45, 47, 48]
    backend.forget()
    scene = seg.encode_image(cell_scene(), cell_masks(cells))
    assert backend.graphs() == ["clip_trunk", "clip_masked_head",  # f^G: the image, then K grids
                                "clip_trunk", "clip_masked_head"]  # f^L: K crops, K ones-grids
    trunk, head, crops, crop_head = backend.calls
    assert trunk.shapes["image"] == (1, 3, 224, 224)
    assert head.shapes == {"tokens": (1, 50, 64), "grid_masks": (10, 7, 7)}
    assert crops.shapes["image"] == (10, 3, 224, 224)
    assert crop_head.shapes == {"tokens": (10, 50, 64), "grid_masks": (10, 7, 7)}
    assert all(c.release for c in backend.calls)  # each ends its stage's work for this image
    np.testing.assert_array_equal(scene.global_features, clip.global_features[cells])
    np.testing.assert_array_equal(scene.local_features, clip.local_features[cells])
    assert {"decode", "preprocess", "trunk", "mask_grid", "masked_head", "crops",
            "crop_encoder"} <= set(scene.timings)


def test_chunks_never_exceed_the_max_batch_and_only_the_last_releases(demo_pack):
    seg, backend, clip = make(demo_pack, limits={"clip_trunk": 4, "clip_masked_head": 4})
    cells = list(range(0, 40, 4))  # K = 10
    backend.forget()
    scene = seg.encode_image(cell_scene(), cell_masks(cells))
    heads = backend.calls_to("clip_masked_head")
    trunks = backend.calls_to("clip_trunk")
    global_heads = [c for c in heads if c.rows("tokens") == 1]
    crop_heads = [c for c in heads if c.rows("tokens") > 1]
    assert [c.rows("grid_masks") for c in global_heads] == [4, 4, 2]
    assert [c.release for c in global_heads] == [False, False, True]
    assert [c.rows("image") for c in trunks] == [1, 4, 4, 2]
    assert [c.release for c in trunks] == [True, False, False, True]
    assert [(c.rows("tokens"), c.rows("grid_masks")) for c in crop_heads] == [(4, 4), (4, 4),
                                                                                (2, 2)]
    assert [c.release for c in crop_heads] == [False, False, True]
    # Chunks concatenate back in mask order.
    np.testing.assert_array_equal(scene.global_features, clip.global_features[cells])
    np.testing.assert_array_equal(scene.local_features, clip.local_features[cells])


def test_text_is_encoded_once_per_expression(demo_pack):
    seg, backend, _ = make(demo_pack)
    scene = seg.encode_image(cell_scene(), cell_masks([0, 1, 2]))
    backend.forget()
    first = seg.query(scene, "the circle left of the star")
    seg.query(scene, "the circle left of the star")
    assert backend.graphs() == ["clip_text"]
    (call,) = backend.calls
    ids, end = backend.inputs[0]["ids"], backend.inputs[0]["end_index"]
    # s' and its noun phrase in one call, cut after the longest end token.
    assert first.sentence == "the circle left of the star" and first.noun_phrase == "the circle"
    assert call.shapes["ids"] == (2, int(end.max()) + 1) and call.dtypes["ids"] == "int64"
    s = demo_pack.clip
    assert list(ids[:, 0]) == [s.start_token] * 2
    assert [ids[b, e] for b, e in enumerate(end)] == [s.end_token] * 2
    assert ids[1, end[1] + 1:].tolist() == [s.pad_token] * (ids.shape[1] - end[1] - 1)
    backend.forget()
    seg.query(scene, "the red circle")  # its noun phrase is the sentence: one row
    assert [c.shapes["ids"][0] for c in backend.calls] == [1]


def test_text_cache_evicts_the_least_recently_used(demo_pack, monkeypatch):
    monkeypatch.setattr(segmenter_module, "TEXT_CACHE_SIZE", 2)
    seg, backend, _ = make(demo_pack)
    scene = seg.encode_image(cell_scene(), cell_masks([0, 1]))
    backend.forget()
    for text in ("red circle", "blue square", "red circle", "green star", "red circle",
                 "blue square"):
        seg.query(scene, text)
    # red, blue, (red cached), green evicts blue, (red cached), blue again.
    assert len(backend.calls_to("clip_text")) == 4
    seg.clear_caches()
    seg.query(scene, "red circle")
    assert len(backend.calls_to("clip_text")) == 5


def test_beta_weighs_sentence_against_noun_phrase(demo_pack):
    # t(s') = e0 for the sentence (8 tokens), t(NP) = e1 for "the circle" (4 tokens).
    def text(ids):
        return np.eye(E)[0] if len(ids) > 4 else np.eye(E)[1]

    rows = np.zeros((49, E))
    rows[0], rows[1] = np.eye(E)[0], np.eye(E)[1]
    seg, _, _ = make(demo_pack, global_rows=rows, local_rows=rows, text=text)
    scene = seg.encode_image(cell_scene(), cell_masks([0, 1]))
    assert seg.query(scene, "the circle left of the star", beta=1.0).index == 0
    assert seg.query(scene, "the circle left of the star", beta=0.0).index == 1
    result = seg.query(scene, "the circle left of the star", alpha=0.3, beta=0.8)
    np.testing.assert_allclose(result.scores, spec_scores(rows[[0, 1]], rows[[0, 1]],
                                                          np.eye(E)[0], np.eye(E)[1], 0.3, 0.8),
                               atol=1e-4)


def pruning_world():
    """Eight masks (cells 0..7), t = e0. By global score alone mask 0 wins; with f^L mask 2
    does; masks 4..7 point away from t so far that no f^L of norm ≤ 1 can save them."""
    g = np.zeros((49, E))
    g[:8] = [[1.0, 0.1, 0, 0], [0.9, 0.3, 0, 0], [0.8, 0.5, 0, 0], [0.7, 0.6, 0, 0],
             [-1, 1, 0, 0], [-1, 0, 1, 0], [-1, 0, 0, 1], [-1, -1, 0, 0]]
    local = np.zeros((49, E))
    local[:8] = [[-1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0],
                 [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    return g, local


@pytest.fixture
def pruned(demo_pack):
    g, local = pruning_world()
    expected = spec_scores(g[:8], local[:8], np.eye(E)[0], np.eye(E)[0], 0.5, 0.5)
    assert np.argmax(expected) == 2 and np.argmax(g[:8, 0] / np.linalg.norm(g[:8], axis=1)) == 0

    def build(**options):
        return make(demo_pack, global_rows=g, local_rows=local, local_norm_bound=1.0,
                    segmenter_options=options)
    return build, expected


def crop_rows(backend: FakeBackend) -> int:
    """Crops encoded: rows of the trunk calls after the scene's."""
    return sum(c.rows("image") for c in backend.calls_to("clip_trunk")[1:])


def test_exact_scores_every_mask(pruned):
    build, expected = pruned
    seg, backend, _ = build()
    result = seg.segment(cell_scene(), "the circle", cell_masks(range(8)))
    assert result.index == 2 and result.local_computed == 8
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)
    assert crop_rows(backend) == 8


def test_local_top_scores_only_the_best_by_global_score(pruned):
    build, expected = pruned
    seg, backend, _ = build(local_top=3)
    scene = seg.encode_image(cell_scene(), cell_masks(range(8)))
    assert crop_rows(backend) == 0  # deferred to the queries
    result = seg.query(scene, "the circle")
    assert result.local_computed == 3 and crop_rows(backend) == 3
    assert list(np.flatnonzero(np.isfinite(result.scores))) == [0, 1, 2]
    np.testing.assert_allclose(result.scores[:3], expected[:3], atol=1e-4)
    assert result.index == 2
    top1 = seg.query(scene, "the circle", local_top=1)
    assert top1.index == 0 and top1.local_computed == 1  # approximate: the global winner
    # The three rows stay in the scene: scoring all encodes only the other five.
    full = seg.query(scene, "the circle", local_top=None)
    assert crop_rows(backend) == 8 and full.index == 2


def test_local_bound_is_exact_and_prunes_what_cannot_win(pruned):
    build, expected = pruned
    seg, backend, _ = build(local_bound=True)
    result = seg.segment(cell_scene(), "the circle", cell_masks(range(8)))
    assert result.index == int(np.argmax(expected))
    assert result.local_computed == 4  # one round of 4; masks 4..7 are bounded below mask 2
    assert crop_rows(backend) == 4
    assert not np.isfinite(result.scores[4:]).any()


def test_local_bound_scores_all_when_a_row_breaks_the_bound(demo_pack):
    g, local = pruning_world()
    local[1] *= 3.0  # norm 3 > the pack's bound of 1
    seg, backend, _ = make(demo_pack, global_rows=g, local_rows=local, local_norm_bound=1.0,
                           segmenter_options={"local_bound": True})
    result = seg.segment(cell_scene(), "the circle", cell_masks(range(8)))
    assert result.local_computed == 8 and np.isfinite(result.scores).all()
    expected = spec_scores(g[:8], local[:8], np.eye(E)[0], np.eye(E)[0], 0.5, 0.5)
    assert result.index == int(np.argmax(expected))


@pytest.mark.parametrize("options, message", [
    ({"local_top": 0}, "local_top must be a positive integer"),
    ({"local_top": True}, "local_top must be a positive integer"),
    ({"local_bound": True}, "local_bound needs the pack's clip.local_norm_bound"),
    ({"local_bound": 1}, "local_bound must be True or False"),
    ({"alpha": 1.5}, "alpha must lie in [0, 1]"),
    ({"beta": -0.1}, "beta must lie in [0, 1]"),
    ({"proposer_mode": "slow"}, "proposer mode must be one of exact, fast"),
])
def test_bad_options_are_refused(demo_pack, options, message):
    pack, clip = world(demo_pack)
    with pytest.raises(ZsrisError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Segmenter(pack, FakeBackend(clip.handlers()), **options)


def test_bad_input_is_refused_before_any_graph_runs(demo_pack):
    seg, backend, _ = make(demo_pack)
    backend.forget()
    image, masks = cell_scene(), cell_masks([0, 1])
    with pytest.raises(TextError, match="empty"):
        seg.segment(image, "   ", masks)
    with pytest.raises(MaskError, match="are 224×200"):
        seg.encode_image(image, masks[:, :, :200])
    empty = masks.copy()
    empty[1] = False
    with pytest.raises(MaskError, match="mask 1 is empty"):
        seg.encode_image(image, empty)
    with pytest.raises(MaskError, match="has no proposer"):
        seg.encode_image(image)
    with pytest.raises(TypeError, match="only when no masks"):
        seg.encode_image(image, masks, points_per_side=4)
    assert backend.calls == []


def test_a_failing_graph_surfaces_its_error(demo_pack):
    seg, _, _ = make(demo_pack, failures={"clip_text": ZsrisError("the text tower is gone")})
    scene = seg.encode_image(cell_scene(), cell_masks([0]))
    with pytest.raises(ZsrisError, match="the text tower is gone"):
        seg.query(scene, "the circle")


def test_result_geometry_of_a_cell(demo_pack):
    rows = np.zeros((49, E))
    rows[:, 1] = 1
    rows[17] = np.eye(E)[0]  # cell 17: row 2, column 3
    seg, _, _ = make(demo_pack, global_rows=rows, local_rows=rows)
    result = seg.segment(cell_scene(), "a square", cell_masks([5, 17, 30]))
    assert result.index == 1
    assert result.box == (96, 64, 128, 96)
    geometry = result.geometry
    assert geometry.area == 32 * 32 and geometry.centroid == (111.5, 79.5)
    assert {"text", "score"} <= set(result.timings)


def test_preload_false_loads_one_small_graph(demo_pack):
    pack, clip = world(demo_pack)
    backend = FakeBackend(clip.handlers())
    Segmenter(pack, backend, preload=False)
    assert backend.prepared == ["clip_text"]
