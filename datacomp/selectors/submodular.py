"""Facility location on a kNN-sparsified similarity graph (exact lazy greedy), with faiss kNN search.

Objective on a graph W (row i = a point to be represented, its stored neighbours j with similarity W[i, j] >= 0)::

    F(S) = sum_i max_{s in S} W[i, s]          (0 for a point with no selected neighbour)

It is monotone submodular; the lazy greedy below returns exactly the naive-greedy sequence (ties broken by the
lowest index). The greedy works on the *candidate-major* transpose ``cover = W.T`` (CSR): row x lists the points
that x can represent, so the gain of x is ``sum_j max(0, cover[x, j] - best[j])``. Memory is O(n * n_neighbors);
no n x n matrix is formed (cf. apricot issue #28: 196 TiB for a dense 7M x 7M similarity).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from datacomp.errors import ConfigError, is_int

from .lazy_greedy import lazy_greedy
from .settings import with_overrides

__all__ = [
    "KNNGraphSettings",
    "knn_graph",
    "lazy_greedy_facility_location",
    "facility_location",
    "graph_objective",
    "dense_objective",
]

SIMILARITIES = ("cosine", "rbf")


@dataclass(frozen=True)
class KNNGraphSettings:
    """How the kNN similarity graph of :func:`knn_graph` is built.

    Attributes:
        n_neighbors: neighbours kept per point, *including the point itself* (similarity 1).
        similarity: ``"cosine"``: s = (1 + cos) / 2 in [0, 1] (DeepCore's remap, always non-negative);
            ``"rbf"``: s = exp(-gamma * ||a - b||^2) with ``gamma`` defaulting to 1 / median kNN squared distance.
        knn_index: ``"flat"`` (exact, O(n^2 d) time), ``"ivf"`` (faiss IVF-Flat with 4 sqrt(n) lists, approximate;
            its recall@k on 128 random queries is recorded as ``estimated_recall``) or ``"auto"`` (flat up to
            50,000 points). The greedy is exact on whichever graph is built.
        gamma: RBF bandwidth (only for ``similarity="rbf"``).
        nprobe: IVF lists scanned per query (more = higher recall, slower).
    """

    n_neighbors: int = 16
    similarity: str = "cosine"
    knn_index: str = "auto"
    gamma: float | None = None
    nprobe: int = 8


def _knn_search(
    feats: np.ndarray, k: int, metric: str, knn_index: str, seed: int, progress: bool, nprobe: int = 8
) -> tuple[np.ndarray, np.ndarray, dict]:
    """k nearest neighbours of every row among all rows (faiss); returns (scores, ids) each ``[n, k]``, info."""
    import faiss  # lazy: keeps `import datacomp.selectors` light

    n, d = feats.shape
    if knn_index not in ("flat", "ivf"):
        raise ConfigError(f"knn_index must be 'auto', 'flat' or 'ivf', got {knn_index!r}")
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    info: dict = {}
    if knn_index == "flat":
        index = faiss.IndexFlat(d, faiss_metric)
    else:
        # IVF-Flat with 4 sqrt(n) lists (k-means, 10 iterations on 32 points per list), `nprobe` lists scanned per
        # query: a query touches ~nprobe / (4 sqrt(n)) of the pool (0.6% at n = 100k, nprobe = 8).
        n_lists = max(1, int(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlat(d, faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss_metric)
        index.cp.niter = 10
        index.cp.min_points_per_centroid = 1  # 32 points per list are enough for a coarse partition
        index.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        train_rows = rng.choice(n, size=min(n, 32 * n_lists), replace=False)
        index.train(feats[np.sort(train_rows)])
        index.nprobe = int(min(n_lists, nprobe))
        info.update(n_lists=n_lists, nprobe=index.nprobe)
    index.add(feats)
    scores = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    chunk = 16_384
    for lo in tqdm(range(0, n, chunk), desc="kNN graph", disable=not progress or n <= chunk, leave=False):
        scores[lo : lo + chunk], ids[lo : lo + chunk] = index.search(feats[lo : lo + chunk], k)
    if knn_index == "ivf":
        # Recall@k of the approximate graph, estimated on 128 random queries against an exact flat search.
        probe = np.sort(rng.choice(n, size=min(n, 128), replace=False))
        _, true_ids = faiss.knn(feats[probe], feats, k, metric=faiss_metric)
        hits = (ids[probe][:, :, None] == true_ids[:, None, :]).any(axis=2).sum()
        info["estimated_recall"] = float(hits / true_ids.size)
    return scores, ids, info


def knn_graph(features: np.ndarray, settings: KNNGraphSettings | None = None, *, seed: int = 0,
              progress: bool = False, **overrides: Any) -> tuple[sp.csr_matrix, dict]:
    """Sparse kNN similarity graph W (``[n, n]`` CSR, row i = point i's neighbours, self included).

    Args:
        features: ``[n, d]`` finite features.
        settings: :class:`KNNGraphSettings` (default: its defaults).
        seed: seed of the IVF training sample.
        progress: show a tqdm bar.
        **overrides: :class:`KNNGraphSettings` fields replacing those of ``settings`` (``n_neighbors=32``).

    Returns:
        ``(W, info)`` with ``info`` recording the similarity, k, index type and gamma.
    """
    s = with_overrides(KNNGraphSettings, settings, overrides, "knn_graph")
    n_neighbors, similarity, knn_index, gamma, nprobe = s.n_neighbors, s.similarity, s.knn_index, s.gamma, s.nprobe
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    feats = np.ascontiguousarray(features, dtype=np.float32)
    n = feats.shape[0]
    if not is_int(n_neighbors) or n_neighbors < 1:
        raise ConfigError(f"n_neighbors must be a positive int, got {n_neighbors!r}")
    k = int(min(n_neighbors, n))
    if knn_index == "auto":
        knn_index = "flat" if n <= 50_000 else "ivf"
    if similarity == "cosine":
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        feats = feats / np.maximum(norms, 1e-12)
        raw, ids, search_info = _knn_search(feats, min(k + 1, n), "ip", knn_index, seed, progress, nprobe)
    else:
        raw, ids, search_info = _knn_search(feats, min(k + 1, n), "l2", knn_index, seed, progress, nprobe)
    rows = np.arange(n)[:, None]
    valid = (ids >= 0) & (ids != rows)
    # Keep the first k-1 valid non-self neighbours of each row (stable order = faiss's nearest-first order).
    order = np.argsort(~valid, axis=1, kind="stable")[:, : k - 1]
    nb_ids = np.take_along_axis(ids, order, axis=1)
    nb_raw = np.take_along_axis(raw, order, axis=1).astype(np.float64)
    nb_valid = np.take_along_axis(valid, order, axis=1)
    info: dict = {"similarity": similarity, "n_neighbors": k, "knn_index": knn_index, **search_info}
    if similarity == "cosine":
        nb_sim = np.clip((1.0 + nb_raw) / 2.0, 0.0, 1.0)
    else:
        nb_raw = np.maximum(nb_raw, 0.0)
        if gamma is None:
            finite = nb_raw[nb_valid]
            median = float(np.median(finite)) if finite.size else 1.0
            gamma = 1.0 / median if median > 0 else 1.0
        nb_sim = np.exp(-float(gamma) * nb_raw)
        info["gamma"] = float(gamma)
    col = np.concatenate([np.arange(n)[:, None], nb_ids], axis=1)
    data = np.concatenate([np.ones((n, 1)), nb_sim], axis=1)
    keep = np.concatenate([np.ones((n, 1), dtype=bool), nb_valid], axis=1)
    row_idx = np.broadcast_to(np.arange(n)[:, None], col.shape)
    graph = sp.csr_matrix((data[keep], (row_idx[keep], col[keep])), shape=(n, n))
    graph.sum_duplicates()
    return graph, info


def lazy_greedy_facility_location(
    cover: sp.csr_matrix, budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact lazy greedy for F(S) = sum_j max_{s in S} cover[s, j] on a candidate-major sparse matrix.

    Args:
        cover: ``[n_candidates, n_points]`` CSR with non-negative entries (``W.T`` of a kNN graph ``W``).
        budget: number of candidates to pick.

    Returns:
        ``(indices, gains, best, assignment)``: picks in order, the marginal gain of each pick, the final
        per-point value max_{s in S} cover[s, j], and the per-point index of the representing pick (-1 if none).
    """
    cover = sp.csr_matrix(cover)
    n_cand, n_points = cover.shape
    indptr, cols, vals = cover.indptr, cover.indices, np.asarray(cover.data, dtype=np.float64)
    if vals.size and vals.min() < 0:
        raise ConfigError("facility location needs non-negative similarities")
    best = np.zeros(n_points, dtype=np.float64)
    assignment = np.full(n_points, -1, dtype=np.int64)

    def gain(item: int) -> float:
        lo, hi = indptr[item], indptr[item + 1]
        return float(np.maximum(vals[lo:hi] - best[cols[lo:hi]], 0.0).sum())

    def pick(item: int, fresh: float) -> None:
        lo, hi = indptr[item], indptr[item + 1]
        targets, sims = cols[lo:hi], vals[lo:hi]
        improved = sims > best[targets]
        best[targets[improved]] = sims[improved]
        assignment[targets[improved]] = item

    initial = np.add.reduceat(vals, indptr[:-1]) if vals.size else np.zeros(n_cand)
    initial[np.diff(indptr) == 0] = 0.0  # reduceat repeats the next value for empty rows
    selected, gains = lazy_greedy(initial, budget, gain, pick)
    return selected, gains, best, assignment


def graph_objective(graph: sp.csr_matrix, indices: np.ndarray) -> float:
    """F(S) = sum_i max_{s in S} W[i, s] on a point-major graph W (brute-force evaluation from the columns)."""
    cols = sp.csc_matrix(graph)[:, np.asarray(indices, dtype=np.int64)]
    return float(np.asarray(cols.max(axis=1).todense()).sum()) if cols.shape[1] else 0.0


def dense_objective(features: np.ndarray, indices: np.ndarray, similarity: str = "cosine",
                    gamma: float | None = None) -> float:
    """Facility location with the *full* (not kNN-sparsified) similarity, computed in row chunks.

    Memory is O(chunk * |S|); time O(n * |S| * d). ``similarity`` as in :func:`knn_graph`; ``gamma`` is required
    for ``"rbf"``.
    """
    if similarity not in SIMILARITIES:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if similarity == "rbf" and gamma is None:
        raise ConfigError("dense_objective with similarity='rbf' needs gamma")
    feats = np.asarray(features)

    def prepared(rows: np.ndarray) -> np.ndarray:  # float64 per block: no full-size copy
        rows = rows.astype(np.float64)
        if similarity == "cosine":
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows

    centers = prepared(feats[np.asarray(indices, dtype=np.int64)])
    cen_sq = np.einsum("ij,ij->i", centers, centers)
    total = 0.0
    for lo in range(0, feats.shape[0], 4096):
        block = prepared(feats[lo : lo + 4096])
        dots = block @ centers.T
        if similarity == "cosine":
            sims = (1.0 + dots) / 2.0
        else:
            d2 = np.maximum(np.einsum("ij,ij->i", block, block)[:, None] - 2.0 * dots + cen_sq[None, :], 0.0)
            sims = np.exp(-gamma * d2)
        total += float(sims.max(axis=1).sum())
    return total


def facility_location(features: np.ndarray, budget: int, settings: KNNGraphSettings | None = None, *, seed: int = 0,
                      progress: bool = False, **overrides: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Facility-location selection on a faiss kNN graph (the graph and the arguments as in :func:`knn_graph`).

    Returns:
        ``(indices, gains, weights, info)``: ``gains[t]`` is the marginal gain of pick t (non-increasing, higher
        = more representative); ``weights[t]`` is the number of graph points whose most similar selected item
        is pick t (itself included), the CRAIG-style cluster size; ``info`` holds the graph description, the
        objective on the graph, the objective curve and the fraction of points with a selected neighbour.
    """
    t0 = time.perf_counter()
    graph, info = knn_graph(features, settings, seed=seed, progress=progress, **overrides)
    t1 = time.perf_counter()
    selected, gains, best, assignment = lazy_greedy_facility_location(graph.T.tocsr(), budget)
    t2 = time.perf_counter()
    assigned = assignment[assignment >= 0]
    counts = np.bincount(assigned, minlength=graph.shape[0])
    info.update(
        objective=float(best.sum()),
        objective_curve=np.cumsum(gains).tolist(),
        represented_fraction=float((assignment >= 0).mean()),
        graph_nnz=int(graph.nnz),
        graph_seconds=t1 - t0,
        greedy_seconds=t2 - t1,
    )
    return selected, gains, counts[selected].astype(np.float64), info
