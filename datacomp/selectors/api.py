"""``select``: one entry point for every data-selection method, with validation and class balancing.

Methods, the inputs they need and the meaning of ``Selection.scores`` live in the selector registry
(:data:`~datacomp.selectors.registry.SELECTORS`; ``datacomp select --help`` and :func:`method_inputs` list them):

===================  ==========================================================  ================================
method               required inputs (one of the listed alternatives)            ``scores[t]``
===================  ==========================================================  ================================
random               any input with the pool size, or ``n_items=``               draw order within the class
herding              ``features=``                                               running-mean error (lower=better)
kcenter              ``features=``                                               distance to earlier picks
facility-location    ``features=``                                               marginal gain (higher first)
forgetting           ``scores=`` | ``correct=`` [epochs, n] | ``dynamics=``       forgetting events
el2n                 ``scores=`` | (``probs=``|``logits=``) + labels | dynamics  EL2N
grand                ``scores=`` | (``probs=``|``logits=``) + labels +           GraNd
                     (``embeddings=``|``features=``) | ``dynamics=``
uncertainty          ``scores=`` | ``probs=`` | ``logits=`` | ``dynamics=``     uncertainty (higher = uncertain)
ccs                  ``scores=`` (any importance score)                          the item's score
longest              ``lengths=`` | ``texts=``                                   length
sae-greedy           ``activations=`` | ``sae=`` + ``features=``                 newly covered latents
sae-simscale         ``activations=`` | ``sae=`` + ``features=``                 max cosine to earlier picks
===================  ==========================================================  ================================

Class balance: with ``labels`` and ``class_balanced=True`` (default) the method runs inside each class, with the
per-class budgets of :func:`~datacomp.selectors.budgets.class_budgets`. ``indices`` are then grouped by class
(sorted labels), each class's picks in selection order. Each class gets its own generator
``numpy.random.default_rng([seed, class_position])``; ``random`` draws from one ``torch.Generator`` (the rule of
:func:`datacomp.evaluation.random_subset`, see :mod:`~datacomp.selectors.methods_geometry`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError
from datacomp.io import package_versions

from . import methods_geometry, methods_icl, methods_sae, methods_scores  # noqa: F401  (they register the methods)
from .budgets import class_budgets
from .inputs import INPUT_NAMES, Inputs, check_int, jsonable
from .registry import SELECTORS, SelectorSpec, subset
from .selection import Selection

__all__ = ["select", "METHODS", "method_inputs"]

METHODS: tuple[str, ...] = tuple(SELECTORS.names())


def method_inputs(method: str) -> str:
    """Human-readable description of the inputs ``method`` requires."""
    return SELECTORS.get(method).needs


def _split_kwargs(inputs: Inputs | None, kwargs: dict[str, Any]) -> tuple[Inputs, dict[str, Any]]:
    """Input keywords (:data:`INPUT_NAMES`) go into ``inputs``, the rest are method parameters."""
    given = {k: v for k, v in kwargs.items() if k in INPUT_NAMES}
    if inputs is None:
        inputs = Inputs(**given)
    elif given:
        inputs = replace(inputs, **given)
    return inputs, {k: v for k, v in kwargs.items() if k not in INPUT_NAMES}


def _groups(y: np.ndarray | None, balanced: bool, budget: int | None, class_budget: Any, n: int
            ) -> tuple[list[tuple[Any, np.ndarray, int]], dict | None, int]:
    """``[(label, members, budget)]`` per class (or one group), the per-class budgets and the total budget."""
    if budget is None and not (balanced and isinstance(class_budget, dict)):
        raise ConfigError("budget is required (an int in [1, n_items])")
    if budget is not None:
        budget = check_int(budget, "budget")
        if budget < 1:
            raise ConfigError(f"budget must be >= 1, got {budget}")
        if budget > n:
            raise ConfigError(f"budget {budget} exceeds the pool size {n}")
    if not balanced:
        return [(None, np.arange(n), budget)], None, budget
    per_class = class_budgets(y, budget, class_budget)
    budget = sum(per_class.values()) if budget is None else budget
    if budget < 1:
        raise ConfigError("class_budget gives a total budget of 0; give at least one class a positive budget")
    return [(c, np.flatnonzero(y == c), b) for c, b in per_class.items()], per_class, budget


def _run_groups(spec: SelectorSpec, pool: dict, groups: list, balanced: bool, seed: int, run_params: dict):
    """Run the method in each group; returns picks, scores, weights, per-group info and seconds."""
    picked, picked_scores, picked_weights, infos, seconds = [], [], [], {}, {}
    stream = torch.Generator().manual_seed(seed) if spec.shared_stream else None
    for position, (label, members, b) in enumerate(groups):  # loop over classes
        if b == 0 and stream is None:
            continue
        if stream is not None:
            rng = stream
        else:
            rng = np.random.default_rng([seed, position]) if balanced else np.random.default_rng(seed)
        sub = subset(pool, members) if balanced else pool
        t0 = time.perf_counter()
        local, sc, w, info = spec.run_select(sub, b, rng, run_params)
        seconds[str(label)] = time.perf_counter() - t0
        if b == 0:
            continue
        picked.append(members[np.asarray(local, dtype=np.int64)])
        picked_scores.append(np.asarray(sc, dtype=np.float64))
        picked_weights.append(None if w is None else np.asarray(w, dtype=np.float64))
        infos[str(label)] = info
    indices = np.concatenate(picked).astype(np.int64)
    if np.unique(indices).size != indices.size:  # invariant of every method; guards future ones
        raise RuntimeError(f"{spec.name} returned duplicate indices")
    weights = None if any(w is None for w in picked_weights) else np.concatenate(picked_weights)
    return indices, np.concatenate(picked_scores), weights, infos, seconds


def select(method: str, features=None, budget: int | None = None, labels=None, class_balanced: bool = True,
           seed: int = 0, *, class_budget: str | dict = "proportional", inputs: Inputs | None = None,
           **kwargs: Any) -> Selection:
    """Select ``budget`` items of a pool with ``method`` (see the module docstring for methods and inputs).

    Args:
        method: one of :data:`METHODS`.
        features: ``[n, d]`` finite embeddings.
        budget: number of items, ``1 <= budget <= n``.
        labels: ``[n]`` integer (>= 0) or string labels; enables class balancing and label-based scores.
        class_balanced: split the budget across classes when ``labels`` is given.
        seed: seed of every random choice.
        class_budget: per-class budget rule (:func:`~datacomp.selectors.budgets.class_budgets`).
        inputs: the other array inputs grouped in an :class:`~datacomp.selectors.inputs.Inputs`.
        **kwargs: the same array inputs by keyword (``scores=``, ``probs=``, ``logits=``, ``correct=``,
            ``embeddings=``, ``lengths=``, ``texts=``, ``sae=``, ``activations=``, ``dynamics=``, ``n_items=``;
            see :class:`~datacomp.selectors.inputs.Inputs`), and the method's parameters (e.g. ``n_neighbors`` for
            facility-location, ``kind`` for uncertainty); an unknown name raises a ConfigError listing the valid
            ones.

    Returns:
        :class:`~datacomp.selectors.selection.Selection`.
    """
    t_start = time.perf_counter()
    if not isinstance(method, str) or method not in SELECTORS:
        raise ConfigError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    spec = SELECTORS.get(method)
    inputs, params = _split_kwargs(inputs, kwargs)
    prep_params, run_params = spec.split_params(params)
    seed = check_int(seed, "seed", minimum=0)
    if features is not None:
        inputs = replace(inputs, features=features)
    if labels is not None:
        inputs = replace(inputs, labels=labels)
    inputs = inputs.validated()
    balanced = bool(class_balanced and inputs.labels is not None)
    groups, per_class, budget = _groups(inputs.labels, balanced, budget, class_budget, inputs.n)

    ledger = CostLedger()
    with ledger.phase("selection") as phase:
        phase.note(f"method={method}")
        t_prep = time.perf_counter()
        pool, prep_info = spec.run_prepare(inputs, prep_params)
        prep_seconds = time.perf_counter() - t_prep
        indices, scores, weights, infos, seconds = _run_groups(spec, pool, groups, balanced, seed, run_params)

    metadata = {
        "method": method,
        "params": params,
        "budget": budget,
        "n_pool": inputs.n,
        "seed": seed,
        "class_balanced": balanced,
        "class_budget_rule": (class_budget if not isinstance(class_budget, dict) else "explicit") if balanced
        else None,
        "per_class_budgets": per_class,
        "required_inputs": spec.needs,
        "given_inputs": inputs.given(),
        "score_meaning": spec.score_meaning,
        "prepare": prep_info,
        "info": infos.get("None") if not balanced else None,
        "per_class": infos if balanced else None,
        "timings": {"total_s": time.perf_counter() - t_start, "prepare_s": prep_seconds, "select_s": seconds},
        "versions": package_versions(),
        "cost": _cost(ledger, inputs.dynamics, inputs.sae),
    }
    if balanced:
        metadata["global"] = spec.summary(pool, indices) if spec.summary is not None else None
    return Selection(indices=indices, scores=scores, weights=weights, item_scores=pool.get("item_scores"),
                     metadata=jsonable(metadata))


def _cost(ledger: CostLedger, dynamics: Any, sae: Any) -> dict:
    """The selection ledger merged with the proxy-training ledger carried by ``dynamics`` and the SAE's
    one-off ``sae-training`` phase (kept in ``sae.history["cost"]``), plus the proxy protocol and SAE config."""
    proxy_ledger = getattr(dynamics, "ledger", None) if dynamics is not None else None
    history = getattr(sae, "history", None) or {}
    if proxy_ledger is not None:
        ledger.merge(proxy_ledger)
    if history.get("cost"):
        ledger.merge(CostLedger.from_dict(history["cost"]))
    return {
        "ledger": ledger.to_dict(),
        "proxy_protocol": getattr(dynamics, "protocol", None) if dynamics is not None else None,
        "sae_train": {"seconds": history.get("seconds"), "steps": history.get("steps"),
                      "config": getattr(sae, "config", None)} if sae is not None else None,
    }
