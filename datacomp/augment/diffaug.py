"""The NCFM/IDC ``DiffAug`` variant of DSA (NCFM research notes §4.3, §3.7, §3.8)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from .ops import _apply_group
from .sampling import _check_images, _make_generator, _Sampler, _seeded_generator
from .strategy import GEOMETRIC_OPS, DSAParams, _check_params, parse_strategy


class DiffAug:
    """The NCFM/IDC augmentation: flip and colour always, one sampled geometric op, then cutout.

    Order per call: flip (if listed) -> colour (if listed) -> one of the listed ``crop``/``scale``/``rotate`` chosen
    uniformly per call -> cutout (if listed). NCFM distils with ``"color_crop_cutout"`` (batch-shared, real and
    synthetic concatenated) and evaluates with ``"color_crop_flip_scale_rotate"`` per sample.

    Args:
        strategy: Ops from ``AUGMENT_OPS`` joined by ``'_'``, or ``"none"``.
        batch_shared: One parameter draw for the whole batch (siamese when real and synthetic images share a call or a
            seed); ``False``: independent parameters per sample.
        params: Augmentation strengths.
        generator: Generator (or int seed) for ``seed=None`` calls; default: a private one seeded from OS entropy.
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout",
        batch_shared: bool = True,
        params: DSAParams = DSAParams(),
        generator: torch.Generator | int | None = None,
    ) -> None:
        self.ops = parse_strategy(strategy)
        if not isinstance(batch_shared, bool):
            raise TypeError(f"batch_shared must be a bool, got {type(batch_shared).__name__}")
        self.batch_shared = batch_shared
        self.params = _check_params(params)
        self.generator = _make_generator(generator)
        self.geometric = tuple(op for op in self.ops if op in GEOMETRIC_OPS)

    @property
    def strategy(self) -> str:
        return "_".join(self.ops) if self.ops else "none"

    def config(self) -> dict[str, Any]:
        """JSON-ready description, for run metadata."""
        return {
            "name": "diffaug",
            "strategy": self.strategy,
            "batch_shared": self.batch_shared,
            "params": asdict(self.params),
        }

    def __repr__(self) -> str:
        return f"DiffAug(strategy={self.strategy!r}, batch_shared={self.batch_shared}, params={self.params})"

    def __call__(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Augment a batch ``x`` [N, C, H, W].

        Args:
            x: Images (any float dtype, any device).
            seed: ``None``: parameters from this object's generator. An int >= 0: parameters from a generator seeded
                with it, so calls with the same seed (and, when ``batch_shared=False``, the same batch size) apply
                identical transforms.

        Returns:
            Augmented images, same shape and dtype.
        """
        _check_images(x)
        generator = self.generator if seed is None else _seeded_generator(seed)
        sampler = _Sampler(generator, 1 if self.batch_shared else x.shape[0], x)
        if not self.ops or x.shape[0] == 0:
            return x
        if "flip" in self.ops:
            x = _apply_group(x, "flip", sampler, self.params)
        if "color" in self.ops:
            x = _apply_group(x, "color", sampler, self.params)
        if self.geometric:
            x = _apply_group(x, self.geometric[sampler.choice(len(self.geometric))], sampler, self.params)
        if "cutout" in self.ops:
            x = _apply_group(x, "cutout", sampler, self.params)
        return x
