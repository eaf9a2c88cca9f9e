"""The distillers' configuration dataclasses: one frozen dataclass per method, validated on construction.

Named presets of these configs, and the per-dataset adjustments backed by measurements, are registered with each
method in :mod:`datacomp.distillers.methods`; :func:`datacomp.distillers.presets.get_config` builds one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from datacomp.distillers.multiformation import resolve_factor
from datacomp.errors import ConfigError
from datacomp.runtime import native_bf16

__all__ = ["NCFMConfig", "DMConfig", "RandomConfig", "switch_value", "resolve_native_bf16", "resolved_switches"]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class NCFMConfig:
    """NCFM distillation settings (names follow the spec; defaults = ``paper`` preset).

    Attributes:
        iterations: Outer iterations (each: one min step on the images of every class, one max step of psi,
            optionally one calibration step).
        lr_img: Image learning rate (released code: AdamW 1e-3 = ``lr_img 0.01 x lr_scale_adam 0.1``).
        optimizer: ``adamw`` (decoupled weight decay on the pixels) or ``sgd`` (momentum ``momentum``).
        weight_decay: AdamW weight decay on the pixels.
        momentum: SGD momentum (released code: 0.5 for CIFAR-100 IPC10, the only SGD config).
        step_mode: ``per-class``: one optimiser step per class per iteration over the whole image tensor, as the
            released code does (Adam moments and decay then also move the other classes); ``joint``: one step per
            iteration on the summed loss.
        sampler: ``learned`` (paper: scale mixture from psi, trained by ascent) or ``gaussian`` (released code).
        num_freqs: Frequencies per iteration (paper 1024, released code 4096).
        sigma: Frequency scale (Gaussian: std; learned: base scale, scales in ``(0, 2 sigma)``).
        sampler_lr: Learning rate of psi's Adam (betas 0.5, 0.999, as RCF-GAN's critic).
        alpha: Amplitude weight; the phase term gets ``1 - alpha`` (released code: 0.5/0.5).
        loss_scale: Multiplier of the NCFD in the training loss (released code: 300).
        normalize_features: L2-normalise every feature vector before the NCFD (released code: yes).
        real_batch: Real images per class per iteration (capped at the class size).
        real_sampling: ``random`` (fresh draw each iteration) or ``first`` (the first ``real_batch`` images of the
            class in dataset order, fixed, as the released code).
        factor: Multi-formation factor (2: each stored image is a 2x2 mosaic decoded into 4 training images; 1: off).
            ``0`` = auto (all presets): 2 when the tiles keep at least 8 pixels a side (CIFAR 32 -> 16, MNIST
            28 -> 14), else 1 (sklearn digits: 8x8 images would decode from 4x4 tiles, which measured *below*
            random real images at IPC 10). The resolved value is what the run records.
        init: ``mosaic`` (2x2 mosaics of real images, ``factor**2`` per stored image), ``real`` or ``noise``.
        init_sampling: ``first`` (first images of the class, released code) or ``random``.
        augment: Siamese DiffAug strategy shared by the real and synthetic batch of a class (``none`` to disable).
        views: Augmentation draws per class per iteration. The real batch is split into ``views`` chunks, each
            with its own draw, and the synthetic images of the class go through every draw, so both
            characteristic functions are those of the *augmented* distributions. With one image per class and one
            draw the synthetic CF has modulus 1 and NCFD's amplitude term cannot act; ``views > 1`` lets it. The
            real forward costs the same; the synthetic side costs ``views`` times more. Measured at digits IPC 1 (five
            seeds): ``views=4`` 84.7 vs 86.7 with one view, so the default stays 1.
        calibration: Add the calibration step: cross-entropy of the trained pool net on the augmented synthetic
            images, one more image step per iteration.
        calibration_weight: Weight of that cross-entropy.
        pool_size: Feature extractors trained on the real data (each keeps its initial and final weights).
        pool_epochs: Training epochs of each pool model (SGD 0.01, momentum 0.9, wd 5e-4, batch 128, milestones at
            2/3 and 5/6 x0.2, DiffAug color_crop + CutMix 0.5, as the released pretraining script).
        pool_min_steps: Lower bound on pool optimiser steps (more epochs on tiny datasets); 0 = none.
        pool_lr: Pool SGD learning rate.
        pool_batch: Pool batch size.
        plateau_patience: ReduceLROnPlateau (factor 0.5) patience in iterations on the mean loss; 0 = off.
        real_bf16: ``auto`` (default), ``on`` or ``off``: the real images' feature forward (no gradient) under
            bfloat16 autocast; ``auto`` = on where the device multiplies bfloat16 natively (as ``cf_bf16``). Features
            move by ~0.6 % relative; the forward takes 0.38x the float32 time on an AVX-512-BF16 CPU. Accuracy at
            equal iterations: ``benchmarks/results/real_bf16_accuracy.md``.
        syn_bf16: ``auto`` (default), ``on`` or ``off``: the synthetic images' network passes (forward and
            backward to the pixels, matching and calibration network) under bfloat16 autocast; the loss, the pixels
            and their update stay float32. ``auto`` = on where the device multiplies bfloat16 natively. With
            ``real_bf16`` an iteration takes 0.29-0.36x the restated released loop's time on an AVX-512-BF16 CPU
            (0.48x without); accuracy at equal iterations: ``benchmarks/results/syn_bf16_accuracy.md``.
        cf_bf16: ``auto`` (default), ``on`` or ``off``: the real features' characteristic-function projection
            (N real x K frequencies x d, the loss's largest matmul, no gradient to the pixels) in bfloat16, cos/sin
            and means in float32. ``auto`` = on where the device multiplies bfloat16 natively
            (:func:`datacomp.runtime.native_bf16`: CPUs with AVX-512-BF16/AMX, CUDA GPUs with bf16), off elsewhere
            (emulated bfloat16 is slower than float32); runs record the resolved value. On 2560 x 4096 x 2048 the CF
            moves by <= 0.004 (the sampling noise of 256 real images is ~0.06); 4.7x faster on an AVX-512-BF16 CPU.
            Accuracy at equal iterations (CIFAR-10, cpu-quick, IPC 10, three seeds x two samplers, same pools and
            evaluation seeds): on - off = -0.05 points on average (``benchmarks/results/cf_bf16_accuracy.md``).
    """

    iterations: int = 20000
    lr_img: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    momentum: float = 0.5
    step_mode: str = "per-class"
    sampler: str = "learned"
    num_freqs: int = 1024
    sigma: float = 1.0
    sampler_lr: float = 2e-4
    alpha: float = 0.5
    loss_scale: float = 300.0
    normalize_features: bool = True
    real_batch: int = 1024
    real_sampling: str = "random"
    factor: int = 0
    init: str = "mosaic"
    init_sampling: str = "first"
    augment: str = "color_crop_cutout"
    views: int = 1
    calibration: bool = True
    calibration_weight: float = 1.0
    pool_size: int = 20
    pool_epochs: int = 60
    pool_min_steps: int = 0
    pool_lr: float = 0.01
    pool_batch: int = 128
    plateau_patience: int = 500
    real_bf16: str = "auto"
    syn_bf16: str = "auto"
    cf_bf16: str = "auto"

    method = "ncfm"

    def for_run(self, image_size: tuple[int, int], device: Any) -> "NCFMConfig":
        """The config as it runs on images of ``image_size`` on ``device``: ``factor`` 0 (auto) and the bfloat16
        switches' ``auto`` resolved (what a run records)."""
        return dataclasses.replace(self, factor=resolve_factor(self.factor, image_size),
                                   **resolved_switches(self, device))

    def __post_init__(self) -> None:
        _validate_common(self)
        _normalise_switches(self)
        _check(self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        _check(self.step_mode in ("per-class", "joint"),
               f"step_mode must be 'per-class' or 'joint', got {self.step_mode!r}")
        _check(self.sampler in ("learned", "gaussian"), f"sampler must be 'learned' or 'gaussian', got {self.sampler!r}")
        _check(self.num_freqs >= 1, f"num_freqs must be >= 1, got {self.num_freqs}")
        _check(self.sampler != "learned" or (self.num_freqs % 16 == 0 and self.num_freqs >= 32),
               f"num_freqs={self.num_freqs} is invalid for the learned sampler: use a multiple of 16 that is >= 32 "
               "(K = num_freqs/16 mixture components), or sampler=gaussian")
        _check(self.sigma > 0 and self.sampler_lr > 0, "sigma and sampler_lr must be > 0")
        _check(0.0 <= self.alpha <= 1.0, f"alpha must lie in [0, 1], got {self.alpha}")
        _check(self.loss_scale > 0, f"loss_scale must be > 0, got {self.loss_scale}")
        _check(self.real_sampling in ("random", "first"),
               f"real_sampling must be 'random' or 'first', got {self.real_sampling!r}")
        _check(self.init in ("mosaic", "real", "noise"), f"init must be 'mosaic', 'real' or 'noise', got {self.init!r}")
        _check(self.init_sampling in ("random", "first"),
               f"init_sampling must be 'random' or 'first', got {self.init_sampling!r}")
        _check(self.factor >= 0, f"factor must be >= 1 (or 0 = auto), got {self.factor}")
        _check(self.views >= 1, f"views must be >= 1, got {self.views}")
        _check(self.views == 1 or self.augment != "none",
               f"views={self.views} needs augmentation (identical views add nothing): set augment or views=1")
        _check(self.calibration_weight >= 0, f"calibration_weight must be >= 0, got {self.calibration_weight}")
        _check(self.pool_size >= 1 and self.pool_epochs >= 1, "pool_size and pool_epochs must be >= 1")
        _check(self.pool_min_steps >= 0 and self.pool_batch >= 1 and self.pool_lr > 0,
               "pool_min_steps must be >= 0, pool_batch >= 1 and pool_lr > 0")
        _check(self.weight_decay >= 0 and 0 <= self.momentum < 1, "weight_decay must be >= 0 and momentum in [0, 1)")
        _check(self.plateau_patience >= 0, f"plateau_patience must be >= 0, got {self.plateau_patience}")


@dataclass(frozen=True)
class DMConfig:
    """Distribution matching (Zhao & Bilen, WACV 2023), reference ``main_DM.py`` defaults.

    Attributes:
        iterations: Outer iterations (a fresh random ConvNet each).
        lr_img: SGD learning rate on the (normalised) images.
        momentum: SGD momentum.
        real_batch: Random real images per class per iteration (capped at the class size).
        init: ``real`` (random real images) or ``noise``.
        augment: DSA strategy (siamese: one seed per class); ``auto`` = no flip for digit datasets.
        real_bf16: ``auto`` (default), ``on`` or ``off``: the real images' feature forward (no gradient) under
            bfloat16 autocast; ``auto`` = on where the device multiplies bfloat16 natively (as ``cf_bf16``). Features
            move by ~0.6 % relative; the forward takes 0.38x the float32 time on an AVX-512-BF16 CPU. Accuracy at
            equal iterations: ``benchmarks/results/real_bf16_accuracy.md``.
        syn_bf16: ``auto``, ``on`` or ``off`` (default): the synthetic images' network passes (forward and
            backward to the pixels) under bfloat16 autocast; the loss and the pixels stay float32. ``auto`` = on
            where the device multiplies bfloat16 natively (emulated bfloat16 is slower than float32).
    """

    iterations: int = 20000
    lr_img: float = 1.0
    momentum: float = 0.5
    real_batch: int = 256
    init: str = "real"
    augment: str = "auto"
    factor: int = 1
    real_bf16: str = "auto"
    syn_bf16: str = "off"

    method = "dm"

    def for_run(self, image_size: tuple[int, int], device: Any) -> "DMConfig":
        """The config as it runs on ``device``: the bfloat16 switches' ``auto`` resolved (what a run records)."""
        return dataclasses.replace(self, **resolved_switches(self, device))

    def __post_init__(self) -> None:
        _validate_common(self)
        _normalise_switches(self)
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _check(self.init in ("real", "noise"), f"init must be 'real' or 'noise', got {self.init!r}")
        _check(self.factor == 1, "DM has no multi-formation: factor must be 1")


@dataclass(frozen=True)
class RandomConfig:
    """Random real images per class: the baseline every method is compared to (no optimisation)."""

    iterations: int = 0
    factor: int = 1

    method = "random"

    def for_run(self, image_size: tuple[int, int], device: Any) -> "RandomConfig":
        """The config as it runs (nothing to resolve)."""
        return self

    def __post_init__(self) -> None:
        _check(self.iterations == 0, "the random method does not optimise: iterations must be 0")
        _check(self.factor == 1, "the random method stores real images: factor must be 1")


_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
BF16_SWITCHES = ("cf_bf16", "real_bf16", "syn_bf16")  # auto/on/off settings; "auto" = on where bf16 is native


def switch_value(value: Any, key: str) -> str:
    """Normalise an ``auto``/``on``/``off`` setting (booleans and their CLI spellings accepted)."""
    text = str(value).strip().lower()
    if text in _ON:
        return "on"
    if text in _OFF:
        return "off"
    if text == "auto":
        return "auto"
    raise ConfigError(f"{key} must be auto, on or off (or true/false), got {value!r}")


def resolve_native_bf16(value: str, device: Any, key: str = "cf_bf16") -> str:
    """A bfloat16 switch (``cf_bf16``, ``real_bf16``, ``syn_bf16``): ``auto`` -> ``on`` where ``device`` multiplies
    bfloat16 natively, else ``off``; ``on``/``off`` unchanged."""
    value = switch_value(value, key)
    if value != "auto":
        return value
    return "on" if native_bf16(device) else "off"


def resolved_switches(cfg: Any, device: Any) -> dict[str, str]:
    """``cfg``'s bfloat16 switches with ``auto`` resolved for ``device`` (for ``dataclasses.replace``)."""
    return {key: resolve_native_bf16(getattr(cfg, key), device, key) for key in BF16_SWITCHES if hasattr(cfg, key)}


def _normalise_switches(cfg: Any) -> None:
    """Spell every bfloat16 switch of ``cfg`` as auto/on/off (booleans from older records included)."""
    for key in BF16_SWITCHES:
        if hasattr(cfg, key):
            object.__setattr__(cfg, key, switch_value(getattr(cfg, key), key))


def _validate_common(cfg: Any) -> None:
    _check(isinstance(cfg.iterations, int) and cfg.iterations >= 0,
           f"iterations must be an int >= 0, got {cfg.iterations!r}")
    _check(cfg.lr_img > 0, f"lr_img must be > 0, got {cfg.lr_img}")
    _check(cfg.real_batch >= 1, f"real_batch must be >= 1, got {cfg.real_batch}")
