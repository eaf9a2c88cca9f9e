"""The one training loop for classifiers, and the pieces every classifier trainer shares.

:func:`fit` owns the epoch / mini-batch skeleton: a seeded permutation per epoch, ``ph.step()`` around each
optimiser step (so the cost ledger can sample FLOPs), a progress bar, a divergence check after every epoch and an
``after_epoch`` hook. What a step *does* (augmentation, loss, optimiser, per-step schedule) is the caller's ``step``
function. Evaluation protocols (:func:`datacomp.evaluation.train_classifier`), proxies for selection, the distillers'
feature pool and knowledge distillation all run through it.

Also here: micro-batched backward (:func:`batch_backward`), soft / weighted cross-entropy and :func:`test_accuracy`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .errors import TrainingDiverged

__all__ = [
    "fit", "MICRO_BATCH", "micro_batch_size", "batch_backward", "forward_logits", "soft_cross_entropy",
    "test_accuracy",
]

StepFn = Callable[[torch.Tensor], torch.Tensor]

# Images per forward/backward inside one optimiser step. On CPU a ConvNet step is bound by memory traffic: 256 CIFAR
# images in micro-batches of 32 train ~2x faster than in one pass. The summed micro-batch gradients equal the batch's
# exactly for networks that treat samples independently; networks with batch norm always run whole batches.
MICRO_BATCH = 32


def fit(step: StepFn, n: int, batch_size: int, epochs: int, generator: torch.Generator, phase=None,
        after_epoch: Callable[[int, torch.Tensor], None] | None = None, progress: str | None = None) -> torch.Tensor:
    """Run ``epochs`` epochs of mini-batch steps over ``n`` items; return the last step's (detached) loss.

    Args:
        step: ``step(idx) -> loss``: one optimiser step on the items ``idx`` (a CPU ``int64`` tensor of at most
            ``batch_size`` indices).
        n: Number of training items.
        batch_size: Items per step (the last step of an epoch takes the rest).
        epochs: Epochs (>= 1).
        generator: Draws each epoch's permutation (``torch.randperm(n, generator=...)``).
        phase: Optional open :class:`datacomp.cost.PhaseHandle`; each step runs inside ``phase.step()``.
        after_epoch: Optional ``after_epoch(epoch, last_loss)`` hook (schedulers, evaluation, records).
        progress: tqdm description, or None for no bar.

    Raises:
        TrainingDiverged: when an epoch ends with a NaN or infinite loss.
    """
    if n < 1 or batch_size < 1 or epochs < 1:
        raise ValueError(f"fit needs n, batch_size and epochs >= 1, got {n}, {batch_size}, {epochs}")
    loss = torch.zeros(())
    for epoch in tqdm(range(epochs), desc=progress, leave=False, disable=progress is None):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if phase is not None:
                with phase.step():
                    loss = step(idx)
            else:
                loss = step(idx)
        if after_epoch is not None:
            after_epoch(epoch, loss)
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(f"{progress or 'training'}: the loss became {float(loss)} at epoch {epoch}; "
                                   "lower the learning rate")
    return loss.detach()


def micro_batch_size(model: nn.Module, device: torch.device) -> int | None:
    """Micro-batch size for ``model`` (``None`` = whole batches: batch norm couples samples, or not on CPU)."""
    if torch.device(device).type != "cpu" or any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                 for m in model.modules()):
        return None
    return MICRO_BATCH


def forward_logits(model: nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Logits in float32; the network itself runs under bfloat16 autocast when ``bf16``."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(x).float()


def _per_sample_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.ndim == 2:
        return -(target * F.log_softmax(logits, 1)).sum(1)
    return F.cross_entropy(logits, target, reduction="none")


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       denominator: float | torch.Tensor | None = None) -> torch.Tensor:
    """Mean (or ``weight``-weighted mean) cross-entropy against hard ``[N]`` or soft ``[N, K]`` targets;
    ``denominator`` overrides the count / weight sum (micro-batches of one batch divide by the whole batch's)."""
    per = _per_sample_cross_entropy(logits, target)
    if weight is not None:
        return (per * weight).sum() / (weight.sum() if denominator is None else denominator)
    return per.sum() / (len(per) if denominator is None else denominator)


def batch_backward(model: nn.Module, xb: torch.Tensor, targets: list[tuple[float, torch.Tensor]],
                   wb: torch.Tensor | None, bf16: bool, micro: int | None) -> torch.Tensor:
    """Backward of ``sum_i coef_i * CE(model(xb), target_i)`` (weighted mean over the batch), in micro-batches.

    Returns the (detached) batch loss.
    """
    denominator = wb.sum() if wb is not None else float(len(xb))
    size = micro or len(xb)
    total = torch.zeros((), device=xb.device)
    for start in range(0, len(xb), size):
        part = slice(start, start + size)
        out = forward_logits(model, xb[part], bf16)
        w = wb[part] if wb is not None else None
        loss = sum(coef * soft_cross_entropy(out, t[part], w, denominator) for coef, t in targets)
        loss.backward()
        total += loss.detach()
    return total


@torch.inference_mode()
def test_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> float:
    """Top-1 accuracy of ``model`` on normalised images ``x``.

    Small channels-last batches: on CPU the forward is bound by memory traffic, and 64-image batches keep the
    activations in cache (CIFAR-10's 10k test images: ~3x faster than batches of 1024; same logits to ~1e-6).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        if xb.ndim == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = model(xb)
        correct += int((logits.argmax(1) == y[i : i + batch_size].to(device)).sum())
    model.train(was_training)
    return correct / len(x)
