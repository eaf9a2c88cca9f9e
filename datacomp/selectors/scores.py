"""Per-item scores from training dynamics, and coverage-centric stratified sampling (CCS).

Direction convention (fixed across the toolkit, unlike DeepCore, issue #11):

=================  ==============================================  ======================
score              definition                                      higher means
=================  ==============================================  ======================
forgetting         # of correct -> incorrect transitions           more forgettable/hard
el2n               mean over runs of ||softmax - onehot(y)||_2     harder
grand              mean over runs of ||[p - y, (p - y) (x) e]||_2  larger gradient/harder
aum                mean over epochs of p_y - max_{c != y} p_c      *easier* (CCS drops low)
least-confidence   1 - max_c p_c                                   more uncertain
entropy            -sum_c p_c log p_c                              more uncertain
margin             1 - (p_(1) - p_(2))                             more uncertain
=================  ==============================================  ======================
"""

from __future__ import annotations

import numpy as np

from datacomp.errors import ConfigError, DataError, is_int

__all__ = [
    "UNCERTAINTY_KINDS",
    "softmax",
    "forgetting_scores",
    "el2n_scores",
    "grand_scores",
    "aum_scores",
    "uncertainty_scores",
    "ccs_sample",
]

UNCERTAINTY_KINDS = ("least-confidence", "entropy", "margin")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=-1, keepdims=True)


def _check_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (2, 3):
        raise ConfigError(f"{name} must be [n, C] or [runs, n, C], got shape {p.shape}")
    if p.shape[-1] < 2:
        raise ConfigError(f"{name} needs at least 2 classes in its last axis, got {p.shape[-1]}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or not np.allclose(p.sum(-1), 1.0, atol=1e-3):
        raise ConfigError(f"{name} must hold finite probabilities summing to 1 over the last axis "
                         "(pass logits= instead if these are logits)")
    return p


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(f"labels must lie in [0, {n_classes}) to match the probabilities' class axis, got "
                        f"{int(y.min())}..{int(y.max())}")
    return np.eye(n_classes, dtype=np.float64)[y]


def forgetting_scores(correct: np.ndarray, never_learned: str = "max") -> np.ndarray:
    """Forgetting events (Toneva et al. 2019) from a per-epoch correctness matrix.

    Args:
        correct: ``[epochs, n]`` (or ``[runs, epochs, n]``, averaged over runs) bool/0-1 matrix: was item i
            classified correctly at epoch e (typically in its training minibatch).
        never_learned: ``"max"`` (Toneva: never-learned items are infinitely forgettable; they get
            ``max_count + 1``) or ``"zero"`` (DeepCore: they count 0).

    Returns:
        float64 ``[n]``; higher = more forgetting events.
    """
    c = np.asarray(correct)
    if c.ndim not in (2, 3):
        raise ConfigError(f"correct must be [epochs, n] or [runs, epochs, n], got shape {c.shape}")
    if never_learned not in ("max", "zero"):
        raise ConfigError(f"never_learned must be 'max' or 'zero', got {never_learned!r}")
    c = c.astype(bool)
    events = (c[..., :-1, :] & ~c[..., 1:, :]).sum(axis=-2).astype(np.float64)
    learned = c.any(axis=-2)
    if never_learned == "max":
        events = np.where(learned, events, events.max(axis=-1, keepdims=True) + 1.0)
    return events.mean(axis=0) if events.ndim == 2 else events


def el2n_scores(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """EL2N (Paul et al. 2021): ||softmax(f(x)) - onehot(y)||_2, averaged over the leading runs axis if any.

    Args:
        probs: ``[n, C]`` or ``[runs, n, C]`` probabilities (e.g. several seeds at one early epoch, or the first
            epochs of one run for the CCS variant, which sums instead of averaging: multiply by ``runs``).
        labels: ``[n]`` integer labels.
    """
    p = _check_probs(probs)
    err = np.linalg.norm(p - _onehot(labels, p.shape[-1]), axis=-1)
    return err.mean(axis=0) if err.ndim == 2 else err


def grand_scores(probs: np.ndarray, labels: np.ndarray, embeddings: np.ndarray, include_bias: bool = True
                 ) -> np.ndarray:
    """GraNd with the last-layer gradient in closed form (as DeepCore computes it).

    For cross-entropy, dL/dlogits = p - y and dL/dW = (p - y) e^T for penultimate embedding e, so
    ||[g_b, g_W]||_2 = ||p - y||_2 * sqrt(1 + ||e||^2) (or ``* ||e||`` without the bias term). No per-sample
    backward pass is needed.

    Args:
        probs: ``[n, C]`` or ``[runs, n, C]``.
        labels: ``[n]``.
        embeddings: ``[n, D]`` or ``[runs, n, D]`` penultimate features matching ``probs``.
        include_bias: include the bias gradient ``g_b`` (DeepCore does).
    """
    p = _check_probs(probs)
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != p.ndim or e.shape[:-1] != p.shape[:-1]:
        raise ConfigError(f"embeddings shape {e.shape} does not match probs shape {p.shape} "
                         "(need the same runs/items axes)")
    err = np.linalg.norm(p - _onehot(labels, p.shape[-1]), axis=-1)
    sq = np.einsum("...d,...d->...", e, e)
    norm = err * np.sqrt(sq + (1.0 if include_bias else 0.0))
    return norm.mean(axis=0) if norm.ndim == 2 else norm


def aum_scores(probs_or_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Area under the margin (Pleiss et al. 2020) over a ``[epochs, n, C]`` (or ``[n, C]``) array.

    margin = value_y - max_{c != y} value_c, averaged over epochs; pass logits for the original AUM, probabilities
    for the CCS-repo variant. Higher = easier; CCS prunes the *lowest* AUM as likely mislabelled.
    """
    v = np.asarray(probs_or_logits, dtype=np.float64)
    if v.ndim not in (2, 3):
        raise ConfigError(f"probs_or_logits must be [n, C] or [epochs, n, C], got shape {v.shape}")
    y = np.asarray(labels)
    onehot = _onehot(y, v.shape[-1]).astype(bool)
    target = np.take_along_axis(v, np.broadcast_to(y[:, None], v.shape[:-1] + (1,)), axis=-1)[..., 0]
    others = np.where(onehot, -np.inf, v).max(axis=-1)
    margin = target - others
    return margin.mean(axis=0) if margin.ndim == 2 else margin


def uncertainty_scores(probs: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Uncertainty from ``[n, C]`` (or ``[runs, n, C]``, averaged) probabilities; higher = more uncertain.

    ``least-confidence``: 1 - max_c p_c. ``entropy``: -sum p log p (nats). ``margin``: 1 - (p_(1) - p_(2)).
    DeepCore's LeastConfidence uses the max *logit* and its unbalanced path selects the most certain items
    (issue #11); here every kind means "uncertain is high", and selection direction is a separate choice.
    """
    if kind not in UNCERTAINTY_KINDS:
        raise ConfigError(f"uncertainty kind must be one of {UNCERTAINTY_KINDS}, got {kind!r}")
    p = _check_probs(probs)
    if kind == "least-confidence":
        s = 1.0 - p.max(axis=-1)
    elif kind == "entropy":
        s = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)
    else:
        top2 = -np.partition(-p, 1, axis=-1)[..., :2]
        s = 1.0 - (top2[..., 0] - top2[..., 1])
    return s.mean(axis=0) if s.ndim == 2 else s


def ccs_sample(
    scores: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    beta: float = 0.0,
    hard: str = "high",
    n_strata: int = 50,
) -> tuple[np.ndarray, dict]:
    """Coverage-centric coreset selection (Zheng et al., ICLR 2023), over any importance score.

    1. Hard-cut: drop the ``beta`` fraction of the pool that is hardest (``hard="high"``: the highest scores, as
       for EL2N/forgetting; ``hard="low"``: the lowest, as for AUM). ``floor(beta * n)`` items are dropped.
    2. Split the remaining score range into ``n_strata`` equal-width strata (the last one closed on the right).
    3. Visit strata from smallest to largest (ties: lower score first); give each
       ``min(|stratum|, remaining_budget // remaining_strata)`` and sample that many uniformly at random.

    Args:
        scores: ``[n]`` finite importance scores.
        budget: items to select; must not exceed the pool left after the hard cut.
        rng: random generator.
        beta: hard-cut ratio in ``[0, 1)``.
        hard: which end of the score is hard: ``"high"`` or ``"low"``.
        n_strata: number of strata (CCS default 50).

    Returns:
        ``(indices, info)``; indices are grouped by stratum (ascending score), random order inside a stratum.
        ``info`` holds the strata edges, sizes, per-stratum budgets and the number of items cut.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"beta (hard-cut ratio) must be in [0, 1), got {beta}")
    if hard not in ("high", "low"):
        raise ConfigError(f"hard must be 'high' or 'low', got {hard!r}")
    if not is_int(n_strata) or n_strata < 1:
        raise ConfigError(f"n_strata must be a positive int, got {n_strata!r}")
    n_cut = int(np.floor(beta * n))
    order = np.argsort(-s if hard == "high" else s, kind="stable")
    kept = np.sort(order[n_cut:])
    if budget > kept.size:
        raise ConfigError(f"budget {budget} exceeds the {kept.size} items left after the hard cut "
                         f"(beta={beta} removed {n_cut}); lower beta or the budget")
    ks = s[kept]
    lo, hi = float(ks.min()), float(ks.max())
    edges = np.linspace(lo, hi, n_strata + 1)
    stratum = np.clip(np.searchsorted(edges, ks, side="right") - 1, 0, n_strata - 1)
    sizes = np.bincount(stratum, minlength=n_strata)
    alloc = np.zeros(n_strata, dtype=np.int64)
    remaining = budget
    visit = np.argsort(sizes, kind="stable")
    for rank, b in enumerate(visit):  # loop over strata, not items
        alloc[b] = min(int(sizes[b]), remaining // (n_strata - rank))
        remaining -= int(alloc[b])
    # Sampling: a random key per item, then the alloc[b] smallest keys inside each stratum.
    keys = rng.random(kept.size)
    by_stratum = np.lexsort((keys, stratum))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank_in_stratum = np.arange(kept.size) - starts[stratum[by_stratum]]
    chosen = by_stratum[rank_in_stratum < alloc[stratum[by_stratum]]]
    picked = kept[chosen]
    info = {
        "beta": float(beta), "hard": hard, "n_strata": int(n_strata), "n_cut": n_cut,
        "strata_edges": edges.tolist(), "strata_sizes": sizes.tolist(), "strata_budgets": alloc.tolist(),
        "unfilled": int(remaining),
    }
    if remaining:
        # Cannot happen with the ascending-size visit order (each stratum gets <= its share); kept as a guard.
        rest = np.setdiff1d(kept, picked)
        picked = np.concatenate([picked, rng.choice(rest, size=remaining, replace=False)])
    return picked.astype(np.int64), info
