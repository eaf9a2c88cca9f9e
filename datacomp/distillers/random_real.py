"""The random baseline as a distiller: ``ipc`` random real training images per class, nothing optimised.

It draws exactly the subset ``datacomp subset random`` draws for the same seed and ipc
(:func:`datacomp.evaluation.random_subset`); in a class-parallel run every rank draws the whole subset (cheap) and
keeps its own classes, so the gathered set is the same.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from datacomp.cost import CostLedger
from datacomp.distillers.base import Distiller, Job
from datacomp.distillers.configs import RandomConfig
from datacomp.evaluation import random_subset

__all__ = ["RandomDistiller"]


class RandomDistiller(Distiller):
    """Random real images of the classes of this process (no iterations)."""

    method = "random"
    space = "pixel"

    def __init__(self, config: RandomConfig, job: Job) -> None:
        super().__init__(config, job)
        self._ledger = CostLedger()
        with self._ledger.phase("selection", device=str(self.device)):
            subset = random_subset(self.dataset, self.ipc, seed=self.seed)
        mine = torch.isin(subset.labels, torch.tensor(self.classes, dtype=subset.labels.dtype))
        self.images = subset.images[mine]
        self._source = subset.source_indices[mine]

    def step(self, iteration: int) -> Tensor:
        raise RuntimeError("the random baseline has no iterations (iterations must be 0)")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the draw is a function of the seed."""

    def extra_cost(self) -> CostLedger:
        return self._ledger

    def source_indices(self) -> Tensor:
        return self._source.clone()
