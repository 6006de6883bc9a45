"""Masked feature maps (SPEC.md §7, ResNet family): the C++ op equals its NumPy twin bit for bit,
and both equal torch's `F.normalize(features, dim=0)[None] * grids[:, None]`."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import native_or_twin
from zsris_rt import maskops
from zsris_rt.errors import MaskError
from zsris_rt.maskops.feature_maps import masked_feature_maps as twin

FeatureMapsOp = Callable[[np.ndarray, np.ndarray], np.ndarray]
# torch sums the squares in another order (and precision): a few float32 ulps apart.
TORCH_RTOL = 1e-6


@pytest.fixture(scope="module", params=["c++", "numpy"])
def feature_maps(request: pytest.FixtureRequest) -> FeatureMapsOp:
    return native_or_twin(request.param, "masked_feature_maps", twin)


def torch_maps(features: np.ndarray, grids: np.ndarray) -> np.ndarray:
    unit = F.normalize(torch.from_numpy(features), dim=0)
    return (unit[None] * torch.from_numpy(grids)[:, None]).numpy()


def random_inputs(seed: int, c: int, g: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of mixed scales with some all-zero positions; grids in [0, 1], some 0 or 1."""
    rng = np.random.default_rng(seed)
    features = (rng.normal(size=(c, g, g)) * 10.0 ** rng.uniform(-3, 3, (1, g, g)))
    features[:, rng.random((g, g)) < 0.2] = 0.0
    grids = rng.random((k, g, g))
    grids[rng.random((k, g, g)) < 0.3] = rng.choice([0.0, 1.0])
    return features.astype(np.float32), grids.astype(np.float32)


def check_maps(feature_maps: FeatureMapsOp, features: np.ndarray, grids: np.ndarray) -> None:
    got = feature_maps(features, grids)
    assert got.dtype == np.float32 and got.shape == (len(grids), *features.shape)
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, torch_maps(features, grids), rtol=TORCH_RTOL, atol=0)


@settings(max_examples=50, deadline=None)
@given(c=st.integers(1, 64), g=st.integers(1, 9), k=st.integers(0, 6),
       seed=st.integers(0, 2**32 - 1))
def test_equals_torch(feature_maps: FeatureMapsOp, c: int, g: int, k: int, seed: int) -> None:
    check_maps(feature_maps, *random_inputs(seed, c, g, k))


@settings(max_examples=50, deadline=None)
@given(c=st.integers(1, 64), g=st.integers(1, 9), k=st.integers(0, 6),
       seed=st.integers(0, 2**32 - 1))
def test_native_equals_numpy_bit_for_bit(native: ModuleType, c: int, g: int, k: int,
                                         seed: int) -> None:
    features, grids = random_inputs(seed, c, g, k)
    np.testing.assert_array_equal(native.masked_feature_maps(features, grids),
                                  twin(features, grids))


def test_zero_features_give_zeros(feature_maps: FeatureMapsOp) -> None:
    features = np.zeros((4, 3, 3), np.float32)
    features[:, 1, 2] = [3.0, 0.0, -4.0, 0.0]
    got = feature_maps(features, np.full((2, 3, 3), 0.5, np.float32))
    expected = np.zeros((2, 4, 3, 3), np.float32)
    expected[:, :, 1, 2] = [0.3, 0.0, -0.4, 0.0]
    np.testing.assert_allclose(got, expected, rtol=TORCH_RTOL, atol=0)


@pytest.mark.parametrize("c, g, k", [(1, 1, 1), (5, 1, 3), (1, 4, 2), (3, 5, 0), (4, 3, 1000)])
def test_degenerate_sizes(feature_maps: FeatureMapsOp, c: int, g: int, k: int) -> None:
    check_maps(feature_maps, *random_inputs(c * g + k, c, g, k))


def test_strided_views_are_read_right(native: ModuleType) -> None:
    features, grids = random_inputs(1, 6, 8, 4)
    views = [(features[::-1, :, ::-1], grids[::-1, ::-1]),
             (features.transpose(0, 2, 1), np.broadcast_to(grids[:1], grids.shape)),
             (np.repeat(features, 2, axis=-1)[..., ::2], grids.transpose(0, 2, 1))]
    for f, g in views:
        expected = torch_maps(np.ascontiguousarray(f), np.ascontiguousarray(g))
        for op in (maskops.masked_feature_maps, native.masked_feature_maps):
            np.testing.assert_allclose(op(f, g), expected, rtol=TORCH_RTOL, atol=0)


@pytest.mark.parametrize("features, grids", [
    ((4, 3, 3), (2, 3, 4)), ((4, 3, 3), (2, 4, 3)), ((4, 3, 3), (3, 3)), ((3, 3), (2, 3, 3)),
    ((1, 4, 3, 3), (2, 3, 3)), ((4, 3, 3), (1, 2, 3, 3))])
def test_shapes_that_do_not_fit_are_refused(native: ModuleType, features: tuple[int, ...],
                                            grids: tuple[int, ...]) -> None:
    f, g = np.ones(features, np.float32), np.ones(grids, np.float32)
    with pytest.raises(MaskError, match="masked_feature_maps"):
        maskops.masked_feature_maps(f, g)
    with pytest.raises(ValueError):
        native.masked_feature_maps(f, g)


def test_native_refuses_other_dtypes(native: ModuleType) -> None:
    f, g = np.ones((2, 3, 3), np.float32), np.ones((1, 3, 3), np.float32)
    for args in [(f.astype(np.float64), g), (f, g.astype(np.float64)), (f.astype(complex), g)]:
        with pytest.raises(TypeError):
            native.masked_feature_maps(*args)
    for args in [("features", g), (f, None), (f, [[[1.0]]])]:
        with pytest.raises((TypeError, ValueError)):
            native.masked_feature_maps(*args)
