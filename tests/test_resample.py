"""Antialiased resizing: the NumPy port against torch's own `F.interpolate(antialias=True)`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from zsris_rt.proposer.antialias import antialias_taps, resize_antialiased

KERNELS = ("bilinear", "bicubic")
TOL = 1e-5


def torch_resize(x: np.ndarray, size: tuple[int, int], kernel: str) -> np.ndarray:
    """The reference: torch on CPU, antialiased, half-pixel centres."""
    def interpolate(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return F.interpolate(torch.from_numpy(x)[None], size=size, mode=kernel,
                             align_corners=False, antialias=True)[0].numpy()

    if size[1] > 1 or size[0] == x.shape[-2]:
        return interpolate(x, size)
    # torch 2.13 resizes the rows of a one-column image wrongly (every output row repeats the
    # first), so run its two passes apart, columns first as it does, and the rows on two equal
    # columns: each of them is then what the one column should be.
    x = interpolate(x, (x.shape[-2], 1))
    return interpolate(np.repeat(x, 2, axis=-1), (size[0], 2))[..., :1]


def torch_weights(in_size: int, out_size: int, kernel: str) -> np.ndarray:
    """torch's out×in weight matrix, read exactly by resizing one-hot rows."""
    eye = np.eye(in_size, dtype=np.float32)[:, None, :]
    return torch_resize(eye, (1, out_size), kernel)[:, 0, :].T


def dense(first: np.ndarray, weights: np.ndarray, in_size: int) -> np.ndarray:
    matrix = np.zeros((len(first), in_size), np.float32)
    np.put_along_axis(matrix, first[:, None] + np.arange(weights.shape[1]), weights, axis=1)
    return matrix


SHAPES = [  # (in_h, in_w) -> (out_h, out_w)
    ((1000, 300), (256, 256)),  # downscale by large factors
    ((333, 257), (256, 256)),  # fractional factors, just above 1
    ((257, 40), (256, 40)),  # one axis only
    ((1, 1), (5, 3)),  # a single pixel, upscaled
    ((7, 9), (256, 13)),  # large upscale
    ((100, 30), (1024, 30)),  # upscale of one axis only
    ((50, 60), (1, 1)),  # a single output pixel
    ((40, 30), (40, 30)),  # identity
    ((48, 640), (31, 200)),  # non-square, down
    ((31, 200), (48, 640)),  # non-square, up
    ((300, 20), (77, 45)),  # down one axis, up the other
    ((2, 4000), (2, 1024)),  # a photo's width: float32 index errors grow along it
    ((17, 1), (5, 1)),  # a single column
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("shape", "size"), SHAPES)
def test_matches_torch(shape: tuple[int, int], size: tuple[int, int], kernel: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, *shape), dtype=np.float32)
    y = resize_antialiased(x, size, kernel)
    assert y.shape == (3, *size) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, torch_resize(x, size, kernel), rtol=0, atol=TOL)


@settings(max_examples=40, deadline=None)
@given(in_h=st.integers(1, 200), in_w=st.integers(1, 200), out_h=st.integers(1, 200),
       out_w=st.integers(1, 200), kernel=st.sampled_from(KERNELS), seed=st.integers(0, 2**16))
def test_random_sizes_match_torch(in_h: int, in_w: int, out_h: int, out_w: int, kernel: str,
                                  seed: int) -> None:
    x = np.random.default_rng(seed).random((2, in_h, in_w), dtype=np.float32)
    y = resize_antialiased(x, (out_h, out_w), kernel)
    np.testing.assert_allclose(y, torch_resize(x, (out_h, out_w), kernel), rtol=0, atol=TOL)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("in_size", "out_size"),
                         [(1000, 256), (257, 256), (256, 257), (7, 256), (1, 5),
                          (300, 1)])
def test_weights_match_torch(in_size: int, out_size: int, kernel: str) -> None:
    # The float32 details matter: the same formulas in float64 are off by more than 1e-4.
    first, weights = antialias_taps(in_size, out_size, kernel)
    np.testing.assert_allclose(dense(first, weights, in_size),
                               torch_weights(in_size, out_size, kernel), rtol=0, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(in_size=st.integers(1, 5000), out_size=st.integers(1, 2000),
       kernel=st.sampled_from(KERNELS))
def test_taps_are_normalised_and_in_range(in_size: int, out_size: int, kernel: str) -> None:
    first, weights = antialias_taps(in_size, out_size, kernel)
    assert first.dtype == np.int64 and first.shape == (out_size,)
    assert weights.dtype == np.float32 and weights.shape[0] == out_size
    assert first.min() >= 0 and first.max() + weights.shape[1] <= in_size
    # torch normalises by a running float32 total, whose error grows with the number of taps.
    np.testing.assert_allclose(weights.sum(axis=1, dtype=np.float64), 1.0, rtol=0,
                               atol=1e-6 + 1e-7 * weights.shape[1])


def test_identity_is_a_copy() -> None:
    x = np.random.default_rng(1).random((3, 20, 30), dtype=np.float32)
    for kernel in KERNELS:
        y = resize_antialiased(x, (20, 30), kernel)
        assert not np.shares_memory(x, y)
        np.testing.assert_array_equal(y, x)


def test_any_leading_axes() -> None:
    x = np.random.default_rng(2).random((2, 3, 40, 50), dtype=np.float32)
    y = resize_antialiased(x, (17, 64), "bicubic")
    assert y.shape == (2, 3, 17, 64)
    np.testing.assert_array_equal(resize_antialiased(x[1, 2], (17, 64), "bicubic"), y[1, 2])


def test_rejects_bad_arguments() -> None:
    x = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="kernel"):
        resize_antialiased(x, (4, 4), "lanczos")
    with pytest.raises(ValueError, match="kernel"):
        antialias_taps(8, 4, "nearest")
    with pytest.raises(ValueError, match="positive"):
        resize_antialiased(x, (0, 4))
    with pytest.raises(ValueError, match="shape"):
        resize_antialiased(np.zeros(8, np.float32), (4, 4))
