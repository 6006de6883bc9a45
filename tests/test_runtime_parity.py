"""The runtime (ONNX Runtime, NumPy) against the PyTorch reference of SPEC.md §1–6."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_scene

EXPRESSIONS = [
    "the red mug left of the laptop",
    "man in red shirt",
    "guy on the left",
    "white and black dog sitting on couch",
    "the man's hat",
    "second from right",
    "zebra",
]


def degenerate_masks(h: int, w: int) -> np.ndarray:
    """One pixel, a mask on each border, the full image, a thin line."""
    masks = np.zeros((7, h, w), dtype=bool)
    masks[0, h // 2, w // 3] = True
    masks[1, 0, :] = True
    masks[2, -1, w // 4:] = True
    masks[3, :, 0] = True
    masks[4, : h // 2, -1] = True
    masks[5] = True
    masks[6, :, w // 2] = True
    return masks


def reference_scores(segmenter, reference, image, masks, text):
    phrases = segmenter.parser.parse(text)
    s = segmenter.tokenizer.encode([phrases.sentence])
    p = segmenter.tokenizer.encode([phrases.noun_phrase])
    return reference.run(image, masks,
                         (torch.from_numpy(s.ids), torch.from_numpy(s.end_index)),
                         (torch.from_numpy(p.ids), torch.from_numpy(p.end_index)))


SCENES = [(seed, h, w, k) for seed, (h, w, k) in enumerate(
    [(120, 160, 5), (224, 224, 3), (97, 301, 8), (480, 640, 4), (33, 17, 2), (1, 1, 1),
     (200, 90, 6), (64, 64, 1), (300, 200, 12), (45, 70, 3), (256, 128, 5), (10, 300, 4),
     (150, 150, 9), (77, 99, 2), (500, 333, 6), (2, 5, 2), (128, 384, 7), (60, 61, 5),
     (233, 144, 3), (90, 160, 10)])]


@pytest.mark.parametrize("seed,h,w,k", SCENES)
def test_scores_match_reference(segmenter, reference, seed, h, w, k):
    rng = np.random.default_rng(seed)
    image, masks = random_scene(rng, h, w, k)
    if h > 2 and w > 2:
        masks = np.concatenate([masks, degenerate_masks(h, w)])
    text = EXPRESSIONS[seed % len(EXPRESSIONS)]
    result = segmenter.segment(image, text, masks)
    expected = reference_scores(segmenter, reference, image, masks, text)
    np.testing.assert_allclose(result.scores, expected.scores.numpy(), atol=1e-3, rtol=0)
    assert result.index == expected.index
    assert result.mask.shape == (h, w) and result.mask.dtype == bool
    assert np.array_equal(result.mask, masks[expected.index])


def test_features_match_reference(segmenter, reference):
    """Each branch on its own, so a failure says which one broke."""
    rng = np.random.default_rng(99)
    image, masks = random_scene(rng, 180, 240, 6)
    scene = segmenter.encode_image(image, masks)
    xn = reference.normalise(image)
    m = torch.from_numpy(masks)
    np.testing.assert_allclose(scene.global_features, reference.global_features(xn, m).numpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scene.local_features, reference.local_features(xn, m).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_scene_reuse_equals_fresh_segment(segmenter):
    rng = np.random.default_rng(5)
    image, masks = random_scene(rng, 100, 140, 5)
    scene = segmenter.encode_image(image, masks)
    for text in EXPRESSIONS[:3]:
        reused = segmenter.query(scene, text)
        fresh = segmenter.segment(image, text, masks)
        np.testing.assert_array_equal(reused.scores, fresh.scores)


def test_reused_crop_buffer_leaves_nothing_behind(segmenter):
    """The crop buffer is reused across images: a larger then a smaller scene, then the first
    again, give the first scene's features exactly; and past CROP_BUFFER_MASKS it allocates."""
    from zsris_rt import segmenter as segmenter_module

    image, masks = random_scene(np.random.default_rng(11), 60, 80, 6)
    other, other_masks = random_scene(np.random.default_rng(12), 90, 70, 9)
    first = segmenter.encode_image(image, masks[:4])
    segmenter.encode_image(other, other_masks)
    again = segmenter.encode_image(image, masks[:4])
    np.testing.assert_array_equal(again.local_features, first.local_features)
    assert segmenter._crop_buffer(3).base is segmenter._crop_buffer(9).base
    assert segmenter._crop_buffer(segmenter_module.CROP_BUFFER_MASKS + 1) is None


def test_alpha_beta_override(segmenter, reference):
    rng = np.random.default_rng(11)
    image, masks = random_scene(rng, 90, 120, 4)
    scene = segmenter.encode_image(image, masks)
    local_only = segmenter.query(scene, "a cat", alpha=0.0, beta=1.0)
    text = segmenter.tokenizer.encode([segmenter.parser.parse("a cat").sentence])
    t = reference.text_features(torch.from_numpy(text.ids), torch.from_numpy(text.end_index))[0]
    fl = reference.local_features(reference.normalise(image), torch.from_numpy(masks))
    expected = 100 * torch.nn.functional.cosine_similarity(fl, t[None], dim=-1)
    np.testing.assert_allclose(local_only.scores, expected.numpy(), atol=1e-3)


def test_ties_go_to_lowest_index(segmenter):
    rng = np.random.default_rng(3)
    image, masks = random_scene(rng, 64, 64, 3)
    masks = np.concatenate([masks, masks[:1], masks[:1]])  # duplicates score identically
    result = segmenter.segment(image, "the thing", masks)
    best = np.flatnonzero(result.scores == result.scores.max())
    assert result.index == best[0]


def test_long_expression_is_truncated_and_reported(segmenter):
    rng = np.random.default_rng(4)
    image, masks = random_scene(rng, 64, 64, 2)
    result = segmenter.segment(image, "the red mug " * 40, masks)
    assert result.truncated
    assert not segmenter.segment(image, "the red mug", masks).truncated
