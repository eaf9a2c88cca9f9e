from __future__ import annotations

import pytest
import torch
from torch import nn

from datacomp.models import create_model, list_models, model_from_spec

SHAPES = [(3, (32, 32)), (1, (28, 28))]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels, size", SHAPES)
def test_every_model_has_features_and_head(name, channels, size):
    if name.startswith("convnet-6") or name.startswith("convnet-5") and size == (28, 28):
        pytest.skip("too deep for this size")
    torch.manual_seed(0)
    model = create_model(name, channels, 7, size)
    x = torch.randn(2, channels, *size)
    f = model.forward_features(x)
    assert f.shape == (2, model.feature_dim)
    torch.testing.assert_close(model.forward_head(f), model(x))
    assert model(x).shape == (2, 7)


def test_convnet_matches_the_dc_reference_definition():
    m = create_model("convnet-3-in", 3, 10, (32, 32))
    convs = [l for l in m.features if isinstance(l, nn.Conv2d)]
    norms = [l for l in m.features if isinstance(l, nn.GroupNorm)]
    assert [c.out_channels for c in convs] == [128] * 3 and all(c.kernel_size == (3, 3) for c in convs)
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms)
    assert sum(isinstance(l, nn.AvgPool2d) for l in m.features) == 3
    assert m.feature_dim == 2048
    assert create_model("convnet-3-in", 1, 10, (28, 28)).feature_dim == 2048  # padding 3 on 1-channel inputs
    assert create_model("convnet-4-in", 3, 200, (64, 64)).feature_dim == 2048
    assert isinstance(create_model("convnet-3-bn", 3, 10, 32).features[1], nn.BatchNorm2d)


def test_spec_rebuilds_the_same_architecture():
    m = create_model("convnet-2-in", 3, 5, (16, 16), width=32)
    m2 = model_from_spec(m.spec)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(m(x), m2(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(name="convnet-9-in"), "unknown model 'convnet-9-in'"),
     (dict(name="resnet50"), "unknown model"),
     (dict(name="convnet-4-in", image_size=(8, 8)), "too small"),
     (dict(name="lenet", image_size=(8, 8)), "too small"),
     (dict(name="mlp", num_classes=1), "num_classes >= 2"),
     (dict(name="mlp", image_size=(0, 4)), "positive sides")],
)
def test_bad_model_requests(kwargs, match):
    args = dict(in_channels=1, num_classes=10, image_size=(32, 32)) | kwargs
    with pytest.raises(ValueError, match=match):
        create_model(**args)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [("convnet-3-in", dict(widht=64), "model 'convnet-3-in' has no argument.* widht; its arguments are width, act, pool"),
     ("convnet", dict(depth=4), "has no argument.* depth"),  # depth and norm are fixed by the name
     ("mlp", dict(width=32, dropout=0.1), "no argument.* dropout; its arguments are width"),
     ("resnet18-bn", dict(width=3), "model 'resnet18-bn' has no argument.* width; it takes no arguments"),
     ("convnet-3-in", dict(act="gelu"), "act must be one of relu, sigmoid, leakyrelu"),
     ("convnet-3-in", dict(width=0), "width must be an int >= 1"),
     ("convnet-9-in", {}, "--model: unknown model 'convnet-9-in' .*did you mean")],
)
def test_unknown_model_arguments_are_config_errors(name, kwargs, match):
    from datacomp.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        create_model(name, 1, 10, (8, 8), **kwargs)


def test_registered_models_list_their_arguments_and_user_models_register():
    from datacomp.models import MODELS, register_model

    assert MODELS.entry("convnet-3-in").info["params"] == ("width", "act", "pool")

    @register_model("tiny-test-linear", "a linear probe", params=("bias",))
    def _linear(c, k, s, bias=True):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * s[0] * s[1], k, bias=bias))

    assert "tiny-test-linear" in list_models()
    assert create_model("tiny-test-linear", 1, 3, 4, bias=False).spec["kwargs"] == {"bias": False}
    with pytest.raises(ValueError, match="no argument"):
        create_model("tiny-test-linear", 1, 3, 4, scale=2)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny-test-linear")(_linear)
