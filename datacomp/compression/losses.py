"""Knowledge-distillation losses: Hinton KD, FitNets-style feature hints, and the hard/soft-label cross-entropy.

The pinned convention (mdistiller/timm style; note torchdistill's ``KDLoss`` puts ``alpha`` on the CE term instead)::

    loss = alpha * T**2 * KL( softmax(t / T) || softmax(s / T) ) + (1 - alpha) * CE(s, y)

- ``alpha`` weights the **soft (distillation) term**, ``1 - alpha`` the hard-label cross-entropy;
- KL is summed over classes and averaged over the batch (``reduction="batchmean"``; ``"mean"`` would also divide by
  the number of classes);
- the ``T**2`` factor keeps the soft-target gradient scale independent of ``T`` (Hinton et al. 2015);
- ``y`` may be integer labels ``[N]`` or probability rows ``[N, K]`` (soft labels; CE is then ``-sum y log p``).

Feature distillation (FitNets, Romero et al. 2015) adds ``hint_weight * MSE(W f_s, f_t)`` between the student's
``forward_features`` embedding mapped by a learned linear projector ``W`` and the teacher's embedding; it runs in one
stage together with the KD loss (mdistiller's variant), the projector being trained with the student.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from datacomp.errors import ConfigError

__all__ = ["kd_loss", "cross_entropy", "KDLoss", "FeatureHint", "check_kd_weights"]


def check_kd_weights(temperature: float, alpha: float) -> None:
    """Raise :class:`~datacomp.errors.ConfigError` unless ``temperature > 0`` (finite) and ``0 <= alpha <= 1``."""
    if not 0 < _number(temperature, "temperature") < math.inf:
        raise ConfigError(f"temperature must be > 0 (and finite), got {temperature}")
    if not 0.0 <= _number(alpha, "alpha") <= 1.0:
        raise ConfigError(f"alpha must lie in [0, 1] (weight of the KD term), got {alpha}")


def _number(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None



def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross-entropy with integer labels ``[N]`` or probability rows ``[N, K]``.

    The hard-label case is ``F.cross_entropy``'s own mean, as in the KD references; it differs from
    :func:`datacomp.training.soft_cross_entropy` (per-sample sum divided by N, for weighted and micro-batched
    evaluation training) in the last bits of float rounding, so the two are kept apart to keep results reproducible.
    """
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets)
    if targets.shape != logits.shape:
        raise ConfigError(f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton KD: ``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, targets)`` (batch mean).

    Args:
        student_logits: ``[N, K]``.
        teacher_logits: ``[N, K]`` (gradients are not propagated into the teacher).
        targets: Integer labels ``[N]`` or soft labels ``[N, K]``; required unless ``alpha == 1``.
        temperature: Softening temperature ``T > 0``.
        alpha: Weight of the distillation term in ``[0, 1]``; ``1 - alpha`` weights the hard-label CE.

    Returns:
        Scalar loss.
    """
    check_kd_weights(temperature, alpha)
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)} (teacher and student must have the same number of classes)"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        if targets is None:
            raise ConfigError(f"targets are required when alpha < 1 (the CE term has weight {1 - alpha:g})")
        loss = loss + (1.0 - alpha) * cross_entropy(student_logits, targets)
    return loss


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss` (same convention)."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        check_kd_weights(temperature, alpha)
        self.temperature = temperature
        self.alpha = alpha

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, targets, temperature=self.temperature, alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


class FeatureHint(nn.Module):
    """FitNets hint: ``MSE(projector(student_features), teacher_features)`` with a learned linear projector.

    Args:
        student_dim: Student embedding size (``student.feature_dim``).
        teacher_dim: Teacher embedding size (``teacher.feature_dim``).
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise ConfigError(f"feature dims must be positive, got student={student_dim}, teacher={teacher_dim}")
        self.projector = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        if student_features.shape[1] != self.projector.in_features:
            raise ConfigError(
                f"student features have {student_features.shape[1]} dims, projector expects "
                f"{self.projector.in_features}"
            )
        return F.mse_loss(self.projector(student_features), teacher_features.detach())
