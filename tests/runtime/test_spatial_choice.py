"""The spatial choice's model on hand-made scenes: CLIP-like scores say what each mask is, the
geometry says where; every expectation below is read off the drawn layout, not computed by the
code under test."""

from __future__ import annotations

import numpy as np
import pytest

from zsris_rt.spatial.choice import (
    KIND_TEMPERATURE,
    Geometry,
    between_likelihood,
    expected_rank,
    kind_probabilities,
    ordinal_likelihood,
    posterior,
    relation_likelihood,
)

H, W = 100, 200


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    """A disc at image fractions (cx, cy) with radius r in pixels."""
    ys, xs = np.mgrid[:H, :W]
    return (xs + 0.5 - cx * W) ** 2 + (ys + 0.5 - cy * H) ** 2 <= r * r


def scene(*objects: tuple[float, float, float]) -> Geometry:
    return Geometry.of(np.stack([disc(*o) for o in objects]))


def choose(p_kind: np.ndarray, likelihood: np.ndarray) -> int:
    return int(np.argmax(posterior(p_kind, likelihood)))


# CLIP-like 100·cos scores: the target kind, and something CLIP is sure it is not
CIRCLE, SQUARE = 30.0, 30.0 - 5 * KIND_TEMPERATURE


def test_geometry_of_masks() -> None:
    masks = np.zeros((2, H, W), bool)
    masks[0, 10:20, 40:60] = True  # 10×20 box
    masks[1, 50:100, 0:200] = True  # the bottom half
    g = Geometry.of(masks)
    np.testing.assert_allclose(g.centroids, [[50 / W, 15 / H], [0.5, 0.75]])
    np.testing.assert_allclose(g.areas, [200 / (H * W), 0.5])
    assert g.boxes.tolist() == [[40, 10, 60, 20], [0, 50, 200, 100]]


def test_kind_probabilities_are_a_tempered_softmax() -> None:
    p = kind_probabilities(np.array([30.0, 30.0, 30.0 - KIND_TEMPERATURE * np.log(2.0),
                                     -np.inf]))
    np.testing.assert_allclose(p, [0.4, 0.4, 0.2, 0.0])
    np.testing.assert_allclose(kind_probabilities(np.array([-np.inf, -np.inf])), [0.5, 0.5])


def test_expected_rank_counts_the_mass_before() -> None:
    ranks = expected_rank(np.array([0.1, 0.5, 0.3, 0.5]), np.array([1.0, 1.0, 0.0, 1.0]))
    np.testing.assert_allclose(ranks, [0.0, 1.5, 1.0, 1.5])  # ties count half


# Four circles in a row and a square at the far right: ordinals count circles only.
ROW = [(0.1, 0.5, 8), (0.3, 0.5, 8), (0.5, 0.5, 8), (0.7, 0.5, 8), (0.9, 0.5, 8)]
ROW_SCORES = np.array([CIRCLE, CIRCLE, CIRCLE, CIRCLE, SQUARE])


@pytest.mark.parametrize("side, rank, want", [
    ("left", 1, 0), ("left", 2, 1), ("left", 3, 2), ("right", 1, 3), ("right", 2, 2),
    ("right", 4, 0)])
def test_ordinals_along_x(side: str, rank: int, want: int) -> None:
    g, p = scene(*ROW), kind_probabilities(ROW_SCORES)
    assert choose(p, ordinal_likelihood(g, p, "x", side, rank)) == want


def test_the_middle_one_and_vertical_ordinals() -> None:
    column = [(0.5, 0.1, 6), (0.5, 0.3, 6), (0.5, 0.5, 6), (0.5, 0.7, 6), (0.5, 0.9, 6)]
    g, p = scene(*column), kind_probabilities(np.full(5, CIRCLE))
    assert choose(p, ordinal_likelihood(g, p, "y", "top", None)) == 2
    assert choose(p, ordinal_likelihood(g, p, "y", "top", 1)) == 0
    assert choose(p, ordinal_likelihood(g, p, "y", "bottom", 2)) == 3


def test_superlative_size_is_a_rank_by_area() -> None:
    g = scene((0.2, 0.5, 6), (0.5, 0.5, 15), (0.8, 0.5, 10), (0.5, 0.2, 30))
    p = kind_probabilities(np.array([CIRCLE, CIRCLE, CIRCLE, SQUARE]))  # the huge one is a square
    assert choose(p, ordinal_likelihood(g, p, "area", "big", 1)) == 1
    assert choose(p, ordinal_likelihood(g, p, "area", "small", 1)) == 0


@pytest.mark.parametrize("relation, want", [
    ("left_of", 0), ("right_of", 1), ("near", 0), ("far_from", 1)])
def test_relations_to_a_landmark(relation: str, want: int) -> None:
    # circles at x 0.35 and 0.9, the square (landmark) at 0.5
    g = scene((0.35, 0.5, 8), (0.9, 0.5, 8), (0.5, 0.5, 8))
    p_target = kind_probabilities(np.array([CIRCLE, CIRCLE, SQUARE]))
    p_landmark = kind_probabilities(np.array([SQUARE, SQUARE, CIRCLE]))  # "the square"
    assert choose(p_target, relation_likelihood(g, relation, p_landmark)) == want


def test_above_and_below() -> None:
    g = scene((0.5, 0.2, 8), (0.5, 0.8, 8), (0.5, 0.5, 8))
    p_target = kind_probabilities(np.array([CIRCLE, CIRCLE, SQUARE]))
    p_landmark = kind_probabilities(np.array([SQUARE, SQUARE, CIRCLE]))
    assert choose(p_target, relation_likelihood(g, "above", p_landmark)) == 0
    assert choose(p_target, relation_likelihood(g, "below", p_landmark)) == 1


def test_a_mask_is_never_its_own_landmark() -> None:
    """Two circles side by side and nothing else: "the circle left of the circle" is the left
    one, though each circle is, to CLIP, the likeliest landmark of all."""
    g = scene((0.3, 0.5, 8), (0.7, 0.5, 8))
    p = kind_probabilities(np.array([CIRCLE, CIRCLE]))
    assert choose(p, relation_likelihood(g, "left_of", p)) == 0


def test_between_two_landmarks() -> None:
    # squares at x 0.2 and 0.6; circles at 0.4 (between them) and 0.8 (outside)
    g = scene((0.2, 0.5, 6), (0.6, 0.5, 6), (0.4, 0.5, 6), (0.8, 0.5, 6))
    p_target = kind_probabilities(np.array([SQUARE, SQUARE, CIRCLE, CIRCLE]))
    p_square = kind_probabilities(np.array([CIRCLE, CIRCLE, SQUARE, SQUARE]))
    likelihood = between_likelihood(g, p_square, p_square)
    assert choose(p_target, likelihood) == 2
    assert likelihood[2] > 10 * likelihood[3]


def test_uncertain_kinds_degrade_to_geometry_and_zero_likelihood_to_clip() -> None:
    g = scene(*ROW)
    flat = kind_probabilities(np.zeros(5))  # CLIP cannot tell: the row's second from the left
    assert choose(flat, ordinal_likelihood(g, flat, "x", "left", 2)) == 1
    p = kind_probabilities(ROW_SCORES)
    np.testing.assert_allclose(posterior(p, np.zeros(5)), p)


def test_membership_is_relative_to_clips_best() -> None:
    from zsris_rt.spatial.choice import membership

    p = kind_probabilities(np.array([CIRCLE, CIRCLE, CIRCLE - KIND_TEMPERATURE, SQUARE]))
    np.testing.assert_allclose(membership(p), [1.0, 1.0, np.exp(-1.0), np.exp(-5.0)])


def test_resolve_puts_the_parse_and_the_model_together() -> None:
    from zsris_rt.spatial.parse import Ordinal, Position, Relation, SpatialParse
    from zsris_rt.spatial.resolve import resolve

    g = scene(*ROW)
    phrase_scores = {"circle": ROW_SCORES, "square": np.array([SQUARE] * 4 + [CIRCLE])}

    def score(phrase: str) -> np.ndarray:
        return phrase_scores[phrase]

    second = resolve(SpatialParse("circle", ordinal=Ordinal("rank", 2, "x", "left")), score, g)
    assert second.index == 1 and second.applied == ("ordinal x 2 from left",)
    last = resolve(SpatialParse("circle", ordinal=Ordinal("last", None, None, None)), score, g)
    assert last.index == 3  # the end of the row of circles, the square not counted
    middle = resolve(SpatialParse("circle", ordinal=Ordinal("middle", None, None, None)), score,
                     g)
    assert middle.index in (1, 2)  # four circles: the middle lies between the 2nd and the 3rd
    right = resolve(SpatialParse("circle", position=Position("x", "right", True)), score, g)
    assert right.index == 3
    near = resolve(SpatialParse("circle", relation=Relation("near", ("square",))), score, g)
    assert near.index == 3
    told = near.describe(paper_index=0)
    assert told["relation"] == {"kind": "near", "landmarks": ["square"]}
    assert told["changed"] is True and told["paper_index"] == 0 and told["applied"] == [
        "relation near"]
    assert 0.0 < told["probability"] <= 1.0
