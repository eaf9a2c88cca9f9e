"""SAE-driven diversity methods (registered here): sae-greedy (max coverage of activated latents) and sae-simscale
(complexity-ordered similarity-threshold scan).

Both take ``threshold`` (activation level above which a latent counts as active) or ``threshold_quantile`` (that
level as a quantile of all positive activations: with a TopK SAE every item has exactly k latents above 0, so a
quantile is what makes |A(x)| differ between items). sae-simscale scans by |A(x)| descending, ties by activation
mass, then index (``order_by``: ``n-active``, ``length``, ``score``, ``index``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from datacomp.errors import ConfigError

from . import sae_select
from .inputs import Inputs
from .methods_scores import text_lengths
from .registry import SelectorSpec, base_pool, missing_input, register_selector

__all__: list[str] = []


def _sae_matrix(inputs: Inputs, method: str, batch_size: int = 8192) -> tuple[sp.csr_matrix, str]:
    if inputs.activations is not None:
        return inputs.activations, "activations"
    if inputs.sae is not None:
        if inputs.features is None:
            raise ConfigError(f"{method} with sae= needs features= (the embeddings the SAE encodes)")
        return inputs.sae.activations(inputs.features, batch_size=batch_size), "sae(features)"
    raise missing_input(method)


def _activation_threshold(acts: sp.csr_matrix, threshold: float, threshold_quantile: float | None) -> float:
    """The absolute threshold: ``threshold``, or the ``threshold_quantile`` of the positive activation values.

    A TopK SAE activates exactly k latents per item, so at threshold 0 every activated set has the same size and
    "complexity" (|A(x)|) cannot tell items apart; a quantile of the activation values (the paper's fixed tau = 10
    plays this role for token-level activations) makes |A(x)| vary with how strongly an item uses its latents.
    """
    if threshold_quantile is None:
        return float(threshold)
    if not 0.0 <= threshold_quantile < 1.0:
        raise ConfigError(f"threshold_quantile must be in [0, 1), got {threshold_quantile}")
    positive = acts.data[acts.data > 0]
    return float(np.quantile(positive, threshold_quantile)) if positive.size else 0.0


def _prepare_sae_greedy(inputs: Inputs, threshold: float = 0.0,
                        threshold_quantile: float | None = None) -> tuple[dict, dict]:
    acts, source = _sae_matrix(inputs, "sae-greedy")
    acts = sp.csr_matrix(acts)
    tau = _activation_threshold(acts, threshold, threshold_quantile)
    active = sp.csr_matrix(acts > tau, dtype=bool)
    sizes = np.diff(active.indptr)
    return base_pool(inputs.n, active=active), {"activation_source": source, "threshold": tau,
                                                "threshold_quantile": threshold_quantile,
                                                "mean_active": float(sizes.mean()), "reconstructed": True}


def _run_sae_greedy(pool: dict, budget: int, rng: np.random.Generator, tie_break: str = "index"):
    idx, gains, info = sae_select.sae_greedy(pool["active"], budget, tie_break=tie_break)
    return idx, gains, None, info


def _coverage_summary(pool: dict, indices: np.ndarray) -> dict:
    return {"coverage": int(np.unique(pool["active"][indices].indices).size)}


def _order_key(inputs: Inputs, vectors: sp.csr_matrix, mass: np.ndarray, order_by: str) -> np.ndarray:
    n = vectors.shape[0]
    if order_by == "n-active":
        # |A(x)| descending, ties (all of them for a TopK SAE at threshold 0) by activation mass, then index.
        ranked = np.lexsort((np.arange(n), -mass, -np.diff(vectors.indptr)))
        key = np.empty(n, dtype=np.float64)
        key[ranked] = np.arange(n, 0, -1, dtype=np.float64)
        return key
    if order_by == "length":
        key = text_lengths(inputs)
        if key is None:
            raise ConfigError("sae-simscale with order_by='length' needs lengths= or texts=")
        return key
    if order_by == "score":
        if inputs.scores is None:
            raise ConfigError("sae-simscale with order_by='score' needs scores=")
        return inputs.scores
    return -np.arange(n, dtype=np.float64)  # index order


def _prepare_sae_simscale(inputs: Inputs, threshold: float = 0.0, weighted: bool = True,
                          order_by: str = "n-active", threshold_quantile: float | None = None) -> tuple[dict, dict]:
    if order_by not in sae_select.ORDER_KEYS:
        raise ConfigError(f"order_by must be one of {sae_select.ORDER_KEYS}, got {order_by!r}")
    acts, source = _sae_matrix(inputs, "sae-simscale")
    acts = sp.csr_matrix(acts)
    tau = _activation_threshold(acts, threshold, threshold_quantile)
    vectors = sp.csr_matrix(acts.multiply(acts > tau), dtype=np.float32)
    vectors.eliminate_zeros()
    mass = np.asarray(vectors.sum(axis=1)).ravel().astype(np.float64)  # activation mass, before binarising
    if not weighted:
        vectors.data[:] = 1.0
    key = _order_key(inputs, vectors, mass, order_by)
    return base_pool(inputs.n, vectors=vectors, order_key=np.asarray(key, dtype=np.float64)), {
        "activation_source": source, "threshold": tau, "threshold_quantile": threshold_quantile,
        "weighted": weighted, "order_by": order_by, "similarity": "cosine", "reconstructed": True}


def _run_sae_simscale(pool: dict, budget: int, rng: np.random.Generator, delta: float | None = None,
                      tol: float = 1e-4, max_iter: int = 40):
    idx, sims, info = sae_select.sae_simscale(pool["vectors"], budget, order_key=pool["order_key"], delta=delta,
                                              tol=tol, max_iter=max_iter)
    return idx, sims, None, info


_SAE_NEEDS = "activations= or sae= with features="
register_selector(SelectorSpec(
    "sae-greedy", "greedy max coverage of the SAE latents the items activate",
    prepare=_prepare_sae_greedy, run=_run_sae_greedy, needs=_SAE_NEEDS,
    score_meaning="newly covered SAE latents (higher first)", source="features", summary=_coverage_summary))
register_selector(SelectorSpec(
    "sae-simscale", "SAE-vector diversity scan in complexity order, threshold tuned by bisection (SAE-SimScale)",
    prepare=_prepare_sae_simscale, run=_run_sae_simscale,
    needs=_SAE_NEEDS + " (lengths=/texts= for order_by='length', scores= for order_by='score')",
    score_meaning="max cosine similarity to earlier picks (lower = more novel)", source="features"))
