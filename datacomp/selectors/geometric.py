"""Feature-space greedy selectors: kernel herding and k-center greedy.

Both run one vectorised O(n * d) pass per greedy step and keep O(n) state besides the features, so memory is
O(n * d + n) and time O(budget * n * d); no n x n matrix is ever formed.
"""

from __future__ import annotations

import numpy as np

from datacomp.errors import ConfigError

__all__ = ["herding", "kcenter_greedy", "running_mean_error", "max_min_distance"]


def _as_float(features: np.ndarray) -> np.ndarray:
    """float64 stays float64 (exact oracles in tests); everything else becomes float32 (speed)."""
    dtype = np.float64 if features.dtype == np.float64 else np.float32
    return np.ascontiguousarray(features, dtype=dtype)


def running_mean_error(features: np.ndarray, order: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """||mean(features[order[:t+1]]) - target||_2 for every prefix t (target defaults to the feature mean).

    Args:
        features: ``[n, d]`` features.
        order: selected indices in selection order.
        target: ``[d]`` vector to approximate; defaults to ``features.mean(0)``.

    Returns:
        float64 array of length ``len(order)``.
    """
    feats = np.asarray(features, dtype=np.float64)
    mu = feats.mean(axis=0) if target is None else np.asarray(target, dtype=np.float64)
    prefix_means = np.cumsum(feats[np.asarray(order)], axis=0) / np.arange(1, len(order) + 1)[:, None]
    return np.linalg.norm(prefix_means - mu, axis=1)


def herding(
    features: np.ndarray, budget: int, mode: str = "textbook"
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Kernel herding on the feature mean (Welling 2009; Chen, Welling & Smola 2010, linear kernel).

    Textbook herding picks, at step t (S = items picked so far, mu = mean of ``features``)::

        x_t = argmin_{x not in S} || mu - (sum_{s in S} e_s + e_x) / (t + 1) ||

    i.e. the item that brings the running mean of the selected features closest to the mean.
    ``mode="deepcore"`` reproduces DeepCore's ``argmax`` of the same distance (PatrickZH/DeepCore@74ec709,
    ``herding.py``), which picks the item that pushes the running mean *away* from the target; it exists only to
    reproduce that library's numbers and is not the algorithm its docstring names.

    Args:
        features: ``[n, d]`` finite features.
        budget: number of items, ``1 <= budget <= n``.
        mode: ``"textbook"`` (default) or ``"deepcore"``.

    Returns:
        ``(indices, scores, info)``; ``scores[t]`` is the running-mean error ||mean(S_t) - mu|| after step t (lower
        is better); ``info`` holds ``final_mean_error``.
    """
    if mode not in ("textbook", "deepcore"):
        raise ConfigError(f"herding mode must be 'textbook' or 'deepcore', got {mode!r}")
    feats = _as_float(features)
    n = feats.shape[0]
    mu = feats.mean(axis=0, dtype=np.float64).astype(feats.dtype)
    sq_norms = np.einsum("ij,ij->i", feats, feats)
    running_sum = np.zeros_like(mu)
    available = np.ones(n, dtype=bool)
    selected = np.empty(budget, dtype=np.int64)
    errors = np.empty(budget, dtype=np.float64)
    for t in range(budget):
        residual = (t + 1) * mu - running_sum
        # ||residual - e_x||^2 up to the constant ||residual||^2.
        dist = sq_norms - 2.0 * (feats @ residual)
        if mode == "textbook":
            dist[~available] = np.inf
            pick = int(np.argmin(dist))
        else:
            dist[~available] = -np.inf
            pick = int(np.argmax(dist))
        selected[t] = pick
        available[pick] = False
        running_sum += feats[pick]
        errors[t] = float(np.linalg.norm(running_sum.astype(np.float64) / (t + 1) - mu))
    return selected, errors, {"final_mean_error": float(errors[-1]), "mode": mode}


def _sq_dist_to(feats: np.ndarray, sq_norms: np.ndarray, center: int) -> np.ndarray:
    dist = sq_norms - 2.0 * (feats @ feats[center]) + sq_norms[center]
    np.maximum(dist, 0.0, out=dist)
    return dist


def kcenter_greedy(
    features: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    start: str = "random",
    already_selected: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """k-center greedy (Gonzalez 1985; Sener & Savarese 2018) in Euclidean distance.

    Repeatedly add the item farthest from the selected set: ``argmax_x min_{s in S} ||e_x - e_s||``. The
    min-distance vector is updated with one matrix-vector product per step (O(n) extra memory).

    Args:
        features: ``[n, d]`` finite features.
        budget: number of new centers to pick.
        rng: random generator (used only by ``start="random"``).
        start: first center when nothing is already selected: ``"random"`` (Sener & Savarese; default) or
            ``"mean"`` (the item closest to the feature mean; deterministic).
        already_selected: indices treated as existing centers (not returned, not counted in the budget).

    Returns:
        ``(indices, scores, info)``; ``scores[t]`` is the distance of the t-th pick to the set selected before it
        (``inf`` for a first center picked with no existing centers; non-increasing afterwards).
        ``info["radius"]`` is the final covering radius max_x min_{s} ||e_x - e_s||, ``info["radius_curve"]``
        the radius after every step.
    """
    if start not in ("random", "mean"):
        raise ConfigError(f"kcenter start must be 'random' or 'mean', got {start!r}")
    feats = _as_float(features)
    n = feats.shape[0]
    sq_norms = np.einsum("ij,ij->i", feats, feats)
    min_dist = np.full(n, np.inf, dtype=feats.dtype)
    pre = np.asarray(already_selected if already_selected is not None else [], dtype=np.int64)
    if pre.size:
        if pre.min() < 0 or pre.max() >= n:
            raise ConfigError(f"already_selected must index into the {n} items")
        for center in np.unique(pre):  # loop over existing centers, not over samples
            np.minimum(min_dist, _sq_dist_to(feats, sq_norms, int(center)), out=min_dist)
        min_dist[pre] = -1.0  # -1 marks "already a center" so it is never picked again, even among duplicates
    selected = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    radius_curve = np.empty(budget, dtype=np.float64)
    for t in range(budget):
        if t == 0 and not pre.size:
            if start == "random":
                pick = int(rng.integers(n))
            else:
                mu = feats.mean(axis=0)
                pick = int(np.argmin(sq_norms - 2.0 * (feats @ mu)))
            scores[t] = np.inf
        else:
            pick = int(np.argmax(min_dist))
            scores[t] = float(np.sqrt(min_dist[pick]))
        selected[t] = pick
        np.minimum(min_dist, _sq_dist_to(feats, sq_norms, pick), out=min_dist)
        min_dist[pick] = -1.0
        radius_curve[t] = float(np.sqrt(max(float(min_dist.max()), 0.0)))
    return selected, scores, {"radius": float(radius_curve[-1]), "radius_curve": radius_curve.tolist(),
                              "start": start, "n_already_selected": int(pre.size)}


def max_min_distance(features: np.ndarray, centers: np.ndarray) -> float:
    """Covering radius max_x min_{s in centers} ||e_x - e_s|| (chunked; O(chunk * |centers|) memory)."""
    feats = np.asarray(features)
    cen = feats[np.asarray(centers, dtype=np.int64)].astype(np.float64)
    cen_sq = np.einsum("ij,ij->i", cen, cen)
    radius = 0.0
    for lo in range(0, feats.shape[0], 8192):
        block = feats[lo : lo + 8192].astype(np.float64)  # float64 per block: no full-size copy
        d2 = np.einsum("ij,ij->i", block, block)[:, None] - 2.0 * block @ cen.T + cen_sq[None, :]
        radius = max(radius, float(np.sqrt(max(d2.min(axis=1).max(), 0.0))))
    return radius
