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
from .fast_layers import run_layer
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
            x = run_layer(layer, x)
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
