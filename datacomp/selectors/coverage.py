"""Exact lazy-greedy maximum coverage over a binary item x feature matrix.

The objective is F(S) = |union_{x in S} A(x)| where A(x) is the set of features (columns) that item x (row)
activates. F is monotone submodular, so the greedy solution is within (1 - 1/e) of the optimum, and the lazy
variant (:func:`~datacomp.selectors.lazy_greedy.lazy_greedy`) returns exactly the same sequence as the naive
greedy, ties broken by the lowest row index (as ``numpy.argmax`` in the naive greedy used as the test oracle).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from datacomp.errors import ConfigError, is_int

from .lazy_greedy import lazy_greedy

__all__ = ["greedy_max_coverage", "coverage_of", "to_binary_csr"]


def to_binary_csr(matrix: np.ndarray | sp.spmatrix | sp.sparray, name: str = "matrix") -> sp.csr_matrix:
    """Convert a dense or sparse item x feature matrix to a binary CSR matrix (nonzero -> 1).

    Args:
        matrix: 2-D numpy array (bool or numeric) or scipy sparse matrix/array.
        name: argument name used in error messages.

    Returns:
        A ``scipy.sparse.csr_matrix`` of dtype bool with sorted, duplicate-free indices and no explicit zeros.

    Raises:
        TypeError: if ``matrix`` is neither a numpy array nor a scipy sparse matrix.
        ValueError: if it is not 2-D.
    """
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix, copy=True)
    elif isinstance(matrix, np.ndarray):
        if matrix.ndim != 2:
            raise ConfigError(f"{name} must be 2-D (items x features), got shape {matrix.shape}")
        csr = sp.csr_matrix(matrix != 0)
    else:
        raise ConfigError(f"{name} must be a numpy array or scipy.sparse matrix, got {type(matrix).__name__}")
    if csr.ndim != 2:
        raise ConfigError(f"{name} must be 2-D (items x features), got shape {csr.shape}")
    csr.sum_duplicates()
    csr.data = csr.data != 0
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr.astype(bool)


def coverage_of(matrix: np.ndarray | sp.spmatrix, indices: np.ndarray) -> int:
    """Number of distinct features covered by the rows ``indices`` (the max-coverage objective F(S))."""
    csr = to_binary_csr(matrix)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return 0
    return int(np.unique(csr[idx].indices).size)


def greedy_max_coverage(
    matrix: np.ndarray | sp.spmatrix | sp.sparray,
    budget: int,
    return_curve: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Select ``budget`` rows greedily maximising the number of covered columns (exact lazy greedy).

    Args:
        matrix: binary item x feature matrix (dense bool/numeric numpy array or scipy.sparse; nonzero = active).
        budget: number of rows to select, ``1 <= budget <= n_items``.
        return_curve: also return the coverage curve.

    Returns:
        ``indices`` (int64, selection order), and if ``return_curve`` the int64 array ``curve`` where
        ``curve[t]`` is the number of features covered after ``t + 1`` picks (so ``diff`` gives per-step gains).
        Once every reachable feature is covered, all gains are 0 and the remaining picks are the lowest-index
        unselected rows.

    Raises:
        ValueError: if ``budget`` is not in ``[1, n_items]``.
    """
    csr = to_binary_csr(matrix)
    n_items, n_features = csr.shape
    if not is_int(budget):
        raise ConfigError(f"budget must be an int, got {type(budget).__name__}")
    if budget < 1 or budget > n_items:
        raise ConfigError(f"budget must be in [1, n_items={n_items}], got {budget}")
    indptr, cols = csr.indptr, csr.indices
    covered = np.zeros(n_features, dtype=bool)

    def gain(item: int) -> int:
        row = cols[indptr[item] : indptr[item + 1]]
        return int(row.size - np.count_nonzero(covered[row]))

    def pick(item: int, fresh: int) -> None:
        if fresh:
            covered[cols[indptr[item] : indptr[item + 1]]] = True

    selected, gains = lazy_greedy(np.diff(indptr).astype(np.int64), budget, gain, pick, dtype=np.int64)
    if return_curve:
        return selected, np.cumsum(gains)
    return selected
