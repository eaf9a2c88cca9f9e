"""Augmentation vocabulary shared by DSA and ``DiffAug``: op names, strategy strings and strengths (``DSAParams``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

AUGMENT_OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
GEOMETRIC_OPS: tuple[str, ...] = ("crop", "scale", "rotate")
DSA_FULL_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DSA_NO_FLIP_STRATEGY = "color_crop_cutout_scale_rotate"
# DSA README: flip is harmful for the digit datasets (MNIST, SVHN); sklearn digits is a digit dataset too.
_NO_FLIP_DATASETS = frozenset({"digits", "mnist", "svhn"})


@dataclass(frozen=True)
class DSAParams:
    """Augmentation strengths (DSA reference ``ParamDiffAug`` defaults).

    Attributes:
        flip: Probability of a horizontal flip.
        scale: Scale ratio r; ``sx, sy ~ U[1/r, r]`` independently.
        rotate: Maximum rotation in degrees; angle ``~ U[-rotate, rotate]``.
        crop: Translation ratio; integer shift in ``[-round(crop*H), round(crop*H)]`` per axis, zero fill.
        cutout: Cutout ratio; a square of side ``round(cutout*H)`` is zeroed at a random centre.
        brightness: Added offset ``U[-0.5, 0.5] * brightness``.
        saturation: Deviation from the per-pixel channel mean scaled by ``U[0, saturation]``.
        contrast: Deviation from the per-image mean scaled by ``U[contrast, 1 + contrast]``.
    """

    flip: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DSAParams.{field.name} must be a finite number, got {value!r}")
        ranges = {
            "flip": (0.0 <= self.flip <= 1.0, "a probability in [0, 1]"),
            "scale": (self.scale >= 1.0, ">= 1 (sx, sy ~ U[1/scale, scale])"),
            "rotate": (0.0 <= self.rotate <= 180.0, "degrees in [0, 180]"),
            "crop": (0.0 <= self.crop < 1.0, "a fraction of the image size in [0, 1)"),
            "cutout": (0.0 <= self.cutout <= 1.0, "a fraction of the image size in [0, 1]"),
            "brightness": (self.brightness >= 0.0, ">= 0"),
            "saturation": (self.saturation >= 0.0, ">= 0"),
            "contrast": (self.contrast >= 0.0, ">= 0"),
        }
        for name, (ok, expected) in ranges.items():
            if not ok:
                raise ValueError(f"DSAParams.{name} must be {expected}, got {getattr(self, name)!r}")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy string such as ``"color_crop_cutout"`` into validated op names.

    Args:
        strategy: Op names from ``AUGMENT_OPS`` joined by ``'_'``, or ``"none"`` for no augmentation.

    Returns:
        The op names in order (empty for ``"none"``).

    Raises:
        TypeError: If ``strategy`` is not a string.
        ValueError: If an op is unknown, repeated, or the string is empty.
    """
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string like {DSA_FULL_STRATEGY!r}, got {type(strategy).__name__}")
    text = strategy.strip().lower()
    if text == "none":
        return ()
    valid = ", ".join(AUGMENT_OPS)
    if not text:
        raise ValueError(f"strategy is empty; use 'none' for no augmentation or ops from {{{valid}}} joined by '_'")
    names = tuple(text.split("_"))
    for name in names:
        if name not in AUGMENT_OPS:
            raise ValueError(
                f"strategy {strategy!r}: unknown augmentation op {name!r}; valid ops are {{{valid}}} joined by '_'"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"strategy {strategy!r}: op(s) {repeated} listed more than once; list each op once")
    return names


def dsa_strategy_for(dataset_name: str) -> str:
    """Reference DSA strategy for a dataset: no flip for digit datasets (digits, MNIST, SVHN), full otherwise."""
    if not isinstance(dataset_name, str):
        raise TypeError(f"dataset_name must be a string, got {type(dataset_name).__name__}")
    return DSA_NO_FLIP_STRATEGY if dataset_name.strip().lower() in _NO_FLIP_DATASETS else DSA_FULL_STRATEGY


def _check_params(params: Any) -> DSAParams:
    if not isinstance(params, DSAParams):
        raise TypeError(f"params must be a DSAParams instance, got {type(params).__name__}")
    return params
