"""Score-based methods (registered here): forgetting, EL2N, GraNd, uncertainty, CCS and longest.

Each computes one score per pool item in its prepare step (from ``scores=`` as given, from model outputs, or from
a proxy's :class:`~datacomp.selectors.proxy_training.ProxyDynamics`) and then keeps the top of each class
(ties: lowest index), except CCS, which samples across score strata.
"""

from __future__ import annotations

import numpy as np

from datacomp.errors import ConfigError, DataError

from . import scores as score_fns
from .inputs import Inputs
from .registry import SelectorSpec, base_pool, missing_input, register_selector

__all__ = ["text_lengths"]


def _scored(inputs: Inputs, values: np.ndarray, source: str) -> tuple[dict, dict]:
    return base_pool(inputs.n, item_scores=np.asarray(values, dtype=np.float64)), {"score_source": source}


def _probs(inputs: Inputs) -> np.ndarray | None:
    if inputs.probs is not None:
        return inputs.probs
    if inputs.logits is not None:
        return score_fns.softmax(inputs.logits)
    return None


def _need_labels(inputs: Inputs, method: str) -> np.ndarray:
    if inputs.labels is None:
        raise ConfigError(f"{method} from probs=/logits= needs labels= (one integer label per item)")
    if inputs.labels.dtype.kind not in "iub":
        raise DataError(f"{method} needs integer class labels in [0, C), got dtype {inputs.labels.dtype}")
    return inputs.labels


def _top(values: np.ndarray, budget: int, highest: bool) -> np.ndarray:
    """Indices of the ``budget`` highest (or lowest) values; ties by lowest index."""
    return np.lexsort((np.arange(values.size), -values if highest else values))[:budget]


def _run_top_score(pool: dict, budget: int, rng: np.random.Generator, prefer: str = "high"):
    if prefer not in ("high", "low"):
        raise ConfigError(f"prefer must be 'high' or 'low', got {prefer!r}")
    values = pool["item_scores"]
    idx = _top(values, budget, prefer == "high")
    return idx, values[idx], None, {"prefer": prefer}


# ------------------------------------------------------------------------------------------------ prepare steps
def _prepare_forgetting(inputs: Inputs, never_learned: str = "max") -> tuple[dict, dict]:
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    if inputs.correct is not None:
        return _scored(inputs, score_fns.forgetting_scores(inputs.correct, never_learned), "correct")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.forgetting(never_learned), "dynamics")
    raise missing_input("forgetting")


def _prepare_el2n(inputs: Inputs, epoch: int | None = None) -> tuple[dict, dict]:
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    probs = _probs(inputs)
    if probs is not None:
        return _scored(inputs, score_fns.el2n_scores(probs, _need_labels(inputs, "el2n")), "probs")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.el2n(epoch), "dynamics")
    raise missing_input("el2n")


def _prepare_grand(inputs: Inputs, include_bias: bool = True) -> tuple[dict, dict]:
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    probs = _probs(inputs)
    if probs is not None:
        emb = inputs.embeddings if inputs.embeddings is not None else inputs.features
        if emb is None:
            raise ConfigError("grand from probs=/logits= needs embeddings= (or features=): the penultimate "
                              "features of the same model")
        values = score_fns.grand_scores(probs, _need_labels(inputs, "grand"), emb, include_bias)
        return _scored(inputs, values, "probs")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.grand(include_bias), "dynamics")
    raise missing_input("grand")


def _prepare_uncertainty(inputs: Inputs, kind: str = "entropy") -> tuple[dict, dict]:
    if kind not in score_fns.UNCERTAINTY_KINDS:
        raise ConfigError(f"uncertainty kind must be one of {score_fns.UNCERTAINTY_KINDS}, got {kind!r}")
    if inputs.scores is not None:
        return _scored(inputs, inputs.scores, "scores")
    probs = _probs(inputs)
    if probs is not None:
        return _scored(inputs, score_fns.uncertainty_scores(probs, kind), "probs")
    if inputs.dynamics is not None:
        return _scored(inputs, inputs.dynamics.uncertainty(kind), "dynamics")
    raise missing_input("uncertainty")


def _run_uncertainty(pool: dict, budget: int, rng: np.random.Generator, prefer: str = "uncertain"):
    if prefer not in ("uncertain", "certain"):
        raise ConfigError(f"prefer must be 'uncertain' or 'certain', got {prefer!r}")
    values = pool["item_scores"]
    idx = _top(values, budget, prefer == "uncertain")
    return idx, values[idx], None, {"prefer": prefer}


def _prepare_ccs(inputs: Inputs) -> tuple[dict, dict]:
    if inputs.scores is None:
        raise missing_input("ccs")
    return _scored(inputs, inputs.scores, "scores")


def _run_ccs(pool: dict, budget: int, rng: np.random.Generator, beta: float = 0.0, hard: str = "high",
             n_strata: int = 50):
    idx, info = score_fns.ccs_sample(pool["item_scores"], budget, rng, beta=beta, hard=hard, n_strata=n_strata)
    return idx, pool["item_scores"][idx], None, info


def text_lengths(inputs: Inputs) -> np.ndarray | None:
    """``lengths=``, or the character counts of ``texts=``, or None."""
    if inputs.lengths is not None:
        return inputs.lengths
    if inputs.texts is not None:
        return np.fromiter(map(len, inputs.texts), dtype=np.float64, count=len(inputs.texts))
    return None


def _prepare_longest(inputs: Inputs) -> tuple[dict, dict]:
    lengths = text_lengths(inputs)
    if lengths is None:
        raise missing_input("longest")
    return _scored(inputs, lengths, "lengths" if inputs.lengths is not None else "texts (characters)")


_DYN = dict(source="dynamics", text=False)
register_selector(SelectorSpec(
    "forgetting", "forgetting events during proxy training (Toneva et al. 2019)",
    prepare=_prepare_forgetting, run=_run_top_score, needs="scores=, correct= ([epochs, n] correctness) or dynamics=",
    score_meaning="forgetting events (higher = more forgettable)", **_DYN))
register_selector(SelectorSpec(
    "el2n", "EL2N: error L2 norm of an early proxy (Paul et al. 2021)",
    prepare=_prepare_el2n, run=_run_top_score, needs="scores=, probs=/logits= with labels=, or dynamics=",
    score_meaning="EL2N (higher = harder)", **_DYN))
register_selector(SelectorSpec(
    "grand", "GraNd: last-layer gradient norm of a proxy (Paul et al. 2021)",
    prepare=_prepare_grand, run=_run_top_score,
    needs="scores=, probs=/logits= with labels= and embeddings= (or features=), or dynamics=",
    score_meaning="GraNd last-layer gradient norm (higher = larger gradient)", **_DYN))
register_selector(SelectorSpec(
    "uncertainty", "least confidence / entropy / margin of a proxy (Coleman et al. 2020)",
    prepare=_prepare_uncertainty, run=_run_uncertainty, needs="scores=, probs=, logits= or dynamics=",
    score_meaning="uncertainty (higher = more uncertain)", **_DYN))
register_selector(SelectorSpec(
    "ccs", "coverage-centric coreset selection: stratified sampling over an importance score (Zheng et al. 2023)",
    prepare=_prepare_ccs, run=_run_ccs, needs="scores= (any per-item importance score)",
    score_meaning="the importance score of the pick", **_DYN))
register_selector(SelectorSpec(
    "longest", "the longest items (texts: the longest responses; Zhao et al. 2024)",
    prepare=_prepare_longest, run=_run_top_score, needs="lengths= or texts=",
    score_meaning="length (higher = longer)", source="lengths"))
