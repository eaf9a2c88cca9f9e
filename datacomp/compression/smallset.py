"""The small training set of ``compress``: a :class:`~datacomp.synset.SyntheticSet`, named or given.

Sources (:func:`resolve_small_set`): a SyntheticSet file (distilled or selected), a Selection ``.npz`` (indices into
the training split, from ``datacomp.selectors.select``), ``random:IPC[:SEED]`` (random real images per class, the
baseline), or ``full`` (the whole training split, the upper reference). Sets resolved here carry their provenance
in ``metadata["small_set"]`` (recorded in ``run.json`` as ``config.data``) and what producing them cost in
``metadata["cost"]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from datacomp.cost import CostLedger
from datacomp.errors import ConfigError, DataError, MissingInputError
from datacomp.evaluation import random_subset
from datacomp.selectors import Selection
from datacomp.synset import SyntheticSet, base_metadata

__all__ = ["resolve_small_set", "check_small_set", "small_set_tensors", "small_set_info", "small_set_ledger"]

_SPEC_HELP = "'full', 'random:IPC[:SEED]', a SyntheticSet .safetensors file or a Selection .npz file"


def resolve_small_set(spec: str | os.PathLike | SyntheticSet, dataset: Any, seed: int = 0) -> SyntheticSet:
    """The small set named by ``spec`` for ``dataset``, checked against it.

    Args:
        spec: A :class:`SyntheticSet`, or ``full``, ``random:IPC[:SEED]``, a SyntheticSet ``.safetensors`` file or a
            Selection ``.npz`` file.
        dataset: The :class:`datacomp.data.ImageDataset` the teacher was trained on.
        seed: Seed of a ``random:IPC`` draw that names none.

    Raises:
        ConfigError: A malformed spec, or a set whose classes or image shape differ from the dataset's.
        MissingInputError: The file does not exist.
    """
    if isinstance(spec, SyntheticSet):
        synset = spec
    elif isinstance(spec, os.PathLike) or (isinstance(spec, str) and spec):
        synset = _from_spec(os.fspath(spec), dataset, seed)
    else:
        raise ConfigError(f"--data must be {_SPEC_HELP}, got {spec!r}")
    check_small_set(synset, dataset)
    return synset


def _from_spec(spec: str, dataset: Any, seed: int) -> SyntheticSet:
    if spec == "full":
        meta = base_metadata(dataset=dataset.name, space="pixel", num_classes=dataset.num_classes, method="full",
                             small_set={"source": "full", "method": "full", "ipc": None})
        return SyntheticSet(dataset.train_x, dataset.train_y, meta)
    if spec.startswith("random:"):
        parts = spec.split(":")
        try:
            if len(parts) > 3:
                raise ValueError
            ipc = int(parts[1])
            draw_seed = int(parts[2]) if len(parts) > 2 else seed
        except (ValueError, IndexError):
            raise ConfigError(f"--data '{spec}': expected random:IPC or random:IPC:SEED with integers") from None
        synset = random_subset(dataset, ipc, seed=draw_seed)
        synset.metadata["small_set"] = {"source": spec, "method": "random", "ipc": ipc, "seed": draw_seed}
        return synset
    path = Path(spec)
    if not path.is_file():
        raise MissingInputError(f"--data '{spec}' is neither 'full', 'random:IPC' nor an existing SyntheticSet "
                                f"(.safetensors) or Selection (.npz) file")
    if path.suffix == ".npz":
        return _from_selection(path, dataset)
    synset = SyntheticSet.load(path)
    meta = synset.metadata
    meta["small_set"] = {"source": str(path), "method": meta.get("method"), "ipc": meta.get("ipc"),
                         "dataset": meta.get("dataset")}
    return synset


def _from_selection(path: Path, dataset: Any) -> SyntheticSet:
    """A :class:`datacomp.selectors.Selection` file: indices into the dataset's training split."""
    selection = Selection.load(path)
    idx = torch.as_tensor(selection.indices, dtype=torch.long)
    n = len(dataset.train_y)
    if len(idx) == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise DataError(
            f"--data: selection '{path}' indexes [{int(idx.min()) if len(idx) else '-'}, "
            f"{int(idx.max()) if len(idx) else '-'}] but dataset '{dataset.name}' has {n} training images: select "
            f"from this dataset's training split"
        )
    sel = selection.metadata
    meta = base_metadata(
        dataset=dataset.name, space="pixel", num_classes=dataset.num_classes, method=sel.get("method") or "selection",
        small_set={"source": str(path), "method": sel.get("method"), "ipc": None, "selection_budget": sel.get("budget")},
    )
    if isinstance(sel.get("cost"), dict):
        meta["cost"] = sel["cost"]
    return SyntheticSet(dataset.train_x[idx], dataset.train_y[idx], meta, source_indices=idx)


def check_small_set(synset: SyntheticSet, dataset: Any) -> None:
    """The set must have the dataset's classes and image shape (after multi-formation decoding)."""
    if synset.num_classes != dataset.num_classes:
        raise ConfigError(
            f"--data has {synset.num_classes} classes but dataset '{dataset.name}' (and its teacher) has "
            f"{dataset.num_classes}: use a small set of the teacher's dataset"
        )
    shape = tuple(synset.training_tensors()[0].shape[1:])
    if shape != (dataset.in_channels, *dataset.image_size):
        raise ConfigError(
            f"--data images are {tuple(shape)} but dataset '{dataset.name}' images are "
            f"{(dataset.in_channels, *dataset.image_size)}: use a small set of the teacher's dataset"
        )


def small_set_tensors(synset: SyntheticSet, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(normalised images, labels)`` as the training stages use them (multi-formation decoded)."""
    pixels, labels = synset.training_tensors()
    return dataset.normalize(pixels), labels


def small_set_info(synset: SyntheticSet, num_items: int) -> dict:
    """Provenance of the set as recorded in ``run.json`` (``config.data``)."""
    meta = synset.metadata
    info = meta.get("small_set")
    if not isinstance(info, dict):
        info = {"source": "SyntheticSet", "method": meta.get("method"), "ipc": meta.get("ipc"),
                "dataset": meta.get("dataset")}
    return {**info, "num_items": int(num_items)}


def small_set_ledger(synset: SyntheticSet) -> CostLedger | None:
    """What producing the set cost (its ledger in metadata), or None."""
    cost = synset.metadata.get("cost")
    if isinstance(cost, dict) and "schema" not in cost and isinstance(cost.get("ledger"), dict):
        cost = cost["ledger"]  # selections store {"ledger": ledger dict, ...}
    return CostLedger.from_dict(cost) if isinstance(cost, dict) else None
