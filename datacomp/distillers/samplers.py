"""Frequency samplers for NCFD: where the frequency arguments ``t`` come from.

- :class:`GaussianSampler`: ``t ~ N(0, sigma^2 I)``, i.i.d. each call (what the released NCFM code runs).
- :class:`LearnedSampler`: the paper's scale mixture of normals. A small network psi maps ``K = M / 16`` white-noise
  vectors to ``K`` per-dimension scale vectors ``s_k``; the ``M`` frequencies are ``t = s_k * eps`` with fresh
  ``eps ~ N(0, I)`` at every call (16 frequencies per component). psi is the *max* player of NCFM's min-max: it is
  trained by gradient ascent on the same discrepancy with its own optimiser (:meth:`LearnedSampler.ascent_step`).

psi's architecture (our choice, documented because the paper defers it to a supplement that is not public):
three blocks ``Linear(d, d) -> BatchNorm1d(d)``, the first two followed by ``LeakyReLU(0.2)``; the last maps its
output ``h`` to a bounded positive scale ``s = sigma * (1 + tanh(h))`` in ``(0, 2 sigma)``. Because BatchNorm
centres ``h`` over the K rows, the initial scales are spread around ``sigma`` (so the untrained sampler is a
plain scale mixture around the Gaussian sampler's ``sigma``) and can never collapse to 0 or blow up.

The released code's psi update cancels to zero (it accumulates ``g`` and ``-g`` in the same buffer); here the
discrepancy is backpropagated once and psi's gradient is negated on psi's parameters only before psi's own step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GaussianSampler", "LearnedSampler", "FrequencySampler", "create_sampler", "SAMPLERS"]

FREQS_PER_COMPONENT = 16


class FrequencySampler(nn.Module):
    """Base class: ``sample(generator) -> [num_freqs, dim]`` frequency arguments."""

    learnable: bool = False

    def __init__(self, dim: int, num_freqs: int, sigma: float = 1.0) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim (feature dimension) must be a positive int, got {dim!r}")
        if not isinstance(num_freqs, int) or num_freqs < 1:
            raise ValueError(f"num_freqs must be a positive int, got {num_freqs!r}")
        if not sigma > 0:
            raise ValueError(f"sigma (frequency scale) must be > 0, got {sigma}")
        self.dim = dim
        self.num_freqs = num_freqs
        self.sigma = float(sigma)

    def sample(self, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        """``[num_freqs, dim]`` frequencies drawn with ``generator`` (on its device), returned on ``device``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def ascent_step(self) -> None:
        """Update the sampler after a backward pass of the discrepancy (no-op for fixed samplers)."""

    def zero_grad_sampler(self) -> None:
        """Clear the sampler's gradients (no-op for fixed samplers)."""

    def optimizer_state(self) -> dict[str, Any]:
        """State of the sampler's own optimiser (empty for fixed samplers)."""
        return {}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`optimizer_state` returned."""


class GaussianSampler(FrequencySampler):
    """``t ~ N(0, sigma^2 I)``, fresh at every call."""

    def sample(self, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        source = generator.device if generator is not None else torch.device("cpu")
        freqs = torch.randn(self.num_freqs, self.dim, generator=generator, device=source) * self.sigma
        return freqs if device is None else freqs.to(device)


class LearnedSampler(FrequencySampler):
    """Scale mixture of normals with scales produced by psi, trained by gradient ascent.

    Args:
        dim: feature dimension ``d``.
        num_freqs: ``M``; must be a multiple of 16 and at least 32 (``K = M / 16 >= 2`` components, as BatchNorm
            needs two rows).
        sigma: base scale; the scales live in ``(0, 2 sigma)``.
        lr: learning rate of psi's Adam optimiser.
        betas: Adam betas (RCF-GAN's critic uses ``(0.5, 0.999)``).
    """

    learnable = True

    def __init__(
        self,
        dim: int,
        num_freqs: int,
        sigma: float = 1.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        super().__init__(dim, num_freqs, sigma)
        if num_freqs % FREQS_PER_COMPONENT or num_freqs < 2 * FREQS_PER_COMPONENT:
            raise ValueError(
                f"num_freqs={num_freqs} is invalid for the learned sampler: it needs a multiple of "
                f"{FREQS_PER_COMPONENT} that is >= {2 * FREQS_PER_COMPONENT} (K = num_freqs/16 mixture components)"
            )
        if not lr > 0:
            raise ValueError(f"lr (learned sampler learning rate) must be > 0, got {lr}")
        self.num_components = num_freqs // FREQS_PER_COMPONENT
        layers: list[nn.Module] = []
        for block in range(3):
            layers += [nn.Linear(dim, dim), nn.BatchNorm1d(dim)]
            if block < 2:
                layers.append(nn.LeakyReLU(0.2))
        self.psi = nn.Sequential(*layers)
        self.optimizer = torch.optim.Adam(self.psi.parameters(), lr=lr, betas=betas)

    def scales(self, generator: torch.Generator | None = None) -> Tensor:
        """``[K, d]`` positive scale vectors from fresh white noise (differentiable w.r.t. psi)."""
        device = next(self.psi.parameters()).device
        source = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(self.num_components, self.dim, generator=generator, device=source).to(device)
        return self.sigma * (1.0 + torch.tanh(self.psi(noise)))

    def sample(self, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        """``[M, d]`` frequencies ``t = s_k * eps``, 16 per component, fresh ``eps`` each call; carries psi's graph.

        The result lives on psi's device (``device`` is accepted for interface compatibility).
        """
        scales = self.scales(generator)
        source = generator.device if generator is not None else torch.device("cpu")
        eps = torch.randn(
            self.num_components, FREQS_PER_COMPONENT, self.dim, generator=generator, device=source
        ).to(scales.device)
        return (scales.unsqueeze(1) * eps).reshape(self.num_freqs, self.dim)

    def zero_grad_sampler(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def ascent_step(self) -> None:
        """One gradient-*ascent* step on the discrepancy whose backward pass just filled psi's ``.grad``.

        Only psi's gradients are negated, so the same backward serves the images' descent step.
        """
        grads = [p.grad for p in self.psi.parameters() if p.grad is not None]
        if not grads:
            raise RuntimeError(
                "LearnedSampler.ascent_step found no gradient on psi: backpropagate a loss computed from "
                "frequencies returned by sample() before calling it"
            )
        torch._foreach_neg_(grads)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


SAMPLERS = {"gaussian": GaussianSampler, "learned": LearnedSampler}


def create_sampler(name: str, dim: int, num_freqs: int, sigma: float = 1.0, **kwargs: Any) -> FrequencySampler:
    """Build a sampler by name (``gaussian`` or ``learned``); ``kwargs`` go to :class:`LearnedSampler`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    if name == "gaussian":
        return GaussianSampler(dim, num_freqs, sigma)
    return LearnedSampler(dim, num_freqs, sigma, **kwargs)
