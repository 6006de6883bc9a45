"""Global-first pruning of f^L (runtime/local_pruning.py) and the norm bound behind its exact
variant (export/local_bound.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import random_scene
from zsris_rt import Segmenter
from zsris_rt.backends import Backend
from zsris_rt.errors import ZsrisError
from zsris_rt.image import read_image
from zsris_rt.pack import Pack, load_pack

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "engines" / "demo"
EXAMPLES = ROOT / "examples"
TEXTS = ("a red circle", "the big square on the left", "green star", "the small thing",
         "a blue triangle")


class CountingBackend(Backend):
    """Passes every call on, recording the rows each crop-encoder call was given: the masked
    head on crops' tokens, one all-ones grid each (the global call has one image's tokens under
    K ≥ 2 masks in these tests)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.image_rows: list[int] = []

    def run(self, graph: str, inputs: dict[str, np.ndarray], *,
            release: bool = False) -> list[np.ndarray]:
        if graph == "clip_masked_head" and \
                len(inputs["tokens"]) == len(inputs["grid_masks"]) and \
                bool(np.all(inputs["grid_masks"] == 1)):
            self.image_rows.append(int(inputs["tokens"].shape[0]))
        return self.inner.run(graph, inputs, release=release)

    def prepare(self, graph: str) -> None:
        self.inner.prepare(graph)

    def max_batch(self, graph: str) -> int | None:
        return self.inner.max_batch(graph)


def with_bound(pack: Pack, bound: float | None) -> Pack:
    clip = dataclasses.replace(pack.clip, local_norm_bound=bound)
    return dataclasses.replace(pack, manifest=dataclasses.replace(pack.manifest, clip=clip))


@pytest.fixture(scope="module")
def tiny(pack_dir: Path) -> Segmenter:
    """The tiny pack with its true bound, counting crop-encoder rows; eager (no pruning)."""
    from zsris_rt.export.local_bound import local_norm_bound

    exact = Segmenter.from_pack(pack_dir, threads=1)
    pack = with_bound(exact.pack, local_norm_bound(pack_dir))
    return Segmenter(pack, CountingBackend(exact.backend), spacy_model=exact.spacy_model)


def scenes(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, int(rng.integers(40, 90)), int(rng.integers(40, 90)),
                         int(rng.integers(2, 14))) for _ in range(count)]


def global_scores(seg: Segmenter, scene, text: str, beta: float) -> np.ndarray:
    """100·cos(f^G, β t(s') + (1−β) t(NP)), written here independently of the runtime."""
    _, ts, tp, _ = seg.encode_text(text)
    t = beta * ts.astype(np.float64) + (1 - beta) * tp.astype(np.float64)
    g = scene.global_features.astype(np.float64)
    return 100 * g @ t / (np.linalg.norm(g, axis=1) * np.linalg.norm(t))


def test_eager_by_default_and_m_at_least_k_is_exact(tiny: Segmenter) -> None:
    for image, masks in scenes(4, seed=10):
        k = len(masks)
        tiny.backend.image_rows.clear()
        scene = tiny.encode_image(image, masks)
        assert tiny.backend.image_rows == [k]  # every f^L at encode time, as before
        assert "crop_encoder" in scene.timings
        for text in TEXTS[:3]:
            exact = tiny.query(scene, text)
            assert exact.local_computed == k and np.isfinite(exact.scores).all()
            for top in (k, k + 5):
                pruned = tiny.query(scene, text, local_top=top)
                np.testing.assert_array_equal(pruned.scores, exact.scores)
                assert pruned.index == exact.index and pruned.local_computed == k


def test_top_m_encodes_and_scores_exactly_the_m_best_by_global_score(
        tiny: Segmenter, pack_dir: Path) -> None:
    lazy = Segmenter(tiny.pack, tiny.backend, local_top=3, spacy_model=tiny.spacy_model)
    for image, masks in scenes(5, seed=11):
        k = len(masks)
        exact = tiny.query(tiny.encode_image(image, masks), TEXTS[0])
        tiny.backend.image_rows.clear()
        scene = lazy.encode_image(image, masks)
        assert tiny.backend.image_rows == [] and "crop_encoder" not in scene.timings
        result = lazy.query(scene, TEXTS[0])
        m = min(3, k)
        assert tiny.backend.image_rows == [m] and result.local_computed == m
        top = np.argsort(-global_scores(tiny, scene, TEXTS[0], lazy.beta), kind="stable")[:m]
        assert set(np.flatnonzero(result.scored)) == set(top)
        assert np.all(result.scores[~result.scored] == -np.inf)
        np.testing.assert_allclose(result.scores[top], exact.scores[top], rtol=1e-5, atol=1e-4)
        assert result.index == top[np.argmax(exact.scores[top])]
        assert np.argmax(result.scores) == result.index and result.scored[result.index]
        assert "crops" in result.timings and "crop_encoder" in result.timings


def test_local_features_are_cached_across_queries(tiny: Segmenter) -> None:
    lazy = Segmenter(tiny.pack, tiny.backend, local_top=2, spacy_model=tiny.spacy_model)
    image, masks = random_scene(np.random.default_rng(12), 60, 70, 8)
    k = len(masks)
    tiny.backend.image_rows.clear()
    scene = lazy.encode_image(image, masks)
    first = lazy.query(scene, TEXTS[1])
    again = lazy.query(scene, TEXTS[1])
    assert tiny.backend.image_rows == [2] and "crop_encoder" not in again.timings
    np.testing.assert_array_equal(again.scores, first.scores)
    wider = lazy.query(scene, TEXTS[1], local_top=5)
    assert tiny.backend.image_rows == [2, 3] and wider.local_computed == 5
    everything = scene.local_features  # the rest, on demand
    assert tiny.backend.image_rows == [2, 3, k - 5] and scene.local.complete
    eager = tiny.encode_image(image, masks)
    np.testing.assert_allclose(everything, eager.local_features, rtol=1e-5, atol=1e-6)
    assert lazy.query(scene, TEXTS[1], local_top=None).local_computed == k
    assert tiny.backend.image_rows == [2, 3, k - 5, k]  # only the eager scene's own call


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 0.95, 0.99, 1.0])
def test_bound_always_chooses_exacts_mask(tiny: Segmenter, alpha: float) -> None:
    exact = Segmenter(tiny.pack, tiny.backend, alpha=alpha, spacy_model=tiny.spacy_model)
    for top in (None, 1, 3):
        bound = Segmenter(tiny.pack, tiny.backend, alpha=alpha, local_top=top,
                          local_bound=True, spacy_model=tiny.spacy_model)
        for image, masks in scenes(6, seed=20 + (top or 0)):
            full, lazy = exact.encode_image(image, masks), bound.encode_image(image, masks)
            for text in TEXTS:
                want, got = exact.query(full, text), bound.query(lazy, text)
                assert got.index == want.index, (alpha, top, text)
                assert got.local_computed <= len(masks)
                np.testing.assert_allclose(got.score, want.score, rtol=1e-5)


def test_bound_saves_work_when_it_can_and_not_when_it_cannot(tiny: Segmenter) -> None:
    saved = []
    for alpha, cannot in ((1.0, False), (0.0, True)):
        seg = Segmenter(tiny.pack, tiny.backend, alpha=alpha, local_top=1, local_bound=True,
                        spacy_model=tiny.spacy_model)
        for image, masks in scenes(4, seed=30):
            scene = seg.encode_image(image, masks)
            for text in TEXTS:
                used = seg.query(scene, text).local_computed
                # α = 0: f = (1−α) f^L can point anywhere, nothing is ever pruned. α = 1: f^L
                # does not count, and the first round's mask provably wins unless another one's
                # global score (near-)ties it (the duplicate grid masks of random blobs do).
                best, second = np.sort(global_scores(seg, scene, text, seg.beta))[::-1][:2]
                if cannot:
                    assert used == len(masks)
                elif best - second > 1e-2:
                    assert used == 1
                saved.append(used)
    assert min(saved) == 1 and max(saved) > 1


def test_a_bound_the_graph_breaks_falls_back_to_scoring_all(tiny: Segmenter) -> None:
    broken = Segmenter(with_bound(tiny.pack, 1e-3), tiny.backend, alpha=0.99, local_top=1,
                       local_bound=True, spacy_model=tiny.spacy_model)
    for image, masks in scenes(3, seed=40):
        want = tiny.query(tiny.encode_image(image, masks), TEXTS[2], alpha=0.99)
        got = broken.query(broken.encode_image(image, masks), TEXTS[2])
        assert got.local_computed == len(masks) and got.index == want.index


@pytest.mark.parametrize("alpha", [0.5, 0.95])
def test_bound_matches_exact_on_the_demo_examples(alpha: float) -> None:
    from zsris_rt.export.local_bound import local_norm_bound

    exact = Segmenter.from_pack(DEMO, threads=1, alpha=alpha)
    pack = with_bound(exact.pack, local_norm_bound(DEMO))
    bound = Segmenter(pack, exact.backend, alpha=alpha, local_top=1, local_bound=True,
                      spacy_model=exact.spacy_model)
    used, total = 0, 0
    for item in json.loads((EXAMPLES / "scenes.json").read_text()):
        image = read_image(EXAMPLES / item["image"])
        masks = np.load(EXAMPLES / item["masks"])["masks"]
        full, lazy = exact.encode_image(image, masks), bound.encode_image(image, masks)
        for expression in item["expressions"]:
            got = bound.query(lazy, expression["text"])
            assert got.index == exact.query(full, expression["text"]).index
            used, total = used + got.local_computed, total + len(masks)
    assert used < total if alpha == 0.95 else used <= total


def test_export_records_the_bound(pack_dir: Path) -> None:
    from zsris_rt.export.local_bound import local_norm_bound

    pack = load_pack(pack_dir)
    assert pack.clip.local_norm_bound == local_norm_bound(pack.graph_path("clip_masked_head"))
    assert local_norm_bound(pack.root / "clip_image.onnx") == pack.clip.local_norm_bound  # old call


def test_bad_options_are_refused(tiny: Segmenter, pack_dir: Path, tmp_path: Path) -> None:
    for top in (0, -2, 2.5, True, "3"):
        with pytest.raises(ZsrisError, match="local_top"):
            Segmenter(tiny.pack, tiny.backend, local_top=top)
        with pytest.raises(ZsrisError, match="local_top"):
            Segmenter.from_pack(pack_dir, local_top=top)
    with pytest.raises(ZsrisError, match="local_bound"):
        Segmenter(tiny.pack, tiny.backend, local_bound="yes")
    copy = shutil.copytree(pack_dir, tmp_path / "unbounded")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["clip"]["local_norm_bound"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    unbounded = load_pack(copy)
    assert unbounded.clip.local_norm_bound is None
    with pytest.raises(ZsrisError, match="local_norm_bound"):
        Segmenter.from_pack(copy, local_bound=True)
    seg = Segmenter(unbounded, tiny.backend, spacy_model=tiny.spacy_model)
    image, masks = scenes(1, seed=50)[0]
    scene = seg.encode_image(image, masks)
    with pytest.raises(ZsrisError, match="local_norm_bound"):
        seg.query(scene, TEXTS[0], local_bound=True)
    with pytest.raises(ZsrisError, match="local_top"):
        seg.query(scene, TEXTS[0], local_top=0)


@pytest.fixture(scope="module")
def tower(clip_folder: Path):
    import torch

    from zsris_rt.export.checkpoints import load_clip

    torch.set_num_threads(1)
    return load_clip(clip_folder).model


def ascent_maximum(visual, starts: int = 8, steps: int = 300) -> tuple[float, np.ndarray]:
    """The largest ‖proj ᵀ(γ⊙z + β)‖ found by fixed-point ascent over zero-mean ‖z‖ = √D, from
    the torch weights: a lower bound on the true maximum, written without the exporter's math."""
    import torch

    with torch.no_grad():
        gamma = visual.ln_post.weight.double()
        beta = visual.ln_post.bias.double()
        proj = visual.proj.double()
    width = len(gamma)
    gen = torch.Generator().manual_seed(0)
    best, best_z = 0.0, None
    for _ in range(starts):
        z = torch.randn(width, generator=gen, dtype=torch.float64)
        for _ in range(steps):
            z = z - z.mean()
            z = z * (width ** 0.5 / z.norm())
            f = (gamma * z + beta) @ proj
            z = gamma * (proj @ f)  # gradient of ‖f‖²/2: ascent on a convex function
        z = z - z.mean()
        z = z * (width ** 0.5 / z.norm())
        value = float(((gamma * z + beta) @ proj).norm())
        if value > best:
            best, best_z = value, z
    return best, best_z.numpy()


def test_norm_bound_is_the_maximum_of_the_tower_head(pack_dir: Path, tower) -> None:
    import torch

    from zsris_rt.export.local_bound import local_norm_bound, read_tower_head, triangle_bound

    bound = local_norm_bound(pack_dir)
    visual = tower.visual
    with torch.no_grad():
        gamma, beta, proj = (t.double() for t in (visual.ln_post.weight, visual.ln_post.bias,
                                                  visual.proj))
        width = len(gamma)
        centred = torch.eye(width, dtype=torch.float64) - 1.0 / width
        sigma = torch.linalg.matrix_norm(centred @ torch.diag(gamma) @ proj, ord=2)
        triangle = float(sigma * width ** 0.5 + (beta @ proj).norm())
    assert triangle_bound(read_tower_head(pack_dir / "clip_masked_head.onnx")) == \
        pytest.approx(triangle, rel=1e-6)
    found, z = ascent_maximum(visual)
    assert found <= bound * (1 + 1e-9) and bound <= triangle * (1 + 1e-9)
    assert bound == pytest.approx(found, rel=1e-6)  # attained: no smaller bound is rigorous
    with torch.no_grad():  # the real LayerNorm on that z comes within its ε of the bound
        attained = (visual.ln_post(torch.from_numpy(z).float()[None]) @ visual.proj).norm()
    assert float(attained) == pytest.approx(bound, rel=1e-4)


def test_norm_bound_holds_for_random_inputs(pack_dir: Path, tower) -> None:
    import torch

    from zsris_rt.export.local_bound import local_norm_bound

    bound = local_norm_bound(pack_dir)
    gen = torch.Generator().manual_seed(1)
    size = tower.config.image_size
    norms = []
    with torch.no_grad():
        for scale in (0.1, 1.0, 10.0, 1000.0):
            images = torch.randn(16, 3, size, size, generator=gen) * scale
            norms.append(tower.encode_image(images).norm(dim=1))
    norms = torch.cat(norms)
    assert float(norms.max()) <= bound
    ratio = bound / float(norms.mean())
    print(f"R / mean ‖f^L‖ over random inputs: {ratio:.2f}, "
          f"R / max: {bound / float(norms.max()):.2f}")
    assert ratio < 20  # a bound this far above every observed norm would prune nothing


def test_a_graph_not_ending_in_layer_norm_and_projection_is_refused(pack_dir: Path) -> None:
    from zsris_rt.export.local_bound import local_norm_bound

    with pytest.raises(ZsrisError, match="does not end in LayerNormalization"):
        local_norm_bound(pack_dir / "clip_text.onnx")
