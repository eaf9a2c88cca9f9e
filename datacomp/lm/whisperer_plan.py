"""Data Whisperer's settings and episode plan: which pool items are demonstrations and which are queries.

:class:`WhispererConfig` holds the settings of :func:`datacomp.lm.whisperer.whisper_scores`; :func:`plan_episodes`
splits the pool into seeded folds, every item a demonstration once per fold, each episode's queries drawn from the
other folds (:func:`check_pool` says when a pool is too small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datacomp.errors import ConfigError, DataError, check_int_at_least, is_int

__all__ = ["WhispererConfig", "EpisodePlan", "plan_episodes", "default_layer", "check_pool", "RELEASED_LAYER"]

RELEASED_LAYER = 11  # the released code's layer for models it has no specific setting for


def default_layer(num_layers: int) -> int:
    """The layer of the weights when none is given: 11 (the released code's default) if the model has more than 11
    decoder layers, else the last one."""
    return RELEASED_LAYER if num_layers > RELEASED_LAYER else num_layers - 1


@dataclass(frozen=True)
class WhispererConfig:
    """Settings of :func:`whisper_scores` (module docstring).

    Attributes:
        n_demos: demonstrations per episode (paper: 5).
        n_queries: queries per episode (paper: 3).
        folds: folds of the pool; an episode's queries come from the other folds (paper: 2).
        layer: decoder layer of the attention weights (0-based, -1 = last); None: :func:`default_layer`.
        max_new_tokens: longest answer, in tokens.
        batch_size: prompts per generation call; whole episodes are batched together
            (``max(1, batch_size // n_queries)`` episodes per call).
        max_length: tokens kept of each demonstration (its start) and of each query prompt (its end).
        seed: seed of the fold split, the episode chunks and the query draws.
        bf16: bf16 autocast (None: where the device computes bf16 natively; float32 weights only).
    """

    n_demos: int = 5
    n_queries: int = 3
    folds: int = 2
    layer: int | None = None
    max_new_tokens: int = 64
    batch_size: int = 8
    max_length: int = 1024
    seed: int = 0
    bf16: bool | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        for name, minimum in (("n_demos", 1), ("n_queries", 1), ("folds", 2), ("max_new_tokens", 1),
                              ("batch_size", 1), ("max_length", 1), ("seed", 0)):
            check_int_at_least(getattr(self, name), name, minimum, f" (--set {name}=N)")
        layer = self.layer
        if layer is not None and not is_int(layer):
            raise ConfigError(f"layer must be an integer decoder layer (0-based, -1 = last) or None, got {layer!r}")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise ConfigError(f"bf16 must be true, false or None, got {self.bf16!r}")


@dataclass(frozen=True)
class EpisodePlan:
    """The episodes of a scoring run: ``demos[e]`` (pool indices), ``queries[e]`` ([n_queries] pool indices) and
    ``fold[e]`` (the fold the demonstrations come from)."""

    demos: list[np.ndarray]
    queries: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.demos)


def check_pool(n: int, config: WhispererConfig) -> None:
    """Refuse a pool too small for a full episode in every fold: each fold must hold ``n_demos`` items and the
    other folds ``n_queries`` (:class:`DataError` naming the sizes)."""
    smallest, largest = n // config.folds, -(-n // config.folds)
    if smallest < config.n_demos or n - largest < config.n_queries:
        need = max(config.folds * config.n_demos, config.n_queries + -(-config.n_queries // (config.folds - 1)))
        raise DataError(f"data-whisperer: a pool of {n} records is too small for folds={config.folds}, "
                        f"n_demos={config.n_demos}, n_queries={config.n_queries} (every fold needs n_demos records "
                        f"and the other folds n_queries); give at least {need} records or lower n_demos / n_queries")


def plan_episodes(n: int, config: WhispererConfig) -> EpisodePlan:
    """The seeded episode plan of a pool of ``n`` items (module docstring)."""
    config.check()
    check_pool(n, config)
    rng = np.random.default_rng(config.seed)
    folds = np.array_split(rng.permutation(n), config.folds)
    demos: list[np.ndarray] = []
    queries: list[np.ndarray] = []
    fold_of: list[int] = []
    for f, members in enumerate(folds):  # loop over the (few) folds
        others = np.concatenate([m for g, m in enumerate(folds) if g != f])
        chunks = np.array_split(rng.permutation(members), math.ceil(len(members) / config.n_demos))
        for chunk in chunks:
            demos.append(chunk)
            queries.append(rng.choice(others, size=config.n_queries, replace=False))
            fold_of.append(f)
    return EpisodePlan(demos, np.stack(queries).astype(np.int64), np.asarray(fold_of, dtype=np.int64))
