"""Faster CPU paths for layers of the ConvNet family, each equal to the plain layer up to float rounding.

:func:`run_layer` runs one layer of a network's feature stack: through a fast path when one applies to that layer and
input, else the layer itself. The paths, each with its reason:

- :func:`instance_norm_nhwc`: instance norm (``GroupNorm(C, C)``) of channels-last maps of at most
  :data:`NHWC_NORM_MAX_PIXELS` pixels, where PyTorch's channels-last group-norm kernel is 8-20x slower;
- :func:`avg_pool_2x2`: 2x2 / stride-2 average pooling of contiguous NCHW maps on the CPU, where PyTorch's kernel is
  2-4x slower.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NHWC_NORM_MAX_PIXELS", "avg_pool_2x2", "fast_pool_applies", "instance_norm_nhwc",
           "nhwc_instance_norm_applies", "run_layer"]


# Largest H*W at which channels-last instance norm runs through :func:`instance_norm_nhwc`. PyTorch's CPU group-norm
# kernel for channels-last inputs with one channel per group is 8-20x slower than its NCHW kernel at 16x16 and 8x8
# maps (ConvNet-3's second and third blocks), while at 32x32 it is the faster choice; see benchmarks/forward_study.py.
NHWC_NORM_MAX_PIXELS = 256


def instance_norm_nhwc(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       eps: float) -> torch.Tensor:
    """``GroupNorm(C, C)`` of a channels-last ``x`` [N, C, H, W], computed on its [N, H*W, C] view.

    Two-pass (mean, then the mean square of the centred values), so it is as accurate as the native kernel; the
    result is channels-last. Differentiable.
    """
    n, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: no copy for channels-last memory
    centred = y - y.mean(1, keepdim=True)
    scale = (centred.square().mean(1, keepdim=True) + eps).rsqrt()
    if weight is not None:
        scale = scale * weight
    out = centred * scale if bias is None else torch.addcmul(bias, centred, scale)
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def nhwc_instance_norm_applies(layer: nn.Module, x: torch.Tensor) -> bool:
    return (type(layer) is nn.GroupNorm and layer.num_groups == layer.num_channels and x.dim() == 4
            and x.shape[2] * x.shape[3] <= NHWC_NORM_MAX_PIXELS and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


class _AvgPool2x2(torch.autograd.Function):
    """2x2 / stride-2 average pooling of an NCHW map with even sides: strided additions forward; backward writes a
    quarter of each output gradient into the even rows' two columns and copies those rows to the odd ones (autograd's
    own backward of the additions zero-fills and scatters the whole map twice; the native kernel is slower still)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rows = x[..., 0::2, :] + x[..., 1::2, :]
        return (rows[..., 0::2] + rows[..., 1::2]) * 0.25

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = grad.shape
        quarter = grad * 0.25
        out = grad.new_empty(n, c, h, 2, 2 * w)  # [.., i, 0, :] is input row 2i, [.., i, 1, :] row 2i+1
        out[:, :, :, 0, 0::2] = quarter
        out[:, :, :, 0, 1::2] = quarter
        out[:, :, :, 1] = out[:, :, :, 0]
        return out.view(n, c, 2 * h, 2 * w)


def avg_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``AvgPool2d(2, 2)`` of a contiguous NCHW ``x`` with even height and width, as two strided additions.

    PyTorch's CPU kernel for NCHW 2x2 average pooling is 2-4x slower than these additions, forward and backward
    (ConvNet-3's synthetic forward+backward in NCHW: ~25 % less time). The sum runs in ``x``'s dtype: float32 results
    differ from the native kernel's by the summation order only; bfloat16 ones are rounded after each addition
    instead of once (off by at most bfloat16's eps times the window's mean magnitude). Differentiable, twice (the
    backward is made of differentiable operations).
    """
    return _AvgPool2x2.apply(x)


def fast_pool_applies(layer: nn.Module, x: torch.Tensor) -> bool:
    """A plain 2x2 / stride-2 average pooling of a contiguous NCHW map with even sides, on the CPU (channels-last
    maps keep the native kernel, which is fast in that layout; other devices keep their own kernels)."""
    return (x.device.type == "cpu" and type(layer) is nn.AvgPool2d and layer.kernel_size in (2, (2, 2))
            and layer.stride in (2, (2, 2)) and layer.padding in (0, (0, 0)) and not layer.ceil_mode
            and layer.divisor_override is None
            and x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.is_contiguous())


def run_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``, through the fast path that applies to this layer and input, if any."""
    if nhwc_instance_norm_applies(layer, x):
        return instance_norm_nhwc(x, layer.weight, layer.bias, layer.eps)
    if fast_pool_applies(layer, x):
        return avg_pool_2x2(x)
    return layer(x)
