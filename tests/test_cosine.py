"""The one cosine (scoring.cosines) and check's agreement rule on top of it."""

from __future__ import annotations

import math

import numpy as np

from zsris_rt.agreement import row_agreement
from zsris_rt.scoring import cosines


def test_rows_against_one_vector_and_row_by_row() -> None:
    a = np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosines(a, np.array([1.0, 0.0])), [0.6, 0.0, 0.0])
    b = np.array([[4.0, 3.0], [0.0, -5.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosines(a, b), [24 / 25, -1.0, 0.0])
    assert np.all(cosines(a, np.zeros(2)) == 0.0)  # a zero target matches nothing


def test_agreement_counts_identical_rows_as_one() -> None:
    got = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    want = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(row_agreement(got, want), [1.0, 0.0, 1.0, math.sqrt(0.5)])
    # rows of masks / embeddings are flattened first
    assert row_agreement(np.ones((2, 3, 4)), np.ones((2, 3, 4))).tolist() == [1.0, 1.0]
