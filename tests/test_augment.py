"""Tests for datacomp.augment: DSA, DiffAug and CutMix (shapes, semantics, siamese determinism, gradients, RNG)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import datacomp.augment as augment
from datacomp.augment import (
    AUGMENT_OPS,
    DSA,
    DSA_FULL_STRATEGY,
    DSA_NO_FLIP_STRATEGY,
    DSAParams,
    DiffAug,
    cutmix,
    cutmix_loss,
    dsa_strategy_for,
    parse_strategy,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DIFFAUG_STRATEGIES = ["color_crop_cutout", "color_crop_flip_scale_rotate", "color_crop", "flip", "crop_scale_rotate"]


def _images(n: int = 6, c: int = 3, h: int = 16, w: int = 16, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=generator, dtype=dtype).to(device)


def _smooth_images(n: int = 2, size: int = 32, dtype=torch.float64):
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = torch.stack([torch.sin(3 * xs + ys), torch.cos(2 * ys - xs), xs * ys]).to(dtype)
    return image.unsqueeze(0).repeat(n, 1, 1, 1)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = image[i + dy, j + dx], zero outside."""
    return F.pad(image, (-dx, dx, -dy, dy))


# ---------------------------------------------------------------------------------------------------------------------
# Shapes, dtypes, devices
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_dsa_single_op_shape_dtype_device(op, seed, dtype, device):
    x = _images(5, 3, 12, 10, dtype=dtype, device=device)
    out = DSA(op, generator=0)(x, seed=seed)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mode", ["S", "M", "m"])
@pytest.mark.parametrize("strategy", [DSA_FULL_STRATEGY, DSA_NO_FLIP_STRATEGY, "crop_flip", "scale_rotate", "none"])
@pytest.mark.parametrize("channels", [1, 3])
def test_dsa_strategies_shape(strategy, mode, channels):
    x = _images(4, channels, 9, 9)
    aug = DSA(strategy, mode=mode, generator=1)
    for seed in (None, 0, 1):
        out = aug(x, seed=seed)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("batch_shared", [True, False])
@pytest.mark.parametrize("strategy", DIFFAUG_STRATEGIES + ["none"])
def test_diffaug_shape(strategy, batch_shared):
    x = _images(4, 3, 8, 12)
    aug = DiffAug(strategy, batch_shared=batch_shared, generator=2)
    for seed in (None, 7):
        out = aug(x, seed=seed)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("aug", [DSA("none"), DiffAug("none")])
def test_none_strategy_is_identity(aug):
    x = _images()
    assert aug(x) is x and aug(x, seed=1) is x


def test_empty_batch_passes_through():
    x = torch.zeros(0, 3, 8, 8)
    assert DSA(mode="M")(x).shape == x.shape
    assert DiffAug()(x, seed=1).shape == x.shape
    mixed, y_a, y_b, lam = cutmix(x, torch.zeros(0, dtype=torch.long), prob=1.0)
    assert mixed.shape == x.shape and lam == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Siamese determinism and per-sample independence
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", list(AUGMENT_OPS) + [DSA_FULL_STRATEGY])
def test_dsa_same_seed_same_transform(op):
    aug = DSA(op, mode="M", generator=0)
    x = _images(8)
    out = aug(x, seed=5)
    assert torch.equal(out, aug(x.clone(), seed=5))
    # A different batch of another size gets the same transform (real vs synthetic batch).
    other = _images(3, seed=1)
    joint = aug(torch.cat([other, x]), seed=5)
    torch.testing.assert_close(joint[3:], out, rtol=0, atol=1e-6)
    torch.testing.assert_close(joint[:3], aug(other, seed=5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("op", ["crop", "cutout", "flip", "scale", "rotate"])
def test_dsa_siamese_linear_ops_transform_both_inputs_identically(op):
    # Geometric ops are linear in the pixels: the same transform T gives T(2x + 1) = 2 T(x) + T(1).
    aug = DSA(op, generator=0, params=DSAParams(flip=1.0))
    x = _images(4)
    out_x, out_2x, out_ones = aug(x, seed=11), aug(2 * x + 1, seed=11), aug(torch.ones_like(x), seed=11)
    torch.testing.assert_close(out_2x, 2 * out_x + out_ones)


@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_dsa_different_seeds_differ(op):
    aug = DSA(op, generator=0)
    x = _images(2)
    outputs = [aug(x, seed=seed) for seed in range(8)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_dsa_seed_shares_params_and_none_is_per_sample(op):
    one = _images(1)
    batch = one.repeat(16, 1, 1, 1)
    shared = DSA(op, generator=0)(batch, seed=4)
    assert all(torch.equal(shared[0], shared[i]) for i in range(1, 16))
    independent = DSA(op, generator=0)(batch)
    distinct = {tuple(sample.flatten().tolist()) for sample in independent}
    assert len(distinct) > 1


def test_dsa_generator_argument_makes_seed_none_reproducible():
    x = _images(8)
    first, second = DSA(mode="M", generator=123), DSA(mode="M", generator=123)
    assert torch.equal(first(x), second(x))
    assert not torch.equal(first(x), DSA(mode="M", generator=124)(x))
    generator = torch.Generator().manual_seed(9)
    assert DSA(generator=generator).generator is generator


@pytest.mark.parametrize("strategy", DIFFAUG_STRATEGIES)
def test_diffaug_seeded_is_deterministic_and_batch_shared(strategy):
    aug = DiffAug(strategy, batch_shared=True, generator=0)
    x = _images(5)
    out = aug(x, seed=21)
    assert torch.equal(out, aug(x.clone(), seed=21))
    joint = aug(torch.cat([x, _images(2, seed=3)]), seed=21)
    torch.testing.assert_close(joint[:5], out, rtol=0, atol=1e-6)
    repeated = aug(x[:1].repeat(6, 1, 1, 1))
    assert all(torch.equal(repeated[0], repeated[i]) for i in range(1, 6))


def test_diffaug_per_sample_mode_differs_across_samples_and_is_seed_reproducible():
    aug = DiffAug("color_crop_flip_scale_rotate", batch_shared=False, generator=0)
    batch = _images(1).repeat(8, 1, 1, 1)
    out = aug(batch, seed=2)
    assert len({tuple(sample.flatten().tolist()) for sample in out}) == 8
    assert torch.equal(out, aug(batch, seed=2))


# ---------------------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_dsa_gradient_reaches_pixels(op, seed):
    x = _images(4).requires_grad_(True)
    weights = _images(4, seed=9)
    (DSA(op, generator=0, params=DSAParams(flip=1.0))(x, seed=seed) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_dsa_gradcheck(op):
    x = _images(2, 2, 5, 6, dtype=torch.float64).requires_grad_(True)
    aug = DSA(op, generator=0)
    assert torch.autograd.gradcheck(lambda images: aug(images, seed=6), (x,), atol=1e-6)


@pytest.mark.parametrize("strategy", DIFFAUG_STRATEGIES)
def test_diffaug_gradient_reaches_pixels(strategy):
    x = _images(4).requires_grad_(True)
    (DiffAug(strategy, generator=0)(x) * _images(4, seed=9)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Op semantics
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [None, 0])
def test_flip_really_flips(seed):
    x = _images(5)
    assert torch.equal(DSA("flip", params=DSAParams(flip=1.0))(x, seed=seed), x.flip(3))
    assert torch.equal(DSA("flip", params=DSAParams(flip=0.0))(x, seed=seed), x)


def test_flip_per_sample_mixes_flipped_and_unflipped():
    x = _images(16)
    out = DSA("flip", generator=0)(x)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(16)]
    kept = [torch.equal(out[i], x[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_crop_is_integer_shift_with_zero_fill(seed):
    h, w = 16, 24
    x = torch.arange(1, 5 * h * w + 1, dtype=torch.float32).view(5, 1, h, w)  # distinct, nonzero pixels
    out = DSA("crop", generator=0)(x, seed=seed)
    max_dy, max_dx = round(0.125 * h), round(0.125 * w)
    for i in range(5):
        matches = [
            (dy, dx)
            for dy in range(-max_dy, max_dy + 1)
            for dx in range(-max_dx, max_dx + 1)
            if torch.equal(out[i], _shifted(x[i : i + 1], dy, dx)[0])
        ]
        assert len(matches) == 1


def test_crop_per_sample_covers_the_whole_shift_range():
    x = torch.arange(1, 8 * 8 + 1, dtype=torch.float32).view(1, 1, 8, 8).repeat(400, 1, 1, 1)
    out = DSA("crop", generator=0)(x)
    # Row shift dy in [-1, 1]: the first row holds x[dy] (or zeros when dy = -1).
    first_rows = {tuple(row.tolist()) for row in out[:, 0, 0, :]}
    shifts = {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    expected = {tuple(_shifted(x[:1], dy, dx)[0, 0, 0].tolist()) for dy, dx in shifts}
    assert first_rows == expected


@pytest.mark.parametrize("seed", [None, 0])
def test_cutout_zeroes_one_clipped_square(seed):
    size = 16
    x = torch.ones(32, 2, size, size)
    out = DSA("cutout", generator=0)(x, seed=seed)
    side = round(0.5 * size)
    full_squares = 0
    for image in out:
        zero = image[0] == 0
        assert torch.equal(image[0], image[1])  # same mask on every channel
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        box = zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and zero.sum() == box.numel()  # exactly one rectangle
        assert 0 < box.shape[0] <= side and 0 < box.shape[1] <= side
        assert torch.equal(image[0][~zero], torch.ones(int((~zero).sum())))
        full_squares += box.shape == (side, side)
    if seed is None:  # 32 independent centres: some squares lie fully inside
        assert full_squares > 0


def test_color_fused_matches_sequential_reference():
    x = _images(5, 3, 6, 7, dtype=torch.float64)
    params = DSAParams()
    sampler = augment._Sampler(torch.Generator().manual_seed(0), 5, x)
    out = augment._color(x, sampler, params)
    generator = torch.Generator().manual_seed(0)

    def draw():
        return torch.rand(5, generator=generator).double().view(-1, 1, 1, 1)

    brightness, saturation, contrast = (draw() - 0.5) * params.brightness, draw() * params.saturation, draw()
    y = x + brightness
    mean = y.mean(1, keepdim=True)
    y = (y - mean) * saturation + mean
    mean = y.mean((1, 2, 3), keepdim=True)
    y = (y - mean) * (contrast + params.contrast) + mean
    torch.testing.assert_close(out, y)


def test_color_properties():
    x = _images(8)
    out = DSA("color", generator=0)(x)
    shift = (out.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs()  # saturation/contrast keep the mean
    assert (shift <= 0.5 + 1e-5).all() and (shift > 0).any()
    gray = DSA("color", generator=0, params=DSAParams(saturation=0.0))(x)
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    torch.testing.assert_close(gray[:, 1], gray[:, 2])


@pytest.mark.parametrize("op,params", [("scale", DSAParams(scale=1.0)), ("rotate", DSAParams(rotate=0.0))])
def test_affine_ops_with_zero_strength_are_identity(op, params):
    x = _images(3, 3, 11, 13)
    torch.testing.assert_close(DSA(op, params=params, generator=0)(x), x, rtol=0, atol=1e-5)


def test_rotate_keeps_a_radial_blob_and_moves_an_asymmetric_image():
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 33), torch.linspace(-1, 1, 33), indexing="ij")
    blob = torch.exp(-(xs**2 + ys**2) / 0.1).expand(4, 1, 33, 33)
    aug = DSA("rotate", params=DSAParams(rotate=90.0), generator=0)
    torch.testing.assert_close(aug(blob), blob, rtol=0, atol=0.02)
    bar = (xs.abs() < 0.1).float().expand(4, 1, 33, 33)
    assert (aug(bar) - bar).abs().max() > 0.5


def test_scale_stretches_within_range():
    # A centred disk's area scales by 1 / (sx * sy) with sx, sy in [1/1.2, 1.2].
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 65), torch.linspace(-1, 1, 65), indexing="ij")
    disk = ((xs**2 + ys**2) < 0.25).float().expand(64, 1, 65, 65)
    ratio = DSA("scale", generator=0)(disk).sum((1, 2, 3)) / disk[0].sum()
    assert (ratio > 1 / 1.2**2 - 0.05).all() and (ratio < 1.2**2 + 0.05).all()
    assert ratio.max() - ratio.min() > 0.3


def test_affine_grid_matches_torch():
    linear = torch.randn(5, 2, 2, dtype=torch.float64)
    for h, w in [(7, 5), (16, 16)]:
        expected = F.affine_grid(F.pad(linear, (0, 1)), [5, 1, h, w], align_corners=True)
        torch.testing.assert_close(augment._affine_grid(linear, h, w), expected)


def test_fused_affine_matches_sequential_resampling():
    x = _smooth_images(4)
    params = DSAParams(scale=1.5, rotate=60.0)
    fused = DSA("scale_rotate", mode="M", params=params, fuse_affine=True)
    sequential = DSA("scale_rotate", mode="M", params=params, fuse_affine=False)
    for seed in range(3):
        centre = slice(12, 20)
        torch.testing.assert_close(
            fused(x, seed=seed)[..., centre, centre], sequential(x, seed=seed)[..., centre, centre], rtol=0, atol=0.02
        )


def test_mode_s_applies_exactly_one_group():
    x = _images(2, 1, 8, 8) + 1.0  # no zero pixels, so crop's zero fill identifies a shift
    aug = DSA("flip_crop", params=DSAParams(flip=1.0))
    seen = set()
    for seed in range(40):
        out = aug(x, seed=seed)
        if torch.equal(out, x.flip(3)):
            seen.add("flip")
            continue
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if torch.equal(out, _shifted(x, dy, dx))]
        assert shifts, "output is neither a flip nor an unflipped shift"
        seen.add("crop")
    assert seen == {"flip", "crop"}


def test_diffaug_always_applies_flip_color_and_cutout():
    x = torch.ones(4, 3, 16, 16)
    flipper = DiffAug("flip", params=DSAParams(flip=1.0))
    image = _images(4)
    assert torch.equal(flipper(image), image.flip(3))
    color_cutout = DiffAug("color_cutout", batch_shared=False, generator=0)
    for seed in range(5):
        out = color_cutout(x, seed=seed)
        assert ((out == 0).flatten(1).sum(1) >= 3 * 8 * 8 // 4).all()  # a (possibly clipped) square per image
        assert not torch.allclose(out[out != 0], torch.ones(1))  # colour changed the remaining pixels


# ---------------------------------------------------------------------------------------------------------------------
# CutMix
# ---------------------------------------------------------------------------------------------------------------------
def test_cutmix_lam_is_pasted_area_and_labels_pair_up():
    n, h, w = 8, 16, 12
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()
    y = torch.arange(n) + 100
    original = x.clone()
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(20):
        mixed, y_a, y_b, lam = cutmix(x, y, prob=1.0, generator=generator)
        assert torch.equal(y_a, y) and torch.equal(x, original)  # input left untouched
        for i in range(n):
            source = int(y_b[i]) - 100
            changed = mixed[i] != x[i]
            if source != i:
                assert math.isclose(1.0 - int(changed[0].sum()) / (h * w), lam, abs_tol=1e-12)
                assert (mixed[i][changed] == source).all()
                checked += 1
    assert checked > 0


def test_cutmix_probability_and_lam_distribution():
    x, y = _images(4, 1, 32, 32), torch.arange(4)
    generator = torch.Generator().manual_seed(1)
    lams = [cutmix(x, y, beta=1.0, prob=0.5, generator=generator)[3] for _ in range(300)]
    applied = [lam for lam in lams if lam != 1.0]
    assert 100 < len(applied) < 200
    # Beta(1, 1) box areas span (0, 1); border clipping shrinks boxes, so the corrected lam averages above 0.5.
    assert min(applied) < 0.35 and max(applied) > 0.9
    assert 0.5 < float(np.mean(applied)) < 0.8
    never = cutmix(x, y, prob=0.0, generator=generator)
    assert never[0] is x and never[1] is y and never[2] is y and never[3] == 1.0


def test_cutmix_is_reproducible_with_a_generator_and_differentiable():
    x, y = _images(6), torch.arange(6)
    first = cutmix(x, y, prob=1.0, generator=torch.Generator().manual_seed(5))
    second = cutmix(x, y, prob=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2]) and first[3] == second[3]
    leaf = x.clone().requires_grad_(True)
    cutmix(leaf, y, prob=1.0, generator=torch.Generator().manual_seed(5))[0].sum().backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.sum() > 0


def test_cutmix_accepts_soft_labels():
    soft = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    _, y_a, y_b, _ = cutmix(_images(4), soft, prob=1.0, generator=torch.Generator().manual_seed(0))
    assert y_a.shape == y_b.shape == soft.shape


def test_cutmix_loss_is_the_lam_weighted_cross_entropy():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y_a, y_b = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 2, 1, 0, 1])
    expected = 0.3 * F.cross_entropy(logits, y_a) + 0.7 * F.cross_entropy(logits, y_b)
    torch.testing.assert_close(cutmix_loss(logits, y_a, y_b, 0.3), expected)
    torch.testing.assert_close(cutmix_loss(logits, y_a, y_b, 1.0), F.cross_entropy(logits, y_a))


# ---------------------------------------------------------------------------------------------------------------------
# RNG isolation
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda x: DSA(mode="M")(x),
        lambda x: DSA()(x, seed=5),
        lambda x: DiffAug()(x),
        lambda x: DiffAug("color_crop_flip_scale_rotate", batch_shared=False)(x, seed=2),
        lambda x: cutmix(x, torch.arange(x.shape[0]), prob=1.0),
        lambda x: cutmix(x, torch.arange(x.shape[0]), prob=1.0, generator=torch.Generator().manual_seed(0)),
    ],
)
def test_global_rng_state_is_untouched(call):
    x = _images(4)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    call(x)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert np.array_equal(after[1], numpy_state[1]) and after[2] == numpy_state[2]


# ---------------------------------------------------------------------------------------------------------------------
# Strategy helpers and config
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,expected",
    [
        ("digits", DSA_NO_FLIP_STRATEGY),
        ("mnist", DSA_NO_FLIP_STRATEGY),
        ("MNIST", DSA_NO_FLIP_STRATEGY),
        ("svhn", DSA_NO_FLIP_STRATEGY),
        ("fashion-mnist", DSA_FULL_STRATEGY),
        ("cifar10", DSA_FULL_STRATEGY),
        ("tiny-imagenet", DSA_FULL_STRATEGY),
    ],
)
def test_dsa_strategy_for(name, expected):
    assert dsa_strategy_for(name) == expected
    assert "flip" not in parse_strategy(DSA_NO_FLIP_STRATEGY)


def test_config_is_json_ready():
    for aug in (DSA(mode="M", generator=0), DiffAug(batch_shared=False, generator=0)):
        config = json.loads(json.dumps(aug.config()))
        assert config["strategy"] == aug.strategy and config["params"]["crop"] == 0.125
        assert aug.strategy in repr(aug)


def test_parse_strategy_normalises():
    assert parse_strategy(" Color_Crop ") == ("color", "crop")
    assert parse_strategy("NONE") == ()


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"strategy": "color_blur"}, ValueError, r"unknown augmentation op 'blur'.*color, crop, cutout"),
        ({"strategy": ""}, ValueError, "strategy is empty"),
        ({"strategy": "crop_crop"}, ValueError, "more than once"),
        ({"strategy": 3}, TypeError, "strategy must be a string"),
        ({"mode": "X"}, ValueError, "mode must be 'S'"),
        ({"params": {"flip": 0.5}}, TypeError, "params must be a DSAParams"),
        ({"generator": "seed"}, TypeError, "generator must be a torch.Generator"),
        ({"generator": -3}, ValueError, "generator must be >= 0"),
    ],
)
def test_dsa_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DSA(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"strategy": "color_flop"}, ValueError, "unknown augmentation op 'flop'"),
        ({"batch_shared": "yes"}, TypeError, "batch_shared must be a bool"),
        ({"params": None}, TypeError, "params must be a DSAParams"),
    ],
)
def test_diffaug_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DiffAug(**kwargs)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("flip", 1.5, r"DSAParams.flip must be a probability"),
        ("scale", 0.9, r"DSAParams.scale must be >= 1"),
        ("rotate", -1.0, r"DSAParams.rotate must be degrees"),
        ("crop", 1.0, r"DSAParams.crop must be a fraction"),
        ("cutout", -0.1, r"DSAParams.cutout must be a fraction"),
        ("brightness", -1.0, r"DSAParams.brightness must be >= 0"),
        ("saturation", float("nan"), r"DSAParams.saturation must be a finite number"),
        ("contrast", "0.5", r"DSAParams.contrast must be a finite number"),
        ("flip", True, r"DSAParams.flip must be a finite number"),
    ],
)
def test_dsa_params_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        DSAParams(**{field: value})


@pytest.mark.parametrize("aug", [DSA(generator=0), DiffAug(generator=0)], ids=["dsa", "diffaug"])
@pytest.mark.parametrize(
    "x,seed,error,match",
    [
        (torch.zeros(3, 8, 8), None, ValueError, r"\[N, C, H, W\]"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.long), None, TypeError, "floating-point"),
        (np.zeros((2, 3, 8, 8), dtype=np.float32), None, TypeError, "must be a torch.Tensor"),
        (torch.zeros(2, 3, 8, 8), -1, ValueError, r"seed must be >= 0.*seed=None"),
        (torch.zeros(2, 3, 8, 8), 1.5, TypeError, "seed must be an int"),
        (torch.zeros(2, 3, 8, 8), True, TypeError, "seed must be an int"),
    ],
)
def test_augment_call_bad_input(aug, x, seed, error, match):
    with pytest.raises(error, match=match):
        aug(x, seed=seed)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"beta": 0.0}, ValueError, "beta must be a finite number > 0"),
        ({"beta": float("inf")}, ValueError, "beta must be a finite number > 0"),
        ({"prob": 1.5}, ValueError, r"prob must be a probability in \[0, 1\]"),
        ({"y": torch.arange(3)}, ValueError, "y must be a tensor with first dimension N=4"),
        ({"y": [0, 1, 2, 3]}, ValueError, "y must be a tensor"),
        ({"x": torch.zeros(4, 8, 8)}, ValueError, r"\[N, C, H, W\]"),
        ({"generator": 3}, TypeError, "generator must be a torch.Generator or None"),
    ],
)
def test_cutmix_bad_input(kwargs, error, match):
    arguments = {"x": torch.zeros(4, 1, 8, 8), "y": torch.arange(4)} | kwargs
    with pytest.raises(error, match=match):
        cutmix(**arguments)


@pytest.mark.parametrize("lam", [-0.1, 1.5, True])
def test_cutmix_loss_bad_lam(lam):
    with pytest.raises(ValueError, match=r"lam must be a number in \[0, 1\]"):
        cutmix_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([1, 0]), lam)


def test_dsa_strategy_for_rejects_non_string():
    with pytest.raises(TypeError, match="dataset_name must be a string"):
        dsa_strategy_for(10)


def test_all_exports_exist():
    for name in augment.__all__:
        assert hasattr(augment, name)


# ---------------------------------------------------------------------------------------------------------------------
# The factory: named pipelines


@pytest.mark.parametrize(
    "name, dataset, expected",
    [("dsa", "digits", DSA(DSA_NO_FLIP_STRATEGY, generator=5)), ("dsa", "cifar10", DSA(DSA_FULL_STRATEGY, generator=5)),
     ("color_crop_flip_scale_rotate", "", DiffAug("color_crop_flip_scale_rotate", batch_shared=False, generator=5)),
     ("color_crop_cutout", "", DiffAug("color_crop_cutout", batch_shared=False, generator=5)),
     ("color_crop", "", DiffAug("color_crop", batch_shared=False, generator=5))],
)
def test_make_augment_pipelines_draw_like_the_classes(name, dataset, expected):
    from datacomp.augment import PIPELINES, make_augment

    assert name in PIPELINES
    aug = make_augment(name, dataset=dataset, generator=torch.Generator().manual_seed(5))
    assert type(aug) is type(expected) and aug.strategy == expected.strategy
    x = _images(8, seed=3)
    assert torch.equal(aug(x), expected(x)) and torch.equal(aug(x), expected(x))  # same draws, call after call


def test_make_augment_none_and_options():
    from datacomp.augment import make_augment

    assert make_augment("none") is None
    assert make_augment("dsa", strategy="crop").strategy == "crop"
    assert make_augment("color_crop_cutout", batch_shared=True).batch_shared
    assert make_augment("flip_crop").strategy == "flip_crop"  # any DiffAug strategy names its pipeline


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(name="diffaug"), "ambiguous.*color_crop_flip_scale_rotate.*color_crop_cutout"),
     (dict(name="mixup"), "unknown augmentation 'mixup'; choose one of none, dsa"),
     (dict(name="color_crop", strategy="crop"), "strategy= applies to the 'dsa' pipeline only")],
)
def test_make_augment_rejects_unknown_and_ambiguous_names(kwargs, match):
    from datacomp.augment import make_augment
    from datacomp.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        make_augment(**kwargs)
