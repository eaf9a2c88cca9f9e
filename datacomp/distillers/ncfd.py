"""Neural characteristic-function discrepancy (NCFD), the distance NCFM minimises.

For a frequency argument ``t`` the empirical characteristic function of features ``f_1..f_N`` is
``Phi(t) = mean_i exp(j <t, f_i>)``. NCFD splits ``|Phi_r - Phi_s|^2`` into an amplitude and a phase term
(NCFM paper, Eq. 7/8) and weights them with ``alpha``::

    amp(t)   = (|Phi_r(t)| - |Phi_s(t)|)^2
    phase(t) = 2 |Phi_r(t)| |Phi_s(t)| (1 - cos(arg Phi_r(t) - arg Phi_s(t)))
    NCFD     = mean_t sqrt(alpha * amp(t) + (1 - alpha) * phase(t))

All frequencies are handled by one matrix product. Square roots go through :func:`safe_sqrt`, whose gradient
is zero (not NaN) where its argument is zero, so ``ncfd(x, x)`` is exactly 0 with a finite gradient. The phase
term is evaluated as ``|Phi_r - Phi_s|^2 - amp`` (the same quantity, free of cancellation when ``Phi_s ~ Phi_r``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["characteristic_function", "ncfd", "ncfd_terms", "ncfm_loss", "safe_sqrt"]


def safe_sqrt(x: Tensor) -> Tensor:
    """Square root with value 0 and gradient 0 where ``x <= 0`` (instead of an infinite/NaN gradient).

    Uses the double-``where`` trick so that the masked branch never sees a zero inside ``sqrt``.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def characteristic_function(features: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """Empirical characteristic function at every frequency row.

    Args:
        features: ``[..., N, d]`` samples.
        freqs: ``[K, d]`` or ``[..., K, d]`` frequency arguments (broadcast against ``features``' batch dims).

    Returns:
        ``(real, imag)``, each ``[..., K]``: the mean of ``cos <t, f_i>`` and ``sin <t, f_i>`` over the N samples.
    """
    projections = features @ freqs.transpose(-1, -2)  # [..., N, K]: one matmul for all frequencies
    # bfloat16 inputs (see ``ncfd_terms(real_freqs=...)``) give a bfloat16 product: cos/sin and the mean run in
    # float32 at least.
    projections = projections.to(torch.promote_types(projections.dtype, torch.float32))
    return torch.cos(projections).mean(dim=-2), torch.sin(projections).mean(dim=-2)


def _check_inputs(real: Tensor, syn: Tensor, freqs: Tensor) -> None:
    for name, value in (("real", real), ("syn", syn), ("freqs", freqs)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() < 2:
            raise ValueError(f"{name} must have shape [..., rows, d], got {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    dims = {real.shape[-1], syn.shape[-1], freqs.shape[-1]}
    if len(dims) != 1:
        raise ValueError(
            f"feature dimensions differ: real d={real.shape[-1]}, syn d={syn.shape[-1]}, freqs d={freqs.shape[-1]}; "
            "all three must share their last dimension"
        )
    if real.shape[-2] == 0 or syn.shape[-2] == 0 or freqs.shape[-2] == 0:
        raise ValueError("real, syn and freqs must each hold at least one row")


def ncfd_terms(real: Tensor, syn: Tensor, freqs: Tensor, real_freqs: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-frequency amplitude and phase terms of NCFD.

    Args:
        real: ``[..., N, d]`` real features (typically computed without gradient).
        syn: ``[..., M, d]`` synthetic features.
        freqs: ``[K, d]`` or ``[..., K, d]`` frequency arguments.
        real_freqs: The same frequencies for the real side's projection, possibly in another dtype (NCFM's
            ``cf_bf16``: a bfloat16 copy made once per iteration; ``real`` is cast to its dtype). Default ``freqs``.

    Returns:
        ``(amp, phase)``, each ``[..., K]``, both ``>= 0``.
    """
    _check_inputs(real, syn, freqs)
    if real_freqs is None:
        real_re, real_im = characteristic_function(real, freqs)
    else:
        if real_freqs.shape != freqs.shape:
            raise ValueError(f"real_freqs has shape {tuple(real_freqs.shape)} but freqs {tuple(freqs.shape)}; pass "
                             "the same frequencies (e.g. freqs.bfloat16())")
        real_re, real_im = characteristic_function(real.to(real_freqs.dtype), real_freqs)
    syn_re, syn_im = characteristic_function(syn, freqs)
    real_abs = safe_sqrt(real_re.square() + real_im.square())
    syn_abs = safe_sqrt(syn_re.square() + syn_im.square())
    amp = (real_abs - syn_abs).square()
    # 2|Pr||Ps|(1 - cos(dphase)) = |Pr - Ps|^2 - (|Pr| - |Ps|)^2: no atan2, no division by |P|, and no
    # cancellation between two O(1) products when Ps ~ Pr (the form 2(|Pr||Ps| - Re Re - Im Im) leaves ~1e-9
    # of float32 rounding there, whose sqrt is ~1e-4 instead of 0).
    squared_distance = (real_re - syn_re).square() + (real_im - syn_im).square()
    phase = (squared_distance - amp).clamp_min(0.0)
    return amp, phase


def ncfd(real: Tensor, syn: Tensor, freqs: Tensor, alpha: float = 0.5, real_freqs: Tensor | None = None) -> Tensor:
    """Neural characteristic-function discrepancy between two feature sets.

    The features are used as given (no normalisation, no scale factor: the NCFM training loss adds both).

    Args:
        real: ``[..., N, d]`` real features.
        syn: ``[..., M, d]`` synthetic features (leading batch dims, e.g. classes, must broadcast with ``real``).
        freqs: ``[K, d]`` (shared) or ``[..., K, d]`` (per batch entry) frequency arguments.
        alpha: weight of the amplitude term in ``[0, 1]``; the phase term gets ``1 - alpha``. With ``alpha=0.5``
            the integrand is ``sqrt(0.5) * |Phi_r(t) - Phi_s(t)|``.
        real_freqs: Optional copy of ``freqs`` (e.g. bfloat16) for the real side's projection; see
            :func:`ncfd_terms`.

    Returns:
        ``[...]``: mean over the K frequencies of ``sqrt(alpha * amp + (1 - alpha) * phase)``.

    Raises:
        ValueError: on mismatched shapes or ``alpha`` outside ``[0, 1]``.
        TypeError: on non-tensor or non-float inputs.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (weight of the amplitude term), got {alpha}")
    amp, phase = ncfd_terms(real, syn, freqs, real_freqs=real_freqs)
    return safe_sqrt(alpha * amp + (1.0 - alpha) * phase).mean(dim=-1)


def ncfm_loss(real_features: Tensor, syn_features: Tensor, freqs: Tensor, alpha: float = 0.5,
              scale: float = 300.0, normalize: bool = True, real_freqs: Tensor | None = None) -> Tensor:
    """NCFM's training loss: ``scale * NCFD`` on (optionally) L2-normalised features.

    Args:
        real_features: ``[..., N, d]``.
        syn_features: ``[..., M, d]``.
        freqs: ``[K, d]``.
        alpha: Amplitude weight.
        scale: Loss multiplier (released code: 300).
        normalize: L2-normalise every feature vector first (released code: yes).
        real_freqs: Optional low-precision copy of ``freqs`` for the real side's projection (``cf_bf16``).

    Returns:
        ``[...]`` per-batch-entry loss (e.g. per class).
    """
    if normalize:
        real_features = F.normalize(real_features, dim=-1)
        syn_features = F.normalize(syn_features, dim=-1)
    return scale * ncfd(real_features, syn_features, freqs, alpha=alpha, real_freqs=real_freqs)
