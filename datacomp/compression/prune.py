"""Pruning: global unstructured magnitude pruning (``torch.nn.utils.prune``) and structured channel pruning that
physically removes channels with dependency handling (``torch_pruning``, DepGraph).

Structured pruning conventions:
- ``ratio`` is a **channel** ratio per prunable layer (``torch_pruning``'s ``pruning_ratio``): with uniform (non-global)
  pruning every coupled group loses ``ratio`` of its channels, so a conv between two pruned layers keeps
  ``(1 - ratio)^2`` of its weights and MACs, the first conv and the classifier's input ``(1 - ratio)``.
- The classifier's outputs (one per class) are never pruned.
- Per-channel normalisation written as ``GroupNorm(C, C)`` (the "instance norm" of the DC ConvNet) is declared
  channel-independent to ``torch_pruning``, which otherwise treats it as C indivisible groups and silently prunes
  nothing; its ``num_groups`` follows the new channel count.
- Importance: ``magnitude`` (L2 norm of each channel's group weights) or ``taylor`` (|w * dL/dw| accumulated over
  batches of the small set, first-order Taylor expansion of the loss; data-dependent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch_pruning.pruner.function import GroupNormPruner

from datacomp.compression.losses import cross_entropy
from datacomp.compression.measure import count_macs, count_nonzero_parameters, count_parameters
from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError

__all__ = [
    "IMPORTANCES",
    "check_ratio",
    "global_magnitude_prune",
    "structured_channel_prune",
    "ChannelPruneSettings",
    "sparsity",
    "output_layers",
]

IMPORTANCES = ("magnitude", "taylor")


def check_ratio(ratio: Any, name: str = "ratio") -> float:
    """Validate a pruning ratio: a number strictly between 0 and 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(ratio).__name__}")
    if not 0.0 < float(ratio) < 1.0:
        raise ConfigError(f"{name} must lie strictly between 0 and 1 (fraction to remove), got {ratio}")
    return float(ratio)


def sparsity(model: nn.Module, layer_types: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear)) -> float:
    """Fraction of exactly-zero weights over the ``weight`` tensors of ``layer_types``."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, layer_types) and m.weight is not None]
    if not weights:
        raise ConfigError(f"model has no layers of types {[t.__name__ for t in layer_types]}")
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total)


def global_magnitude_prune(
    model: nn.Module,
    amount: float,
    *,
    layer_types: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear),
) -> dict:
    """Zero the ``amount`` smallest-magnitude weights across all conv/linear layers at once, permanently.

    Uses ``torch.nn.utils.prune.global_unstructured`` with L1 magnitude, then ``prune.remove`` so the model keeps
    plain parameters (no masks, no forward pre-hooks) and saves like any other model. Unstructured zeros do not
    reduce dense MACs or latency; they show in ``nonzero_parameters`` (and compress well).

    Args:
        model: Model to prune in place.
        amount: Fraction of the selected weights to zero, in (0, 1).
        layer_types: Layer classes whose ``weight`` is pruned.

    Returns:
        ``{"method", "amount", "sparsity", "parameters", "nonzero_parameters_before", "nonzero_parameters_after"}``.
    """
    amount = check_ratio(amount, "amount")
    targets = [(m, "weight") for m in model.modules() if isinstance(m, layer_types) and m.weight is not None]
    if not targets:
        raise ConfigError(f"model has no layers of types {[t.__name__ for t in layer_types]} to prune")
    before = count_nonzero_parameters(model)
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
    for module, name in targets:
        torch_prune.remove(module, name)  # make permanent: weight becomes a plain Parameter again
    return {
        "method": "global-unstructured-l1",
        "amount": amount,
        "sparsity": sparsity(model, layer_types),
        "parameters": count_parameters(model),
        "nonzero_parameters_before": before,
        "nonzero_parameters_after": count_nonzero_parameters(model),
    }


class _ChannelwiseGroupNormPruner(GroupNormPruner):
    """GroupNorm pruner that treats ``GroupNorm(C, C)`` (per-channel) as channel-independent."""

    @staticmethod
    def _per_channel(layer: nn.GroupNorm) -> bool:
        return layer.num_groups == layer.num_channels

    def prune_out_channels(self, layer: nn.GroupNorm, idxs: Sequence[int]) -> nn.Module:
        per_channel = self._per_channel(layer)
        layer = super().prune_out_channels(layer, idxs)
        if per_channel:
            layer.num_groups = layer.num_channels
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channel_groups(self, layer: nn.GroupNorm) -> int:
        return 1 if self._per_channel(layer) else layer.num_groups

    get_in_channel_groups = get_out_channel_groups


def output_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """Layers whose outputs are the class logits (never pruned): ``model.classifier`` or every Linear producing K."""
    if isinstance(getattr(model, "classifier", None), nn.Linear):
        return [model.classifier]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        num_outputs = int(model(example_inputs[:1]).shape[1])
    model.train(was_training)
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_outputs]
    if not layers:
        raise ConfigError("could not find the classifier layer; pass ignored_layers=[the layer producing logits]")
    return layers


def _check_supported(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) > 1:
            raise ConfigError(
                f"structured channel pruning cannot shrink LayerNorm '{name}' over {list(m.normalized_shape)} "
                f"(normalises channels and space together; e.g. convnet-*-ln): use a model with in/bn/gn norm, "
                f"or unstructured pruning (structured=False)"
            )


@dataclass
class ChannelPruneSettings:
    """How :func:`structured_channel_prune` ranks and removes channels.

    Attributes:
        importance: ``"magnitude"`` or ``"taylor"`` (needs ``data``).
        global_pruning: Rank channels across layers (non-uniform widths) instead of per layer.
        batch_size: Batch size for the Taylor gradient pass.
        max_batches: At most this many batches are used for Taylor importance.
        ignored_layers: Extra layers to leave untouched (the classifier is always kept).
    """

    importance: str = "magnitude"
    global_pruning: bool = False
    batch_size: int = 128
    max_batches: int = 8
    ignored_layers: Sequence[nn.Module] = ()


def structured_channel_prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    ratio: float,
    settings: ChannelPruneSettings | None = None,
    *,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    ledger: CostLedger | None = None,
    phase: str = "prune",
) -> dict:
    """Remove ``ratio`` of the channels of every prunable layer (physically; shapes shrink).

    Args:
        model: Model to prune in place (CPU or GPU; example inputs on the same device).
        example_inputs: A small normalised batch used to trace the dependency graph.
        ratio: Channel fraction to remove, in (0, 1).
        settings: Importance, global ranking, Taylor batches and ignored layers (:class:`ChannelPruneSettings`;
            default: its defaults, magnitude importance per layer).
        data: ``(x_normalised, labels)`` batches for Taylor importance (labels may be soft ``[N, K]``).
        ledger: Optional cost ledger (phase ``phase``; FLOPs of the Taylor passes are counted).
        phase: Ledger phase name.

    Returns:
        ``{"method", "ratio", "importance", "global", "parameters_before/after", "macs_before/after",
        "channels": {layer: [before, after]}, "taylor_batches"}``.
    """
    ratio = check_ratio(ratio)
    settings = settings if settings is not None else ChannelPruneSettings()
    if not isinstance(settings, ChannelPruneSettings):
        raise ConfigError(f"settings must be a ChannelPruneSettings, got {type(settings).__name__}")
    importance, global_pruning = settings.importance, settings.global_pruning
    batch_size, max_batches = settings.batch_size, settings.max_batches
    if importance not in IMPORTANCES:
        raise ConfigError(f"importance must be one of {IMPORTANCES}, got '{importance}'")
    if importance == "taylor":
        if data is None or len(data[0]) == 0:
            raise ConfigError("taylor importance needs data=(x, y) batches from the small set (got none)")
        if len(data[0]) != len(data[1]):
            raise DataError(f"data x and y lengths differ: {len(data[0])} vs {len(data[1])}")
    if not torch.is_tensor(example_inputs) or example_inputs.ndim < 2:
        raise ConfigError("example_inputs must be a batched input tensor")
    _check_supported(model)
    was_training = model.training
    model.eval()  # trace and score without touching BatchNorm running statistics
    ignored = list(output_layers(model, example_inputs)) + list(settings.ignored_layers)
    params_before = count_parameters(model)
    macs_before = count_macs(model, example_inputs[:1])
    widths_before = {n: _width(m) for n, m in model.named_modules() if _width(m) is not None}

    scorer = (
        tp.importance.GroupMagnitudeImportance(p=2)
        if importance == "magnitude"
        else tp.importance.GroupTaylorImportance()
    )
    ledger = ledger if ledger is not None else CostLedger()
    taylor_batches = 0
    with ledger.phase(phase, flops="full", device=str(example_inputs.device)) as ph:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs,
            importance=scorer,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            ignored_layers=ignored,
            customized_pruners={nn.GroupNorm: _ChannelwiseGroupNormPruner()},
        )
        if importance == "taylor":
            x, y = data
            model.zero_grad(set_to_none=True)
            for start in range(0, min(len(x), batch_size * max_batches), batch_size):
                with ph.step():
                    logits = model(x[start : start + batch_size])
                    yb = y[start : start + batch_size]
                    loss = cross_entropy(logits, yb)  # hard or soft labels
                    loss.backward()  # gradients accumulate over batches: the Taylor score uses their sum
                taylor_batches += 1
        pruner.step()
        model.zero_grad(set_to_none=True)
        ph.extra.update(method="structured-channel", importance=importance, taylor_batches=taylor_batches)

    if hasattr(model, "forward_features") and hasattr(model, "feature_dim"):
        with torch.no_grad():
            model.feature_dim = int(model.forward_features(example_inputs[:1]).shape[1])
    model.train(was_training)
    widths_after = {n: _width(m) for n, m in model.named_modules() if _width(m) is not None}
    return {
        "method": "structured-channel",
        "ratio": ratio,
        "importance": importance,
        "global": global_pruning,
        "parameters_before": params_before,
        "parameters_after": count_parameters(model),
        "macs_before": macs_before,
        "macs_after": count_macs(model, example_inputs[:1]),
        "channels": {n: [widths_before[n], widths_after[n]] for n in widths_after if n in widths_before},
        "taylor_batches": taylor_batches,
    }


def _width(module: nn.Module) -> int | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    return None
