"""Differentiable, batched image augmentation: DSA, the NCFM/IDC ``DiffAug`` variant, and CutMix.

Every op is differentiable with respect to the input pixels (affine grids + ``grid_sample``, masks, gathers and
arithmetic) and works on whole batches without a Python loop over samples. Random parameters come from
``torch.Generator`` objects only, never from the global RNG, so augmenting never perturbs the caller's randomness.

Parameter sharing:
  * ``seed=<int>``: a fresh generator seeded with ``seed`` draws the parameters: one set broadcast to the whole batch
    (DSA; ``DiffAug`` with ``batch_shared=True``). Two calls with the same seed apply the same transform, which is how
    "siamese" augmentation of a real and a synthetic batch is done.
  * ``seed=None``: parameters come from the object's own generator; independent per sample for DSA (evaluation mode).

Reference semantics follow Zhao & Bilen's DSA (``ParamDiffAug`` / ``DiffAugment``) and IDC's ``DiffAug`` used by NCFM
(NCFM research notes §4.3, §3.7, §3.8). Deliberate differences: the colour group is computed in one fused pass (same
result up to rounding), and in DSA mode ``"M"`` adjacent ``scale``/``rotate`` ops are composed into one affine matrix
and resampled once (``fuse_affine=True``): faster, and one interpolation instead of two.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AUGMENT_OPS",
    "DSA",
    "DSA_FULL_STRATEGY",
    "DSA_NO_FLIP_STRATEGY",
    "DSAParams",
    "DiffAug",
    "GEOMETRIC_OPS",
    "cutmix",
    "cutmix_loss",
    "dsa_strategy_for",
    "parse_strategy",
]

AUGMENT_OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
GEOMETRIC_OPS: tuple[str, ...] = ("crop", "scale", "rotate")
DSA_FULL_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DSA_NO_FLIP_STRATEGY = "color_crop_cutout_scale_rotate"
# DSA README: flip is harmful for the digit datasets (MNIST, SVHN); sklearn digits is a digit dataset too.
_NO_FLIP_DATASETS = frozenset({"digits", "mnist", "svhn"})
_AFFINE_OPS = frozenset({"scale", "rotate"})


@dataclass(frozen=True)
class DSAParams:
    """Augmentation strengths (DSA reference ``ParamDiffAug`` defaults).

    Attributes:
        flip: Probability of a horizontal flip.
        scale: Scale ratio r; ``sx, sy ~ U[1/r, r]`` independently.
        rotate: Maximum rotation in degrees; angle ``~ U[-rotate, rotate]``.
        crop: Translation ratio; integer shift in ``[-round(crop*H), round(crop*H)]`` per axis, zero fill.
        cutout: Cutout ratio; a square of side ``round(cutout*H)`` is zeroed at a random centre.
        brightness: Added offset ``U[-0.5, 0.5] * brightness``.
        saturation: Deviation from the per-pixel channel mean scaled by ``U[0, saturation]``.
        contrast: Deviation from the per-image mean scaled by ``U[contrast, 1 + contrast]``.
    """

    flip: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DSAParams.{field.name} must be a finite number, got {value!r}")
        ranges = {
            "flip": (0.0 <= self.flip <= 1.0, "a probability in [0, 1]"),
            "scale": (self.scale >= 1.0, ">= 1 (sx, sy ~ U[1/scale, scale])"),
            "rotate": (0.0 <= self.rotate <= 180.0, "degrees in [0, 180]"),
            "crop": (0.0 <= self.crop < 1.0, "a fraction of the image size in [0, 1)"),
            "cutout": (0.0 <= self.cutout <= 1.0, "a fraction of the image size in [0, 1]"),
            "brightness": (self.brightness >= 0.0, ">= 0"),
            "saturation": (self.saturation >= 0.0, ">= 0"),
            "contrast": (self.contrast >= 0.0, ">= 0"),
        }
        for name, (ok, expected) in ranges.items():
            if not ok:
                raise ValueError(f"DSAParams.{name} must be {expected}, got {getattr(self, name)!r}")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy string such as ``"color_crop_cutout"`` into validated op names.

    Args:
        strategy: Op names from ``AUGMENT_OPS`` joined by ``'_'``, or ``"none"`` for no augmentation.

    Returns:
        The op names in order (empty for ``"none"``).

    Raises:
        TypeError: If ``strategy`` is not a string.
        ValueError: If an op is unknown, repeated, or the string is empty.
    """
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string like {DSA_FULL_STRATEGY!r}, got {type(strategy).__name__}")
    text = strategy.strip().lower()
    if text == "none":
        return ()
    valid = ", ".join(AUGMENT_OPS)
    if not text:
        raise ValueError(f"strategy is empty; use 'none' for no augmentation or ops from {{{valid}}} joined by '_'")
    names = tuple(text.split("_"))
    for name in names:
        if name not in AUGMENT_OPS:
            raise ValueError(
                f"strategy {strategy!r}: unknown augmentation op {name!r}; valid ops are {{{valid}}} joined by '_'"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"strategy {strategy!r}: op(s) {repeated} listed more than once; list each op once")
    return names


def dsa_strategy_for(dataset_name: str) -> str:
    """Reference DSA strategy for a dataset: no flip for digit datasets (digits, MNIST, SVHN), full otherwise."""
    if not isinstance(dataset_name, str):
        raise TypeError(f"dataset_name must be a string, got {type(dataset_name).__name__}")
    return DSA_NO_FLIP_STRATEGY if dataset_name.strip().lower() in _NO_FLIP_DATASETS else DSA_FULL_STRATEGY


# ---------------------------------------------------------------------------------------------------------------------
# Random parameters
# ---------------------------------------------------------------------------------------------------------------------


def _make_generator(generator: torch.Generator | int | None, argument: str = "generator") -> torch.Generator:
    """A private generator: the one given, one seeded with an int, or one seeded from OS entropy."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()  # OS entropy; leaves the global RNG alone
        return fresh
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"{argument} must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return _seeded_generator(generator, argument)


def _seeded_generator(seed: int, argument: str = "seed") -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{argument} must be an int or None, got {type(seed).__name__}")
    if seed < 0:
        hint = "; use seed=None for independent per-sample parameters" if argument == "seed" else ""
        raise ValueError(f"{argument} must be >= 0, got {seed}{hint}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


class _Sampler:
    """Draws ``n`` values per parameter from one generator (``n == 1``: shared by the whole batch).

    Draws stay on the generator's device (CPU by default, so shared parameters can be read without a device sync);
    ``put`` moves them next to the images.
    """

    def __init__(self, generator: torch.Generator, n: int, like: Tensor) -> None:
        self.generator = generator
        self.n = n
        self.device = like.device
        self.dtype = like.dtype

    @property
    def shared(self) -> bool:
        return self.n == 1

    def uniform(self, low: float = 0.0, high: float = 1.0) -> Tensor:
        u = torch.rand(self.n, generator=self.generator, device=self.generator.device)
        return u * (high - low) + low

    def randint(self, low: int, high: int) -> Tensor:
        return torch.randint(low, high, (self.n,), generator=self.generator, device=self.generator.device)

    def choice(self, k: int) -> int:
        """One index in ``[0, k)`` for the whole call (which op to apply)."""
        return int(torch.randint(0, k, (1,), generator=self.generator, device=self.generator.device))

    def put(self, values: Tensor) -> Tensor:
        """Move drawn values to the images' device; floats also take the images' dtype."""
        dtype = self.dtype if values.is_floating_point() else values.dtype
        return values.to(device=self.device, dtype=dtype)


def _check_images(x: Any, argument: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor of images [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{argument} must have shape [N, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{argument} must be a floating-point tensor, got {x.dtype}; convert with x.float()")


# ---------------------------------------------------------------------------------------------------------------------
# Ops: each takes (images, sampler, params) and returns new images; all differentiable w.r.t. the images
# ---------------------------------------------------------------------------------------------------------------------


def _per_image(values: Tensor, sampler: _Sampler) -> Tensor:
    return sampler.put(values).view(-1, 1, 1, 1)


def _color(x: Tensor, sampler: _Sampler, params: DSAParams) -> Tensor:
    """Brightness -> saturation -> contrast, fused into one pass over the pixels.

    With b the brightness offset, s the saturation and c the contrast factor, m_c the per-pixel channel mean and m the
    image mean of ``x``, the three reference steps compose exactly to
    ``c*s*x + c*(1-s)*m_c + (1-c)*m + b`` (the channel mean of ``x + b`` is ``m_c + b``; the image mean of the
    saturated image is ``m + b``).
    """
    offset = _per_image((sampler.uniform() - 0.5) * params.brightness, sampler)
    saturation = _per_image(sampler.uniform() * params.saturation, sampler)
    contrast = _per_image(sampler.uniform() + params.contrast, sampler)
    channel_mean = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
    image_mean = channel_mean.mean(dim=(2, 3), keepdim=True)  # [N, 1, 1, 1]
    base = contrast * (1.0 - saturation) * channel_mean + ((1.0 - contrast) * image_mean + offset)
    return torch.addcmul(base, x, contrast * saturation)


def _crop(x: Tensor, sampler: _Sampler, params: DSAParams) -> Tensor:
    """Integer translation with zero fill: ``out[i, j] = x[i + dy, j + dx]`` (0 outside the image)."""
    n, c, h, w = x.shape
    max_dy, max_dx = int(h * params.crop + 0.5), int(w * params.crop + 0.5)
    dy = sampler.randint(-max_dy, max_dy + 1)
    dx = sampler.randint(-max_dx, max_dx + 1)
    if sampler.shared:
        shift_y, shift_x = int(dy), int(dx)
        if shift_y == 0 and shift_x == 0:
            return x
        # Negative padding crops: one copy does the whole shift.
        return F.pad(x, (-shift_x, shift_x, -shift_y, shift_y))
    dy, dx = sampler.put(dy), sampler.put(dx)
    # Gather from a 1-px zero-padded image; clamping sends out-of-range reads to the zero border.
    rows = (torch.arange(h, device=x.device) + dy.view(-1, 1) + 1).clamp_(0, h + 1)
    cols = (torch.arange(w, device=x.device) + dx.view(-1, 1) + 1).clamp_(0, w + 1)
    index = (rows.unsqueeze(2) * (w + 2) + cols.unsqueeze(1)).view(n, 1, h * w).expand(n, c, h * w)
    padded = F.pad(x, (1, 1, 1, 1))
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def _cutout(x: Tensor, sampler: _Sampler, params: DSAParams) -> Tensor:
    """Zero a square of side ``round(cutout*H)`` (clipped at the border) centred at a random pixel."""
    _, _, h, w = x.shape
    size_h, size_w = int(h * params.cutout + 0.5), int(w * params.cutout + 0.5)
    centre_y = sampler.randint(0, h + (1 - size_h % 2))
    centre_x = sampler.randint(0, w + (1 - size_w % 2))
    if size_h == 0 or size_w == 0:
        return x
    top = sampler.put(centre_y - size_h // 2).view(-1, 1)
    left = sampler.put(centre_x - size_w // 2).view(-1, 1)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size_h)
    in_cols = (cols >= left) & (cols < left + size_w)
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)


def _flip(x: Tensor, sampler: _Sampler, params: DSAParams) -> Tensor:
    do_flip = sampler.uniform() < params.flip
    if sampler.shared:
        return x.flip(3) if bool(do_flip) else x
    return torch.where(sampler.put(do_flip).view(-1, 1, 1, 1), x.flip(3), x)


def _scale_matrix(sampler: _Sampler, params: DSAParams) -> Tensor:
    low, high = 1.0 / params.scale, params.scale
    sx, sy = sampler.uniform(low, high), sampler.uniform(low, high)
    zeros = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zeros], -1), torch.stack([zeros, sy], -1)], -2)


def _rotate_matrix(sampler: _Sampler, params: DSAParams) -> Tensor:
    angle = (sampler.uniform() - 0.5) * (2.0 * params.rotate * math.pi / 180.0)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


_MATRIX_FNS: dict[str, Callable[[_Sampler, DSAParams], Tensor]] = {
    "scale": _scale_matrix,
    "rotate": _rotate_matrix,
}


def _grid_coordinates(size: int, like: Tensor) -> Tensor:
    # Same convention as affine_grid: a single pixel sits at coordinate 0.
    if size == 1:
        return torch.zeros(1, device=like.device, dtype=like.dtype)
    return torch.linspace(-1.0, 1.0, size, device=like.device, dtype=like.dtype)


def _affine_grid(linear: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta, align_corners=True)`` for translation-free ``theta``, without its batched matmul.

    Built by broadcasting two thin tensors, several times faster than ``affine_grid`` on CPU for large batches.
    """
    xs = _grid_coordinates(width, linear).view(1, 1, width, 1)
    ys = _grid_coordinates(height, linear).view(1, height, 1, 1)
    # grid[n, i, j] = linear[n] @ (x_j, y_i)
    return xs * linear[:, None, None, :, 0] + ys * linear[:, None, None, :, 1]


def _apply_affine(x: Tensor, linear: Tensor, sampler: _Sampler) -> Tensor:
    """Resample ``x`` once through the linear maps ``linear`` [n, 2, 2] (output coords -> input coords)."""
    n, _, h, w = x.shape
    grid = _affine_grid(sampler.put(linear), h, w)
    if sampler.shared:
        grid = grid.expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _scale(x: Tensor, sampler: _Sampler, params: DSAParams) -> Tensor:
    return _apply_affine(x, _scale_matrix(sampler, params), sampler)


def _rotate(x: Tensor, sampler: _Sampler, params: DSAParams) -> Tensor:
    return _apply_affine(x, _rotate_matrix(sampler, params), sampler)


_OpFn = Callable[[Tensor, _Sampler, DSAParams], Tensor]
_GROUP_FNS: dict[str, tuple[_OpFn, ...]] = {
    "color": (_color,),
    "crop": (_crop,),
    "cutout": (_cutout,),
    "flip": (_flip,),
    "scale": (_scale,),
    "rotate": (_rotate,),
}


def _apply_group(x: Tensor, group: str, sampler: _Sampler, params: DSAParams) -> Tensor:
    for fn in _GROUP_FNS[group]:
        x = fn(x, sampler, params)
    return x


def _apply_sequence(x: Tensor, groups: tuple[str, ...], sampler: _Sampler, params: DSAParams, fuse: bool) -> Tensor:
    """Apply ``groups`` in order; with ``fuse``, runs of scale/rotate become one matrix and one ``grid_sample``."""
    pending: Tensor | None = None  # composed linear map of consecutive affine ops
    for group in groups:
        if fuse and group in _AFFINE_OPS:
            matrix = _MATRIX_FNS[group](sampler, params)
            # Resampling with A1 then A2 reads x at A1 @ A2 @ p.
            pending = matrix if pending is None else pending @ matrix
            continue
        if pending is not None:
            x, pending = _apply_affine(x, pending, sampler), None
        x = _apply_group(x, group, sampler, params)
    if pending is not None:
        x = _apply_affine(x, pending, sampler)
    return x


def _check_params(params: Any) -> DSAParams:
    if not isinstance(params, DSAParams):
        raise TypeError(f"params must be a DSAParams instance, got {type(params).__name__}")
    return params


# ---------------------------------------------------------------------------------------------------------------------
# Public augmenters
# ---------------------------------------------------------------------------------------------------------------------


class DSA:
    """Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

    Args:
        strategy: Ops from ``AUGMENT_OPS`` joined by ``'_'`` (``'color'`` = brightness -> saturation -> contrast),
            or ``"none"``.
        params: Augmentation strengths.
        mode: ``"S"``: one op group of the strategy, chosen uniformly per call, is applied (reference default);
            ``"M"``: all groups in order.
        generator: Generator (or int seed) for ``seed=None`` calls; default: a private one seeded from OS entropy.
        fuse_affine: In mode ``"M"``, compose adjacent scale/rotate into one resampling.

    Example:
        >>> aug = DSA()
        >>> real_aug, syn_aug = aug(real, seed=7), aug(syn, seed=7)  # identical transform on both batches
    """

    def __init__(
        self,
        strategy: str = DSA_FULL_STRATEGY,
        params: DSAParams = DSAParams(),
        mode: str = "S",
        generator: torch.Generator | int | None = None,
        fuse_affine: bool = True,
    ) -> None:
        self.ops = parse_strategy(strategy)
        self.params = _check_params(params)
        if not isinstance(mode, str) or mode.upper() not in ("S", "M"):
            raise ValueError(f"mode must be 'S' (one op per call) or 'M' (all ops in sequence), got {mode!r}")
        self.mode = mode.upper()
        self.generator = _make_generator(generator)
        self.fuse_affine = bool(fuse_affine)

    @property
    def strategy(self) -> str:
        return "_".join(self.ops) if self.ops else "none"

    def config(self) -> dict[str, Any]:
        """JSON-ready description, for run metadata."""
        return {"name": "dsa", "strategy": self.strategy, "mode": self.mode, "params": asdict(self.params)}

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r}, params={self.params})"

    def __call__(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Augment a batch ``x`` [N, C, H, W].

        Args:
            x: Images (any float dtype, any device).
            seed: ``None``: independent per-sample parameters from this object's generator. An int >= 0: one
                parameter draw shared by the whole batch, identical for every call with this seed.

        Returns:
            Augmented images, same shape and dtype (may be ``x`` itself when the drawn transform is the identity).
        """
        _check_images(x)
        if seed is None:
            sampler = _Sampler(self.generator, x.shape[0], x)
        else:
            sampler = _Sampler(_seeded_generator(seed), 1, x)
        if not self.ops or x.shape[0] == 0:
            return x
        if self.mode == "S":
            return _apply_group(x, self.ops[sampler.choice(len(self.ops))], sampler, self.params)
        return _apply_sequence(x, self.ops, sampler, self.params, self.fuse_affine)


class DiffAug:
    """The NCFM/IDC augmentation: flip and colour always, one sampled geometric op, then cutout.

    Order per call: flip (if listed) -> colour (if listed) -> one of the listed ``crop``/``scale``/``rotate`` chosen
    uniformly per call -> cutout (if listed). NCFM distils with ``"color_crop_cutout"`` (batch-shared, real and
    synthetic concatenated) and evaluates with ``"color_crop_flip_scale_rotate"`` per sample.

    Args:
        strategy: Ops from ``AUGMENT_OPS`` joined by ``'_'``, or ``"none"``.
        batch_shared: One parameter draw for the whole batch (siamese when real and synthetic images share a call or a
            seed); ``False``: independent parameters per sample.
        params: Augmentation strengths.
        generator: Generator (or int seed) for ``seed=None`` calls; default: a private one seeded from OS entropy.
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout",
        batch_shared: bool = True,
        params: DSAParams = DSAParams(),
        generator: torch.Generator | int | None = None,
    ) -> None:
        self.ops = parse_strategy(strategy)
        if not isinstance(batch_shared, bool):
            raise TypeError(f"batch_shared must be a bool, got {type(batch_shared).__name__}")
        self.batch_shared = batch_shared
        self.params = _check_params(params)
        self.generator = _make_generator(generator)
        self.geometric = tuple(op for op in self.ops if op in GEOMETRIC_OPS)

    @property
    def strategy(self) -> str:
        return "_".join(self.ops) if self.ops else "none"

    def config(self) -> dict[str, Any]:
        """JSON-ready description, for run metadata."""
        return {
            "name": "diffaug",
            "strategy": self.strategy,
            "batch_shared": self.batch_shared,
            "params": asdict(self.params),
        }

    def __repr__(self) -> str:
        return f"DiffAug(strategy={self.strategy!r}, batch_shared={self.batch_shared}, params={self.params})"

    def __call__(self, x: Tensor, seed: int | None = None) -> Tensor:
        """Augment a batch ``x`` [N, C, H, W].

        Args:
            x: Images (any float dtype, any device).
            seed: ``None``: parameters from this object's generator. An int >= 0: parameters from a generator seeded
                with it, so calls with the same seed (and, when ``batch_shared=False``, the same batch size) apply
                identical transforms.

        Returns:
            Augmented images, same shape and dtype.
        """
        _check_images(x)
        generator = self.generator if seed is None else _seeded_generator(seed)
        sampler = _Sampler(generator, 1 if self.batch_shared else x.shape[0], x)
        if not self.ops or x.shape[0] == 0:
            return x
        if "flip" in self.ops:
            x = _apply_group(x, "flip", sampler, self.params)
        if "color" in self.ops:
            x = _apply_group(x, "color", sampler, self.params)
        if self.geometric:
            x = _apply_group(x, self.geometric[sampler.choice(len(self.geometric))], sampler, self.params)
        if "cutout" in self.ops:
            x = _apply_group(x, "cutout", sampler, self.params)
        return x


# ---------------------------------------------------------------------------------------------------------------------
# CutMix
# ---------------------------------------------------------------------------------------------------------------------

_fallback_generator: torch.Generator | None = None


def _cutmix_generator(generator: torch.Generator | None) -> torch.Generator:
    global _fallback_generator
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    if _fallback_generator is None:
        _fallback_generator = _make_generator(None)
    return _fallback_generator


def cutmix(
    x: Tensor,
    y: Tensor,
    beta: float = 1.0,
    prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """CutMix (Yun et al., 2019) as used by IDC/NCFM evaluation.

    With probability ``prob``: draw ``lam ~ Beta(beta, beta)``, paste a box of area ``~(1 - lam)`` (side
    ``int(H * sqrt(1 - lam))``, random centre, clipped at the border) from a permuted batch, and correct ``lam`` to
    ``1 - pasted_area / (H * W)``. Otherwise return the inputs unchanged with ``lam = 1.0``.

    Args:
        x: Images [N, C, H, W] (not modified).
        y: Labels with first dimension N (class indices or soft labels).
        beta: Beta distribution parameter (> 0).
        prob: Probability of applying CutMix.
        generator: Source of randomness; default: a private module-level generator (never the global RNG).

    Returns:
        ``(x_mixed, y_a, y_b, lam)``; train with ``cutmix_loss(logits, y_a, y_b, lam)``.
    """
    _check_images(x)
    if not isinstance(y, Tensor) or y.dim() == 0 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor with first dimension N={x.shape[0]} (one label per image), got {shape}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be a probability in [0, 1], got {prob!r}")
    g = _cutmix_generator(generator)
    n, _, h, w = x.shape
    if n == 0 or float(torch.rand(1, generator=g, device=g.device)) >= prob:
        return x, y, y, 1.0
    # torch has no generator-driven Beta sampler: seed numpy's from this generator so the draw stays reproducible.
    numpy_seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device))
    lam = float(np.random.default_rng(numpy_seed).beta(beta, beta))
    permutation = torch.randperm(n, generator=g, device=g.device).to(x.device)
    cut_ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut_ratio), int(w * cut_ratio)
    centre_y = int(torch.randint(0, h, (1,), generator=g, device=g.device))
    centre_x = int(torch.randint(0, w, (1,), generator=g, device=g.device))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, h)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[permutation, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, y, y[permutation.to(y.device)], lam


def cutmix_loss(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)`` (labels may be indices or probabilities)."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1] (as returned by cutmix), got {lam!r}")
    loss = F.cross_entropy(logits, y_a)
    if lam == 1.0:
        return loss
    return lam * loss + (1.0 - lam) * F.cross_entropy(logits, y_b)
