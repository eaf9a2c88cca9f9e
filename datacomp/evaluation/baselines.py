"""DD-Ranking's honesty metrics: the random real baseline (improvement over random, IOR) and full-data training
(hard-label recovery, HLR).

The random-baseline rule (the one rule every command uses)
-----------------------------------------------------------
A small set is compared with a random subset of real training images that has **the same number of stored images
per class** as the set: :func:`baseline_counts` counts the set's stored images per class (by hard label, or by the
arg-max of soft labels), :func:`evaluate_random_baseline` draws that many random real images per class with
:func:`random_subset` (the draw of ``datacomp subset random``, seeded with the run seed) and trains and tests on them
with the same model, protocol, runs and seeds as the set. IOR is the set's mean accuracy minus the baseline's.

This is DD-Ranking's definition (NUS-HPC-AI-Lab, arXiv 2505.13300: IOR = accuracy of the set minus that of a random
real subset at the same compression, evaluated the same way): the baseline has the same IPC, i.e. the same storage
budget. A multi-formation set (IDC/NCFM, ``factor`` f) stores
ipc images per class, each a mosaic of f x f tiles decoded into f^2 training images; its baseline is ipc random real
images per class, not f^2 x ipc: the set is credited with what its decoding extracts from the same storage. A set
with per-image ``weights`` is compared with an unweighted baseline. A class the set leaves empty (possible for a
selection) stays empty in the baseline.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data import ImageDataset
from ..errors import ConfigError
from ..synset import SyntheticSet, base_metadata
from .protocols import Protocol, get_protocol
from .results import EvalResult
from .settings import EvalSettings
from .sets import evaluate_synset, resolve_dataset, train_runs

__all__ = [
    "random_subset",
    "baseline_counts",
    "random_baseline_set",
    "evaluate_random_baseline",
    "evaluate_full_data",
    "improvement_over_random",
    "hard_label_recovery",
]


def random_subset(
    dataset: ImageDataset, ipc: int | Sequence[int], seed: int = 0, method: str = "random"
) -> SyntheticSet:
    """A SyntheticSet of ``ipc`` random real training images per class (the baseline every method is compared to).

    Args:
        dataset: The real dataset.
        ipc: Images per class, or a list with one count per class.
        seed: Seed of the draw.
        method: The ``method`` recorded in the set's metadata.
    """
    counts = [ipc] * dataset.num_classes if isinstance(ipc, int) else list(ipc)
    if len(counts) != dataset.num_classes:
        raise ConfigError(f"ipc list needs {dataset.num_classes} entries, got {len(counts)}")
    smallest = int(dataset.class_counts.min())
    if min(counts) < 1 or max(counts) > smallest:
        raise ConfigError(f"ipc must be between 1 and {smallest} (the smallest class of '{dataset.name}'), got "
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


def baseline_counts(synset: SyntheticSet) -> list[int]:
    """Per-class counts of the random baseline of ``synset``: its stored images per class (see the module text).

    A multi-formation set (``factor > 1``) counts its stored mosaics, not the decoded training images.
    """
    return synset.images_per_class()


def random_baseline_set(dataset: ImageDataset, per_class: int | Sequence[int], seed: int = 0) -> SyntheticSet:
    """The random real subset with ``per_class`` images per class, drawn as :func:`random_subset` draws.

    Zero counts are allowed (not all zero): such a class is drawn with one image, which is then dropped, so the
    other classes get the same images as in ``random_subset`` with those counts.
    """
    counts = [per_class] * dataset.num_classes if isinstance(per_class, int) else [int(c) for c in per_class]
    if len(counts) != dataset.num_classes or 0 not in counts:
        return random_subset(dataset, counts, seed=seed)  # (it checks the counts)
    if min(counts) < 0 or max(counts) < 1:
        raise ConfigError(f"baseline counts per class must be >= 0 and not all 0, got {counts}")
    base = random_subset(dataset, [max(c, 1) for c in counts], seed=seed)
    keep = torch.cat([torch.nonzero(base.labels == c).flatten()[:k] for c, k in enumerate(counts)])
    meta = dict(base.metadata, ipc=None, ipc_per_class=counts)
    return SyntheticSet(base.images[keep], base.labels[keep], meta, source_indices=base.source_indices[keep])


def evaluate_random_baseline(
    dataset: ImageDataset | str, per_class: Sequence[int] | int, model: str = "convnet-3-in",
    protocol: Protocol | str = "quick", runs: int = 3, settings: EvalSettings | None = None,
) -> EvalResult:
    """Accuracy of the random real baseline with ``per_class`` images per class, evaluated like the set it is compared
    to (pass :func:`baseline_counts` of the set, and the set's ``model``, ``protocol``, ``runs`` and ``settings``).

    The draw and the training runs are both seeded with ``settings.seed`` (see :func:`random_baseline_set` and
    :func:`~datacomp.evaluation.evaluate_synset`).
    """
    ds = resolve_dataset(dataset)
    settings = settings if settings is not None else EvalSettings()
    return evaluate_synset(random_baseline_set(ds, per_class, seed=settings.seed), ds, model, protocol, runs, settings)


def evaluate_full_data(
    dataset: ImageDataset | str, model: str = "convnet-3-in", protocol: Protocol | str = "quick", runs: int = 1,
    settings: EvalSettings | None = None, epochs: int | None = None,
) -> EvalResult:
    """Train on the whole training split (the upper reference for hard-label recovery), phase ``train-on-full``;
    ``epochs`` overrides the protocol's. With ``settings.progress`` a bar follows each run's epochs."""
    ds = resolve_dataset(dataset)
    protocol = get_protocol(protocol, epochs=epochs)
    settings = settings if settings is not None else EvalSettings()
    train = (ds.normalize(ds.train_x), ds.train_y, None)
    return train_runs(ds, train, model, protocol, runs, settings, phase="train-on-full", bar="epochs")


def improvement_over_random(syn: EvalResult, random: EvalResult) -> float:
    """DD-Ranking IOR: mean accuracy of the set minus that of its random real baseline (same protocol)."""
    if syn.protocol.name != random.protocol.name:
        raise ConfigError(f"IOR needs one protocol, got '{syn.protocol.name}' and '{random.protocol.name}'")
    return syn.mean - random.mean


def hard_label_recovery(full: EvalResult, syn: EvalResult) -> float:
    """DD-Ranking HLR: full-data accuracy minus the set's accuracy (lower is better)."""
    return full.mean - syn.mean
