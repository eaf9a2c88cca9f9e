"""Train a small proxy model for a few epochs and record the training dynamics that score-based selectors use.

Protocol (recorded in ``ProxyDynamics.protocol``): for each of ``runs`` independent runs (seed ``seed + run``),
build a fresh model with ``model_factory()``, train it with SGD (momentum 0.9, Nesterov, weight decay 5e-4,
cosine schedule over all steps, as DeepCore's ``EarlyTrain``) on the given tensors, and record per epoch

* ``record="minibatch"`` (default; Toneva et al. / DeepCore forgetting protocol, no extra compute): the softmax of
  every item in the training minibatch where it was seen, *before* that step's update;
* ``record="eval"`` (Paul et al. EL2N protocol): the softmax of every item from an extra inference pass at the end
  of each epoch.

After training, one inference pass records final probabilities and, when the model has ``forward_features`` /
``forward_head`` (every ``datacomp.models`` model), the penultimate embeddings used by GraNd.
Costs go into a ``datacomp.cost.CostLedger``: phase ``"proxy-training"`` (one step per optimiser step, FLOPs
sampled over the first steps, ``extra`` = runs and samples seen) and ``"proxy-scoring"`` (the inference passes,
FLOPs counted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError
from datacomp.training import fit

from . import scores as score_fns
from .settings import with_overrides

__all__ = ["ProxyDynamics", "ProxySettings", "train_proxy"]


@dataclass
class ProxyDynamics:
    """Training dynamics of ``runs`` proxy runs over ``n`` items.

    Attributes:
        probs: ``[runs, epochs, n, C]`` float32 per-epoch probabilities (see the module docstring for ``record``).
        final_probs: ``[runs, n, C]`` float32 probabilities of the trained proxies.
        embeddings: ``[runs, n, D]`` float32 penultimate features of the trained proxies, or ``None``.
        labels: ``[n]`` int64 labels.
        protocol: how the dynamics were produced (model, epochs, runs, optimiser, record mode, seed, samples seen).
        ledger: the ``CostLedger`` holding the proxy's cost (phases ``proxy-training`` and ``proxy-scoring``).
    """

    probs: np.ndarray
    final_probs: np.ndarray
    embeddings: np.ndarray | None
    labels: np.ndarray
    protocol: dict = field(default_factory=dict)
    ledger: object | None = None

    @property
    def correct(self) -> np.ndarray:
        """``[runs, epochs, n]`` bool: argmax of the recorded probabilities equals the label."""
        return self.probs.argmax(axis=-1) == self.labels[None, None, :]

    def forgetting(self, never_learned: str = "max") -> np.ndarray:
        """Forgetting events per item, averaged over runs."""
        return score_fns.forgetting_scores(self.correct, never_learned=never_learned)

    def el2n(self, epoch: int | None = None) -> np.ndarray:
        """EL2N at recorded ``epoch`` (default: the last), averaged over runs."""
        e = self.probs.shape[1] - 1 if epoch is None else int(epoch)
        if not -self.probs.shape[1] <= e < self.probs.shape[1]:
            raise ConfigError(f"epoch must index one of the {self.probs.shape[1]} recorded epochs, got {epoch}")
        return score_fns.el2n_scores(self.probs[:, e], self.labels)

    def grand(self, include_bias: bool = True) -> np.ndarray:
        """GraNd of the trained proxies (closed-form last-layer gradient norm), averaged over runs."""
        if self.embeddings is None:
            raise ConfigError("grand needs penultimate embeddings: the proxy model must define forward_features "
                             "and forward_head")
        return score_fns.grand_scores(self.final_probs, self.labels, self.embeddings, include_bias=include_bias)

    def uncertainty(self, kind: str = "entropy") -> np.ndarray:
        """Uncertainty of the trained proxies (higher = more uncertain), averaged over runs."""
        return score_fns.uncertainty_scores(self.final_probs, kind=kind)


@torch.no_grad()
def _inference(model: nn.Module, x: torch.Tensor, batch_size: int, device: str, want_features: bool
               ) -> tuple[np.ndarray, np.ndarray | None]:
    model.eval()
    has_split = hasattr(model, "forward_features") and hasattr(model, "forward_head")
    probs, feats = [], []
    for lo in range(0, x.shape[0], batch_size):
        xb = x[lo : lo + batch_size].to(device)
        if has_split:
            emb = model.forward_features(xb)
            logits = model.forward_head(emb)
            if want_features:
                feats.append(emb.flatten(1).float().cpu().numpy())
        else:
            logits = model(xb)
        probs.append(F.softmax(logits.float(), dim=-1).cpu().numpy())
    model.train()
    return np.concatenate(probs), (np.concatenate(feats) if feats else None)


@dataclass(frozen=True)
class ProxySettings:
    """How proxies are trained (DeepCore's ``EarlyTrain`` defaults).

    Attributes:
        epochs: training epochs per run (>= 1).
        runs: independent runs (EL2N/GraNd average over them).
        batch_size, lr, momentum, weight_decay: SGD settings (Nesterov when momentum > 0, cosine schedule).
        record: ``"minibatch"`` or ``"eval"`` (module docstring).
        seed: base seed (run r uses ``seed + r``).
        bf16: run the proxy's training forward/backward under bfloat16 autocast (about 2x faster on hardware with
            native bf16; recorded in the protocol). Scores are computed from float32 logits either way.
    """

    epochs: int = 10
    runs: int = 1
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    record: str = "minibatch"
    seed: int = 0
    bf16: bool = False

    def check(self) -> None:
        if self.record not in ("minibatch", "eval"):
            raise ConfigError(f"record must be 'minibatch' or 'eval', got {self.record!r}")
        if self.epochs < 1 or self.runs < 1:
            raise ConfigError(f"epochs and runs must be >= 1, got epochs={self.epochs}, runs={self.runs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def train_proxy(model_factory: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor,
                settings: ProxySettings | None = None, *, device: str = "cpu", ledger: CostLedger | None = None,
                progress: bool = True, **overrides: Any) -> ProxyDynamics:
    """Train ``settings.runs`` proxies for ``settings.epochs`` epochs on ``(x, y)`` and record their dynamics.

    Args:
        model_factory: returns a fresh ``nn.Module`` mapping ``x`` batches to logits (called once per run, after
            seeding torch with ``seed + run``).
        x: ``[n, ...]`` float inputs, already in the form the model expects (e.g. normalised images, embeddings).
        y: ``[n]`` integer labels in ``[0, C)``.
        settings: :class:`ProxySettings` (default: its defaults).
        device: torch device.
        ledger: optional ``CostLedger`` that also receives the proxy phases (the dynamics always carry their own
            ledger holding only the proxy's cost).
        progress: show tqdm bars.
        **overrides: :class:`ProxySettings` fields replacing those of ``settings`` (``epochs=2, seed=1``).

    Returns:
        :class:`ProxyDynamics`. Each run's epochs go through :func:`datacomp.training.fit`.
    """
    s = with_overrides(ProxySettings, settings, overrides, "train_proxy")
    s.check()
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(y).long().cpu()
    if xt.shape[0] != yt.shape[0] or yt.ndim != 1:
        raise DataError(f"y must be 1-D with one label per row of x ({xt.shape[0]}), got shape {tuple(yt.shape)}")
    if not torch.isfinite(xt).all():
        raise DataError("x contains NaN or inf values")
    n = xt.shape[0]
    user_ledger, ledger = ledger, CostLedger()  # own ledger: the dynamics carry only the proxy's cost
    rec = _Recorder(s, n)
    shared = _Shared(model_factory, xt, yt, s, device, ledger, rec, progress)
    model_name = None
    t0 = time.perf_counter()
    for run in range(s.runs):
        model = _train_run(shared, run)
        model_name = type(model).__name__
        with ledger.phase("proxy-scoring", flops="full", device=device):
            fp, emb = _inference(model, xt, 1024, device, want_features=True)
        rec.final(run, fp, emb)
    protocol = {
        "model": model_name, "epochs": s.epochs, "runs": s.runs, "batch_size": s.batch_size, "lr": s.lr,
        "momentum": s.momentum, "nesterov": s.momentum > 0, "weight_decay": s.weight_decay, "schedule": "cosine",
        "optimizer": "sgd", "record": s.record, "bf16": s.bf16, "seed": s.seed, "n_train": n,
        "samples_seen": s.runs * s.epochs * n,
        "inference_passes": s.runs * (1 + (s.epochs if s.record == "eval" else 0)),
        "seconds": time.perf_counter() - t0, "device": str(device),
    }
    if user_ledger is not None:
        user_ledger.merge(ledger)
    return ProxyDynamics(rec.probs, rec.final_probs, rec.embeddings, yt.numpy().astype(np.int64), protocol, ledger)


class _Recorder:
    """The arrays the runs fill: per-epoch probabilities, final probabilities and embeddings."""

    def __init__(self, s: ProxySettings, n: int) -> None:
        self.s, self.n = s, n
        self.probs = self.final_probs = self.embeddings = None

    def minibatch(self, run: int, epoch: int, idx: torch.Tensor, logits: torch.Tensor) -> None:
        if self.probs is None:
            self.probs = np.zeros((self.s.runs, self.s.epochs, self.n, logits.shape[1]), dtype=np.float32)
        if self.s.record == "minibatch":
            self.probs[run, epoch, idx.numpy()] = F.softmax(logits.detach().float(), -1).cpu().numpy()

    def final(self, run: int, fp: np.ndarray, emb: np.ndarray | None) -> None:
        if self.final_probs is None:
            self.final_probs = np.zeros((self.s.runs,) + fp.shape, dtype=np.float32)
            self.embeddings = np.zeros((self.s.runs,) + emb.shape, dtype=np.float32) if emb is not None else None
        self.final_probs[run] = fp
        if self.embeddings is not None:
            self.embeddings[run] = emb


@dataclass
class _Shared:
    """What every proxy run of one :func:`train_proxy` call uses."""

    model_factory: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    settings: ProxySettings
    device: str
    ledger: CostLedger
    rec: _Recorder
    progress: bool


def _train_run(shared: _Shared, run: int) -> nn.Module:
    """One proxy run: SGD (Nesterov) with a per-step cosine schedule, through :func:`datacomp.training.fit`."""
    xt, yt, s, device, ledger, rec = shared.x, shared.y, shared.settings, shared.device, shared.ledger, shared.rec
    n = xt.shape[0]
    torch.manual_seed(s.seed + run)
    gen = torch.Generator().manual_seed(s.seed + run)
    model = shared.model_factory().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                          nesterov=s.momentum > 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs * math.ceil(n / s.batch_size))
    epoch = [0]

    def step(idx: torch.Tensor) -> torch.Tensor:
        xb = xt[idx].to(device)
        with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=s.bf16):
            logits = model(xb)
        logits = logits.float()
        loss = F.cross_entropy(logits, yt[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        rec.minibatch(run, epoch[0], idx, logits)
        return loss.detach()

    def after_epoch(e: int, loss: torch.Tensor) -> None:
        phase.extra["samples_seen"] = phase.extra.get("samples_seen", 0) + n
        if s.record == "eval":
            with ledger.phase("proxy-scoring", flops="full", device=device):
                rec.probs[run, e] = _inference(model, xt, 1024, device, want_features=False)[0]
        epoch[0] = e + 1

    with ledger.phase("proxy-training", flops="sampled", device=device) as phase:
        phase.extra["runs"] = 1
        fit(step, n, s.batch_size, s.epochs, gen, phase=phase, after_epoch=after_epoch,
            progress=f"proxy run {run}" if shared.progress else None)
    return model
