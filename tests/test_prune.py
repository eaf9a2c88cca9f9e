"""Pruning: structured channel pruning shrinks exactly as expected, still runs and round-trips through safe files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from datacomp.compression.measure import count_macs, count_parameters
from datacomp.compression.modelio import load_model, read_spec, save_model
from datacomp.compression.prune import (
    ChannelPruneSettings,
    global_magnitude_prune,
    sparsity,
    structured_channel_prune,
)
from datacomp.errors import ConfigError
from datacomp.models import create_model


def convnet(width: int = 8, norm: str = "in", depth: int = 2, seed: int = 0, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(f"convnet-{depth}-{norm}", 3, classes, (8, 8), width=width)


def expected_convnet_counts(width: int, depth: int = 2, classes: int = 4, in_ch: int = 3, side: int = 8):
    """Parameters and MACs of a DC ConvNet (3x3 convs with bias, affine per-channel norm, linear head)."""
    params = in_ch * width * 9 + width + 2 * width + (depth - 1) * (width * width * 9 + width + 2 * width)
    feat = width * (side // 2**depth) ** 2
    params += feat * classes + classes
    macs = side * side * width * in_ch * 9 + sum((side // 2**d) ** 2 * width * width * 9 for d in range(1, depth))
    return params, macs + feat * classes


@pytest.mark.parametrize("norm", ["in", "bn", "gn"])
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_half_channel_pruning_shrinks_params_and_macs_as_expected(norm, importance):
    model = convnet(width=8, norm=norm)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    full_params, full_macs = expected_convnet_counts(8)
    assert (count_parameters(model), count_macs(model, x[:1])) == (full_params, full_macs)

    report = structured_channel_prune(model, x[:2], 0.5, ChannelPruneSettings(importance=importance), data=(x, y))

    half_params, half_macs = expected_convnet_counts(4)
    assert count_parameters(model) == half_params == report["parameters_after"]
    assert count_macs(model, x[:1]) == half_macs == report["macs_after"]
    # first conv and classifier input lose half, the conv between two pruned layers three quarters
    assert report["channels"]["features.0"] == [8, 4] and report["channels"]["classifier"] == [4, 4]
    # MACs per image by layer: conv1 (8x8 map) halves, conv2 (4x4 map, pruned on both sides) quarters, head halves
    assert (full_macs, half_macs) == (13824 + 9216 + 128, 6912 + 2304 + 64)
    assert model.feature_dim == 4 * 2 * 2
    assert model(x).shape == (16, 4) and torch.isfinite(model(x)).all()
    if importance == "taylor":
        assert report["taylor_batches"] == 1


def test_pruned_model_saves_and_loads_with_identical_outputs(tmp_path):
    model = convnet(width=8)
    x = torch.randn(4, 3, 8, 8)
    structured_channel_prune(model, x[:2], 0.5)
    path = save_model(model.eval(), tmp_path / "pruned.safetensors")
    spec = read_spec(path)
    assert spec["arch"]["name"] == "convnet-2-in" and spec["arch"]["kwargs"] == {"width": 8}
    assert spec["param_shapes"]["features.0.weight"] == [4, 3, 3, 3]
    assert spec["module_attrs"]["features.1"] == {"num_groups": 4, "num_channels": 4}
    assert set(load_file(path)) == set(model.state_dict())  # plain safetensors, no pickle
    json.loads((tmp_path / "pruned.json").read_text())
    loaded, _ = load_model(tmp_path / "pruned.json")
    assert torch.equal(loaded(x), model(x))
    assert count_parameters(loaded) == count_parameters(model)


def test_residual_network_prunes_consistently(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18-bn", 3, 4, (8, 8))
    x = torch.randn(2, 3, 8, 8)
    before = count_parameters(model)
    report = structured_channel_prune(model, x, 0.5)
    assert report["parameters_after"] / before == pytest.approx(0.25, abs=0.01)  # ~ (1 - 0.5)^2 of the convs
    assert model.eval()(x).shape == (2, 4)
    path = save_model(model, tmp_path / "r.safetensors")
    loaded, _ = load_model(path)
    assert torch.equal(loaded(x), model(x))


def test_global_unstructured_pruning_is_permanent():
    model = convnet(width=8)
    n_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    report = global_magnitude_prune(model, 0.5)
    assert report["sparsity"] == pytest.approx(round(0.5 * n_weights) / n_weights)
    assert sparsity(model) == report["sparsity"]
    state = model.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)  # masks removed, weights plain again
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert report["nonzero_parameters_after"] < report["nonzero_parameters_before"]
    assert report["parameters"] == count_parameters(convnet(width=8))  # shapes unchanged
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize(
    "ratio, error, match",
    [
        (0.0, ValueError, "strictly between 0 and 1"),
        (1.0, ValueError, "strictly between 0 and 1"),
        (-0.2, ValueError, "strictly between 0 and 1"),
        (1.5, ValueError, "strictly between 0 and 1"),
        ("0.5", TypeError, "must be a number"),
    ],
)
def test_pruning_rejects_ratio_outside_open_unit_interval(ratio, error, match):
    with pytest.raises(error, match=match):
        structured_channel_prune(convnet(), torch.randn(2, 3, 8, 8), ratio)
    with pytest.raises(error, match=match):
        global_magnitude_prune(convnet(), ratio)


def test_structured_pruning_rejects_bad_options():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="importance must be one of"):
        structured_channel_prune(convnet(), x, 0.5, ChannelPruneSettings(importance="random"))
    with pytest.raises(ValueError, match="taylor importance needs data"):
        structured_channel_prune(convnet(), x, 0.5, ChannelPruneSettings(importance="taylor"))
    with pytest.raises(ValueError, match="lengths differ"):
        structured_channel_prune(convnet(), x, 0.5, ChannelPruneSettings(importance="taylor"),
                                 data=(x, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="cannot shrink LayerNorm"):
        structured_channel_prune(convnet(norm="ln"), x, 0.5)
    with pytest.raises(ConfigError, match="settings must be a ChannelPruneSettings, got str"):
        structured_channel_prune(convnet(), x, 0.5, "taylor")
