"""The C++ mask ops: which implementation runs, and tight boxes against their NumPy twin."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import native_maskops
from zsris_rt import maskops
from zsris_rt.errors import MaskError
from zsris_rt.maskops.boxes import tight_boxes as numpy_tight_boxes

native = native_maskops()


def implementation_in_subprocess(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from zsris_rt import maskops; print(maskops.implementation())"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_environment_variable_forces_numpy() -> None:
    assert implementation_in_subprocess({"ZSRIS_MASKOPS": "numpy"}) == \
        "numpy (forced by ZSRIS_MASKOPS=numpy)"
    assert implementation_in_subprocess({"ZSRIS_MASKOPS": ""}) == "c++"


@settings(max_examples=60, deadline=None)
@given(k=st.integers(0, 6), h=st.integers(1, 40), w=st.integers(1, 40),
       density=st.floats(0.0, 0.2), seed=st.integers(0, 2**31))
def test_tight_boxes_equal_numpy(k: int, h: int, w: int, density: float, seed: int) -> None:
    masks = np.random.default_rng(seed).random((k, h, w)) < density
    np.testing.assert_array_equal(native.tight_boxes(masks), numpy_tight_boxes(masks))


@pytest.mark.parametrize("case", ["empty", "one pixel", "top", "bottom", "left", "right", "full",
                                  "1x1", "many"])
def test_tight_boxes_degenerate(case: str) -> None:
    masks = np.zeros((1000 if case == "many" else 1, 1 if case == "1x1" else 9,
                      1 if case == "1x1" else 13), dtype=bool)
    {"empty": lambda m: None, "one pixel": lambda m: m[:, 4, 7].fill(True),
     "top": lambda m: m[:, 0, 3:6].fill(True), "bottom": lambda m: m[:, -1, :].fill(True),
     "left": lambda m: m[:, 2:5, 0].fill(True), "right": lambda m: m[:, :, -1].fill(True),
     "full": lambda m: m.fill(True), "1x1": lambda m: m.fill(True),
     "many": lambda m: m[::3, 1:4, 2:9].fill(True)}[case](masks)
    np.testing.assert_array_equal(native.tight_boxes(masks), numpy_tight_boxes(masks))


def test_strided_input_is_read_right() -> None:
    masks = np.zeros((4, 20, 30), dtype=bool)
    masks[1, 3:7, 10:12] = True
    view = masks[::2, :, ::-1]  # not contiguous: the wrapper copies, the result must not lie
    np.testing.assert_array_equal(maskops.tight_boxes(view), numpy_tight_boxes(view.copy()))


@pytest.mark.parametrize("bad", [np.zeros((2, 5, 5), np.uint8), np.zeros((5, 5), bool),
                                 np.zeros((1, 2, 5, 5), bool)])
def test_bad_masks_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(MaskError, match="K×H×W bool"):
        maskops.tight_boxes(bad)
    with pytest.raises((TypeError, ValueError)):
        native.tight_boxes(bad)


def test_bool_bytes_other_than_one_read_as_true() -> None:
    """NumPy lets a bool array hold any byte (a view of uint8): read as true, as NumPy does."""
    raw = np.array([0, 59, 16, 0, 0, 0, 0, 193, 0, 65, 168, 236, 0, 0, 0, 0, 0, 85, 113, 238],
                   dtype=np.uint8).reshape(2, 2, 5)
    np.testing.assert_array_equal(native.tight_boxes(raw.view(bool)),
                                  numpy_tight_boxes(raw != 0))
