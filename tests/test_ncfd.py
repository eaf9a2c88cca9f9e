"""NCFD: agreement with a direct per-frequency formula, special cases, gradients and input checks."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from datacomp.distillers.ncfm import ncfd
from datacomp.distillers.ncfd import characteristic_function, ncfd_terms, safe_sqrt


def _loop_ncfd(real: torch.Tensor, syn: torch.Tensor, freqs: torch.Tensor, alpha: float) -> float:
    """The paper's Eq. 8 written literally: complex exponentials, |.| and arg, one frequency at a time."""
    total = 0.0
    for t in freqs.tolist():
        phi_r = sum(cmath.exp(1j * sum(a * b for a, b in zip(t, f))) for f in real.tolist()) / len(real)
        phi_s = sum(cmath.exp(1j * sum(a * b for a, b in zip(t, f))) for f in syn.tolist()) / len(syn)
        amp = (abs(phi_r) - abs(phi_s)) ** 2
        phase = 2 * abs(phi_r) * abs(phi_s) * (1 - math.cos(cmath.phase(phi_r) - cmath.phase(phi_s)))
        total += math.sqrt(alpha * amp + (1 - alpha) * phase)
    return total / len(freqs)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_ncfd_matches_loop_formula(alpha: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    syn = torch.randn(4, 3, generator=gen, dtype=torch.float64) * 0.7 + 0.3
    freqs = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    expected = _loop_ncfd(real, syn, freqs, alpha)
    assert ncfd(real, syn, freqs, alpha=alpha).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_alpha_half_is_scaled_cf_distance() -> None:
    gen = torch.Generator().manual_seed(3)
    real, syn, freqs = (torch.randn(n, 6, generator=gen, dtype=torch.float64) for n in (20, 9, 11))
    real_re, real_im = characteristic_function(real, freqs)
    syn_re, syn_im = characteristic_function(syn, freqs)
    cf_distance = torch.sqrt((real_re - syn_re) ** 2 + (real_im - syn_im) ** 2)
    expected = math.sqrt(0.5) * cf_distance.mean()
    torch.testing.assert_close(ncfd(real, syn, freqs, alpha=0.5), expected)


def test_batched_classes_equal_per_class_calls() -> None:
    gen = torch.Generator().manual_seed(4)
    real = torch.randn(3, 10, 5, generator=gen)
    syn = torch.randn(3, 4, 5, generator=gen)
    freqs = torch.randn(8, 5, generator=gen)
    batched = ncfd(real, syn, freqs, alpha=0.3)
    assert batched.shape == (3,)
    looped = torch.stack([ncfd(real[c], syn[c], freqs, alpha=0.3) for c in range(3)])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_zero_discrepancy_has_finite_zero_gradient(alpha: float) -> None:
    real = torch.randn(6, 4)
    syn = real.clone().requires_grad_(True)
    freqs = torch.randn(16, 4)
    value = ncfd(real, syn, freqs, alpha=alpha)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(syn.grad).all()


def test_gradient_finite_when_characteristic_function_vanishes() -> None:
    # Two points at +-pi/2 along t: Phi(t) = (exp(j pi/2) + exp(-j pi/2)) / 2 = 0 exactly.
    syn = torch.tensor([[math.pi / 2], [-math.pi / 2]], dtype=torch.float64, requires_grad=True)
    real = torch.tensor([[0.3], [0.1]], dtype=torch.float64)
    freqs = torch.ones(1, 1, dtype=torch.float64)
    ncfd(real, syn, freqs, alpha=0.7).backward()
    assert torch.isfinite(syn.grad).all()


def test_ncfd_is_symmetric_and_positive() -> None:
    gen = torch.Generator().manual_seed(5)
    a, b, freqs = torch.randn(12, 4, generator=gen), torch.randn(9, 4, generator=gen) + 1, torch.randn(32, 4, generator=gen)
    assert ncfd(a, b, freqs, 0.4) > 0
    torch.testing.assert_close(ncfd(a, b, freqs, 0.4), ncfd(b, a, freqs, 0.4))


def test_terms_are_non_negative_and_reconstruct_squared_distance() -> None:
    gen = torch.Generator().manual_seed(6)
    real, syn, freqs = torch.randn(30, 3, generator=gen), torch.randn(5, 3, generator=gen), torch.randn(40, 3, generator=gen)
    amp, phase = ncfd_terms(real, syn, freqs)
    assert (amp >= 0).all() and (phase >= 0).all()
    real_re, real_im = characteristic_function(real, freqs)
    syn_re, syn_im = characteristic_function(syn, freqs)
    torch.testing.assert_close(amp + phase, (real_re - syn_re) ** 2 + (real_im - syn_im) ** 2, atol=1e-6, rtol=1e-5)


def test_safe_sqrt_value_and_gradient() -> None:
    x = torch.tensor([0.0, 4.0, -1.0], requires_grad=True)
    y = safe_sqrt(x)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), torch.tensor([0.0, 2.0, 0.0]))
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.25, 0.0]))


@pytest.mark.parametrize(
    ("real", "syn", "freqs", "alpha", "error", "match"),
    [
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(2, 3), 1.5, ValueError, "alpha must lie in"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(2, 3), -0.1, ValueError, "alpha must lie in"),
        (torch.randn(4, 3), torch.randn(4, 2), torch.randn(2, 3), 0.5, ValueError, "feature dimensions differ"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(2, 5), 0.5, ValueError, "feature dimensions differ"),
        (torch.randn(3), torch.randn(4, 3), torch.randn(2, 3), 0.5, ValueError, "real must have shape"),
        (torch.randn(0, 3), torch.randn(4, 3), torch.randn(2, 3), 0.5, ValueError, "at least one row"),
        ([[1.0]], torch.randn(4, 1), torch.randn(2, 1), 0.5, TypeError, "real must be a torch.Tensor"),
        (torch.ones(4, 3, dtype=torch.long), torch.randn(4, 3), torch.randn(2, 3), 0.5, TypeError, "floating-point"),
    ],
)
def test_ncfd_rejects_bad_input(real, syn, freqs, alpha, error, match) -> None:
    with pytest.raises(error, match=match):
        ncfd(real, syn, freqs, alpha=alpha)


def test_bf16_real_projection_stays_close_to_float32() -> None:
    """cf_bf16: the real side's projection in bfloat16 moves NCFD and its pixel-side gradient by well under 1 %."""
    gen = torch.Generator().manual_seed(0)
    real = torch.nn.functional.normalize(torch.randn(3, 64, 256, generator=gen).relu(), dim=-1)
    syn = torch.nn.functional.normalize(torch.randn(3, 16, 256, generator=gen).relu(), dim=-1).requires_grad_(True)
    freqs = torch.randn(512, 256, generator=gen)
    exact = ncfd(real, syn, freqs)
    (grad_exact,) = torch.autograd.grad(exact.sum(), syn)
    low = ncfd(real, syn, freqs, real_freqs=freqs.bfloat16())
    (grad_low,) = torch.autograd.grad(low.sum(), syn)
    assert low.dtype == torch.float32
    assert ((low - exact).abs() / exact).max() < 0.01
    assert torch.nn.functional.cosine_similarity(grad_low.flatten(), grad_exact.flatten(), dim=0) > 0.999


def test_real_freqs_must_match_freqs() -> None:
    with pytest.raises(ValueError, match="real_freqs has shape"):
        ncfd(torch.randn(4, 3), torch.randn(4, 3), torch.randn(2, 3), real_freqs=torch.randn(5, 3))
