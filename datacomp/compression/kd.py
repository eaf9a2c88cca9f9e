"""Knowledge distillation (KD) on a small set: :class:`KDConfig` and :func:`train_student`.

The student learns from the teacher with the loss of :func:`datacomp.compression.losses.kd_loss`
(``alpha * T^2 * KL + (1 - alpha) * CE``, batch mean), optionally plus a FitNets feature hint; without a teacher
(or with ``alpha = 0``) it is plain cross-entropy fine-tuning. The epoch / mini-batch skeleton is
:func:`datacomp.training.fit`, the loop every classifier trainer in datacomp shares.

A teacher that declares ``cache_outputs = True`` (the multi-teacher
:class:`~datacomp.compression.multikd.TeacherEnsemble`) is evaluated once on the small set when there is no
augmentation (ledger phase ``teacher-logits``) and its outputs are read per batch; otherwise the teacher runs on every
(augmented) batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from datacomp.compression.losses import FeatureHint, check_kd_weights, cross_entropy, kd_loss
from datacomp.compression.multikd import TeacherEnsemble
from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError, is_int
from datacomp.training import fit

__all__ = ["KDSettings", "KDConfig", "train_student", "num_outputs", "teacher_outputs"]


@dataclass
class KDSettings:
    """How the student is trained on a small set: the fields :class:`KDConfig` and
    :class:`~datacomp.compression.config.CompressConfig` share (declared once, here).

    Attributes:
        epochs: Passes over the small set.
        batch_size: Mini-batch size (capped at the set size).
        lr: SGD learning rate (cosine-annealed to 0).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        temperature: KD temperature.
        alpha: Weight of the KD term (``1 - alpha`` on hard-label CE); ignored without a teacher.
        hint_weight: Weight of the FitNets feature hint (0 disables it).
    """

    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.9
    hint_weight: float = 0.0


@dataclass
class KDConfig(KDSettings):
    """Recovery / distillation training on a small set: the :class:`KDSettings` fields plus ``seed``, the seed of the
    batch order."""

    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not _finite(self.lr) or not self.lr > 0:
            raise ConfigError(f"lr must be > 0 (and finite), got {self.lr}")
        for name in ("momentum", "weight_decay", "hint_weight"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ConfigError(f"{name} must be >= 0 (and finite), got {value}")
        check_kd_weights(self.temperature, self.alpha)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits ``model`` produces for the images ``x`` (a 2-image forward pass in eval mode)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x[:2])  # 2: per-instance norms reject a single 1x1 map
    model.train(was_training)
    return int(out.shape[1])


def _check_inputs(student: nn.Module, x: torch.Tensor, y: torch.Tensor | None, teacher: nn.Module | None,
                  config: KDConfig) -> bool:
    """Validate the training inputs; return whether the KD term is used."""
    if not torch.is_tensor(x) or x.ndim != 4 or len(x) == 0:
        raise DataError(
            f"x must be a non-empty [N, C, H, W] tensor of normalised images, got {getattr(x, 'shape', x)}"
        )
    num_classes = num_outputs(student, x)
    if teacher is not None:
        teacher_classes = num_outputs(teacher, x)
        if teacher_classes != num_classes:
            raise ConfigError(
                f"teacher predicts {teacher_classes} classes but the student {num_classes}: teacher and student must "
                f"share classes"
            )
    use_kd = teacher is not None and config.alpha > 0
    if isinstance(teacher, TeacherEnsemble) and teacher.temperature != config.temperature:
        raise ConfigError(f"the teacher ensemble combines distributions at temperature {teacher.temperature:g} but KD "
                          f"runs at {config.temperature:g}: build it with the KD temperature")
    if y is None:
        if not (use_kd and config.alpha == 1.0):
            raise ConfigError("y (labels) is required unless a teacher is given and alpha == 1 (pure KD)")
    else:
        if len(y) != len(x):
            raise DataError(f"x and y lengths differ: {len(x)} vs {len(y)}")
        top = int(y.max()) if y.ndim == 1 else y.shape[1] - 1
        if top >= num_classes:
            raise DataError(
                f"labels reach class {top} but the model predicts {num_classes} classes: data and model must share "
                f"classes"
            )
    if config.hint_weight > 0:
        if teacher is None:
            raise ConfigError("hint_weight > 0 needs a teacher (FitNets hints match teacher features)")
        for role, m in (("student", student), ("teacher", teacher)):
            if not hasattr(m, "forward_features") or not hasattr(m, "feature_dim"):
                raise ConfigError(f"feature hints need a {role} with forward_features() and feature_dim")
    return use_kd


class _KDStep:
    """One optimiser step of KD / fine-tuning on the items ``idx`` (the ``step`` of :func:`datacomp.training.fit`)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, hint: FeatureHint | None, config: KDConfig,
                 data: tuple[torch.Tensor, torch.Tensor | None], augment: Callable | None,
                 cached: torch.Tensor | None = None) -> None:
        self.student, self.teacher, self.hint, self.config, self.augment = student, teacher, hint, config, augment
        self.x, self.y = data
        self.cached = cached  # the teacher's outputs on every item of x (no augmentation), or None
        params = list(student.parameters()) + (list(hint.parameters()) if hint is not None else [])
        self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(self.x) / min(config.batch_size, len(self.x)))
        self.total_steps = config.epochs * steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
        self.record_every = max(1, self.total_steps // 50)
        self.loss_curve: list[float] = []
        self.last = float("nan")
        self.steps = 0

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(self.x.device)
        xb = self.x[idx]
        yb = self.y[idx] if self.y is not None else None
        if self.augment is not None:
            xb = self.augment(xb)
        loss = self._loss(xb, yb, idx)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.last = float(loss.detach())
        if self.steps % self.record_every == 0:
            self.loss_curve.append(self.last)
        self.steps += 1
        return loss.detach()

    def _loss(self, xb: torch.Tensor, yb: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        student, teacher, hint, config = self.student, self.teacher, self.hint, self.config
        if hint is not None:
            s_feat = student.forward_features(xb)
            logits = student.forward_head(s_feat)
        else:
            logits = student(xb)
        if teacher is None:
            return cross_entropy(logits, yb)
        with torch.no_grad():
            if self.cached is not None:
                t_logits = self.cached[idx]
            elif hint is not None:
                t_feat = teacher.forward_features(xb)
                t_logits = teacher.forward_head(t_feat)
            else:
                t_logits = teacher(xb)
        loss = kd_loss(logits, t_logits, yb, temperature=config.temperature, alpha=config.alpha)
        if hint is not None:
            loss = loss + config.hint_weight * hint(s_feat, t_feat)
        return loss


def train_student(
    student: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor | None],
    *,
    teacher: nn.Module | None = None,
    config: KDConfig | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ledger: CostLedger | None = None,
    phase: str = "kd",
    progress: bool = True,
) -> dict:
    """Train ``student`` on a small set, with KD from ``teacher`` when given (else plain CE).

    Teacher and student see the same augmented batch each step (consistent function matching).

    Args:
        student: Model to train (in place), on the device of the images.
        data: ``(x, y)``: normalised images ``[N, C, H, W]`` and integer labels ``[N]`` or soft labels ``[N, K]``
            (``y`` may be None only with a teacher and ``alpha == 1``).
        teacher: Optional frozen teacher over the same classes.
        config: Hyper-parameters and the batch-order seed (:class:`KDConfig`).
        augment: Optional ``augment(batch) -> batch`` applied to each mini-batch.
        ledger: Optional ``datacomp.cost.CostLedger``; the loop runs in phase ``phase`` with sampled FLOPs.
        phase: Ledger phase name.
        progress: Show a progress bar.

    Returns:
        ``{"steps", "epochs", "samples_seen", "final_loss", "loss_curve", "config", "kd", "hint", "teacher_cache"}``
        (``teacher_cache``: the teacher's outputs were computed once, see the module docstring).

    Raises:
        TrainingDiverged: The loss became NaN or infinite (lower ``lr``).
    """
    config = config or KDConfig()
    x, y = data
    use_kd = _check_inputs(student, x, y, teacher, config)
    hint = FeatureHint(int(student.feature_dim), int(teacher.feature_dim)).to(x.device) \
        if config.hint_weight > 0 else None
    n = len(x)
    if teacher is not None:
        teacher_was_training = teacher.training
        teacher_requires_grad = [p.requires_grad for p in teacher.parameters()]
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    ledger = ledger if ledger is not None else CostLedger()
    try:
        cached = None
        if use_kd and augment is None and hint is None and getattr(teacher, "cache_outputs", False):
            cached = teacher_outputs(teacher, x, min(config.batch_size, n), ledger)
        step = _KDStep(student, teacher if use_kd else None, hint, config, (x, y), augment, cached)
        student.train()
        with ledger.phase(phase, flops="sampled", device=str(x.device)) as ph:
            fit(step, n, min(config.batch_size, n), config.epochs, torch.Generator().manual_seed(config.seed),
                phase=ph, progress=phase if progress else None)
            ph.extra.update(runs=1, samples_seen=config.epochs * n, epochs=config.epochs, num_train_images=n,
                            protocol_kind="fixed-epoch", teacher_forward=use_kd)
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)
            for p, flag in zip(teacher.parameters(), teacher_requires_grad, strict=True):
                p.requires_grad_(flag)
        student.eval()
    return {
        "steps": step.total_steps,
        "epochs": config.epochs,
        "samples_seen": config.epochs * n,
        "final_loss": step.last,
        "loss_curve": step.loss_curve,
        "config": asdict(config),
        "kd": use_kd,
        "hint": hint is not None,
        "teacher_cache": cached is not None,
    }


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: torch.Tensor, batch_size: int, ledger: CostLedger | None = None,
                    phase: str = "teacher-logits") -> torch.Tensor:
    """``teacher(x)`` for all images, ``batch_size`` at a time, in eval mode (ledger phase ``phase``, every FLOP
    counted)."""
    ledger = ledger if ledger is not None else CostLedger()
    was_training = teacher.training
    teacher.eval()
    try:
        with ledger.phase(phase, flops="full", device=str(x.device)) as ph:
            out = torch.cat([teacher(x[start : start + batch_size]) for start in range(0, len(x), batch_size)])
            ph.extra.update(images=int(len(x)))
    finally:
        teacher.train(was_training)
    return out
