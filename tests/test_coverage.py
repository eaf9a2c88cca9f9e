"""Lazy-greedy maximum coverage (and the shared lazy-greedy helper) against naive greedy oracles."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datacomp.errors import ConfigError
from datacomp.selectors.coverage import coverage_of, greedy_max_coverage, to_binary_csr
from datacomp.selectors.lazy_greedy import lazy_greedy


def naive_greedy(dense: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Recompute every gain at every step; argmax takes the lowest index on ties."""
    covered = np.zeros(dense.shape[1], dtype=bool)
    available = np.ones(dense.shape[0], dtype=bool)
    picks, curve = [], []
    for _ in range(budget):
        gains = (dense & ~covered).sum(axis=1).astype(np.int64)
        gains[~available] = -1
        pick = int(np.argmax(gains))
        picks.append(pick)
        available[pick] = False
        covered |= dense[pick]
        curve.append(int(covered.sum()))
    return np.array(picks), np.array(curve)


@settings(max_examples=60, deadline=None)
@given(
    matrix=arrays(np.bool_, st.tuples(st.integers(1, 25), st.integers(1, 30))),
    frac=st.floats(0.0, 1.0),
    as_sparse=st.booleans(),
)
def test_lazy_equals_naive(matrix, frac, as_sparse):
    budget = max(1, int(round(frac * matrix.shape[0])))
    expected, expected_curve = naive_greedy(matrix, budget)
    given_matrix = sp.csr_matrix(matrix) if as_sparse else matrix
    picks, curve = greedy_max_coverage(given_matrix, budget, return_curve=True)
    np.testing.assert_array_equal(picks, expected)
    np.testing.assert_array_equal(curve, expected_curve)
    assert curve[-1] == coverage_of(matrix, picks)


@pytest.mark.parametrize("density", [0.02, 0.1, 0.4])
def test_lazy_equals_naive_larger_random(density):
    rng = np.random.default_rng(3)
    dense = rng.random((300, 120)) < density
    picks, curve = greedy_max_coverage(sp.csc_matrix(dense), 40, return_curve=True)
    expected, expected_curve = naive_greedy(dense, 40)
    np.testing.assert_array_equal(picks, expected)
    np.testing.assert_array_equal(curve, expected_curve)


def test_ties_break_by_lowest_index_and_saturation_fills_in_index_order():
    dense = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [0, 0]], dtype=bool)
    picks, curve = greedy_max_coverage(dense, 5, return_curve=True)
    np.testing.assert_array_equal(picks, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(curve, [1, 2, 2, 2, 2])


def test_numeric_nonzero_counts_as_active():
    counts = np.array([[0.0, 3.5, 0.0], [2.0, 0.0, 0.1]])
    csr = to_binary_csr(counts)
    assert csr.dtype == bool and csr.nnz == 3
    np.testing.assert_array_equal(greedy_max_coverage(counts, 1), [1])


@pytest.mark.parametrize(
    ("matrix", "budget", "error", "match"),
    [
        (np.ones((3, 2), bool), 0, ValueError, "budget must be in"),
        (np.ones((3, 2), bool), -1, ValueError, "budget must be in"),
        (np.ones((3, 2), bool), 4, ValueError, "budget must be in"),
        (np.ones((3, 2), bool), 1.5, ConfigError, "budget must be an int"),
        (np.ones(3, bool), 1, ValueError, "must be 2-D"),
        ([[1, 0]], 1, ConfigError, "numpy array or scipy.sparse"),
    ],
)
def test_rejects_bad_input(matrix, budget, error, match):
    with pytest.raises(error, match=match):
        greedy_max_coverage(matrix, budget)


@settings(max_examples=60, deadline=None)
@given(
    weights=arrays(np.int64, st.tuples(st.integers(1, 20), st.integers(1, 15)), elements=st.integers(0, 3)),
    frac=st.floats(0.0, 1.0),
)
def test_lazy_greedy_helper_equals_naive_greedy(weights, frac):
    """The shared helper on weighted max coverage F(S) = sum_j max_{s in S} w[s, j] (integer weights: exact ties)."""
    budget = max(1, int(round(frac * weights.shape[0])))
    best = np.zeros(weights.shape[1], dtype=np.int64)

    def pick(item: int, gain: int) -> None:
        np.maximum(best, weights[item], out=best)

    picks, gains = lazy_greedy(weights.sum(axis=1), budget,
                               lambda i: int(np.maximum(weights[i] - best, 0).sum()), pick, dtype=np.int64)
    naive_best, naive_picks, naive_gains = np.zeros_like(best), [], []
    for _ in range(budget):
        all_gains = np.maximum(weights - naive_best[None, :], 0).sum(axis=1)
        all_gains[naive_picks] = -1
        naive_picks.append(int(np.argmax(all_gains)))  # lowest index on ties
        naive_gains.append(int(all_gains[naive_picks[-1]]))
        naive_best = np.maximum(naive_best, weights[naive_picks[-1]])
    np.testing.assert_array_equal(picks, naive_picks)
    np.testing.assert_array_equal(gains, naive_gains)
    assert picks.dtype == np.int64 and gains.dtype == np.int64
