"""Fast CPU paths of the ConvNet passes give the plain float32 computation's result (and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datacomp.distillers.base import features_no_grad
from datacomp.fast_layers import NHWC_NORM_MAX_PIXELS, avg_pool_2x2, fast_pool_applies, instance_norm_nhwc
from datacomp.models import create_model


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("size", [16, 8, 4])
@pytest.mark.parametrize("affine", [True, False])
def test_nhwc_instance_norm_equals_group_norm(size, affine):
    gen = torch.Generator().manual_seed(0)
    # a large mean beside a small spread: a one-pass variance would lose digits here
    x = torch.randn(6, 5, size, size, generator=gen) * 0.5 + 30.0
    weight = torch.rand(5, generator=gen) + 0.5 if affine else None
    bias = torch.randn(5, generator=gen) if affine else None
    out = instance_norm_nhwc(_channels_last(x), weight, bias, 1e-5)
    expected = F.group_norm(x.double(), 5, None if weight is None else weight.double(),
                            None if bias is None else bias.double(), 1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=0)


def test_nhwc_instance_norm_gradients_match_float64_group_norm():
    gen = torch.Generator().manual_seed(1)
    x = _channels_last(torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    weight = (torch.rand(4, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    bias = torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, w, b: instance_norm_nhwc(a, w, b, 1e-5), (x, weight, bias))
    probe = torch.randn(3, 4, 5, 5, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((instance_norm_nhwc(x, weight, bias, 1e-5) * probe).sum(), (x, weight, bias))
    expected = torch.autograd.grad((F.group_norm(x, 4, weight, bias, 1e-5) * probe).sum(), (x, weight, bias))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(3, 32), (1, 28), (3, 16)])
def test_convnet_channels_last_features_equal_nchw(shape):
    channels, size = shape
    torch.manual_seed(0)
    net = create_model("convnet-3-in", channels, 10, (size, size)).requires_grad_(False)
    for module in net.modules():  # non-trivial affine parameters
        if isinstance(module, torch.nn.GroupNorm):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
    x = torch.randn(20, channels, size, size)
    plain = net.features(x).flatten(1)  # the Sequential: NCHW, native group norm everywhere
    fast = features_no_grad(net, x, chunk=8)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_convnet_channels_last_gradients_equal_nchw():
    torch.manual_seed(0)
    net = create_model("convnet-3-in", 3, 10, (16, 16)).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net.zero_grad()
        xi = x.clone().contiguous(memory_format=layout).detach().requires_grad_(True)
        net(xi).square().sum().backward()
        grads.append([xi.grad.clone()] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_threshold_covers_the_smaller_convnet_maps():
    # ConvNet-3 on 32x32 input: 32x32 maps use the native kernel, 16x16 and 8x8 the NHWC path
    assert 16 * 16 <= NHWC_NORM_MAX_PIXELS < 32 * 32


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 0.0)])
def test_avg_pool_2x2_equals_native_pooling(dtype, atol):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(3, 5, 8, 6, generator=gen, dtype=torch.float64) * 4).to(dtype)
    out = avg_pool_2x2(x)
    expected = F.avg_pool2d(x.double(), 2, 2)
    assert out.dtype == dtype and out.shape == (3, 5, 4, 3)
    if dtype is torch.bfloat16:
        # rounded after each addition: each rounding errs by at most half a unit in the last place of a partial sum,
        # so the mean errs by at most eps x the window's mean magnitude (the native kernel rounds once, at the end)
        bound = torch.finfo(torch.bfloat16).eps * F.avg_pool2d(x.double().abs(), 2, 2)
        assert bool(((out.double() - expected).abs() <= bound).all())
    else:
        torch.testing.assert_close(out.double(), expected, atol=atol, rtol=0)


def test_avg_pool_2x2_gradients_match_float64_native():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(avg_pool_2x2, (x,))
    assert torch.autograd.gradgradcheck(avg_pool_2x2, (x,))
    probe = torch.randn(2, 3, 3, 2, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad((avg_pool_2x2(x) * probe).sum(), x)[0]
    want = torch.autograd.grad((F.avg_pool2d(x, 2, 2) * probe).sum(), x)[0]
    torch.testing.assert_close(got, want, atol=0, rtol=0)  # a quarter of each output gradient, exactly


@pytest.mark.parametrize("layer, shape, applies", [
    (torch.nn.AvgPool2d(2, 2), (2, 3, 8, 8), True),
    (torch.nn.AvgPool2d(2), (2, 3, 8, 6), True),
    (torch.nn.AvgPool2d(2, 2), (2, 3, 7, 8), False),  # odd height: the native kernel drops the last row
    (torch.nn.AvgPool2d(3, 2), (2, 3, 8, 8), False),
    (torch.nn.AvgPool2d(2, 2, padding=1), (2, 3, 8, 8), False),
    (torch.nn.AvgPool2d(2, 2, ceil_mode=True), (2, 3, 8, 8), False),
    (torch.nn.MaxPool2d(2, 2), (2, 3, 8, 8), False),
])
def test_fast_pool_applies_only_to_plain_2x2_pooling(layer, shape, applies):
    assert fast_pool_applies(layer, torch.zeros(shape)) is applies
    assert not fast_pool_applies(layer, _channels_last(torch.zeros(shape)))  # channels-last keeps the native kernel
    assert not fast_pool_applies(layer, torch.zeros(shape, device="meta"))  # so does any device but the CPU


def test_convnet_nchw_pass_equals_the_plain_layers_in_float64():
    """forward_features (fast pooling, NCHW) against the module list run as is: features, input and weight grads."""
    torch.manual_seed(0)
    net = create_model("convnet-3-in", 3, 10, (16, 16)).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    results = []
    for forward in (net.forward_features, lambda t: net.features(t).flatten(1)):
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = forward(xi)
        out.square().sum().backward()
        results.append([out.detach(), xi.grad] + [p.grad.clone() for p in net.parameters() if p.grad is not None])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
