"""Frequency samplers: shapes, statistics, psi's ascent actually learning, and input checks."""

from __future__ import annotations

import pytest
import torch

from datacomp.distillers.ncfm import ncfd
from datacomp.distillers.samplers import GaussianSampler, LearnedSampler, create_sampler


def test_gaussian_sampler_shape_scale_and_freshness() -> None:
    sampler = GaussianSampler(dim=8, num_freqs=4096, sigma=2.0)
    gen = torch.Generator().manual_seed(0)
    first, second = sampler.sample(gen), sampler.sample(gen)
    assert first.shape == (4096, 8)
    assert first.std().item() == pytest.approx(2.0, rel=0.03)
    assert not torch.equal(first, second)
    assert list(sampler.parameters()) == []


def test_learned_sampler_is_a_scale_mixture() -> None:
    sampler = LearnedSampler(dim=6, num_freqs=64, sigma=1.5)
    gen = torch.Generator().manual_seed(1)
    scales = sampler.scales(gen)
    assert scales.shape == (4, 6)
    assert (scales > 0).all() and (scales < 3.0).all()
    freqs = sampler.sample(gen)
    assert freqs.shape == (64, 6) and freqs.requires_grad
    # Fresh noise each call: two draws differ.
    assert not torch.equal(freqs, sampler.sample(gen))


def _two_feature_sets(dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(256, dim, generator=gen)
    syn = torch.randn(64, dim, generator=gen) * 0.6 + 0.25
    return real, syn


def test_psi_ascent_changes_parameters_and_finds_larger_discrepancy() -> None:
    torch.manual_seed(0)
    real, syn = _two_feature_sets()
    sampler = LearnedSampler(dim=8, num_freqs=256, sigma=1.0, lr=1e-2)
    before = [p.detach().clone() for p in sampler.psi.parameters()]
    gen = torch.Generator().manual_seed(3)

    def mean_discrepancy(draw) -> float:
        with torch.no_grad():
            return sum(ncfd(real, syn, draw(), alpha=0.5).item() for _ in range(20)) / 20

    learned_start = mean_discrepancy(lambda: sampler.sample(gen))
    for _ in range(60):
        sampler.zero_grad_sampler()
        ncfd(real, syn, sampler.sample(gen), alpha=0.5).backward()
        sampler.ascent_step()
    after = list(sampler.psi.parameters())
    changed = [not torch.allclose(b, a) for b, a in zip(before, after)]
    assert all(changed), "every psi parameter must move under ascent"
    gaussian = GaussianSampler(dim=8, num_freqs=256, sigma=1.0)
    gaussian_value = mean_discrepancy(lambda: gaussian.sample(gen))
    learned_end = mean_discrepancy(lambda: sampler.sample(gen))
    assert learned_end > learned_start
    assert learned_end > 1.1 * gaussian_value


def test_ascent_step_only_touches_psi_gradients() -> None:
    real, syn = _two_feature_sets()
    syn = syn.clone().requires_grad_(True)
    sampler = LearnedSampler(dim=8, num_freqs=32)
    loss = ncfd(real, syn, sampler.sample(torch.Generator().manual_seed(0)))
    loss.backward()
    syn_grad = syn.grad.clone()
    sampler.ascent_step()
    torch.testing.assert_close(syn.grad, syn_grad)  # the images' descent gradient is left as computed
    assert all(p.grad is None for p in sampler.psi.parameters())


def test_ascent_without_backward_is_an_error() -> None:
    sampler = LearnedSampler(dim=4, num_freqs=32)
    with pytest.raises(RuntimeError, match="found no gradient on psi"):
        sampler.ascent_step()


def test_optimizer_state_round_trip() -> None:
    real, syn = _two_feature_sets()
    sampler = LearnedSampler(dim=8, num_freqs=32)
    ncfd(real, syn, sampler.sample()).backward()
    sampler.ascent_step()
    clone = LearnedSampler(dim=8, num_freqs=32)
    clone.load_state_dict(sampler.state_dict())
    clone.load_optimizer_state(sampler.optimizer_state())
    assert clone.optimizer.state_dict()["state"].keys() == sampler.optimizer.state_dict()["state"].keys()
    for a, b in zip(clone.psi.parameters(), sampler.psi.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("uniform", {}, "unknown sampler"),
        ("learned", {"num_freqs": 40}, "multiple of 16"),
        ("learned", {"num_freqs": 16}, "multiple of 16"),
        ("gaussian", {"num_freqs": 0}, "num_freqs must be a positive int"),
        ("gaussian", {"dim": 0}, "dim .* must be a positive int"),
        ("gaussian", {"sigma": 0.0}, "sigma .* must be > 0"),
        ("learned", {"lr": 0.0}, "lr .* must be > 0"),
    ],
)
def test_create_sampler_rejects_bad_input(name: str, kwargs: dict, match: str) -> None:
    args = {"dim": 8, "num_freqs": 64, **kwargs}
    with pytest.raises(ValueError, match=match):
        create_sampler(name, **args)
