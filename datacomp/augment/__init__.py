"""Differentiable, batched image augmentation: DSA, the NCFM/IDC ``DiffAug`` variant, and CutMix.

Every op is differentiable with respect to the input pixels (affine grids + ``grid_sample``, masks, gathers and
arithmetic) and works on whole batches without a Python loop over samples. Random parameters come from
``torch.Generator`` objects only, never from the global RNG, so augmenting never perturbs the caller's randomness.

Parameter sharing:
  * ``seed=<int>``: a fresh generator seeded with ``seed`` draws the parameters: one set broadcast to the whole batch
    (DSA; ``DiffAug`` with ``batch_shared=True``). Two calls with the same seed apply the same transform, which is how
    "siamese" augmentation of a real and a synthetic batch is done.
  * ``seed=None``: parameters come from the object's own generator; independent per sample for DSA (evaluation mode).

Reference semantics follow Zhao & Bilen's DSA (``ParamDiffAug`` / ``DiffAugment``) and IDC's ``DiffAug`` used by NCFM
(NCFM research notes §4.3, §3.7, §3.8). Deliberate differences: the colour group is computed in one fused pass (same
result up to rounding), and in DSA mode ``"M"`` adjacent ``scale``/``rotate`` ops are composed into one affine matrix
and resampled once (``fuse_affine=True``): faster, and one interpolation instead of two.

Modules:
  * :mod:`~datacomp.augment.strategy`: op names, strategy strings and strengths (``DSAParams``);
  * :mod:`~datacomp.augment.sampling`: private generators, the parameter sampler and input checks;
  * :mod:`~datacomp.augment.ops`: the differentiable ops;
  * :mod:`~datacomp.augment.dsa`: ``DSA``;
  * :mod:`~datacomp.augment.diffaug`: ``DiffAug``;
  * :mod:`~datacomp.augment.mixing`: ``cutmix`` and ``cutmix_loss``;
  * :mod:`~datacomp.augment.factory`: ``make_augment``, the named pipelines (``PIPELINES``) every trainer uses.
"""

from __future__ import annotations

from .diffaug import DiffAug
from .dsa import DSA
from .factory import PIPELINES, check_augment, make_augment
from .mixing import cutmix, cutmix_loss
from .strategy import (
    AUGMENT_OPS,
    DSA_FULL_STRATEGY,
    DSA_NO_FLIP_STRATEGY,
    GEOMETRIC_OPS,
    DSAParams,
    dsa_strategy_for,
    parse_strategy,
)

# Internals the tests reach as ``datacomp.augment._name``.
from .ops import _affine_grid, _color
from .sampling import _Sampler

__all__ = [
    "AUGMENT_OPS",
    "DSA",
    "DSA_FULL_STRATEGY",
    "DSA_NO_FLIP_STRATEGY",
    "DSAParams",
    "DiffAug",
    "GEOMETRIC_OPS",
    "PIPELINES",
    "check_augment",
    "cutmix",
    "cutmix_loss",
    "dsa_strategy_for",
    "make_augment",
    "parse_strategy",
]
