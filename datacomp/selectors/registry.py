"""The selector registry: one entry per method holding everything about it.

A method is one :class:`SelectorSpec` given to :func:`register_selector` (see
:mod:`datacomp.selectors.methods_geometry` and :mod:`datacomp.selectors.methods_scores`)::

    register_selector(SelectorSpec("herding", "greedy running-mean matching (Welling 2009)", prepare=..., run=...,
                                   needs="features=", score_meaning="...", source="features"))

* ``prepare(inputs, **params) -> (pool, info)`` turns the validated :class:`~datacomp.selectors.inputs.Inputs` into
  per-item arrays over the whole pool (``pool`` maps names to arrays whose first axis is the item, or CSR matrices
  with one row per item) and checks that the inputs it needs are there; per-item scores are computed here, once.
* ``run(pool, budget, rng, **params) -> (local_indices, scores, weights, info)`` selects ``budget`` items of a
  (possibly class-restricted) pool. ``rng`` is the class's ``numpy.random.Generator``, or, for methods registered
  with ``shared_stream=True`` (random), the one ``torch.Generator`` of the whole selection.

The method's parameters and their defaults are read from the keyword parameters of ``prepare`` and ``run``, so the
registry, the ``--set`` validation and the documentation cannot drift apart. A keyword parameter whose default is a
dataclass instance (a settings object, e.g. facility location's ``graph=KNNGraphSettings()``) stands for its fields:
each field is a parameter of the method (``--set n_neighbors=32``), and the step receives the settings object with
the given fields replaced.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable

import numpy as np

from datacomp.errors import ConfigError
from datacomp.registry import Registry

__all__ = ["SELECTORS", "SelectorSpec", "register_selector", "SOURCES", "missing_input", "base_pool", "subset"]

# What a dataset-level selection computes for a method: nothing, model features / text embeddings, a proxy's
# training dynamics (images only), per-record lengths (text only), or in-context-learning scores of a causal LM
# (text only).
SOURCES = ("none", "features", "dynamics", "lengths", "icl")
_RUN_RESERVED = ("pool", "budget", "rng")


@dataclass(frozen=True)
class SelectorSpec:
    """One selection method: what the registry holds (see the module docstring).

    Attributes:
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
        prepare_params, run_params: the parameters of each step with their defaults (read from the signatures).
    """

    name: str
    description: str
    prepare: Callable[..., tuple[dict, dict]]
    run: Callable[..., tuple]
    needs: str
    score_meaning: str
    source: str = "none"
    text: bool = True
    shared_stream: bool = False
    summary: Callable[[dict, np.ndarray], dict] | None = None
    prepare_params: dict[str, Any] = field(init=False)
    run_params: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"selector {self.name}: source must be one of {SOURCES}, got {self.source!r}")
        object.__setattr__(self, "prepare_params", _method_params(_keyword_defaults(self.prepare, ("inputs",))))
        object.__setattr__(self, "run_params", _method_params(_keyword_defaults(self.run, _RUN_RESERVED)))
        clash = set(self.prepare_params) & set(self.run_params)
        if clash:
            raise ValueError(f"selector {self.name}: parameters {sorted(clash)} appear in both prepare and run")

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

    def run_prepare(self, inputs: Any, params: dict[str, Any]) -> tuple[dict, dict]:
        """``prepare(inputs, ...)`` with ``params`` (prepare kwargs of :meth:`split_params`)."""
        return self.prepare(inputs, **_step_kwargs(self.prepare, ("inputs",), params))

    def run_select(self, pool: dict, budget: int, rng: Any, params: dict[str, Any]) -> tuple:
        """``run(pool, budget, rng, ...)`` with ``params`` (run kwargs of :meth:`split_params`)."""
        return self.run(pool, budget, rng, **_step_kwargs(self.run, _RUN_RESERVED, params))


SELECTORS: Registry[SelectorSpec] = Registry("selector", option="--method")


def _keyword_defaults(fn: Callable, skip: tuple[str, ...]) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if name not in skip and p.default is not inspect.Parameter.empty}


def _is_settings(value: Any) -> bool:
    return is_dataclass(value) and not isinstance(value, type)


def _method_params(defaults: dict[str, Any]) -> dict[str, Any]:
    """A step's keyword defaults with each settings object replaced by its fields."""
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        if _is_settings(default):
            out.update({f.name: getattr(default, f.name) for f in fields(default)})
        else:
            out[name] = default
    return out


def _step_kwargs(fn: Callable, skip: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``fn`` from method parameters: settings fields go into their settings object."""
    kwargs = dict(params)
    for name, default in _keyword_defaults(fn, skip).items():
        if _is_settings(default):
            own = {f.name for f in fields(default)}
            kwargs[name] = replace(default, **{k: kwargs.pop(k) for k in list(kwargs) if k in own})
    return kwargs


def register_selector(spec: SelectorSpec) -> SelectorSpec:
    """Register one selection method (module docstring); returns ``spec``."""
    SELECTORS.add(spec.name, spec, spec.description, needs=spec.needs, params=spec.params, source=spec.source,
                  text=spec.text)
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
