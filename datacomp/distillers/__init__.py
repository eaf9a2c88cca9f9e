"""Dataset distillation: NCFM (paper-faithful min-max with a learned frequency sampler), DM and the random baseline.

- :func:`datacomp.distillers.ncfm.ncfd`: the neural characteristic-function discrepancy.
- :mod:`datacomp.distillers.samplers`: Gaussian and learned (psi, scale mixture) frequency samplers.
- :class:`datacomp.distillers.ncfm.NCFMDistiller`, :class:`datacomp.distillers.dm.DMDistiller`.
- :func:`datacomp.distillers.runner.run_distillation`: the loop behind ``datacomp distill`` (checkpoints, resume,
  class-parallel ``torchrun``, outputs, evaluation).
- :mod:`datacomp.distillers.presets`: ``paper``, ``official`` and ``cpu-quick`` configurations.
"""

from datacomp.distillers.ncfd import ncfd
from datacomp.distillers.presets import PRESETS, get_config

__all__ = ["ncfd", "PRESETS", "get_config", "run_distillation"]


def __getattr__(name: str):
    # The runner pulls in evaluation and plotting; import it only when asked for.
    if name == "run_distillation":
        from datacomp.distillers.runner import run_distillation

        return run_distillation
    raise AttributeError(f"module 'datacomp.distillers' has no attribute {name!r}")
