"""The plain-PyTorch restatements of the released loops that the speed benchmarks measure datacomp against."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import load_benchmark

ref = load_benchmark("reference_loops")


def test_convnet_flop_formula_equals_torch_flop_counter():
    net = ref.PlainConvNet(3, 10, size=32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.embed(torch.randn(2, 3, 32, 32))
    assert counter.get_total_flops() == 2 * ref.convnet_forward_flops(32)


def test_plain_dsa_applies_one_transform_per_seed():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=gen)
    for seed in range(12):
        torch.testing.assert_close(ref.plain_dsa(x, seed)[:2], ref.plain_dsa(x[:2], seed))
    assert any(not torch.equal(ref.plain_dsa(x, s), ref.plain_dsa(x, s + 1)) for s in range(5))


def test_released_loops_step_and_move_the_images():
    torch.manual_seed(0)
    real = [torch.rand(24, 3, 16, 16) for _ in range(10)]
    dm = ref.ReleasedDM(real, ipc=1, real_batch=8)
    before = dm.images.detach().clone()
    assert torch.isfinite(torch.tensor(dm.step()))
    assert not torch.equal(before, dm.images.detach())
    state = ref.PlainConvNet(3, 10, size=16).state_dict()
    ncfm = ref.ReleasedNCFM(real, ipc=1, pool=[(state, state)], real_batch=8, num_freqs=32)
    before = ncfm.images.detach().clone()
    assert torch.isfinite(torch.tensor(ncfm.step()))
    assert not torch.equal(before, ncfm.images.detach())


def test_op_split_times_every_aten_call_of_the_run():
    speed = load_benchmark("distill_speed")
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    split = speed.op_split(lambda: (a @ b).relu().sum())
    ops = {o["op"]: o for o in split["ops"]}
    assert set(ops) == {"mm", "relu", "sum"} and all(o["calls"] == 1 for o in ops.values())
    assert [o["seconds"] for o in split["ops"]] == sorted((o["seconds"] for o in split["ops"]), reverse=True)
    assert 0 < split["sum_of_calls_s"] <= split["total_s"]


def test_matmul_yardstick_is_the_best_of_blas_and_onednn_rates(monkeypatch):
    rates = ref.matmul_rates_gflops(dtype=torch.float32, n=128)
    assert set(rates) == {"blas", "onednn"} and min(rates.values()) > 0
    monkeypatch.setattr(ref, "matmul_rates_gflops", lambda *a, **k: {"blas": 1.0, "onednn": 3.0})
    assert ref.matmul_peak_gflops() == 3.0


def test_the_onednn_rate_times_the_same_product_as_torch_mm():
    """The 1x1 convolution over n pixels of n channels is the n x n x n product itself (its rate counts real work)."""
    a, b = torch.randn(64, 48), torch.randn(48, 40)
    y = torch.nn.functional.conv2d(*ref.as_conv1x1(a, b))
    torch.testing.assert_close(y.reshape(40, 64).t(), a @ b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("a_shape, b_shape", [((48, 16), (16, 8)), ((64, 16), (8, 8))])
def test_as_conv1x1_refuses_shapes_it_cannot_lay_out(a_shape, b_shape):
    with pytest.raises(ValueError, match=r"as_conv1x1: a must be \[n, k\] with n a multiple of 32"):
        ref.as_conv1x1(torch.zeros(a_shape), torch.zeros(b_shape))
