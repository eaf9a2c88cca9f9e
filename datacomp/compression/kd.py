"""Knowledge distillation: Hinton KD loss, FitNets-style feature hints, teacher relabelling, and a training loop.

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
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from datacomp.cost import CostLedger

__all__ = [
    "kd_loss",
    "soft_cross_entropy",
    "KDLoss",
    "FeatureHint",
    "DistillConfig",
    "teacher_soft_labels",
    "relabel",
    "train_student",
]


# --------------------------------------------------------------------------------------------------------------------
# Losses


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross-entropy with integer labels ``[N]`` or probability rows ``[N, K]``."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets)
    if targets.shape != logits.shape:
        raise ValueError(f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
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
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (weight of the KD term), got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)} (teacher and student must have the same number of classes)"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        if targets is None:
            raise ValueError(f"targets are required when alpha < 1 (the CE term has weight {1 - alpha:g})")
        loss = loss + (1.0 - alpha) * soft_cross_entropy(student_logits, targets)
    return loss


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss` (same convention)."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), temperature=temperature,
                alpha=alpha)  # validates the arguments once, here
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
            raise ValueError(f"feature dims must be positive, got student={student_dim}, teacher={teacher_dim}")
        self.projector = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        if student_features.shape[1] != self.projector.in_features:
            raise ValueError(
                f"student features have {student_features.shape[1]} dims, projector expects "
                f"{self.projector.in_features}"
            )
        return F.mse_loss(self.projector(student_features), teacher_features.detach())


# --------------------------------------------------------------------------------------------------------------------
# Teacher relabelling


@torch.no_grad()
def teacher_soft_labels(
    teacher: nn.Module, x: torch.Tensor, *, temperature: float = 1.0, batch_size: int = 512
) -> torch.Tensor:
    """Teacher probabilities ``softmax(teacher(x) / T)`` as float32 ``[N, K]`` (x normalised)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    chunks = [teacher(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    probs = torch.cat([F.softmax(logits / temperature, 1).cpu() for logits in chunks])
    teacher.train(was_training)
    return probs.float()


def relabel(teacher: nn.Module, synset: Any, mean: Any, std: Any, *, temperature: float = 1.0) -> Any:
    """Replace a small set's labels with the teacher's soft labels (the DD-Ranking / NCFM soft-label evaluation).

    Args:
        teacher: Trained classifier over the same classes (expects normalised images).
        synset: A :class:`datacomp.synset.SyntheticSet` (hard or soft labels, any space).
        mean: Per-channel mean of the dataset the teacher was trained on.
        std: Per-channel std of that dataset.
        temperature: Softening temperature of the stored probabilities.

    Returns:
        A new SyntheticSet with the same images and ``float32 [N, K]`` soft labels; its metadata records the
        relabelling (``relabel: {"temperature", "teacher"}``).
    """
    from datacomp.synset import SyntheticSet

    if not isinstance(synset, SyntheticSet):
        raise TypeError(f"synset must be a datacomp.synset.SyntheticSet, got {type(synset).__name__}")
    x = synset.normalized_images(mean, std)
    probs = teacher_soft_labels(teacher, x, temperature=temperature)
    if probs.shape[1] != synset.num_classes:
        raise ValueError(
            f"teacher predicts {probs.shape[1]} classes but the set has {synset.num_classes}: teacher and data must "
            f"share classes"
        )
    probs = probs / probs.sum(1, keepdim=True)
    metadata = dict(synset.metadata)
    metadata["relabel"] = {"temperature": temperature, "teacher": getattr(teacher, "spec", None)}
    return SyntheticSet(
        images=synset.images.clone(), labels=probs, metadata=metadata, lr=synset.lr, weights=synset.weights,
        source_indices=synset.source_indices,
    )


# --------------------------------------------------------------------------------------------------------------------
# Training loop


@dataclass
class DistillConfig:
    """Recovery / distillation training on a small set.

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

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1] (weight of the KD term), got {self.alpha}")
        if self.hint_weight < 0:
            raise ValueError(f"hint_weight must be >= 0, got {self.hint_weight}")


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x[:2])  # 2: per-instance norms reject a single 1x1 map
    model.train(was_training)
    return int(out.shape[1])


def train_student(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    teacher: nn.Module | None = None,
    config: DistillConfig | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ledger: Any = None,
    phase: str = "distill",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train ``student`` on a small set, with KD from ``teacher`` when given (else plain CE).

    Teacher and student see the same augmented batch each step (consistent function matching).

    Args:
        student: Model to train (in place), on the device of ``x``.
        x: Normalised images ``[N, C, H, W]``.
        y: Integer labels ``[N]`` or soft labels ``[N, K]``; may be None only with a teacher and ``alpha == 1``.
        teacher: Optional frozen teacher over the same classes.
        config: Hyper-parameters (:class:`DistillConfig`).
        augment: Optional ``augment(batch) -> batch`` applied to each mini-batch.
        ledger: Optional ``datacomp.cost.CostLedger``; the loop runs in phase ``phase`` with sampled FLOPs.
        phase: Ledger phase name.
        seed: Seed of the batch order.
        progress: Show a tqdm bar.

    Returns:
        ``{"steps", "epochs", "samples_seen", "final_loss", "loss_curve", "config", "kd"}``.
    """
    config = config or DistillConfig()
    if not torch.is_tensor(x) or x.ndim != 4 or len(x) == 0:
        raise ValueError(
            f"x must be a non-empty [N, C, H, W] tensor of normalised images, got {getattr(x, 'shape', x)}"
        )
    num_classes = _num_outputs(student, x)
    if teacher is not None:
        teacher_classes = _num_outputs(teacher, x)
        if teacher_classes != num_classes:
            raise ValueError(
                f"teacher predicts {teacher_classes} classes but the student {num_classes}: teacher and student must "
                f"share classes"
            )
    use_kd = teacher is not None and config.alpha > 0
    if y is None:
        if not (use_kd and config.alpha == 1.0):
            raise ValueError("y (labels) is required unless a teacher is given and alpha == 1 (pure KD)")
    else:
        if len(y) != len(x):
            raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
        top = int(y.max()) if y.ndim == 1 else y.shape[1] - 1
        if top >= num_classes:
            raise ValueError(
                f"labels reach class {top} but the model predicts {num_classes} classes: data and model must share "
                f"classes"
            )
    hint: FeatureHint | None = None
    if config.hint_weight > 0:
        if teacher is None:
            raise ValueError("hint_weight > 0 needs a teacher (FitNets hints match teacher features)")
        for role, m in (("student", student), ("teacher", teacher)):
            if not hasattr(m, "forward_features") or not hasattr(m, "feature_dim"):
                raise TypeError(f"feature hints need a {role} with forward_features() and feature_dim")
        hint = FeatureHint(int(student.feature_dim), int(teacher.feature_dim)).to(x.device)

    params = list(student.parameters()) + (list(hint.parameters()) if hint is not None else [])
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    n = len(x)
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    generator = torch.Generator().manual_seed(seed)
    if teacher is not None:
        teacher_was_training = teacher.training
        teacher_requires_grad = [p.requires_grad for p in teacher.parameters()]
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student.train()
    loss_curve: list[float] = []
    record_every = max(1, total_steps // 50)
    last = float("nan")
    step = 0
    bar = tqdm(total=total_steps, desc=phase, disable=not progress, leave=False)
    ledger = ledger if ledger is not None else CostLedger()
    with ledger.phase(phase, flops="sampled", device=str(x.device)) as ph:
        for _epoch in range(config.epochs):
            order = torch.randperm(n, generator=generator).to(x.device)
            for start in range(0, n, batch):
                with ph.step():
                    idx = order[start : start + batch]
                    xb = x[idx]
                    yb = y[idx] if y is not None else None
                    if augment is not None:
                        xb = augment(xb)
                    if hint is not None:
                        s_feat = student.forward_features(xb)
                        logits = student.forward_head(s_feat)
                    else:
                        logits = student(xb)
                    if use_kd:
                        with torch.no_grad():
                            if hint is not None:
                                t_feat = teacher.forward_features(xb)
                                t_logits = teacher.forward_head(t_feat)
                            else:
                                t_logits = teacher(xb)
                        loss = kd_loss(logits, t_logits, yb, temperature=config.temperature, alpha=config.alpha)
                        if hint is not None:
                            loss = loss + config.hint_weight * hint(s_feat, t_feat)
                    else:
                        loss = soft_cross_entropy(logits, yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                last = float(loss.detach())
                if step % record_every == 0:
                    loss_curve.append(last)
                step += 1
                bar.update(1)
        ph.extra.update(runs=1, samples_seen=config.epochs * n, epochs=config.epochs, num_train_images=n,
                        protocol_kind="fixed-epoch", teacher_forward=use_kd)
    bar.close()
    if teacher is not None:
        teacher.train(teacher_was_training)
        for p, flag in zip(teacher.parameters(), teacher_requires_grad, strict=True):
            p.requires_grad_(flag)
    student.eval()
    if not math.isfinite(last):
        raise FloatingPointError(f"{phase}: training diverged (loss {last}); lower lr (now {config.lr})")
    return {
        "steps": total_steps,
        "epochs": config.epochs,
        "samples_seen": config.epochs * n,
        "final_loss": last,
        "loss_curve": loss_curve,
        "config": asdict(config),
        "kd": use_kd,
        "hint": hint is not None,
    }
