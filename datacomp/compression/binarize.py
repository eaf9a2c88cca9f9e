"""1-bit weights (and optionally activations), XNOR-Net style, recovered by KD on the small set.

Rastegari et al., *XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks*, ECCV 2016:

- **weights**: every Conv2d / Linear except the first and the last (kept in full precision, as in the paper) computes
  with ``W_b = alpha_c * sign(W_c)``, ``alpha_c = mean(|W_c|)`` over output channel ``c``'s weights and
  ``sign(0) = +1``. Training keeps the real-valued weights ``W`` (a :mod:`torch.nn.utils.parametrize`
  parametrization); the gradient passes ``sign`` by the clipped straight-through estimator of BinaryConnect /
  XNOR-Net (``d sign(w) / dw = 1`` where ``|w| <= 1``, else 0) and ``alpha`` by its exact derivative, so for a
  channel of ``n`` weights with upstream gradient ``G``::

      dL/dW_i = alpha * G_i * 1{|W_i| <= 1} + sign(W_i) / n * sum_j G_j * sign(W_j)

- **activations** (``weights+activations``): the input of every binarized layer becomes ``sign(x - tau)`` with the
  same clipped STE (``1{|x - tau| <= 1}``). ``tau`` is one threshold per input channel (feature), the mean of that
  input on the small set, set once before training and kept fixed: datacomp's models put a ReLU before each layer,
  so a plain ``sign`` would map every input to +1 (XNOR-Net moves batch norm before the binarization for the same
  reason; ReActNet's RSign learns such a shift). Without the scaling factor ``K`` of the paper's XNOR convolution.

After training, :func:`freeze_binarized` writes ``alpha_c * sign(W_c)`` into the weights (exactly two values per
output channel) and drops the parametrization; the activation binarization stays a forward pre-hook over a saved
``act_threshold`` buffer. The model file stores the 1-bit signs packed 8 per byte plus the fp32 ``alpha``
(:mod:`~datacomp.compression.modelio`, state entry kind ``binary``); :func:`apply_binarization` re-attaches the
activation binarization on load. :func:`binary_size` counts the model's size with 1 bit per binarized weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from datacomp.errors import ConfigError, FormatError

__all__ = [
    "BINARIZE_MODES",
    "sign_ste",
    "binarize_weight",
    "XNORWeight",
    "binarizable_layers",
    "binarize_model",
    "calibrate_thresholds",
    "freeze_binarized",
    "apply_binarization",
    "binary_size",
    "pack_binary",
    "unpack_binary",
]

BINARIZE_MODES = ("weights", "weights+activations")
_LAYERS = (nn.Conv2d, nn.Linear)
_THRESHOLD = "act_threshold"


class _SignSTE(torch.autograd.Function):
    """``sign`` with ``sign(0) = +1``; backward: the clipped straight-through estimator ``grad * 1{|x| <= 1}``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype) * 2 - 1

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, else ``-1``; gradient ``1{|x| <= 1}`` (clipped straight-through estimator)."""
    return _SignSTE.apply(x)


def binarize_weight(weight: torch.Tensor) -> torch.Tensor:
    """XNOR-Net weights: ``alpha_c * sign(W_c)`` with ``alpha_c = mean(|W_c|)`` per output channel (dim 0).

    Differentiable: STE through ``sign``, exact through ``alpha`` (the formula in the module docstring).
    """
    alpha = weight.abs().mean(dim=tuple(range(1, weight.ndim)), keepdim=True)
    return alpha * sign_ste(weight)


class XNORWeight(nn.Module):
    """Parametrization ``W -> alpha_c * sign(W_c)`` (:func:`binarize_weight`)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return binarize_weight(weight)


def binarizable_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """``(binarized, full_precision)`` layer names: every Conv2d / Linear in module order except the first and the
    last, which stay in full precision.

    Raises:
        ConfigError: The model has fewer than three such layers (nothing would be binarized).
    """
    names = [name for name, m in model.named_modules() if isinstance(m, _LAYERS)]
    if len(names) < 3:
        spec = getattr(model, "spec", {}) or {}
        raise ConfigError(
            f"binarize: {spec.get('name', type(model).__name__)} has {len(names)} conv/linear layer(s); the first "
            f"and the last stay in full precision, so nothing would be binarized: use a deeper model (e.g. "
            f"convnet-3-in)"
        )
    return names[1:-1], [names[0], names[-1]]


def _binarize_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the layer's input becomes ``sign(x - tau)`` (per input channel / feature)."""
    x = args[0]
    tau = getattr(module, _THRESHOLD)
    if getattr(module, "_calibrating", False):  # calibrate_thresholds: tau is this input's per-channel mean
        dims = [d for d in range(x.ndim) if d != 1]
        tau.copy_(x.detach().mean(dim=dims))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (sign_ste(x - tau.view(shape)), *args[1:])


def _attach_activation(module: nn.Module) -> None:
    channels = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
    if _THRESHOLD not in module._buffers:
        module.register_buffer(_THRESHOLD, torch.zeros(channels, device=module.weight.device))
    module.register_forward_pre_hook(_binarize_input)


def _info(mode: str, layers: list[str], full: list[str]) -> dict:
    return {"scheme": "xnor", "mode": mode, "layers": list(layers),
            "activation_layers": list(layers) if mode == "weights+activations" else [],
            "full_precision_layers": list(full)}


def binarize_model(model: nn.Module, mode: str) -> dict:
    """Make ``model`` (in place) compute with binarized weights (trainable parametrization) and, for
    ``weights+activations``, binarized inputs of the same layers (thresholds 0 until :func:`calibrate_thresholds`).

    Returns:
        The binarization record (``scheme``, ``mode``, ``layers``, ``activation_layers``, ``full_precision_layers``),
        also set as ``model.datacomp_binary``.
    """
    if mode not in BINARIZE_MODES:
        raise ConfigError(f"unknown binarize mode {mode!r}; choose one of {', '.join(BINARIZE_MODES)}")
    layers, full = binarizable_layers(model)
    modules = dict(model.named_modules())
    for name in layers:
        parametrize.register_parametrization(modules[name], "weight", XNORWeight())
        if mode == "weights+activations":
            _attach_activation(modules[name])
    model.datacomp_binary = _info(mode, layers, full)
    return model.datacomp_binary


@torch.no_grad()
def calibrate_thresholds(model: nn.Module, x: torch.Tensor) -> None:
    """Set every activation threshold to the mean of its layer's input over the images ``x`` (one forward pass, in
    eval mode; each layer sees the inputs as binarized by the layers before it)."""
    layers = [m for m in model.modules() if _THRESHOLD in getattr(m, "_buffers", {})]
    was_training = model.training
    model.eval()
    for m in layers:
        m._calibrating = True
    try:
        model(x)
    finally:
        for m in layers:
            del m._calibrating
        model.train(was_training)


def freeze_binarized(model: nn.Module) -> nn.Module:
    """Write ``alpha_c * sign(W_c)`` into each binarized weight and drop the parametrizations (in place)."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


def apply_binarization(model: nn.Module, info: dict) -> nn.Module:
    """Re-attach the binarization of a saved model (its weights are already binary): the activation thresholds and
    hooks, and ``model.datacomp_binary``."""
    if not isinstance(info, dict) or info.get("scheme") != "xnor" or info.get("mode") not in BINARIZE_MODES:
        raise FormatError(f"unknown binarization record {info!r} (this datacomp reads scheme 'xnor', modes "
                          f"{', '.join(BINARIZE_MODES)})")
    modules = dict(model.named_modules())
    for name in [*info.get("layers", []), *info.get("activation_layers", [])]:
        if not isinstance(modules.get(name), _LAYERS):
            raise FormatError(f"binarization names layer '{name}', which is not a conv/linear layer of the rebuilt "
                              f"architecture")
    for name in info.get("activation_layers", []):
        _attach_activation(modules[name])
    model.datacomp_binary = dict(info)
    return model


def binary_size(model: nn.Module) -> dict:
    """Size of a binarized model: 1 bit per binarized weight plus one fp32 ``alpha`` per output channel; every other
    tensor of the state (full-precision layers, biases, norms, thresholds) at its own width.

    Returns:
        ``{"bits", "size_bytes", "float_size_bytes", "binarized_weights", "scales", "compression"}``
        (``float_size_bytes``: the same state with every tensor at its own width, i.e. unbinarized).
    """
    info = getattr(model, "datacomp_binary", None) or {}
    binarized = {f"{name}.weight" for name in info.get("layers", [])}
    bits = float_bits = weights = scales = 0
    for key, value in model.state_dict().items():
        width = value.element_size() * 8
        float_bits += value.numel() * width
        if key in binarized:
            weights += value.numel()
            scales += value.shape[0]
            bits += value.numel() + 32 * value.shape[0]
        else:
            bits += value.numel() * width
    size = math.ceil(bits / 8)
    return {"bits": bits, "size_bytes": size, "float_size_bytes": math.ceil(float_bits / 8),
            "binarized_weights": weights, "scales": scales, "compression": float_bits / bits if bits else None}


_SHIFTS = torch.arange(7, -1, -1, dtype=torch.int32)


def pack_binary(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(signs packed 8 per byte as uint8, alpha [out_channels] fp32)`` of a frozen binarized weight.

    Raises:
        ValueError: some output channel holds more than the two values ``+-alpha_c``.
    """
    w = weight.detach().cpu()
    flat = w.reshape(w.shape[0], -1)
    alpha = flat.abs().amax(dim=1)
    if not bool((flat.abs() == alpha[:, None]).all()):
        raise ValueError("weight is not binarized (an output channel holds values other than +-alpha)")
    signs = (flat >= 0).reshape(-1).to(torch.int32)
    signs = torch.cat([signs, signs.new_zeros((-len(signs)) % 8)]).view(-1, 8)
    return (signs << _SHIFTS).sum(dim=1).to(torch.uint8), alpha.to(torch.float32)


def unpack_binary(packed: torch.Tensor, alpha: torch.Tensor, shape: list[int] | tuple[int, ...],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight ``alpha_c * (+-1)`` of shape ``shape`` from :func:`pack_binary`'s output."""
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(numel / 8) or alpha.numel() != shape[0]:
        raise FormatError(f"packed binary weight does not fit shape {list(shape)} ({packed.numel()} bytes, "
                          f"{alpha.numel()} scales)")
    bits = (packed.to(torch.int32)[:, None] >> _SHIFTS) & 1
    signs = bits.reshape(-1)[:numel].to(dtype) * 2 - 1
    return (signs.view(shape[0], -1) * alpha.to(dtype)[:, None]).view(*shape)
