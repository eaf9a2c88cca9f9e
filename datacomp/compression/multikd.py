"""Multi-teacher knowledge distillation: several teachers' softened distributions combined into one KD target.

The student of :func:`~datacomp.compression.kd.train_student` learns from the weighted average of the teachers'
probabilities at the KD temperature ``T`` (the average-of-soft-targets multi-teacher KD of Hinton et al. 2015 and of
You et al., *Learning from Multiple Teacher Networks*, KDD 2017, with fixed weights)::

    p_mix = sum_i w_i * softmax(z_i / T),     sum_i w_i = 1, w_i >= 0

:class:`TeacherEnsemble` is a module whose output is ``T * log(p_mix)``: a logit vector whose softmax at ``T`` is
exactly ``p_mix``, so the unchanged Hinton loss of :func:`~datacomp.compression.losses.kd_loss` computes
``alpha * T^2 * KL(p_mix || p_s^T) + (1 - alpha) * CE``. It is an epoch-independent function of the images, so
without augmentation the KD loop evaluates it once on the small set and reads the cached outputs per batch
(``cache_outputs``); with augmentation the teachers run on every augmented batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datacomp.errors import ConfigError

__all__ = ["TeacherEnsemble", "combine_teacher_logits", "check_teacher_weights", "normalized_weights"]


def check_teacher_weights(weights: Sequence[float] | None, num_teachers: int) -> None:
    """Raise :class:`ConfigError` unless ``weights`` is None or ``num_teachers`` finite numbers >= 0 with a positive
    sum."""
    if weights is None:
        return
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ConfigError(f"teacher_weights must be a list of numbers (one per teacher), got {weights!r}")
    if len(weights) != num_teachers:
        raise ConfigError(f"teacher_weights has {len(weights)} value(s) but there are {num_teachers} teacher(s) in "
                          f"teachers: give one weight per teacher")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"teacher_weights must be finite numbers >= 0, got {w!r} in {list(weights)}")
    if sum(weights) <= 0:
        raise ConfigError(f"teacher_weights must not all be 0, got {list(weights)}")


def normalized_weights(weights: Sequence[float] | None, num_teachers: int) -> list[float]:
    """The teacher weights scaled to sum 1 (equal weights when ``weights`` is None)."""
    check_teacher_weights(weights, num_teachers)
    if weights is None:
        return [1.0 / num_teachers] * num_teachers
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def combine_teacher_logits(logits: Sequence[torch.Tensor] | torch.Tensor, weights: Sequence[float] | torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """``T * log(sum_i w_i softmax(z_i / T))`` for teacher logits ``z_i`` ``[N, K]`` (weights normalised to sum 1).

    The softmax at ``T`` of the result is the weighted average of the teachers' softened distributions.
    Computed in log space (``logsumexp``), so a zero weight drops its teacher exactly.
    """
    stacked = torch.stack(list(logits)) if not torch.is_tensor(logits) else logits
    if stacked.ndim != 3:
        raise ConfigError(f"teacher logits must be [teachers, N, K], got shape {tuple(stacked.shape)}")
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)
    if w.shape != (stacked.shape[0],):
        raise ConfigError(f"{stacked.shape[0]} teachers' logits but {w.numel()} weights")
    log_w = torch.log(w / w.sum()).view(-1, 1, 1)
    return temperature * torch.logsumexp(log_w + F.log_softmax(stacked / temperature, dim=2), dim=0)


class TeacherEnsemble(nn.Module):
    """Teachers over the same classes whose output is :func:`combine_teacher_logits` of theirs (see module docstring).

    Args:
        teachers: Float teacher models (same input shape and classes).
        weights: One weight >= 0 per teacher (None: equal); normalised to sum 1.
        temperature: The KD temperature the combined output is meant for (the KD loop checks it matches).
    """

    cache_outputs = True  # a deterministic function of the images: the KD loop may evaluate it once per image

    def __init__(self, teachers: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 temperature: float = 4.0) -> None:
        super().__init__()
        if len(teachers) == 0:
            raise ConfigError("teachers is empty: give at least one teacher model")
        if not 0 < temperature < math.inf:
            raise ConfigError(f"temperature must be > 0 (and finite), got {temperature}")
        self.teachers = nn.ModuleList(teachers)
        self.temperature = float(temperature)
        self.weight_values = normalized_weights(weights, len(teachers))  # python floats, for records
        self.register_buffer("weights", torch.tensor(self.weight_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [t(x) for t in self.teachers]  # one forward pass per teacher, whole batch each
        if len({tuple(o.shape) for o in outputs}) != 1:
            raise ConfigError(f"teachers predict different numbers of classes {[o.shape[1] for o in outputs]}: all "
                              f"teachers must share classes")
        return combine_teacher_logits(torch.stack(outputs), self.weights, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weights={[round(w, 4) for w in self.weight_values]}"
