"""Model registry with the reference architectures of the dataset-distillation literature.

``create_model("convnet-3-in", in_channels=3, num_classes=10, image_size=(32, 32))`` builds a fresh model. Definitions
follow the DC/DSA/DM reference code (VICO-UoE/DatasetCondensation ``networks.py``): e.g. ConvNet = depth x
[Conv3x3(width 128) -> norm -> ReLU -> AvgPool 2x2], instance norm = ``GroupNorm(C, C, affine=True)``, padding 3 on the
first layer for 1-channel inputs (so 28x28 MNIST behaves as 32x32), flattened 2048-d features for 32x32 inputs.

Every model exposes ``forward_features(x) -> [N, D]`` (flattened embedding), ``forward_head(f) -> logits``,
``feature_dim`` (D) and ``spec`` (the constructor arguments, enough to rebuild it).
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, is_int
from .registry import Registry

__all__ = ["MODELS", "create_model", "list_models", "register_model", "model_from_spec", "ClassifierBase"]

# name -> factory ``fn(in_channels, num_classes, image_size, **kwargs)``; info["params"]: the keyword arguments it
# takes (None: not known, anything is passed on).
MODELS: Registry[Callable[..., nn.Module]] = Registry("model", option="--model")


def _keyword_params(fn: Callable, fixed: Iterable[str] = ()) -> tuple[str, ...] | None:
    """Keyword arguments of ``fn`` beyond the first three (and ``fixed``); None when it takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params[3:] if p.name not in set(fixed) and p.kind is not p.VAR_POSITIONAL)


def register_model(name: str, description: str = "", params: Iterable[str] | None = None) -> Callable:
    """Decorator registering a factory ``fn(in_channels, num_classes, image_size, **kwargs) -> nn.Module``.

    Args:
        name: Registry name (``create_model(name, ...)``).
        description: One line for listings.
        params: The keyword arguments the factory accepts (default: read from its signature; a factory taking
            ``**kwargs`` without ``params`` gets any argument passed on).
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, fn, description, params=tuple(params) if params is not None else _keyword_params(fn))
        return fn

    return wrap


class ClassifierBase(nn.Module):
    """Common interface: ``forward = forward_head(forward_features(x))``."""

    feature_dim: int
    spec: dict

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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


def _nhwc_instance_norm_applies(layer: nn.Module, x: torch.Tensor) -> bool:
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


def _fast_pool_applies(layer: nn.Module, x: torch.Tensor) -> bool:
    """A plain 2x2 / stride-2 average pooling of a contiguous NCHW map with even sides, on the CPU (channels-last
    maps keep the native kernel, which is fast in that layout; other devices keep their own kernels)."""
    return (x.device.type == "cpu" and type(layer) is nn.AvgPool2d and layer.kernel_size in (2, (2, 2)) and layer.stride in (2, (2, 2))
            and layer.padding in (0, (0, 0)) and not layer.ceil_mode and layer.divisor_override is None
            and x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.is_contiguous())


def _norm2d(kind: str, channels: int, spatial: tuple[int, int]) -> nn.Module:
    if kind == "in":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return nn.LayerNorm([channels, *spatial], elementwise_affine=True)
    if kind == "gn":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{kind}'; choose in, bn, ln, gn or none")


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid, "leakyrelu": lambda: nn.LeakyReLU(0.01),
}


class ConvNet(ClassifierBase):
    """DC/DM ConvNet: ``depth`` x [Conv3x3(width) -> norm -> act -> pool 2x2] -> Linear."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128, depth: int = 3,
        norm: str = "in", act: str = "relu", pool: str = "avg",
    ) -> None:
        super().__init__()
        if act not in _ACTIVATIONS or pool not in ("avg", "max", "none"):
            raise ConfigError(f"ConvNet act must be one of {', '.join(_ACTIVATIONS)} and pool one of avg, max, none; "
                              f"got act={act!r}, pool={pool!r}")
        if not is_int(width) or width < 1:
            raise ConfigError(f"ConvNet width must be an int >= 1, got {width!r}")
        h, w = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for d in range(depth):
            padding = 3 if in_channels == 1 and d == 0 else 1
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=padding))
            # padding 3 on 1-channel inputs grows the map by 4 (28x28 MNIST -> 32x32, as in the reference)
            h, w = h + 2 * padding - 2, w + 2 * padding - 2
            layers.append(_norm2d(norm, width, (h, w)))
            layers.append(_ACTIVATIONS[act]())
            channels = width
            if pool != "none":
                if h < 2 or w < 2:
                    raise ConfigError(
                        f"image_size {tuple(image_size)} is too small for a depth-{depth} ConvNet "
                        f"(each block halves it); use a smaller depth or larger images"
                    )
                layers.append(nn.AvgPool2d(2, 2) if pool == "avg" else nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing (int8 quantisation): the plain graph
            return self.features(x).flatten(1)
        for layer in self.features:
            if _nhwc_instance_norm_applies(layer, x):
                x = instance_norm_nhwc(x, layer.weight, layer.bias, layer.eps)
            elif _fast_pool_applies(layer, x):
                x = avg_pool_2x2(x)
            else:
                x = layer(x)
        return x.flatten(1)


class MLP(ClassifierBase):
    """DC reference MLP: Linear(C*H*W -> 128) -> ReLU -> Linear(128 -> 128) -> ReLU -> Linear(128 -> classes)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], width: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True),
        )
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LeNet(ClassifierBase):
    """DC reference LeNet-5 (max pooling, ReLU)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2 if in_channels == 1 else 0), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2), nn.Flatten(),
        )
        flat = _probe_dim(self.features, in_channels, image_size, "lenet")
        self.feature_dim = 84
        self.fc = nn.Sequential(nn.Linear(flat, 120), nn.ReLU(inplace=True), nn.Linear(120, 84),
                                nn.ReLU(inplace=True))
        self.classifier = nn.Linear(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class AlexNet(ClassifierBase):
    """DC reference AlexNet variant for 32x32 inputs."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        r = nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 128, 5, padding=4 if in_channels == 1 else 2), r(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, 5, padding=2), r(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, 3, padding=1), r(inplace=True), nn.Conv2d(256, 192, 3, padding=1), r(inplace=True),
            nn.Conv2d(192, 192, 3, padding=1), r(inplace=True), nn.MaxPool2d(2, 2), nn.Flatten(),
        )
        self.feature_dim = _probe_dim(self.features, in_channels, image_size, "alexnet")
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class VGG(ClassifierBase):
    """DC reference VGG (3x3 convs, norm, ReLU, max pooling) with a single linear head."""

    CFG = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], cfg: str = "vgg11",
                 norm: str = "in") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, h, w = in_channels, *image_size
        for i, v in enumerate(self.CFG[cfg]):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=3 if in_channels == 1 and i == 0 else 1),
                           _norm2d(norm, v, (h, w)), nn.ReLU(inplace=True)]
                c = v
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.feature_dim = _probe_dim(self.features, in_channels, image_size, cfg)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm2d(norm, cout, (1, 1))
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm2d(norm, cout, (1, 1))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm2d(norm, cout, (1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.n1(self.conv1(x)))
        return F.relu(self.n2(self.conv2(out)) + self.shortcut(x))


class ResNet18(ClassifierBase):
    """DC reference ResNet-18 for small images (3x3 stem, no max-pool), IN or BN, global average pooling."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], norm: str = "in") -> None:
        super().__init__()
        if norm not in ("in", "bn"):
            raise ConfigError(f"resnet18 norm must be 'in' or 'bn', got '{norm}'")
        if norm == "in" and min(image_size) < 16:
            # three stride-2 stages leave 1x1 maps, where per-channel instance norm zeroes every activation
            raise ConfigError(f"image_size {tuple(image_size)} is too small for resnet18-in (needs >= 16 px); "
                             f"use resnet18-bn or a ConvNet")
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), _norm2d(norm, 64, (1, 1)),
                                   nn.ReLU(inplace=True)]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_BasicBlock(cin, cout, stride, norm), _BasicBlock(cout, cout, 1, norm)]
            cin = cout
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _probe_dim(features: nn.Module, in_channels: int, image_size: tuple[int, int], name: str) -> int:
    try:
        with torch.no_grad():
            was_training = features.training
            features.eval()
            out = features(torch.zeros(1, in_channels, *image_size))
            features.train(was_training)
    except RuntimeError as err:
        raise ConfigError(f"image_size {tuple(image_size)} is too small for {name}: {err}") from None
    return int(out.flatten(1).shape[1])


# --------------------------------------------------------------------------------------------------------------------
# Registry entries

for _depth in (1, 2, 3, 4, 5, 6):
    for _norm in ("in", "bn", "ln", "gn", "none"):
        register_model(f"convnet-{_depth}-{_norm}", f"DC/DM ConvNet, depth {_depth}, norm {_norm}",
                       params=_keyword_params(ConvNet, ("depth", "norm")))(
            lambda c, k, s, _d=_depth, _n=_norm, **kw: ConvNet(c, k, s, depth=_d, norm=_n, **kw)
        )
register_model("mlp", "3-layer MLP", params=_keyword_params(MLP))(lambda c, k, s, **kw: MLP(c, k, s, **kw))
register_model("lenet", "LeNet-5", params=())(lambda c, k, s, **kw: LeNet(c, k, s, **kw))
register_model("alexnet", "AlexNet (DC variant)", params=())(lambda c, k, s, **kw: AlexNet(c, k, s, **kw))
register_model("vgg11", "VGG-11, instance norm", params=())(lambda c, k, s, **kw: VGG(c, k, s, "vgg11", "in", **kw))
register_model("vgg11-bn", "VGG-11, batch norm", params=())(lambda c, k, s, **kw: VGG(c, k, s, "vgg11", "bn", **kw))
register_model("resnet18-in", "ResNet-18, instance norm", params=())(
    lambda c, k, s, **kw: ResNet18(c, k, s, "in", **kw))
register_model("resnet18-bn", "ResNet-18, batch norm", params=())(
    lambda c, k, s, **kw: ResNet18(c, k, s, "bn", **kw))

_ALIASES = {"convnet": "convnet-3-in", "resnet18": "resnet18-in", "vgg": "vgg11"}


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(MODELS.names())


def create_model(
    name: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | int, **kwargs
) -> nn.Module:
    """Build a freshly initialised model by registry name.

    Args:
        name: e.g. ``convnet-3-in`` (depth 3, instance norm), ``convnet-3-bn``, ``mlp``, ``lenet``, ``alexnet``,
            ``vgg11``, ``resnet18-bn``; see :func:`list_models`.
        in_channels: Image channels.
        num_classes: Output classes.
        image_size: ``(H, W)`` or an int for square images.
        **kwargs: Architecture options (e.g. ``width=64`` for ConvNet); the model's registry entry lists them.

    Raises:
        ConfigError: Unknown name or argument, bad sizes, or an image size the architecture cannot take (a
            ``ValueError``).
    """
    entry = MODELS.entry(_ALIASES.get(name, name))
    valid = entry.info.get("params")
    unknown = sorted(set(kwargs) - set(valid)) if valid is not None else []
    if unknown:
        takes = f"its arguments are {', '.join(valid)}" if valid else "it takes no arguments"
        raise ConfigError(f"model '{entry.name}' has no argument(s) {', '.join(unknown)}; {takes}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = tuple(int(v) for v in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(f"image_size must be (H, W) with positive sides, got {image_size}")
    if in_channels < 1 or num_classes < 2:
        raise ConfigError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels} and {num_classes}")
    model = entry.obj(in_channels, num_classes, image_size, **kwargs)
    model.spec = {"name": entry.name, "in_channels": in_channels, "num_classes": num_classes,
                  "image_size": list(image_size), "kwargs": dict(kwargs)}
    return model


def model_from_spec(spec: dict) -> nn.Module:
    """Rebuild a model from its ``spec`` dict (as stored in metadata)."""
    try:
        return create_model(spec["name"], spec["in_channels"], spec["num_classes"], tuple(spec["image_size"]),
                            **spec.get("kwargs", {}))
    except KeyError as err:
        raise ConfigError(f"model spec lacks {err}; expected name, in_channels, num_classes, image_size") from None
