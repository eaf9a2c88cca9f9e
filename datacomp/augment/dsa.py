"""Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

Reference semantics follow DSA's ``ParamDiffAug`` / ``DiffAugment``. Deliberate differences: the colour group is
computed in one fused pass (same result up to rounding), and in mode ``"M"`` adjacent ``scale``/``rotate`` ops are
composed into one affine matrix and resampled once (``fuse_affine=True``): faster, and one interpolation instead of
two.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from .ops import _apply_group, _apply_sequence
from .sampling import _check_images, _make_generator, _Sampler, _seeded_generator
from .strategy import DSA_FULL_STRATEGY, DSAParams, _check_params, parse_strategy


class DSA:
    """Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

    Args:
        strategy: Ops from ``AUGMENT_OPS`` joined by ``'_'`` (``'color'`` = brightness -> saturation -> contrast),
            or ``"none"``.
        params: Augmentation strengths.
        mode: ``"S"``: one op group of the strategy, chosen uniformly per call, is applied (reference default);
            ``"M"``: all groups in order.
        generator: Generator (or int seed) for ``seed=None`` calls; default: a private one seeded from OS entropy.
        fuse_affine: In mode ``"M"``, compose adjacent scale/rotate into one resampling.

    Example:
        >>> aug = DSA()
        >>> real_aug, syn_aug = aug(real, seed=7), aug(syn, seed=7)  # identical transform on both batches
    """

    def __init__(
        self,
        strategy: str = DSA_FULL_STRATEGY,
        params: DSAParams = DSAParams(),
        mode: str = "S",
        generator: torch.Generator | int | None = None,
        fuse_affine: bool = True,
    ) -> None:
        self.ops = parse_strategy(strategy)
        self.params = _check_params(params)
        if not isinstance(mode, str) or mode.upper() not in ("S", "M"):
            raise ValueError(f"mode must be 'S' (one op per call) or 'M' (all ops in sequence), got {mode!r}")
        self.mode = mode.upper()
        self.generator = _make_generator(generator)
        self.fuse_affine = bool(fuse_affine)

    @property
    def strategy(self) -> str:
        return "_".join(self.ops) if self.ops else "none"

    def config(self) -> dict[str, Any]:
        """JSON-ready description, for run metadata."""
        return {"name": "dsa", "strategy": self.strategy, "mode": self.mode, "params": asdict(self.params)}

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r}, params={self.params})"

    def __call__(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Augment a batch ``x`` [N, C, H, W].

        Args:
            x: Images (any float dtype, any device).
            seed: ``None``: independent per-sample parameters from this object's generator. An int >= 0: one
                parameter draw shared by the whole batch, identical for every call with this seed.

        Returns:
            Augmented images, same shape and dtype (may be ``x`` itself when the drawn transform is the identity).
        """
        _check_images(x)
        if seed is None:
            sampler = _Sampler(self.generator, x.shape[0], x)
        else:
            sampler = _Sampler(_seeded_generator(seed), 1, x)
        if not self.ops or x.shape[0] == 0:
            return x
        if self.mode == "S":
            return _apply_group(x, self.ops[sampler.choice(len(self.ops))], sampler, self.params)
        return _apply_sequence(x, self.ops, sampler, self.params, self.fuse_affine)
