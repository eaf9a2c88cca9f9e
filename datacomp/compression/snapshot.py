"""Architecture snapshots: the layer shapes of a (possibly structurally pruned) float model, as JSON.

:func:`architecture_snapshot` records every layer's shape attributes and every tensor's shape;
:func:`apply_snapshot` shrinks a freshly built model of the same architecture to them (what loading a pruned model
needs). Model files (:mod:`datacomp.compression.modelio`) and int8 models (:mod:`datacomp.compression.quantize`)
store it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from datacomp.errors import FormatError

__all__ = ["architecture_snapshot", "apply_snapshot"]

# Integer attributes that define a layer's shape (what torch-pruning rewrites when it removes channels).
_SHAPE_ATTRS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._BatchNorm, ("num_features",)),
    (nn.modules.instancenorm._InstanceNorm, ("num_features",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.PReLU, ("num_parameters",)),
)




def architecture_snapshot(model: nn.Module) -> dict:
    """Shape facts of an fp32 model: per-layer shape attributes and every parameter/buffer shape.

    Args:
        model: A float model (possibly structurally pruned).

    Returns:
        ``{"module_attrs": {...}, "param_shapes": {...}, "model_attrs": {...}}`` (JSON-safe).
    """
    module_attrs: dict[str, dict] = {}
    for name, module in model.named_modules():
        for cls, attrs in _SHAPE_ATTRS:
            if isinstance(module, cls):
                module_attrs[name] = {a: _jsonable(getattr(module, a)) for a in attrs}
                break
    param_shapes = {k: list(v.shape) for k, v in model.state_dict().items() if torch.is_tensor(v)}
    model_attrs = {}
    if isinstance(getattr(model, "feature_dim", None), int):
        model_attrs["feature_dim"] = int(model.feature_dim)
    return {"module_attrs": module_attrs, "param_shapes": param_shapes, "model_attrs": model_attrs}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def apply_snapshot(model: nn.Module, snapshot: dict) -> None:
    """Shrink a freshly built model to the recorded layer shapes (the inverse of :func:`architecture_snapshot`)."""
    modules = dict(model.named_modules())
    for name, attrs in snapshot.get("module_attrs", {}).items():
        if name not in modules:
            raise FormatError(f"model spec names layer '{name}', which the rebuilt architecture does not have")
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for full_name, shape in snapshot.get("param_shapes", {}).items():
        owner_name, _, leaf = full_name.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            raise FormatError(f"model spec names tensor '{full_name}', which the rebuilt architecture does not have")
        shape = torch.Size(shape)
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            if owner._parameters[leaf].shape != shape:
                old = owner._parameters[leaf]
                owner._parameters[leaf] = nn.Parameter(torch.empty(shape, dtype=old.dtype), old.requires_grad)
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            if owner._buffers[leaf].shape != shape:
                owner._buffers[leaf] = torch.empty(shape, dtype=owner._buffers[leaf].dtype)
    for attr, value in snapshot.get("model_attrs", {}).items():
        setattr(model, attr, value)
