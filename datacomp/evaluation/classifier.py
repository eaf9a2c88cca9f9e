"""Training one fresh classifier on a small set under a protocol (:func:`train_classifier`).

The loop itself is :func:`datacomp.training.fit`; this module adds what a protocol asks for: the optimiser and its
schedule, the augmentation pipeline (:func:`datacomp.augment.make_augment`), CutMix and the test checkpoints of
``select="best"`` protocols. :class:`TrainingRun` says where a run draws its randomness and records its cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..augment import cutmix, make_augment
from ..cost import CostLedger
from ..errors import ConfigError
from ..training import batch_backward, fit, micro_batch_size, test_accuracy
from .protocols import Protocol, get_protocol

__all__ = ["TrainingRun", "train_classifier"]


@dataclass
class TrainingRun:
    """Where one training run draws its randomness and records its cost.

    Attributes:
        generator: Draws the batch order, the augmentation seed and CutMix (default: a generator seeded with 0).
        ledger: Receives the run's cost under ``phase`` (default: a fresh ledger nobody reads).
        phase: Cost phase name of the training.
        progress: Show a progress bar over the epochs.
    """

    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    ledger: CostLedger = field(default_factory=CostLedger)
    phase: str = "train-on-subset"
    progress: bool = False


def _make_augment(protocol: Protocol, dataset_name: str, seed: int):
    """The protocol's augmentation, its draws seeded with ``seed`` (reproducible per run)."""
    if protocol.augment == "none":
        return None
    return make_augment(protocol.augment, dataset=dataset_name, generator=torch.Generator().manual_seed(seed),
                        strategy=protocol.augment_strategy)


def _new_optimizer(model: nn.Module, protocol: Protocol, lr: float) -> torch.optim.Optimizer:
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=protocol.momentum,
                               weight_decay=protocol.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=protocol.weight_decay)


class _Schedule:
    """The protocol's optimiser and its learning-rate schedule over the epochs (:meth:`Protocol.epoch_lrs`).

    ``multistep``: one optimiser under ``MultiStepLR``. ``dc-reference``: after the epoch before each decay epoch the
    lr is multiplied by ``gamma`` and a new optimiser is built (fresh momentum buffers), as the DC reference does.
    """

    def __init__(self, model: nn.Module, protocol: Protocol) -> None:
        self.model, self.protocol = model, protocol
        self.opt = _new_optimizer(model, protocol, protocol.lr)
        self.sched = None
        if protocol.schedule == "multistep":
            self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=protocol.decay_epochs(),
                                                              gamma=protocol.gamma)
        self.rebuild_after = {e - 1 for e in protocol.decay_epochs()}
        self.lrs: list[float] = []  # the lr each finished epoch trained with

    def end_epoch(self, epoch: int) -> None:
        """Record the finished epoch's lr and move to the next epoch's."""
        lr = self.opt.param_groups[0]["lr"]
        self.lrs.append(lr)
        if self.sched is not None:
            self.sched.step()
        elif epoch in self.rebuild_after:
            self.opt = _new_optimizer(self.model, self.protocol, lr * self.protocol.gamma)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    protocol: Protocol | str,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: torch.Tensor | None = None,
    dataset_name: str = "",
    run: TrainingRun | None = None,
) -> dict:
    """Train ``model`` on normalised ``x`` with hard (``[N]``) or soft (``[N, K]``) labels ``y`` under ``protocol``.

    ``test``: the normalised test split ``(x, y)`` to score on; ``weights``: per-image loss weights; ``dataset_name``:
    picks the dataset's reference augmentation strategy; ``run``: generator, cost ledger and phase, progress.

    Returns:
        ``{"accuracy": final-or-best test accuracy (if ``test`` given), "final_accuracy", "best_accuracy",
        "history": [(epoch, acc), ...], "steps": optimiser steps, "epochs": epochs trained
        (:attr:`Protocol.train_epochs`), "lr_per_epoch": the learning rate each epoch trained with}``.
    """
    protocol = get_protocol(protocol)
    if len(x) != len(y):
        raise ConfigError(f"x and y lengths differ: {len(x)} vs {len(y)}")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    weights = weights.to(device) if weights is not None else None
    run = run if run is not None else TrainingRun()
    gen, ledger = run.generator, run.ledger
    aug = _make_augment(protocol, dataset_name, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    schedule = _Schedule(model, protocol)
    epochs = protocol.train_epochs
    n = len(x)
    history: list[tuple[int, float]] = []
    micro = micro_batch_size(model, device)

    def step(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(device)
        xb, yb = x[idx], y[idx]
        wb = weights[idx] if weights is not None else None
        if aug is not None:
            xb = aug(xb)
        if protocol.cutmix_prob > 0:
            xb, ya, yb2, lam = cutmix(xb, yb, beta=1.0, prob=protocol.cutmix_prob, generator=gen)
            targets = [(lam, ya), (1 - lam, yb2)]
        else:
            targets = [(1.0, yb)]
        opt = schedule.opt  # dc-reference replaces the optimiser at its decay
        opt.zero_grad(set_to_none=True)
        loss = batch_backward(model, xb, targets, wb, protocol.bf16, micro)
        opt.step()
        return loss

    def after_epoch(epoch: int, loss: torch.Tensor) -> None:
        schedule.end_epoch(epoch)
        if not torch.isfinite(loss):
            return  # fit raises
        if test is not None and protocol.select == "best" and protocol.eval_every and (epoch + 1) % protocol.eval_every == 0:
            with ledger.phase("evaluation"):  # nested phases are exclusive: testing is not training cost
                history.append((epoch + 1, test_accuracy(model, *test)))

    model.train()
    with ledger.phase(run.phase, flops="sampled", device=str(device)) as ph:
        fit(step, n, protocol.batch_size, epochs, gen, ph, after_epoch,
            f"train ({protocol.name})" if run.progress else None)
        # runs / samples_seen add up across entries of the phase (see datacomp.cost.PhaseHandle.extra)
        ph.extra.update(runs=1, samples_seen=n * epochs, epochs=epochs,
                        protocol_kind="fixed-epoch", num_train_images=n, protocol=protocol.name)
    result: dict[str, Any] = {"steps": math.ceil(n / protocol.batch_size) * epochs, "history": history,
                              "epochs": epochs, "lr_per_epoch": schedule.lrs}
    if test is not None:
        final = test_accuracy(model, *test)
        if not history or history[-1][0] != epochs:
            history.append((epochs, final))
        result.update(final_accuracy=final, best_accuracy=max(a for _, a in history))
        result["accuracy"] = result["best_accuracy"] if protocol.select == "best" else final
    return result
