"""The runtime's arithmetic and glue: zsris_rt.scoring, local_features, local_pruning, results,
text, tokenizer, calibration, agreement, diagnosis, errors and the package itself, against
SPEC's formulas written out here, properties (the pruning bound really bounds), and independent
sources (pyproject.toml for the version and dependency list)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zsris_rt
from zsris_rt import errors
from zsris_rt.agreement import compare_graphs, matched_masks, synthetic_queries
from zsris_rt.calibration import RecordingBackend, fixed_masks, list_images
from zsris_rt.diagnosis import runtime_packages
from zsris_rt.local_features import LocalFeatures
from zsris_rt.local_pruning import choose, global_order, score_upper_bounds, validate_local_top
from zsris_rt.results import Scene
from zsris_rt.scoring import cosines, fuse_and_score, text_target
from zsris_rt.text import DEFAULT_SPACY_MODEL, ExpressionParser, load_spacy
from zsris_rt.tokenizer import ClipTokenizer, clean

from .conftest import EXAMPLES, ROOT
from .fake_backend import FakeBackend

PYPROJECT = (ROOT / "pyproject.toml").read_text()  # read as text: tomllib needs Python 3.11


def pyproject_version() -> str:
    return re.search(r'^version = "([^"]+)"', PYPROJECT, re.M).group(1)


def pyproject_dependencies() -> list[str]:
    block = re.search(r"^dependencies = \[(.*?)^\]", PYPROJECT, re.M | re.S).group(1)
    return re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block, re.M)


def test_scoring_is_specs_formula():
    g = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    local = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    t_s, t_np = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    t = text_target(t_s, t_np, 0.25)
    np.testing.assert_allclose(t, [0.25, 0.75])
    scores = fuse_and_score(g, local, t_s, t_np, 0.5, 0.25)
    # f0 = (0.5, 0.5): cos with (0.25, 0.75) = 0.5 / (0.7071 · 0.7906); f2 = 0 scores 0.
    expected0 = 100 * 0.5 / (np.sqrt(0.5) * np.sqrt(0.625))
    np.testing.assert_allclose(scores, [expected0, 100 * 0.75 * 1.5 / (1.5 * np.sqrt(0.625)),
                                        0.0], rtol=1e-6)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(cosines(np.zeros((2, 3)), np.ones(3)), 0.0)


def test_local_features_encode_only_what_is_missing():
    asked = []

    def encoder(indices, timings):
        asked.append(indices.tolist())
        timings["crops"] = timings.get("crops", 0) + 1
        return np.stack([np.full(3, i, dtype=np.float32) for i in indices])

    local = LocalFeatures(5, encoder)
    timings: dict[str, float] = {}
    assert local.ensure(np.array([3, 1]), timings) == 2
    assert local.ensure(np.array([1, 3, 4]), timings) == 1
    assert asked == [[3, 1], [4]] and timings == {"crops": 2}
    np.testing.assert_array_equal(local.rows()[:, 0], [0, 1, 0, 3, 4])
    assert local.computed.tolist() == [False, True, False, True, True] and not local.complete
    local.ensure(np.arange(5), timings)
    assert local.complete and local.ensure(np.arange(5), timings) == 0
    with pytest.raises(ValueError, match="either the rows or an encoder"):
        LocalFeatures(2)
    with pytest.raises(ValueError, match="no f\\^L row"):
        LocalFeatures(2, encoder).rows()


def test_scene_computes_its_local_features_on_first_need():
    calls = []

    def encoder(indices, timings):
        calls.append(len(indices))
        return np.ones((len(indices), 2), dtype=np.float32)

    masks = np.ones((3, 2, 2), dtype=bool)
    scene = Scene((2, 2), masks, np.zeros((3, 4), np.int64), np.zeros((3, 2), np.float32),
                  LocalFeatures(3, encoder))
    assert calls == [] and scene.num_masks == 3
    assert scene.local_features.shape == (3, 2) and calls == [3]
    assert scene.local_features.shape == (3, 2) and calls == [3]  # kept, not encoded again


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.95), st.floats(0.1, 5.0))
def test_the_pruning_bound_bounds_every_local_feature_within_the_radius(seed, alpha, radius):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((6, 5))
    t = rng.standard_normal(5)
    bounds = score_upper_bounds(g, t, alpha, radius)
    for _ in range(20):
        local = rng.standard_normal((6, 5))
        local *= rng.uniform(0, radius, (6, 1)) / np.linalg.norm(local, axis=1, keepdims=True)
        f = alpha * g + (1 - alpha) * local
        scores = 100 * f @ t / (np.linalg.norm(f, axis=1) * np.linalg.norm(t))
        assert np.all(scores <= bounds + 1e-9)


def test_the_dot_rule_is_spec_7s_formula():
    """ResNet packs (§7): f^L and the text features arrive unit-length from their graphs; the
    score is 100·(α f^G + (1−α) f^L)·(β t(s') + (1−β) t(NP)), with no normalisation after."""
    g = np.array([[3.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    local = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    t_s, t_np = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    scores = fuse_and_score(g, local, t_s, t_np, 0.5, 0.25, rule="dot")
    # f0 = (1.5, 0.5), f1 = (0.5, 1.0); t = (0.25, 0.75)
    np.testing.assert_allclose(scores, [100 * (0.375 + 0.375), 100 * (0.125 + 0.75)], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown score rule"):
        fuse_and_score(g, local, t_s, t_np, 0.5, 0.25, rule="l1")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.95))
def test_the_dot_rule_bound_bounds_every_unit_local_feature_and_is_tight(seed, alpha):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((6, 5)) * rng.uniform(0.1, 10)
    t = rng.standard_normal(5)
    bounds = score_upper_bounds(g, t, alpha, 1.0, rule="dot")
    for _ in range(20):
        local = rng.standard_normal((6, 5))
        local /= np.linalg.norm(local, axis=1, keepdims=True)
        assert np.all(100 * (alpha * g + (1 - alpha) * local) @ t <= bounds)
    best = 100 * (alpha * g + (1 - alpha) * t / np.linalg.norm(t)) @ t  # f^L along t
    assert np.all(bounds >= best)
    scale = 100 * (np.abs(alpha * g @ t) + np.linalg.norm(t))
    assert np.all(bounds - best <= 1e-5 * scale)  # tight up to the float slack


def test_exact_pruning_under_the_dot_rule_prunes_and_keeps_the_answer():
    """Masks whose global score is far behind cannot catch up with a unit f^L: they are never
    encoded, and the choice is the one scoring every mask gives."""
    rng = np.random.default_rng(3)
    t_s, t_np = rng.standard_normal(8), rng.standard_normal(8)
    t_s, t_np = t_s / np.linalg.norm(t_s), t_np / np.linalg.norm(t_np)
    t = text_target(t_s, t_np, 0.5)
    g = np.outer(np.linspace(3.0, -3.0, 10), t) + 0.05 * rng.standard_normal((10, 8))
    rows = rng.standard_normal((10, 8))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)

    def encoder(indices, timings):
        return rows[indices].astype(np.float32)

    everything = choose(g.astype(np.float32), LocalFeatures(10, encoder), t_s, t_np, 0.9, 0.5,
                        None, None, {}, "dot")
    pruned = choose(g.astype(np.float32), LocalFeatures(10, encoder), t_s, t_np, 0.9, 0.5, 2,
                    1.0, {}, "dot")
    assert pruned.index == everything.index
    assert pruned.scores[pruned.index] == everything.scores[everything.index]
    assert pruned.local_computed < 10


def test_global_order_and_local_top_validation():
    g = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    assert global_order(g, np.array([1.0, 0.0])).tolist() == [1, 3, 2, 0]  # ties: lower first
    # under the dot rule the longer feature ranks first: [1, 1] beats [1, 0]
    assert global_order(g, np.array([1.0, 1.0]), "dot").tolist() == [2, 0, 1, 3]
    assert validate_local_top(None) is None and validate_local_top(np.int64(3)) == 3
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(errors.ZsrisError):
            validate_local_top(bad)


def test_expression_parsing_is_the_official_rule():
    parser = ExpressionParser(DEFAULT_SPACY_MODEL)
    cases = {"The  Big   RED circle!": ("the big red circle !", "the big red circle"),
             "the circle left of the star": ("the circle left of the star", "the circle"),
             "the second triangle from the right": ("the second triangle from the right",
                                                    "the second triangle")}
    for text, (sentence, phrase) in cases.items():
        parsed = parser.parse(text)
        assert (parsed.sentence, parsed.noun_phrase) == (sentence, phrase)
    for empty in ("", "   ", None):
        with pytest.raises(errors.TextError, match="empty"):
            parser.parse(empty)
    with pytest.raises(errors.TextError, match="is not installed"):
        load_spacy("no_such_spacy_pipeline")


def test_tokenizer_cleans_cuts_and_marks(demo_pack):
    s = demo_pack.clip
    tok = ClipTokenizer(demo_pack.path("tokenizer.json"), s.context_length, s.start_token,
                        s.end_token, s.pad_token)
    assert clean("  a&amp;amp;b \n c ") == "a&b c"
    batch = tok.encode(["the red circle", "THE RED CIRCLE", "red " * 200])
    assert batch.ids.shape == (3, 77) and batch.ids.dtype == np.int64
    np.testing.assert_array_equal(batch.ids[0], batch.ids[1])  # lower-cased first
    assert batch.truncated == [False, False, True]
    assert batch.end_index.tolist()[2] == 76 and batch.ids[2, 76] == s.end_token
    e = int(batch.end_index[0])
    assert batch.ids[0, 0] == s.start_token and batch.ids[0, e] == s.end_token
    assert (batch.ids[0, e + 1:] == s.pad_token).all() and e == 4  # start, 3 words, end


def test_calibration_images_and_fixed_masks(tmp_path):
    assert [p.name for p in list_images([EXAMPLES])] == ["scene-1.png", "scene-2.png",
                                                         "scene-3.png"]
    assert len(list_images([str(EXAMPLES / "scene-*.png"), EXAMPLES / "scene-1.png"])) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.ImageError, match="holds no image files"):
        list_images([tmp_path / "empty"])
    (tmp_path / "bad.png").write_bytes(b"x")
    with pytest.raises(errors.ImageError, match="not a readable image"):
        list_images([tmp_path / "bad.png"])
    masks = fixed_masks(30, 40)
    # The whole image, 4 halves, 2 quarters, 5 of the 3×3 boxes, 3 ellipses (its docstring
    # says 17; it makes 15).
    assert masks.shape == (15, 30, 40) and masks[0].all() and masks.any(axis=(1, 2)).all()
    assert len({m.tobytes() for m in masks}) == 15


def test_recording_backend_samples_single_rows(demo_pack):
    inner = FakeBackend({"clip_masked_head": lambda i: [np.zeros((len(i["grid_masks"]), 4))]})
    recorder = RecordingBackend(inner, demo_pack, per_graph=6)
    tokens = np.zeros((1, 50, 64), dtype=np.float32)
    for k in (4, 5):
        grids = np.arange(k * 49, dtype=np.float32).reshape(k, 7, 7)
        recorder.run("clip_masked_head", {"tokens": tokens, "grid_masks": grids})
    entries = recorder.samples["clip_masked_head"].entries
    assert len(entries) == 6 and recorder.samples["clip_masked_head"].seen == 9
    for entry in entries:  # one grid each, the image's tokens whole beside it
        assert entry["grid_masks"].shape == (1, 7, 7) and entry["tokens"].shape == (1, 50, 64)
    assert len(inner.calls) == 2 and recorder.name == "fake"


def test_matched_masks_and_graph_comparison():
    a = np.zeros((3, 4, 4), dtype=bool)
    a[0, :2] = True
    a[1, 2:] = True
    a[2, :, :1] = True
    b = a[[1, 0]].copy()
    b[1, 0, 0] = False  # IoU 7/8 with a[0]: below 0.9
    assert matched_masks(a, b) == 1 and matched_masks(a, b, 0.8) == 2
    assert matched_masks(a, a[:0]) == 0

    def handler(scale):
        return {"g": lambda inputs: [inputs["x"] * scale]}

    reference = FakeBackend(handler(1.0))
    candidate = FakeBackend(handler(1.01))
    inputs = {"g": [{"x": np.array([[3.0, 4.0]])}, {"x": np.array([[0.0, 10.0]])}]}
    report = compare_graphs(candidate, reference, inputs)["g"]
    assert report["calls"] == 2
    (output,) = report["outputs"]
    assert output["max_abs_diff"] == pytest.approx(0.1)
    assert output["max_rel_diff"] == pytest.approx(0.01)
    assert output["min_cosine"] == pytest.approx(1.0)


def test_synthetic_queries_are_the_demo_world():
    queries = synthetic_queries(count=2, seed=1)
    assert len(queries) == 2
    for q in queries:
        assert q.image.shape == (240, 320, 3) and 1 <= len(q.texts) <= 4
        assert all(t.startswith("the ") or len(t.split()) == 2 for t in q.texts)


def test_runtime_packages_are_pyprojects_dependencies():
    names = pyproject_dependencies()
    assert len(names) >= 5 and list(runtime_packages()) == names
    assert not any(n.startswith("torch") for n in names)


def test_the_package_version_and_exports():
    assert zsris_rt.__version__ == pyproject_version()
    for name in zsris_rt.__all__:
        assert hasattr(zsris_rt, name)
    for error in (errors.ImageError, errors.MaskError, errors.TextError, errors.PackError,
                  errors.NoMaskError):
        assert issubclass(error, errors.ZsrisError)
