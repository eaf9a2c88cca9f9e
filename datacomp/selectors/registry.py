"""The selector registry: one entry per method holding everything about it.

A method is one :func:`register_selector` call (see :mod:`datacomp.selectors.methods_geometry` and
:mod:`datacomp.selectors.methods_scores`)::

    register_selector("herding", "greedy running-mean matching (Welling 2009)", prepare=..., run=...,
                      needs="features=", score_meaning="...", source="features")

* ``prepare(inputs, **params) -> (pool, info)`` turns the validated :class:`~datacomp.selectors.inputs.Inputs` into
  per-item arrays over the whole pool (``pool`` maps names to arrays whose first axis is the item, or CSR matrices
  with one row per item) and checks that the inputs it needs are there; per-item scores are computed here, once.
* ``run(pool, budget, rng, **params) -> (local_indices, scores, weights, info)`` selects ``budget`` items of a
  (possibly class-restricted) pool. ``rng`` is the class's ``numpy.random.Generator``, or, for methods registered
  with ``shared_stream=True`` (random), the one ``torch.Generator`` of the whole selection.

The method's parameters and their defaults are read from the keyword parameters of ``prepare`` and ``run``, so the
registry, the ``--set`` validation and the documentation cannot drift apart.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from datacomp.errors import ConfigError
from datacomp.registry import Registry

__all__ = ["SELECTORS", "SelectorSpec", "register_selector", "SOURCES", "missing_input", "base_pool", "subset"]

# What a dataset-level selection computes for a method: nothing, model features / text embeddings, a proxy's
# training dynamics (images only), or per-record lengths (text only).
SOURCES = ("none", "features", "dynamics", "lengths")
_RUN_RESERVED = ("pool", "budget", "rng")


@dataclass(frozen=True)
class SelectorSpec:
    """What the registry holds per method (see the module docstring)."""

    name: str
    prepare: Callable[..., tuple[dict, dict]]
    run: Callable[..., tuple]
    needs: str
    score_meaning: str
    source: str = "none"
    text: bool = True
    shared_stream: bool = False
    summary: Callable[[dict, np.ndarray], dict] | None = None
    prepare_params: dict[str, Any] = field(default_factory=dict)
    run_params: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter of the method with its default."""
        return {**self.prepare_params, **self.run_params}

    def split_params(self, params: dict[str, Any], option: str = "parameter") -> tuple[dict, dict]:
        """``(prepare kwargs, run kwargs)``; an unknown name raises :class:`ConfigError` listing the valid ones."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ConfigError(f"{self.name} got unknown {option}(s) {unknown}; valid parameters: "
                              f"{sorted(self.params) or 'none'}")
        prep = {k: v for k, v in params.items() if k in self.prepare_params}
        return prep, {k: v for k, v in params.items() if k not in prep}


SELECTORS: Registry[SelectorSpec] = Registry("selector", option="--method")


def _keyword_defaults(fn: Callable, skip: tuple[str, ...]) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if name not in skip and p.default is not inspect.Parameter.empty}


def register_selector(name: str, description: str, *, prepare: Callable, run: Callable, needs: str,
                      score_meaning: str, source: str = "none", text: bool = True, shared_stream: bool = False,
                      summary: Callable | None = None) -> SelectorSpec:
    """Register one selection method (module docstring); returns its :class:`SelectorSpec`.

    Args:
        name: ``--method`` name.
        description: one line for listings.
        prepare, run: the two steps (module docstring).
        needs: the array inputs :func:`~datacomp.selectors.select` needs, as a user reads them.
        score_meaning: what ``Selection.scores[t]`` means for this method.
        source: what a dataset-level selection computes first (:data:`SOURCES`).
        text: usable on text datasets (needs no classifier).
        shared_stream: ``run`` draws from the selection's one ``torch.Generator`` (classes in order, zero-budget
            classes included) instead of a per-class NumPy generator.
        summary: optional ``summary(pool, indices) -> dict`` over the whole class-balanced selection.
    """
    if source not in SOURCES:
        raise ValueError(f"selector {name}: source must be one of {SOURCES}, got {source!r}")
    spec = SelectorSpec(name, prepare, run, needs, score_meaning, source, text, shared_stream, summary,
                        _keyword_defaults(prepare, ("inputs",)), _keyword_defaults(run, _RUN_RESERVED))
    clash = set(spec.prepare_params) & set(spec.run_params)
    if clash:
        raise ValueError(f"selector {name}: parameters {sorted(clash)} appear in both prepare and run")
    SELECTORS.add(name, spec, description, needs=needs, params=spec.params, source=source, text=text)
    return spec


# ------------------------------------------------------------------------------------ helpers for the methods
def missing_input(method: str) -> ConfigError:
    """The error for a method called without the inputs it needs."""
    return ConfigError(f"{method} needs {SELECTORS.get(method).needs}")


def base_pool(n: int, **arrays: Any) -> dict:
    """A pool of the given per-item arrays (``None`` ones left out) plus ``item_index``."""
    pool = {k: v for k, v in arrays.items() if v is not None}
    pool["item_index"] = np.arange(n)
    return pool


def subset(pool: dict, members: np.ndarray) -> dict:
    """Restrict every per-item array (or CSR row set) of ``pool`` to ``members``."""
    return {k: (v[members] if v is not None else None) for k, v in pool.items()}
