"""Evaluation protocols: named presets of how a fresh model is trained on a small set and scored.

Every preset in :data:`PROTOCOLS` names its source. :func:`get_protocol` returns a preset, optionally with fields
overridden (the name then records the overrides, so an accuracy always says which protocol produced it).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from ..augment import check_augment
from ..errors import ConfigError, FormatError

__all__ = ["Protocol", "PROTOCOLS", "SCHEDULES", "get_protocol"]

#: Learning-rate schedules of a protocol (see :class:`Protocol`).
SCHEDULES = ("multistep", "dc-reference")

# datacomp 0.1.0 wrote augment="diffaug" (with the DiffAug strategy in augment_strategy) for what is now the
# pipeline named by the strategy itself; its evaluation default was NCFM's evaluation pipeline.
_LEGACY_DIFFAUG_DEFAULT = "color_crop_flip_scale_rotate"


@dataclass(frozen=True)
class Protocol:
    """How a fresh model is trained on a small set and scored.

    Attributes:
        name: Preset name.
        optimizer: ``sgd`` or ``adamw``.
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: Weight decay (AdamW: decoupled).
        epochs: Training epochs (fixed-epoch protocol); under ``schedule="dc-reference"`` the reference's ``Epoch``,
            and ``epochs + 1`` epochs are trained (:attr:`train_epochs`).
        batch_size: Mini-batch size.
        milestones: ``schedule="multistep"``: fractions of ``epochs``; the lr is multiplied by ``gamma`` from epoch
            index ``round(fraction * epochs)`` on (one optimiser throughout). ``dc-reference`` accepts only ``(0.5,)``.
        gamma: LR decay factor.
        schedule: ``multistep`` (``epochs`` epochs, decays at ``milestones``, one optimiser) or ``dc-reference``
            (DC/DSA/DM ``evaluate_synset``: ``epochs + 1`` epochs, index 0 to ``epochs``; after training epoch
            ``epochs // 2 + 1`` the lr is multiplied by ``gamma`` once and a new SGD optimiser is built, so the
            decayed rate applies from epoch ``epochs // 2 + 2`` on and the momentum buffers restart; SGD only).
        augment: A pipeline of :func:`datacomp.augment.make_augment`: ``none``, ``dsa`` (per-sample DSA, mode S) or
            a per-sample DiffAug pipeline such as ``color_crop_flip_scale_rotate`` (NCFM's evaluation). The 0.1.0
            value ``diffaug`` is read as the pipeline in ``augment_strategy`` (default
            ``color_crop_flip_scale_rotate``).
        augment_strategy: DSA op strategy for ``augment="dsa"`` (``None`` = the dataset's reference strategy).
        cutmix_prob: Probability of CutMix per batch (0 = off).
        select: ``final`` (accuracy after the last epoch) or ``best`` (best test accuracy over checkpoints).
        eval_every: Epochs between test checkpoints when ``select == "best"``.
        bf16: Train under bfloat16 autocast (weights, optimiser and test-time forward stay float32). About 2x faster
            on hardware with native bf16 (AVX-512-BF16/AMX CPUs, GPUs), much slower without it; a different
            protocol from the float32 one, so its name says so (``quick-bf16``, or ``...+bf16=True`` as override).
        source: Where the preset comes from.
    """

    name: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.5,)
    gamma: float = 0.1
    schedule: str = "multistep"
    augment: str = "none"
    augment_strategy: str | None = None
    cutmix_prob: float = 0.0
    select: str = "final"
    eval_every: int = 0
    bf16: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if self.augment == "diffaug":  # a 0.1.0 protocol: the strategy field held the DiffAug pipeline
            object.__setattr__(self, "augment", self.augment_strategy or _LEGACY_DIFFAUG_DEFAULT)
            object.__setattr__(self, "augment_strategy", None)
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"protocol optimizer must be 'sgd' or 'adamw', got '{self.optimizer}'")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"protocol needs epochs >= 1, batch_size >= 1 and lr > 0 (got {self.epochs}, "
                              f"{self.batch_size}, {self.lr})")
        check_augment(self.augment, "protocol augment")
        if self.augment_strategy is not None and self.augment != "dsa":
            raise ConfigError(f"protocol augment_strategy applies to augment='dsa' only; the pipeline "
                              f"'{self.augment}' names its own ops")
        if self.select not in ("final", "best"):
            raise ConfigError(f"protocol select must be 'final' or 'best', got '{self.select}'")
        if not 0 <= self.cutmix_prob <= 1:
            raise ConfigError(f"cutmix_prob must be in [0, 1], got {self.cutmix_prob}")
        self._check_schedule()

    def _check_schedule(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"protocol schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        if not self.gamma > 0:
            raise ConfigError(f"protocol gamma (the lr decay factor) must be > 0, got {self.gamma}")
        if self.schedule != "dc-reference":
            return
        if self.optimizer != "sgd":
            raise ConfigError(f"protocol schedule 'dc-reference' rebuilds an SGD optimiser at the decay; with "
                              f"optimizer='{self.optimizer}' set schedule='multistep'")
        if self.milestones != (0.5,):
            raise ConfigError(f"protocol milestones {self.milestones} need schedule='multistep'; 'dc-reference' "
                              "decays once, after epoch epochs//2+1 (milestones=(0.5,))")

    @property
    def train_epochs(self) -> int:
        """Epochs actually trained: ``epochs + 1`` under ``dc-reference`` (``range(Epoch + 1)``), else ``epochs``."""
        return self.epochs + 1 if self.schedule == "dc-reference" else self.epochs

    def decay_epochs(self) -> list[int]:
        """Epoch indices (0-based) from which another factor ``gamma`` applies, ascending.

        ``multistep``: ``round(m * epochs)`` (at least 1) per milestone; ``dc-reference``: ``epochs // 2 + 2`` (the
        reference decays after training epoch ``epochs // 2 + 1``). An index ``>= train_epochs`` never takes effect.
        """
        if self.schedule == "dc-reference":
            return [self.epochs // 2 + 2]
        return sorted({max(1, int(round(m * self.epochs))) for m in self.milestones})

    def epoch_lrs(self) -> list[float]:
        """The learning rate of each of the :attr:`train_epochs` epochs (repeated ``lr *= gamma``, as trained)."""
        decays, lr, out = set(self.decay_epochs()), self.lr, []
        for epoch in range(self.train_epochs):
            if epoch in decays:
                lr *= self.gamma
            out.append(lr)
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Protocol":
        """Read ``to_dict()`` output, also as written by datacomp 0.1.0 (``protocol_config`` of ``run.json``)."""
        if not isinstance(doc, dict):
            raise FormatError(f"a protocol config must be a JSON object, got {type(doc).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - names)
        if unknown:
            raise FormatError(f"protocol config has unknown field(s) {unknown}; known: {sorted(names)}")
        try:
            return cls(**doc)
        except TypeError as err:
            raise FormatError(f"protocol config is incomplete: {err}") from None


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol(
            "dm", "sgd", 0.01, epochs=1000, batch_size=256, milestones=(0.5,), gamma=0.1, augment="dsa",
            schedule="dc-reference",
            source="DC/DSA/DM reference evaluate_synset (VICO-UoE/DatasetCondensation): SGD 0.01 momentum 0.9 "
                   "wd 5e-4, batch 256, DSA, Epoch 1000 = 1001 epochs (0-1000), lr x0.1 with a new SGD optimiser "
                   "after epoch 501, final-epoch accuracy",
        ),
        Protocol(
            "ncfm", "adamw", 0.001, epochs=2000, batch_size=128, weight_decay=0.01,
            milestones=(0.2, 0.4, 0.6, 0.8), gamma=0.5, augment="color_crop_flip_scale_rotate",
            cutmix_prob=0.5, select="best", eval_every=100,
            source="NCFM evaluation script (gszfwsb/NCFM): AdamW 1e-3 (wd 0.01), batch 128, 2000 epochs, MultiStep "
                   "x0.5 at 20/40/60/80%, DiffAug + CutMix 0.5, best test accuracy over checkpoints every 100 epochs",
        ),
        Protocol(
            "quick", "sgd", 0.01, epochs=300, batch_size=256, milestones=(0.5,), gamma=0.1, augment="none",
            schedule="dc-reference",
            source="DC reference evaluate_synset without augmentation: SGD 0.01 momentum 0.9 wd 5e-4, batch 256, "
                   "Epoch 300 = 301 epochs (0-300), lr x0.1 with a new SGD optimiser after epoch 151, final-epoch "
                   "accuracy; CPU-sized",
        ),
        Protocol(
            "quick-bf16", "sgd", 0.01, epochs=300, batch_size=256, milestones=(0.5,), gamma=0.1, augment="none",
            schedule="dc-reference", bf16=True,
            source="the 'quick' protocol with training under bfloat16 autocast: ~2x faster on CPUs with native bf16 "
                   "(AVX-512-BF16/AMX)",
        ),
        Protocol(
            "smoke", "sgd", 0.01, epochs=30, batch_size=256, milestones=(0.5,), gamma=0.1, augment="none",
            source="the 'quick' settings cut to 30 epochs with the plain multistep schedule (30 epochs, lr x0.1 from "
                   "epoch 15, one optimiser): for tests and smoke runs only, not for reporting",
        ),
    ]
}


def get_protocol(name: str | Protocol, **overrides: Any) -> Protocol:
    """A preset by name, optionally with fields overridden (the name then gets a ``+`` suffix)."""
    if isinstance(name, Protocol):
        base = name
    elif name not in PROTOCOLS:
        close = difflib.get_close_matches(str(name), list(PROTOCOLS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown protocol '{name}'{hint}; choose one of {', '.join(PROTOCOLS)}")
    else:
        base = PROTOCOLS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return base
    bad = set(overrides) - {f.name for f in dataclasses.fields(Protocol)}
    if bad:
        raise ConfigError(f"unknown protocol field(s) {sorted(bad)}; known: "
                          f"{', '.join(f.name for f in dataclasses.fields(Protocol))}")
    changed = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return dataclasses.replace(base, name=f"{base.name}+{changed}", **overrides)
