"""Dataset distillation: NCFM (paper-faithful min-max with a learned frequency sampler), DM and the random baseline.

- :func:`distill` (``datacomp.distill``): the library entry; ``datacomp distill`` calls it.
- :data:`DISTILLERS` (:mod:`~datacomp.distillers.methods`): one registry entry per method (description, config
  class, presets, distiller class); :func:`get_config` builds a method's config from a preset.
- :func:`datacomp.distillers.ncfd.ncfd`: the neural characteristic-function discrepancy;
  :mod:`~datacomp.distillers.samplers`: Gaussian and learned (psi, scale mixture) frequency samplers.
- :class:`~datacomp.distillers.ncfm.NCFMDistiller`, :class:`~datacomp.distillers.dm.DMDistiller`,
  :class:`~datacomp.distillers.random_real.RandomDistiller`.
- The run: :mod:`~datacomp.distillers.loop` (iterations, non-finite guard, interrupts),
  :mod:`~datacomp.distillers.checkpoints`, :mod:`~datacomp.distillers.outputs`,
  :mod:`~datacomp.distillers.distributed` (class-parallel ``torchrun``).
"""

from datacomp.distillers.api import DistillOptions, DistillResult, distill
from datacomp.distillers.methods import DISTILLERS
from datacomp.distillers.ncfd import ncfd
from datacomp.distillers.presets import PRESETS, get_config

__all__ = ["distill", "DistillOptions", "DistillResult", "DISTILLERS", "ncfd", "PRESETS", "get_config"]
