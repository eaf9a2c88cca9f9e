"""One factory for the augmentation pipelines datacomp trains with, each under a name that says what it does.

=================================  ====================================================================================
name                               pipeline
=================================  ====================================================================================
``none``                           no augmentation (the factory returns ``None``)
``dsa``                            DSA, mode ``S`` (one op group per call), per-sample parameters; strategy
                                   :func:`~datacomp.augment.dsa_strategy_for` the dataset unless ``strategy=`` is given
                                   (DC/DSA/DM evaluation)
``color_crop_flip_scale_rotate``   ``DiffAug``: flip, colour, one of crop/scale/rotate (NCFM evaluation)
``color_crop_cutout``              ``DiffAug``: colour, crop, cutout (NCFM distillation, KD on a small set)
``color_crop``                     ``DiffAug``: colour, crop (NCFM's pretraining pool)
=================================  ====================================================================================

Any other strategy string of ops from :data:`~datacomp.augment.AUGMENT_OPS` joined by ``_`` also names a ``DiffAug``
pipeline. ``DiffAug`` pipelines draw per-sample parameters unless ``batch_shared=True`` (one draw per call, the
siamese mode a distiller uses on a real and a synthetic batch).

The bare name ``diffaug`` is refused: datacomp 0.1.0 used it for two pipelines (``color_crop_flip_scale_rotate`` in
evaluation protocols, ``color_crop_cutout`` in compression). Records written by 0.1.0 are read by the code that owns
them, which knows which of the two it meant (see :func:`datacomp.evaluation.Protocol`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from .diffaug import DiffAug
from .dsa import DSA
from .strategy import AUGMENT_OPS, dsa_strategy_for, parse_strategy

__all__ = ["PIPELINES", "make_augment", "check_augment"]

# The named pipelines (name -> what it is). Other DiffAug strategy strings are accepted too (see the module text).
PIPELINES: dict[str, str] = {
    "none": "no augmentation",
    "dsa": "DSA (mode S, per-sample), the dataset's reference strategy (DC/DSA/DM evaluation)",
    "color_crop_flip_scale_rotate": "DiffAug flip + colour + one of crop/scale/rotate (NCFM evaluation)",
    "color_crop_cutout": "DiffAug colour + crop + cutout (NCFM distillation; KD on a small set)",
    "color_crop": "DiffAug colour + crop (NCFM pretraining pool)",
}

_AMBIGUOUS = {"diffaug": "color_crop_flip_scale_rotate (NCFM evaluation) or color_crop_cutout (NCFM distillation)"}


def check_augment(name: str, argument: str = "augment") -> str:
    """Validate a pipeline name and return it; an unknown or ambiguous name raises :class:`ConfigError`."""
    if not isinstance(name, str):
        raise ConfigError(f"{argument} must be a pipeline name string, got {type(name).__name__}")
    if name in _AMBIGUOUS:
        raise ConfigError(f"{argument} {name!r} is ambiguous; name the pipeline: {_AMBIGUOUS[name]}")
    if name in PIPELINES:
        return name
    try:
        parse_strategy(name)
    except (TypeError, ValueError):
        raise ConfigError(f"{argument}: unknown augmentation {name!r}; choose one of {', '.join(PIPELINES)}, or ops "
                          f"from {{{', '.join(AUGMENT_OPS)}}} joined by '_'") from None
    return name


def make_augment(
    name: str,
    *,
    dataset: str = "",
    generator: torch.Generator | int | None = None,
    strategy: str | None = None,
    batch_shared: bool = False,
) -> Callable[[Tensor], Tensor] | None:
    """The augmentation pipeline ``name`` (see :data:`PIPELINES`), or ``None`` for ``"none"``.

    Args:
        name: Pipeline name: ``none``, ``dsa``, or a ``DiffAug`` strategy such as ``color_crop_flip_scale_rotate``.
        dataset: Dataset name; picks the DSA strategy (no flip for digit datasets).
        generator: Generator (or int seed) of the pipeline's random draws; the same seed gives the same draws.
        strategy: For ``dsa`` only: the op strategy instead of the dataset's reference one.
        batch_shared: For ``DiffAug`` pipelines only: one parameter draw per call instead of one per sample.

    Returns:
        A callable ``aug(x) -> x`` on ``[N, C, H, W]`` batches (a :class:`DSA` or :class:`DiffAug`), or ``None``.
    """
    check_augment(name)
    if name == "none":
        return None
    if name == "dsa":
        return DSA(strategy or dsa_strategy_for(dataset), generator=generator)
    if strategy is not None:
        raise ConfigError(f"strategy= applies to the 'dsa' pipeline only; the pipeline {name!r} is its own strategy")
    return DiffAug(name, batch_shared=batch_shared, generator=generator)
