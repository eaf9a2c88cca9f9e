"""CutMix (Yun et al., 2019) and its mixed-label loss, as used by IDC/NCFM evaluation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .sampling import _check_images, _make_generator

_fallback_generator: torch.Generator | None = None


def _cutmix_generator(generator: torch.Generator | None) -> torch.Generator:
    global _fallback_generator
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    if _fallback_generator is None:
        _fallback_generator = _make_generator(None)
    return _fallback_generator


def cutmix(
    x: Tensor,
    y: Tensor,
    beta: float = 1.0,
    prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """CutMix (Yun et al., 2019) as used by IDC/NCFM evaluation.

    With probability ``prob``: draw ``lam ~ Beta(beta, beta)``, paste a box of area ``~(1 - lam)`` (side
    ``int(H * sqrt(1 - lam))``, random centre, clipped at the border) from a permuted batch, and correct ``lam`` to
    ``1 - pasted_area / (H * W)``. Otherwise return the inputs unchanged with ``lam = 1.0``.

    Args:
        x: Images [N, C, H, W] (not modified).
        y: Labels with first dimension N (class indices or soft labels).
        beta: Beta distribution parameter (> 0).
        prob: Probability of applying CutMix.
        generator: Source of randomness; default: a private module-level generator (never the global RNG).

    Returns:
        ``(x_mixed, y_a, y_b, lam)``; train with ``cutmix_loss(logits, y_a, y_b, lam)``.
    """
    _check_images(x)
    if not isinstance(y, Tensor) or y.dim() == 0 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor with first dimension N={x.shape[0]} (one label per image), got {shape}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be a probability in [0, 1], got {prob!r}")
    g = _cutmix_generator(generator)
    n, _, h, w = x.shape
    if n == 0 or float(torch.rand(1, generator=g, device=g.device)) >= prob:
        return x, y, y, 1.0
    # torch has no generator-driven Beta sampler: seed numpy's from this generator so the draw stays reproducible.
    numpy_seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
    lam = float(np.random.default_rng(numpy_seed).beta(beta, beta))
    permutation = torch.randperm(n, generator=g, device=g.device).to(x.device)
    cut_ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut_ratio), int(w * cut_ratio)
    centre_y = int(torch.randint(0, h, (1,), generator=g, device=g.device))
    centre_x = int(torch.randint(0, w, (1,), generator=g, device=g.device))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, h)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[permutation, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, y, y[permutation.to(y.device)], lam


def cutmix_loss(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)`` (labels may be indices or probabilities)."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1] (as returned by cutmix), got {lam!r}")
    loss = F.cross_entropy(logits, y_a)
    if lam == 1.0:
        return loss
    return lam * loss + (1.0 - lam) * F.cross_entropy(logits, y_b)
