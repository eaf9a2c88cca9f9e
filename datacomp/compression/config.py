"""``CompressConfig``: the one place for the settings of ``compress`` (which stages run, and how).

The stages run in the order prune -> train (``kd``: distil from the unpruned teacher or from several teachers,
``finetune``: plain cross-entropy, or ``born_again`` generations) -> binarize -> quantize; any subset may be chosen
(binarize and quantize exclude each other).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from datacomp.augment import check_augment
from datacomp.compression.binarize import BINARIZE_MODES
from datacomp.compression.kd import KDConfig, KDSettings
from datacomp.compression.multikd import check_teacher_weights
from datacomp.compression.prune import IMPORTANCES, check_ratio
from datacomp.compression.quantize import CALIBRATION_SOURCES
from datacomp.errors import ConfigError, is_int

__all__ = ["CompressConfig", "QUANTIZE_OPTIONS", "AUGMENT_OPTIONS", "LEGACY_AUGMENT"]

QUANTIZE_OPTIONS = ("int8",)
# Augmentations of the training stage: datacomp.augment pipelines by name.
AUGMENT_OPTIONS = ("none", "dsa", "color_crop_cutout", "color_crop_flip_scale_rotate")
# datacomp 0.1.0 called the colour + crop + cutout pipeline of this stage "diffaug".
LEGACY_AUGMENT = {"diffaug": "color_crop_cutout"}


@dataclass
class _StageChoice:
    """The fields of :class:`CompressConfig` that come before the training settings (pruning, the training stage
    and its student). A base class of its own so that the fields keep the order ``run.json`` has always recorded:
    these, then :class:`~datacomp.compression.kd.KDSettings`, then the rest."""

    prune: float | None = None
    structured: bool = False
    importance: str = "magnitude"
    global_pruning: bool = False
    kd: bool = False
    finetune: bool = False
    student: str | None = None
    student_kwargs: dict = field(default_factory=dict)


@dataclass
class CompressConfig(KDSettings, _StageChoice):
    """Which stages run and how.

    Attributes:
        prune: Fraction to prune in (0, 1), or None to skip pruning.
        structured: Structured channel pruning (physically smaller) instead of global unstructured magnitude.
        importance: Channel importance for structured pruning: ``magnitude`` or ``taylor`` (uses the small set).
        global_pruning: Rank channels across layers (structured only).
        kd: Distil from the unpruned teacher on the small set (Hinton KD + optional feature hint).
        finetune: Recover on the small set with plain cross-entropy (no teacher); exclusive with ``kd``.
        student: Registered model name of a fresh student to distil into (instead of pruning the teacher).
        student_kwargs: Constructor options of the student (e.g. ``{"width": 32}``).
        epochs, batch_size, lr, momentum, weight_decay, temperature, alpha, hint_weight: The training stage's
            settings (:class:`~datacomp.compression.kd.KDSettings`); ``finetune`` ignores ``alpha`` (plain CE),
            ``hint_weight`` needs ``kd``.
        augment: Augmentation of the training stage, a :mod:`datacomp.augment` pipeline: ``none``, ``dsa``
            (per-sample DSA), ``color_crop_cutout`` (DiffAug colour + crop + cutout, called ``diffaug`` by datacomp
            0.1.0) or ``color_crop_flip_scale_rotate``.
        quantize: ``int8`` (post-training static, CPU) or None.
        calibration: ``small`` (the small set), ``train-random`` (the field's default: random training images) or
            ``train-first`` (the first training images in stored order).
        calibration_size: Calibration images (default 1,024 as in torchvision's reference).
        latency_batch: Batch size of the latency measurement.
        latency_repeats: Timed forward passes (median reported).
        seed: Seed of everything random here (and of a ``random:IPC`` small set without its own seed).
        teachers: Model files / ``datacomp train`` run folders of the teachers whose softened distributions the KD
            target averages (multi-teacher KD, :mod:`~datacomp.compression.multikd`); used by ``kd`` (stage
            ``multi-kd``), by the first ``born_again`` generation and by the ``binarize`` recovery instead of the
            teacher. The teacher stays the model that is pruned and measured against; list it here to make it one
            of the teachers.
        teacher_weights: One weight >= 0 per entry of ``teachers`` (None: equal), normalised to sum 1.
        born_again: Born-again generations (Furlanello et al. 2018): each trains a fresh, seeded copy of the teacher's
            architecture (or of ``student``) by KD from the generation before it (the first from the teacher);
            stages ``born-again-1`` ... ``born-again-N``. Exclusive with ``kd`` / ``finetune`` / ``prune``.
        born_again_ensemble: Also report the accuracy of the generations' averaged logits (``born_again >= 2``).
        binarize: ``weights`` or ``weights+activations`` (XNOR-Net 1-bit layers, :mod:`~datacomp.compression.binarize`,
            recovered by KD from the teacher on the small set), or None.
    """

    augment: str = "none"
    quantize: str | None = None
    calibration: str = "small"
    calibration_size: int = 1024
    latency_batch: int = 1
    latency_repeats: int = 30
    seed: int = 0
    teachers: list = field(default_factory=list)
    teacher_weights: list | None = None
    born_again: int | None = None
    born_again_ensemble: bool = False
    binarize: str | None = None

    def __post_init__(self) -> None:
        self.augment = LEGACY_AUGMENT.get(self.augment, self.augment)
        if self.prune is not None:
            self.prune = check_ratio(self.prune, "prune")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"unknown importance '{self.importance}'; choose one of {IMPORTANCES}")
        if self.prune is None and (self.structured or self.global_pruning or self.importance != "magnitude"):
            raise ConfigError("structured / global_pruning / importance are pruning options: also set prune")
        if not self.structured and (self.importance != "magnitude" or self.global_pruning):
            raise ConfigError(
                "importance and global_pruning apply to structured pruning (unstructured pruning is always global "
                "L1 magnitude): add structured=True (--structured)"
            )
        self._check_training()
        self._check_new_stages()
        if self.quantize is not None and self.quantize not in QUANTIZE_OPTIONS:
            raise ConfigError(f"unknown quantize option '{self.quantize}'; choose one of {QUANTIZE_OPTIONS}")
        if self.calibration not in CALIBRATION_SOURCES:
            raise ConfigError(f"unknown calibration source '{self.calibration}'; choose one of {CALIBRATION_SOURCES}")
        for name in ("calibration_size", "latency_batch", "latency_repeats"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)  # a numpy integer too: torch.Generator.manual_seed takes Python ints only
        if not self.stages:
            raise ConfigError("no stage selected: set prune, kd/finetune (with student or prune), born_again, "
                              "binarize and/or quantize")

    def _check_training(self) -> None:
        if self.born_again is not None and (self.kd or self.finetune):
            raise ConfigError("born_again trains every generation by KD itself: drop kd / finetune")
        if self.kd and self.finetune:
            raise ConfigError("choose kd (distil from the teacher) or finetune (plain CE), not both")
        if self.student is not None and self.prune is not None:
            raise ConfigError("student trains a fresh model and prune shrinks the teacher: choose one")
        if self.student is not None and not (self.kd or self.finetune or self.born_again is not None):
            raise ConfigError("a student needs training: add kd (or finetune, born_again)")
        if (self.kd or self.finetune) and self.prune is None and self.student is None:
            raise ConfigError("kd / finetune need a model to train: set prune (recover the pruned teacher) or "
                              "student")
        if self.hint_weight and not self.kd:
            raise ConfigError("hint_weight (feature distillation) needs kd")
        if not isinstance(self.student_kwargs, dict):
            raise ConfigError(f"student_kwargs must be a dict, got {type(self.student_kwargs).__name__}")
        if self.augment not in AUGMENT_OPTIONS:
            check_augment(self.augment)  # names an ambiguous or unknown pipeline precisely
            raise ConfigError(f"augment '{self.augment}' is not offered for this stage; choose one of "
                              f"{', '.join(AUGMENT_OPTIONS)}")
        self.kd_config()  # validates epochs, lr, momentum, weight_decay, temperature, alpha, hint_weight

    def _check_new_stages(self) -> None:
        """teachers / teacher_weights, born_again, binarize."""
        if isinstance(self.teachers, (str, bytes)) or not isinstance(self.teachers, (list, tuple)) or \
                not all(isinstance(t, str) and t for t in self.teachers):
            raise ConfigError(f"teachers must be a list of model files / run folders, got {self.teachers!r}")
        self.teachers = list(self.teachers)
        if self.teacher_weights is not None and not self.teachers:
            raise ConfigError("teacher_weights weighs the entries of teachers: also set teachers (--teachers)")
        check_teacher_weights(self.teacher_weights, len(self.teachers))
        if self.teacher_weights is not None:
            self.teacher_weights = list(self.teacher_weights)
        if self.teachers and not (self.kd or self.born_again is not None or self.binarize is not None):
            raise ConfigError("teachers are distilled from: add kd (or born_again, binarize)")
        if self.teachers and self.hint_weight:
            raise ConfigError("hint_weight (a feature hint) needs a single teacher: drop teachers or hint_weight")
        if self.born_again is not None:
            if not is_int(self.born_again) or self.born_again < 1:
                raise ConfigError(f"born_again must be an integer >= 1 (generations), got {self.born_again!r}")
            if self.prune is not None:
                raise ConfigError("born_again trains fresh copies of the teacher's architecture (or of student), not "
                                  "a pruned teacher: drop prune, or use student for a smaller architecture")
        if not isinstance(self.born_again_ensemble, bool):
            raise ConfigError(f"born_again_ensemble must be true or false, got {self.born_again_ensemble!r}")
        if self.born_again_ensemble and (self.born_again is None or self.born_again < 2):
            raise ConfigError("born_again_ensemble averages generations: set born_again >= 2")
        if self.binarize is not None:
            if self.binarize not in BINARIZE_MODES:
                raise ConfigError(f"unknown binarize mode {self.binarize!r}; choose one of {', '.join(BINARIZE_MODES)}")
            if self.quantize is not None:
                raise ConfigError("binarize (1-bit layers) and quantize (int8) are alternatives: choose one")
            if self.prune is not None and not self.structured:
                raise ConfigError("binarize gives every weight +-alpha, so unstructured pruning's zeros would not "
                                  "survive: add structured=True (--structured) or drop prune")

    @property
    def train_stage(self) -> str | None:
        """Name of the training stage: ``kd`` (``multi-kd`` with teachers), ``finetune``, ``born-again`` or None."""
        if self.kd:
            return "multi-kd" if self.teachers else "kd"
        if self.finetune:
            return "finetune"
        return "born-again" if self.born_again is not None else None

    @property
    def stages(self) -> list[str]:
        """The stages that run, in order (one ``born-again-G`` per generation)."""
        out = ["prune"] if self.prune is not None else []
        if self.born_again is not None:
            out.extend(f"born-again-{g}" for g in range(1, self.born_again + 1))
        elif self.train_stage is not None:
            out.append(self.train_stage)
        if self.binarize is not None:
            out.append("binarize")
        if self.quantize is not None:
            out.append("quantize")
        return out

    @property
    def method(self) -> str:
        """Short name, e.g. ``prune-structured-taylor-0.5+kd+int8``."""
        parts = []
        if self.prune is not None:
            kind = f"structured-{self.importance}" if self.structured else "unstructured"
            parts.append(f"prune-{kind}-{self.prune:g}")
        if self.student is not None:
            parts.append(f"student-{self.student}")
        if self.kd:
            kd = f"multi-kd-{len(self.teachers)}" if self.teachers else "kd"
            parts.append(kd + ("+hint" if self.hint_weight else ""))
        elif self.finetune:
            parts.append("finetune")
        elif self.born_again is not None:
            parts.append(f"born-again-{self.born_again}" + (f"-from-{len(self.teachers)}" if self.teachers else ""))
        if self.binarize:
            parts.append(f"binarize-{self.binarize}")
        if self.quantize:
            parts.append(self.quantize)
        return "+".join(parts)

    def kd_config(self, distil: bool | None = None) -> KDConfig:
        """The training stage's settings (``alpha`` is 0 for ``finetune``; ``distil=True``: a KD recovery whatever
        the training stage, as ``binarize`` runs it)."""
        distil = (self.kd or self.born_again is not None) if distil is None else distil
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(KDConfig)}
        return KDConfig(**{**values, "alpha": self.alpha if distil else 0.0})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "CompressConfig":
        """A config from :meth:`to_dict` or from a datacomp 0.1.0 ``run.json`` ``config`` (``device`` and the
        recorded ``stages``/``data``/``teacher`` are ignored; ``augment="diffaug"`` reads as ``color_crop_cutout``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @classmethod
    def with_settings(cls, settings: dict[str, Any], option: str = "--set") -> "CompressConfig":
        """A config from ``KEY=VALUE`` settings; an unknown key raises :class:`ConfigError` naming the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in settings:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{option} {key}: unknown compress setting{hint}; valid: {', '.join(names)}")
        try:
            return cls(**settings)
        except TypeError as err:  # e.g. a comparison of a string value with a number
            raise ConfigError(f"{option}: a value has the wrong type ({err})") from None

