"""Evaluating a small set: train ``runs`` fresh models on it and score each on the real test split."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..cost import CostLedger
from ..data import ImageDataset, load_dataset
from ..errors import ConfigError, DataError
from ..models import create_model
from ..synset import SyntheticSet
from .classifier import train_classifier
from .protocols import Protocol, get_protocol
from .results import EvalResult

__all__ = ["evaluate_synset", "evaluate_models", "resolve_dataset", "train_runs"]


def resolve_dataset(dataset: ImageDataset | str, data_root: str | None = None) -> ImageDataset:
    """``dataset`` itself, or the dataset of that registry name."""
    return load_dataset(dataset, root=data_root) if isinstance(dataset, str) else dataset


def _check_compatible(synset: SyntheticSet, ds: ImageDataset) -> None:
    if synset.num_classes != ds.num_classes:
        raise DataError(f"synset has {synset.num_classes} classes but dataset '{ds.name}' has {ds.num_classes}")
    if tuple(synset.images.shape[1:]) != (ds.in_channels, *ds.image_size):
        raise DataError(f"synset images are {tuple(synset.images.shape[1:])} but dataset '{ds.name}' images are "
                        f"{(ds.in_channels, *ds.image_size)}")


def _training_weights(synset: SyntheticSet) -> torch.Tensor | None:
    """Per-image weights as the decoded training images use them (``None`` when the set has none per image)."""
    w = synset.weights
    if w is None or w.ndim != 1 or len(w) != len(synset):
        return None
    return w.repeat_interleave(synset.factor**2, 0) if synset.factor > 1 else w


def train_runs(
    ds: ImageDataset, train: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], model: str,
    protocol: Protocol, seeds: range, device: str | torch.device, phase: str = "train-on-subset",
    progress: str | None = None,
) -> EvalResult:
    """Train one fresh ``model`` per seed on normalised ``train = (x, labels, weights)``, each tested on the real
    test split of ``ds``.

    A run with seed ``s`` draws the model's initialisation from the global RNG seeded with ``s``, and the training
    order and augmentation from a generator seeded with ``10_000 + s``. ``progress``: ``"runs"`` (a bar over the
    runs), ``"epochs"`` (a bar over each run's epochs) or ``None``.
    """
    x, labels, weights = train
    test = (ds.normalize(ds.test_x), ds.test_y)
    ledger = CostLedger()
    accs = []
    bar = tqdm(seeds, desc=f"eval {model} [{protocol.name}]", disable=progress != "runs")
    for s in bar:
        torch.manual_seed(s)  # model initialisation uses the global RNG
        net = create_model(model, ds.in_channels, ds.num_classes, ds.image_size).to(device)
        out = train_classifier(net, x, labels, protocol, test=test, weights=weights, dataset_name=ds.name,
                               generator=torch.Generator().manual_seed(10_000 + s), ledger=ledger, phase=phase,
                               progress=progress == "epochs")
        accs.append(out["accuracy"])
        bar.set_postfix(acc=f"{100 * out['accuracy']:.2f}%")
    return EvalResult(protocol, model, ds.name, accs, len(x), ledger)


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
        protocol: A :data:`~datacomp.evaluation.PROTOCOLS` name or a :class:`Protocol`.
        runs: Number of fresh models (different seeds).
        seed: Base seed; run r uses ``seed + r``.
        device: Torch device.

    Returns:
        An :class:`EvalResult` with per-run accuracies and the training cost ledger.
    """
    ds = resolve_dataset(dataset, data_root)
    protocol = get_protocol(protocol)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"runs must be >= 1 (an int), got {runs!r}")
    _check_compatible(synset, ds)
    px, labels = synset.training_tensors()
    return train_runs(ds, (ds.normalize(px), labels, _training_weights(synset)), model, protocol,
                      range(seed, seed + runs), device, progress="runs" if progress else None)


def evaluate_models(synset: SyntheticSet, dataset: ImageDataset | str, models: Sequence[str], **kwargs) -> dict[str, EvalResult]:
    """Cross-architecture evaluation: :func:`evaluate_synset` for each model name."""
    return {m: evaluate_synset(synset, dataset, model=m, **kwargs) for m in models}
