"""Evaluation of small training sets exactly as the field's papers do: train fresh models, test on the real test split.

Protocols are named presets (:data:`PROTOCOLS`), each documented with its source. Every accuracy carries the protocol
that produced it. DD-Ranking-style honesty metrics (improvement over a random real subset of the same size, hard-label
recovery against full-data training) are computed with the same protocol.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .cost import CostLedger
from .data import ImageDataset, load_dataset
from .models import create_model
from .synset import SyntheticSet, base_metadata
from .training import MICRO_BATCH, batch_backward, fit, micro_batch_size, test_accuracy

__all__ = [
    "batch_backward",
    "micro_batch_size",
    "Protocol",
    "PROTOCOLS",
    "get_protocol",
    "EvalResult",
    "train_classifier",
    "test_accuracy",
    "evaluate_synset",
    "evaluate_models",
    "random_subset",
    "evaluate_random_baseline",
    "evaluate_full_data",
    "improvement_over_random",
    "hard_label_recovery",
]


@dataclass(frozen=True)
class Protocol:
    """How a fresh model is trained on a small set and scored.

    Attributes:
        name: Preset name.
        optimizer: ``sgd`` or ``adamw``.
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: Weight decay (AdamW: decoupled).
        epochs: Training epochs (fixed-epoch protocol).
        batch_size: Mini-batch size.
        milestones: Fractions of ``epochs`` at which the lr is multiplied by ``gamma``.
        gamma: LR decay factor.
        augment: ``none``, ``dsa`` (per-sample DSA, mode S) or ``diffaug`` (NCFM's per-sample DiffAug).
        augment_strategy: Strategy string for the augmentation (``None`` = dataset default).
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
    augment: str = "none"
    augment_strategy: str | None = None
    cutmix_prob: float = 0.0
    select: str = "final"
    eval_every: int = 0
    bf16: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"protocol optimizer must be 'sgd' or 'adamw', got '{self.optimizer}'")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"protocol needs epochs >= 1, batch_size >= 1 and lr > 0 (got {self.epochs}, "
                             f"{self.batch_size}, {self.lr})")
        if self.augment not in ("none", "dsa", "diffaug"):
            raise ValueError(f"protocol augment must be none, dsa or diffaug, got '{self.augment}'")
        if self.select not in ("final", "best"):
            raise ValueError(f"protocol select must be 'final' or 'best', got '{self.select}'")
        if not 0 <= self.cutmix_prob <= 1:
            raise ValueError(f"cutmix_prob must be in [0, 1], got {self.cutmix_prob}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol(
            "dm", "sgd", 0.01, epochs=1000, batch_size=256, milestones=(0.5,), gamma=0.1, augment="dsa",
            source="DC/DSA/DM reference evaluate_synset (VICO-UoE/DatasetCondensation): SGD 0.01 momentum 0.9 "
                   "wd 5e-4, 1000 epochs, lr x0.1 at half, batch 256, DSA, final-epoch accuracy",
        ),
        Protocol(
            "ncfm", "adamw", 0.001, epochs=2000, batch_size=128, weight_decay=0.01,
            milestones=(0.2, 0.4, 0.6, 0.8), gamma=0.5, augment="diffaug",
            augment_strategy="color_crop_flip_scale_rotate", cutmix_prob=0.5, select="best", eval_every=100,
            source="NCFM evaluation script (gszfwsb/NCFM): AdamW 1e-3 (wd 0.01), batch 128, 2000 epochs, MultiStep "
                   "x0.5 at 20/40/60/80%, DiffAug + CutMix 0.5, best test accuracy over checkpoints every 100 epochs",
        ),
        Protocol(
            "quick", "sgd", 0.01, epochs=300, batch_size=256, milestones=(0.5,), gamma=0.1, augment="none",
            source="DC reference without augmentation (300 epochs, SGD 0.01 momentum 0.9 wd 5e-4, lr x0.1 at half, "
                   "batch 256, final-epoch accuracy); CPU-sized",
        ),
        Protocol(
            "quick-bf16", "sgd", 0.01, epochs=300, batch_size=256, milestones=(0.5,), gamma=0.1, augment="none",
            bf16=True,
            source="the 'quick' protocol with training under bfloat16 autocast: ~2x faster on CPUs with native bf16 "
                   "(AVX-512-BF16/AMX)",
        ),
        Protocol(
            "smoke", "sgd", 0.01, epochs=30, batch_size=256, milestones=(0.5,), gamma=0.1, augment="none",
            source="the 'quick' protocol cut to 30 epochs: for tests and smoke runs only, not for reporting",
        ),
    ]
}


def get_protocol(name: str | Protocol, **overrides: Any) -> Protocol:
    """A preset by name, optionally with fields overridden (the name then gets a ``+`` suffix)."""
    if isinstance(name, Protocol):
        base = name
    elif name not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{name}'; choose one of {', '.join(PROTOCOLS)}")
    else:
        base = PROTOCOLS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return base
    bad = set(overrides) - {f.name for f in dataclasses.fields(Protocol)}
    if bad:
        raise ValueError(f"unknown protocol field(s) {sorted(bad)}")
    changed = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return dataclasses.replace(base, name=f"{base.name}+{changed}", **overrides)


@dataclass
class EvalResult:
    """Accuracies of fresh models trained on one small set."""

    protocol: Protocol
    model: str
    dataset: str
    accuracies: list[float]
    num_train_images: int
    cost: CostLedger = field(default_factory=CostLedger)

    @property
    def mean(self) -> float:
        return float(statistics.fmean(self.accuracies))

    @property
    def std(self) -> float:
        return float(statistics.pstdev(self.accuracies)) if len(self.accuracies) > 1 else 0.0

    def summary(self) -> str:
        return (f"{100 * self.mean:.2f} +- {100 * self.std:.2f} % ({len(self.accuracies)} runs, model {self.model}, "
                f"protocol '{self.protocol.name}')")

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol.name,
            "protocol_config": self.protocol.to_dict(),
            "model": self.model,
            "dataset": self.dataset,
            "accuracies": list(self.accuracies),
            "mean": self.mean,
            "std": self.std,
            "num_train_images": self.num_train_images,
            "epochs": self.protocol.epochs,
            "cost": self.cost.to_dict(),
        }


# --------------------------------------------------------------------------------------------------------------------
# Training


def _make_augment(protocol: Protocol, dataset_name: str, seed: int):
    if protocol.augment == "none":
        return None
    from . import augment

    gen = torch.Generator().manual_seed(seed)  # augmentation draws are reproducible per run
    if protocol.augment == "dsa":
        strategy = protocol.augment_strategy or augment.dsa_strategy_for(dataset_name)
        return augment.DSA(strategy, generator=gen)
    strategy = protocol.augment_strategy or "color_crop_flip_scale_rotate"
    return augment.DiffAug(strategy, batch_shared=False, generator=gen)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    protocol: Protocol | str,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    weights: torch.Tensor | None = None,
    dataset_name: str = "",
    generator: torch.Generator | None = None,
    ledger: CostLedger | None = None,
    phase: str = "train-on-subset",
    progress: bool = False,
) -> dict:
    """Train ``model`` on normalised ``x`` with hard (``[N]``) or soft (``[N, K]``) labels ``y`` under ``protocol``.

    Returns:
        ``{"accuracy": final-or-best test accuracy (if ``test`` given), "final_accuracy", "best_accuracy",
        "history": [(epoch, acc), ...], "steps": optimiser steps}``.
    """
    from .augment import cutmix

    protocol = get_protocol(protocol)
    if len(x) != len(y):
        raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    weights = weights.to(device) if weights is not None else None
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    aug = _make_augment(protocol, dataset_name, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    if protocol.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                              weight_decay=protocol.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
    milestones = sorted({max(1, int(round(m * protocol.epochs))) for m in protocol.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=protocol.gamma)
    n = len(x)
    steps_per_epoch = math.ceil(n / protocol.batch_size)
    ledger = ledger if ledger is not None else CostLedger()
    history: list[tuple[int, float]] = []
    micro = micro_batch_size(model, device)
    state = {"loss": torch.zeros(())}

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
        opt.zero_grad(set_to_none=True)
        loss = batch_backward(model, xb, targets, wb, protocol.bf16, micro)
        opt.step()
        return loss

    def after_epoch(epoch: int, loss: torch.Tensor) -> None:
        sched.step()
        if not torch.isfinite(loss):
            return  # fit raises
        if test is not None and protocol.select == "best" and protocol.eval_every and (epoch + 1) % protocol.eval_every == 0:
            with ledger.phase("evaluation"):  # nested phases are exclusive: testing is not training cost
                history.append((epoch + 1, test_accuracy(model, *test)))

    model.train()
    with ledger.phase(phase, flops="sampled", device=str(device)) as ph:
        fit(step, n, protocol.batch_size, protocol.epochs, gen, ph, after_epoch,
            f"train ({protocol.name})" if progress else None)
        # runs / samples_seen add up across entries of the phase (see datacomp.cost.PhaseHandle.extra)
        ph.extra.update(runs=1, samples_seen=n * protocol.epochs, epochs=protocol.epochs,
                        protocol_kind="fixed-epoch", num_train_images=n, protocol=protocol.name)
    result: dict[str, Any] = {"steps": steps_per_epoch * protocol.epochs, "history": history}
    if test is not None:
        final = test_accuracy(model, *test)
        if not history or history[-1][0] != protocol.epochs:
            history.append((protocol.epochs, final))
        result.update(final_accuracy=final, best_accuracy=max(a for _, a in history))
        result["accuracy"] = result["best_accuracy"] if protocol.select == "best" else final
    return result


# --------------------------------------------------------------------------------------------------------------------
# Evaluating sets


def _resolve_dataset(dataset: ImageDataset | str, data_root: str | None = None) -> ImageDataset:
    return load_dataset(dataset, root=data_root) if isinstance(dataset, str) else dataset


def evaluate_synset(
    synset: SyntheticSet,
    dataset: ImageDataset | str,
    model: str = "convnet-3-in",
    protocol: Protocol | str = "quick",
    runs: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_root: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Train ``runs`` fresh ``model``s on ``synset`` and test each on the real test split.

    Args:
        synset: The small training set (pixel or normalised space; multi-formation decoded automatically).
        dataset: The real dataset (or its registry name) providing the test split and normalisation.
        model: Registered model name.
        protocol: A :data:`PROTOCOLS` name or a :class:`Protocol`.
        runs: Number of fresh models (different seeds).
        seed: Base seed; run r uses ``seed + r``.
        device: Torch device.

    Returns:
        An :class:`EvalResult` with per-run accuracies and the training cost ledger.
    """
    ds = _resolve_dataset(dataset, data_root)
    protocol = get_protocol(protocol)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if synset.num_classes != ds.num_classes:
        raise ValueError(f"synset has {synset.num_classes} classes but dataset '{ds.name}' has {ds.num_classes}")
    if tuple(synset.images.shape[1:]) != (ds.in_channels, *ds.image_size):
        raise ValueError(f"synset images are {tuple(synset.images.shape[1:])} but dataset '{ds.name}' images are "
                         f"{(ds.in_channels, *ds.image_size)}")
    px, labels = synset.training_tensors()
    x = ds.normalize(px)
    weights = synset.weights if synset.weights is not None and synset.weights.ndim == 1 and len(synset.weights) == len(synset) else None
    if weights is not None and synset.factor > 1:
        weights = weights.repeat_interleave(synset.factor**2, 0)
    test = (ds.normalize(ds.test_x), ds.test_y)
    ledger = CostLedger()
    accs = []
    bar = tqdm(range(runs), desc=f"eval {model} [{protocol.name}]", disable=not progress)
    for r in bar:
        torch.manual_seed(seed + r)  # model initialisation uses the global RNG
        net = create_model(model, ds.in_channels, ds.num_classes, ds.image_size).to(device)
        out = train_classifier(net, x, labels, protocol, test=test, weights=weights, dataset_name=ds.name,
                               generator=torch.Generator().manual_seed(10_000 + seed + r), ledger=ledger)
        accs.append(out["accuracy"])
        bar.set_postfix(acc=f"{100 * out['accuracy']:.2f}%")
    return EvalResult(protocol, model, ds.name, accs, len(x), ledger)


def evaluate_models(synset: SyntheticSet, dataset: ImageDataset | str, models: Sequence[str], **kwargs) -> dict[str, EvalResult]:
    """Cross-architecture evaluation: :func:`evaluate_synset` for each model name."""
    return {m: evaluate_synset(synset, dataset, model=m, **kwargs) for m in models}


def random_subset(
    dataset: ImageDataset, ipc: int | Sequence[int], seed: int = 0, method: str = "random"
) -> SyntheticSet:
    """A SyntheticSet of ``ipc`` random real training images per class (the baseline every method is compared to).

    Args:
        dataset: The real dataset.
        ipc: Images per class, or a list with one count per class.
        seed: Seed of the draw.
    """
    counts = [ipc] * dataset.num_classes if isinstance(ipc, int) else list(ipc)
    if len(counts) != dataset.num_classes:
        raise ValueError(f"ipc list needs {dataset.num_classes} entries, got {len(counts)}")
    smallest = int(dataset.class_counts.min())
    if min(counts) < 1 or max(counts) > smallest:
        raise ValueError(f"ipc must be between 1 and {smallest} (the smallest class of '{dataset.name}'), got "
                         f"{ipc if isinstance(ipc, int) else counts}")
    store = dataset.class_store(normalized=False)
    gen = torch.Generator().manual_seed(seed)
    pos = torch.cat([store.positions(c, k, gen) for c, k in enumerate(counts)])
    meta = base_metadata(
        dataset=dataset.name, space="pixel", num_classes=dataset.num_classes, method=method,
        ipc=counts[0] if len(set(counts)) == 1 else None, ipc_per_class=counts, seed=seed,
        mean=list(dataset.mean), std=list(dataset.std), config={"method": method, "ipc": ipc, "seed": seed},
    )
    return SyntheticSet(store.x[pos].clone(), store.y[pos].clone(), meta, source_indices=store.source_index[pos].clone())


def evaluate_random_baseline(
    dataset: ImageDataset | str, per_class: Sequence[int] | int, seed: int = 0, **eval_kwargs
) -> EvalResult:
    """Accuracy of a random real subset with the given per-class counts, evaluated like the set it is compared to."""
    ds = _resolve_dataset(dataset)
    return evaluate_synset(random_subset(ds, per_class, seed=seed), ds, seed=seed, **eval_kwargs)


def evaluate_full_data(
    dataset: ImageDataset | str, model: str = "convnet-3-in", protocol: Protocol | str = "quick", runs: int = 1,
    seed: int = 0, device: str | torch.device = "cpu", epochs: int | None = None, progress: bool = True,
) -> EvalResult:
    """Train on the whole training split (the upper reference for hard-label recovery), phase ``train-on-full``."""
    ds = _resolve_dataset(dataset)
    protocol = get_protocol(protocol, epochs=epochs)
    x, y = ds.normalize(ds.train_x), ds.train_y
    test = (ds.normalize(ds.test_x), ds.test_y)
    ledger = CostLedger()
    accs = []
    for r in range(runs):
        torch.manual_seed(seed + r)
        net = create_model(model, ds.in_channels, ds.num_classes, ds.image_size).to(device)
        out = train_classifier(net, x, y, protocol, test=test, dataset_name=ds.name, ledger=ledger,
                               generator=torch.Generator().manual_seed(10_000 + seed + r), phase="train-on-full",
                               progress=progress)
        accs.append(out["accuracy"])
    return EvalResult(protocol, model, ds.name, accs, len(x), ledger)


def improvement_over_random(syn: EvalResult, random: EvalResult) -> float:
    """DD-Ranking IOR: mean accuracy of the set minus that of a random real subset of the same size (same protocol)."""
    if syn.protocol.name != random.protocol.name:
        raise ValueError(f"IOR needs one protocol, got '{syn.protocol.name}' and '{random.protocol.name}'")
    return syn.mean - random.mean


def hard_label_recovery(full: EvalResult, syn: EvalResult) -> float:
    """DD-Ranking HLR: full-data accuracy minus the set's accuracy (lower is better)."""
    return full.mean - syn.mean
