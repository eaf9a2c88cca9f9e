"""Method registry behind :func:`datacomp.selectors.select`.

Every method has two parts:

* ``PREPARE[method](inputs, **params) -> (pool, info)`` turns the user's inputs into per-item arrays over the
  whole pool (``pool`` maps names to arrays whose first axis is the item, or CSR matrices with one row per item);
  it validates that the required inputs are present. Per-item scores are computed here, once, globally.
* ``RUNNERS[method](pool, budget, rng, **params) -> (local_indices, scores, weights, info)`` selects ``budget``
  items from a (possibly class-restricted) pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import geometric, sae_select, submodular
from . import scores as score_fns

__all__ = ["Inputs", "PREPARE", "RUNNERS", "REQUIRED", "SCORE_MEANING", "GLOBAL_SUMMARY", "subset"]


@dataclass
class Inputs:
    """Validated user inputs (arrays already checked for shape/finiteness by ``select``)."""

    features: np.ndarray | None = None
    scores: np.ndarray | None = None
    probs: np.ndarray | None = None
    logits: np.ndarray | None = None
    correct: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    lengths: np.ndarray | None = None
    texts: object | None = None
    sae: object | None = None
    activations: sp.csr_matrix | None = None
    dynamics: object | None = None
    labels: np.ndarray | None = None
    n: int = 0


REQUIRED = {
    "random": "nothing beyond the pool size (any input, or n_items=)",
    "herding": "features=",
    "kcenter": "features=",
    "facility-location": "features=",
    "forgetting": "scores=, correct= ([epochs, n] correctness) or dynamics=",
    "el2n": "scores=, probs=/logits= with labels=, or dynamics=",
    "grand": "scores=, probs=/logits= with labels= and embeddings= (or features=), or dynamics=",
    "uncertainty": "scores=, probs=, logits= or dynamics=",
    "ccs": "scores= (any per-item importance score)",
    "longest": "lengths= or texts=",
    "sae-greedy": "activations= or sae= with features=",
    "sae-simscale": "activations= or sae= with features= (lengths=/texts= for order_by='length', "
                    "scores= for order_by='score')",
}

SCORE_MEANING = {
    "random": "uniform random key; picks are the smallest keys",
    "herding": "running-mean error ||mean(S_t) - mu|| after the pick (lower is better)",
    "kcenter": "distance of the pick to earlier picks (inf for a random first center)",
    "facility-location": "marginal facility-location gain on the kNN graph (higher first)",
    "forgetting": "forgetting events (higher = more forgettable)",
    "el2n": "EL2N (higher = harder)",
    "grand": "GraNd last-layer gradient norm (higher = larger gradient)",
    "uncertainty": "uncertainty (higher = more uncertain)",
    "ccs": "the importance score of the pick",
    "longest": "length (higher = longer)",
    "sae-greedy": "newly covered SAE latents (higher first)",
    "sae-simscale": "max cosine similarity to earlier picks (lower = more novel)",
}


def _missing(method: str) -> ValueError:
    return ValueError(f"{method} needs {REQUIRED[method]}")


def _base(inputs: Inputs, **arrays) -> dict:
    pool = {k: v for k, v in arrays.items() if v is not None}
    pool["item_index"] = np.arange(inputs.n)
    return pool


def subset(pool: dict, members: np.ndarray) -> dict:
    """Restrict every per-item array (or CSR row set) of ``pool`` to ``members``."""
    return {k: (v[members] if v is not None else None) for k, v in pool.items()}


# --------------------------------------------------------------------------------------------- prepare


def prepare_random(inputs: Inputs) -> tuple[dict, dict]:
    return {"item_index": np.arange(inputs.n)}, {}


def _prepare_features(method: str):
    def prepare(inputs: Inputs) -> tuple[dict, dict]:
        if inputs.features is None:
            raise _missing(method)
        return _base(inputs, features=inputs.features), {"feature_dim": int(inputs.features.shape[1])}

    return prepare


def prepare_kcenter(inputs: Inputs, already_selected=None) -> tuple[dict, dict]:
    if inputs.features is None:
        raise _missing("kcenter")
    n = inputs.features.shape[0]
    mask = np.zeros(n, dtype=bool)
    if already_selected is not None:
        pre = np.asarray(already_selected)
        if pre.ndim != 1 or pre.dtype.kind not in "iu" or (pre.size and (pre.min() < 0 or pre.max() >= n)):
            raise ValueError(f"already_selected must be a 1-D array of item indices in [0, {n})")
        mask[pre] = True
    return _base(inputs, features=inputs.features, already=mask), {"n_already_selected": int(mask.sum())}


def _probs(inputs: Inputs) -> np.ndarray | None:
    if inputs.probs is not None:
        return inputs.probs
    if inputs.logits is not None:
        return score_fns.softmax(inputs.logits)
    return None


def _scored(inputs: Inputs, values: np.ndarray, source: str) -> tuple[dict, dict]:
    return _base(inputs, item_scores=np.asarray(values, dtype=np.float64)), {"score_source": source}


def prepare_forgetting(inputs: Inputs, never_learned: str = "max") -> tuple[dict, dict]:
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    if inputs.correct is not None:
        return _scored(inputs, score_fns.forgetting_scores(inputs.correct, never_learned), "correct")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.forgetting(never_learned), "dynamics")
    raise _missing("forgetting")


def _need_labels(inputs: Inputs, method: str) -> np.ndarray:
    if inputs.labels is None:
        raise ValueError(f"{method} from probs=/logits= needs labels= (one integer label per item)")
    if inputs.labels.dtype.kind not in "iub":
        raise ValueError(f"{method} needs integer class labels in [0, C), got dtype {inputs.labels.dtype}")
    return inputs.labels


def prepare_el2n(inputs: Inputs, epoch: int | None = None) -> tuple[dict, dict]:
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    probs = _probs(inputs)
    if probs is not None:
        return _scored(inputs, score_fns.el2n_scores(probs, _need_labels(inputs, "el2n")), "probs")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.el2n(epoch), "dynamics")
    raise _missing("el2n")


def prepare_grand(inputs: Inputs, include_bias: bool = True) -> tuple[dict, dict]:
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    probs = _probs(inputs)
    if probs is not None:
        emb = inputs.embeddings if inputs.embeddings is not None else inputs.features
        if emb is None:
            raise ValueError("grand from probs=/logits= needs embeddings= (or features=): the penultimate "
                             "features of the same model")
        values = score_fns.grand_scores(probs, _need_labels(inputs, "grand"), emb, include_bias)
        return _scored(inputs, values, "probs")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.grand(include_bias), "dynamics")
    raise _missing("grand")


def prepare_uncertainty(inputs: Inputs, kind: str = "entropy") -> tuple[dict, dict]:
    if kind not in score_fns.UNCERTAINTY_KINDS:
        raise ValueError(f"uncertainty kind must be one of {score_fns.UNCERTAINTY_KINDS}, got {kind!r}")
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    probs = _probs(inputs)
    if probs is not None:
        return _scored(inputs, score_fns.uncertainty_scores(probs, kind), "probs")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.uncertainty(kind), "dynamics")
    raise _missing("uncertainty")


def prepare_ccs(inputs: Inputs) -> tuple[dict, dict]:
    if inputs.scores is None:
        raise _missing("ccs")
    return _scored(inputs, inputs.scores, "scores")


def _lengths(inputs: Inputs) -> np.ndarray | None:
    if inputs.lengths is not None:
        return inputs.lengths
    if inputs.texts is not None:
        if isinstance(inputs.texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        return np.fromiter(map(len, inputs.texts), dtype=np.float64, count=len(inputs.texts))
    return None


def prepare_longest(inputs: Inputs) -> tuple[dict, dict]:
    lengths = _lengths(inputs)
    if lengths is None:
        raise _missing("longest")
    return _scored(inputs, lengths, "lengths" if inputs.lengths is not None else "texts (characters)")


def _sae_matrix(inputs: Inputs, method: str, batch_size: int = 8192) -> tuple[sp.csr_matrix, str]:
    if inputs.activations is not None:
        return inputs.activations, "activations"
    if inputs.sae is not None:
        if inputs.features is None:
            raise ValueError(f"{method} with sae= needs features= (the embeddings the SAE encodes)")
        return inputs.sae.activations(inputs.features, batch_size=batch_size), "sae(features)"
    raise _missing(method)


def _activation_threshold(acts: sp.csr_matrix, threshold: float, threshold_quantile: float | None) -> float:
    """The absolute threshold: ``threshold``, or the ``threshold_quantile`` of the positive activation values.

    A TopK SAE activates exactly k latents per item, so at threshold 0 every activated set has the same size and
    "complexity" (|A(x)|) cannot tell items apart; a quantile of the activation values (the paper's fixed tau = 10
    plays this role for token-level activations) makes |A(x)| vary with how strongly an item uses its latents.
    """
    if threshold_quantile is None:
        return float(threshold)
    if not 0.0 <= threshold_quantile < 1.0:
        raise ValueError(f"threshold_quantile must be in [0, 1), got {threshold_quantile}")
    positive = acts.data[acts.data > 0]
    return float(np.quantile(positive, threshold_quantile)) if positive.size else 0.0


def prepare_sae_greedy(inputs: Inputs, threshold: float = 0.0,
                       threshold_quantile: float | None = None) -> tuple[dict, dict]:
    acts, source = _sae_matrix(inputs, "sae-greedy")
    acts = sp.csr_matrix(acts)
    tau = _activation_threshold(acts, threshold, threshold_quantile)
    active = sp.csr_matrix(acts > tau, dtype=bool)
    sizes = np.diff(active.indptr)
    return _base(inputs, active=active), {"activation_source": source, "threshold": tau,
                                          "threshold_quantile": threshold_quantile,
                                          "mean_active": float(sizes.mean()), "reconstructed": True}


def prepare_sae_simscale(inputs: Inputs, threshold: float = 0.0, weighted: bool = True,
                         order_by: str = "n-active", threshold_quantile: float | None = None) -> tuple[dict, dict]:
    if order_by not in sae_select.ORDER_KEYS:
        raise ValueError(f"order_by must be one of {sae_select.ORDER_KEYS}, got {order_by!r}")
    acts, source = _sae_matrix(inputs, "sae-simscale")
    acts = sp.csr_matrix(acts)
    tau = _activation_threshold(acts, threshold, threshold_quantile)
    vectors = sp.csr_matrix(acts.multiply(acts > tau), dtype=np.float32)
    vectors.eliminate_zeros()
    mass = np.asarray(vectors.sum(axis=1)).ravel().astype(np.float64)  # activation mass, before binarising
    if not weighted:
        vectors.data[:] = 1.0
    if order_by == "n-active":
        # |A(x)| descending, ties (all of them for a TopK SAE at threshold 0) by activation mass, then index.
        n = vectors.shape[0]
        ranked = np.lexsort((np.arange(n), -mass, -np.diff(vectors.indptr)))
        key = np.empty(n, dtype=np.float64)
        key[ranked] = np.arange(n, 0, -1, dtype=np.float64)
    elif order_by == "length":
        key = _lengths(inputs)
        if key is None:
            raise ValueError("sae-simscale with order_by='length' needs lengths= or texts=")
    elif order_by == "score":
        if inputs.scores is None:
            raise ValueError("sae-simscale with order_by='score' needs scores=")
        key = inputs.scores
    else:
        key = -np.arange(vectors.shape[0], dtype=np.float64)  # index order
    return _base(inputs, vectors=vectors, order_key=np.asarray(key, dtype=np.float64)), {
        "activation_source": source, "threshold": tau, "threshold_quantile": threshold_quantile,
        "weighted": weighted, "order_by": order_by,
        "similarity": "cosine", "reconstructed": True}


PREPARE = {
    "random": prepare_random,
    "herding": _prepare_features("herding"),
    "kcenter": prepare_kcenter,
    "facility-location": _prepare_features("facility-location"),
    "forgetting": prepare_forgetting,
    "el2n": prepare_el2n,
    "grand": prepare_grand,
    "uncertainty": prepare_uncertainty,
    "ccs": prepare_ccs,
    "longest": prepare_longest,
    "sae-greedy": prepare_sae_greedy,
    "sae-simscale": prepare_sae_simscale,
}

# --------------------------------------------------------------------------------------------- runners


def run_random(pool: dict, budget: int, rng: np.random.Generator):
    keys = rng.random(pool["item_index"].shape[0])
    order = np.argsort(keys, kind="stable")[:budget]
    return order, keys[order], None, {}


def run_herding(pool: dict, budget: int, rng: np.random.Generator, mode: str = "textbook"):
    idx, errors, info = geometric.herding(pool["features"], budget, mode=mode)
    return idx, errors, None, info


def run_kcenter(pool: dict, budget: int, rng: np.random.Generator, start: str = "random"):
    already = np.flatnonzero(pool["already"])
    free = pool["already"].size - already.size
    if budget > free:
        raise ValueError(f"kcenter budget {budget} exceeds the {free} items not in already_selected")
    idx, dists, info = geometric.kcenter_greedy(pool["features"], budget, rng, start=start,
                                                already_selected=already)
    return idx, dists, None, info


def run_facility_location(pool: dict, budget: int, rng: np.random.Generator, n_neighbors: int = 16,
                          similarity: str = "cosine", knn_index: str = "auto", gamma: float | None = None,
                          nprobe: int = 8, progress: bool = False):
    idx, gains, weights, info = submodular.facility_location(
        pool["features"], budget, n_neighbors=n_neighbors, similarity=similarity, knn_index=knn_index,
        gamma=gamma, seed=int(rng.integers(2**31)), progress=progress, nprobe=nprobe)
    return idx, gains, weights, info


def _top(values: np.ndarray, budget: int, highest: bool) -> np.ndarray:
    """Indices of the ``budget`` highest (or lowest) values; ties by lowest index."""
    return np.lexsort((np.arange(values.size), -values if highest else values))[:budget]


def run_top_score(pool: dict, budget: int, rng: np.random.Generator, prefer: str = "high"):
    if prefer not in ("high", "low"):
        raise ValueError(f"prefer must be 'high' or 'low', got {prefer!r}")
    values = pool["item_scores"]
    idx = _top(values, budget, prefer == "high")
    return idx, values[idx], None, {"prefer": prefer}


def run_uncertainty(pool: dict, budget: int, rng: np.random.Generator, prefer: str = "uncertain"):
    if prefer not in ("uncertain", "certain"):
        raise ValueError(f"prefer must be 'uncertain' or 'certain', got {prefer!r}")
    values = pool["item_scores"]
    idx = _top(values, budget, prefer == "uncertain")
    return idx, values[idx], None, {"prefer": prefer}


def run_ccs(pool: dict, budget: int, rng: np.random.Generator, beta: float = 0.0, hard: str = "high",
            n_strata: int = 50):
    idx, info = score_fns.ccs_sample(pool["item_scores"], budget, rng, beta=beta, hard=hard, n_strata=n_strata)
    return idx, pool["item_scores"][idx], None, info


def run_sae_greedy(pool: dict, budget: int, rng: np.random.Generator, tie_break: str = "index"):
    idx, gains, info = sae_select.sae_greedy(pool["active"], budget, tie_break=tie_break)
    return idx, gains, None, info


def run_sae_simscale(pool: dict, budget: int, rng: np.random.Generator, delta: float | None = None,
                     tol: float = 1e-4, max_iter: int = 40):
    idx, sims, info = sae_select.sae_simscale(pool["vectors"], budget, order_key=pool["order_key"], delta=delta,
                                              tol=tol, max_iter=max_iter)
    return idx, sims, None, info


RUNNERS = {
    "random": run_random,
    "herding": run_herding,
    "kcenter": run_kcenter,
    "facility-location": run_facility_location,
    "forgetting": run_top_score,
    "el2n": run_top_score,
    "grand": run_top_score,
    "uncertainty": run_uncertainty,
    "ccs": run_ccs,
    "longest": run_top_score,
    "sae-greedy": run_sae_greedy,
    "sae-simscale": run_sae_simscale,
}


def _coverage_summary(pool: dict, indices: np.ndarray) -> dict:
    return {"coverage": int(np.unique(pool["active"][indices].indices).size)}


def _herding_summary(pool: dict, indices: np.ndarray) -> dict:
    err = geometric.running_mean_error(pool["features"], indices)
    return {"mean_error": float(err[-1])}


GLOBAL_SUMMARY = {"sae-greedy": _coverage_summary, "herding": _herding_summary}
