"""Evaluating a small set: train ``runs`` fresh models on it and score each on the real test split."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..cost import CostLedger
from ..data import ImageDataset, load_dataset
from ..errors import DataError
from ..models import create_model
from ..synset import SyntheticSet
from .classifier import TrainingRun, train_classifier
from .protocols import Protocol, get_protocol
from .results import EvalResult
from .settings import EvalSettings, check_runs

__all__ = ["evaluate_synset", "evaluate_models", "resolve_dataset", "train_runs"]


def resolve_dataset(dataset: ImageDataset | str) -> ImageDataset:
    """``dataset`` itself, or the dataset of that registry name (:func:`~datacomp.load_dataset` for other roots)."""
    return load_dataset(dataset) if isinstance(dataset, str) else dataset


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
    protocol: Protocol, runs: int, settings: EvalSettings, phase: str = "train-on-subset", bar: str = "runs",
) -> EvalResult:
    """Train ``runs`` fresh ``model``s on normalised ``train = (x, labels, weights)``, each tested on the real test
    split of ``ds``.

    Run ``r`` draws the model's initialisation from the global RNG seeded with ``s = settings.seed + r``, and the
    training order and augmentation from a generator seeded with ``10_000 + s``. ``bar`` (with
    ``settings.progress``): ``"runs"`` (a bar over the runs) or ``"epochs"`` (a bar over each run's epochs).
    """
    x, labels, weights = train
    test = (ds.normalize(ds.test_x), ds.test_y)
    ledger = CostLedger()
    accs = []
    bars = bar if settings.progress else None
    seeds = tqdm(settings.seeds(runs), desc=f"eval {model} [{protocol.name}]", disable=bars != "runs")
    for s in seeds:
        torch.manual_seed(s)  # model initialisation uses the global RNG
        net = create_model(model, ds.in_channels, ds.num_classes, ds.image_size).to(settings.device)
        run = TrainingRun(torch.Generator().manual_seed(10_000 + s), ledger, phase, progress=bars == "epochs")
        out = train_classifier(net, x, labels, protocol, test=test, weights=weights, dataset_name=ds.name, run=run)
        accs.append(out["accuracy"])
        seeds.set_postfix(acc=f"{100 * out['accuracy']:.2f}%")
    return EvalResult(protocol, model, ds.name, accs, len(x), ledger)


def evaluate_synset(
    synset: SyntheticSet,
    dataset: ImageDataset | str,
    model: str = "convnet-3-in",
    protocol: Protocol | str = "quick",
    runs: int = 3,
    settings: EvalSettings | None = None,
) -> EvalResult:
    """Train ``runs`` fresh ``model``s on ``synset`` and test each on the real test split.

    Args:
        synset: The small training set (pixel or normalised space; multi-formation decoded automatically).
        dataset: The real dataset (or its registry name) providing the test split and normalisation.
        model: Registered model name.
        protocol: A :data:`~datacomp.evaluation.PROTOCOLS` name or a :class:`Protocol`.
        runs: Number of fresh models (different seeds).
        settings: Base seed (run r uses ``seed + r``), device and progress bars (default :class:`EvalSettings`).

    Returns:
        An :class:`EvalResult` with per-run accuracies and the training cost ledger.
    """
    ds = resolve_dataset(dataset)
    protocol = get_protocol(protocol)
    settings = settings if settings is not None else EvalSettings()
    check_runs(runs)
    _check_compatible(synset, ds)
    px, labels = synset.training_tensors()
    return train_runs(ds, (ds.normalize(px), labels, _training_weights(synset)), model, protocol, runs, settings)


def evaluate_models(synset: SyntheticSet, dataset: ImageDataset | str, models: Sequence[str], **kwargs) -> dict[str, EvalResult]:
    """Cross-architecture evaluation: :func:`evaluate_synset` for each model name."""
    return {m: evaluate_synset(synset, dataset, model=m, **kwargs) for m in models}
