"""``evaluate``: the public entry point (``datacomp.evaluate``) for scoring a small set, with its random baseline."""

from __future__ import annotations

import os

from ..data import ImageDataset
from ..errors import ConfigError
from ..synset import SyntheticSet
from .baselines import baseline_counts, evaluate_random_baseline
from .protocols import Protocol, get_protocol
from .results import EvalResult
from .settings import EvalSettings
from .sets import evaluate_synset, resolve_dataset

__all__ = ["evaluate"]


def evaluate(
    synset: SyntheticSet | str | os.PathLike,
    dataset: ImageDataset | str | None = None,
    *,
    model: str = "convnet-3-in",
    protocol: Protocol | str = "quick",
    runs: int = 3,
    baseline: bool = True,
    settings: EvalSettings | None = None,
) -> EvalResult:
    """Train ``runs`` fresh ``model``s on a small set, test them on the real test split, and (``baseline=True``)
    do the same for its random real baseline.

    Args:
        synset: A :class:`~datacomp.SyntheticSet` or the path of one (``.safetensors``).
        dataset: The real dataset (an :class:`~datacomp.ImageDataset` or a name for
            :func:`~datacomp.load_dataset`); default: the dataset named in the set's metadata.
        model: Registered model name (:func:`~datacomp.list_models`).
        protocol: A :data:`~datacomp.PROTOCOLS` name or a :class:`Protocol` (``get_protocol("ncfm", epochs=500)``).
        runs: Fresh models per set; run ``r`` is seeded with ``settings.seed + r``.
        baseline: Also evaluate the random real baseline (same stored images per class, same model, protocol, runs
            and seeds; see :mod:`datacomp.evaluation.baselines`); it lands in ``result.baseline`` and
            ``result.improvement_over_random``.
        settings: Base seed of the training runs and of the baseline's draw, device (default ``auto``: CUDA when
            available, else CPU) and progress bars: ``EvalSettings(seed=1, device="cpu", progress=False)``.

    Returns:
        An :class:`EvalResult` (per-run accuracies, mean, std, cost ledger, and the baseline when asked).

    Example:
        >>> ds = datacomp.load_dataset("digits")
        >>> result = datacomp.evaluate(small_set, ds, protocol="smoke", runs=2)
        >>> result.mean, result.baseline.mean, result.improvement_over_random
    """
    if not isinstance(synset, SyntheticSet):
        if not isinstance(synset, (str, os.PathLike)):
            raise ConfigError(f"synset must be a SyntheticSet or the path of one, got {type(synset).__name__}")
        synset = SyntheticSet.load(synset)
    if dataset is None:
        dataset = synset.metadata.get("dataset")
        if not dataset:
            raise ConfigError("dataset: the set's metadata names no dataset; pass dataset=")
    protocol = get_protocol(protocol)
    settings = settings if settings is not None else EvalSettings()
    ds = resolve_dataset(dataset)
    result = evaluate_synset(synset, ds, model, protocol, runs, settings)
    if baseline:
        result.baseline = evaluate_random_baseline(ds, baseline_counts(synset), model, protocol, runs, settings)
    return result
