"""``EvalSettings``: how the fresh models of an evaluation are run (seed, device, progress bars)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, is_int
from ..runtime import resolve_device

__all__ = ["EvalSettings", "check_runs"]


def check_runs(runs: object) -> int:
    """``runs`` as a positive int, or a :class:`~datacomp.errors.ConfigError` naming it."""
    if not is_int(runs) or runs < 1:
        raise ConfigError(f"runs must be >= 1 (an int), got {runs!r}")
    return runs


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation's training runs are executed; what they learn is the model and protocol.

    Attributes:
        seed: Base seed: run ``r`` draws its initialisation from ``seed + r`` (and its batches and augmentation from
            ``10_000 + seed + r``); a random baseline is drawn with ``seed``.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` (a ``torch.device`` too);
            resolved when the settings are made, so a missing GPU fails before any training.
        progress: Show progress bars.
    """

    seed: int = 0
    device: str | torch.device = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got {self.seed!r}")
        object.__setattr__(self, "device", resolve_device(self.device, option="device"))

    def seeds(self, runs: int) -> range:
        """The seeds of ``runs`` runs (``runs`` checked)."""
        return range(self.seed, self.seed + check_runs(runs))
