"""Random-parameter plumbing and input checks shared by the augmenters.

Random parameters come from ``torch.Generator`` objects only, never from the global RNG, so augmenting never perturbs
the caller's randomness.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import is_int


def _make_generator(generator: torch.Generator | int | None, argument: str = "generator") -> torch.Generator:
    """A private generator: the one given, one seeded with an int, or one seeded from OS entropy."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()  # OS entropy; leaves the global RNG alone
        return fresh
    if not is_int(generator):
        raise TypeError(f"{argument} must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return _seeded_generator(generator, argument)


def _seeded_generator(seed: int, argument: str = "seed") -> torch.Generator:
    if not is_int(seed):
        raise TypeError(f"{argument} must be an int or None, got {type(seed).__name__}")
    if seed < 0:
        hint = "; use seed=None for independent per-sample parameters" if argument == "seed" else ""
        raise ValueError(f"{argument} must be >= 0, got {seed}{hint}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


class _Sampler:
    """Draws ``n`` values per parameter from one generator (``n == 1``: shared by the whole batch).

    Draws stay on the generator's device (CPU by default, so shared parameters can be read without a device sync);
    ``put`` moves them next to the images.
    """

    def __init__(self, generator: torch.Generator, n: int, like: Tensor) -> None:
        self.generator = generator
        self.n = n
        self.device = like.device
        self.dtype = like.dtype

    @property
    def shared(self) -> bool:
        return self.n == 1

    def uniform(self, low: float = 0.0, high: float = 1.0) -> Tensor:
        u = torch.rand(self.n, generator=self.generator, device=self.generator.device)
        return u * (high - low) + low

    def randint(self, low: int, high: int) -> Tensor:
        return torch.randint(low, high, (self.n,), generator=self.generator, device=self.generator.device)

    def choice(self, k: int) -> int:
        """One index in ``[0, k)`` for the whole call (which op to apply)."""
        return int(torch.randint(0, k, (1,), generator=self.generator, device=self.generator.device))

    def put(self, values: Tensor) -> Tensor:
        """Move drawn values to the images' device; floats also take the images' dtype."""
        dtype = self.dtype if values.is_floating_point() else values.dtype
        return values.to(device=self.device, dtype=dtype)


def _check_images(x: Any, argument: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor of images [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{argument} must have shape [N, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{argument} must be a floating-point tensor, got {x.dtype}; convert with x.float()")
