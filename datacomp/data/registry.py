"""Looking datasets up by name and loading them (cached per process)."""

from __future__ import annotations

import difflib
import functools
import os
import re
from pathlib import Path

from ..errors import ConfigError
from .builtin import DATASETS
from .common import default_data_root
from .dataset import DatasetSpec, ImageDataset
from .local import _load_imagefolder, _load_npz


def list_datasets() -> list[str]:
    """Registered dataset names (plus the ``imagefolder:PATH`` and ``npz:PATH`` forms)."""
    return sorted(DATASETS) + ["imagefolder:PATH", "npz:PATH"]


def dataset_info(name: str) -> DatasetSpec:
    """Static facts about a registered dataset."""
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown dataset '{name}'{hint}; choose one of {', '.join(list_datasets())}")
    return DATASETS[name]


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str, download: bool) -> ImageDataset:
    if name.startswith("imagefolder:"):
        return _load_imagefolder(Path(name.split(":", 1)[1]).expanduser())
    if name.startswith("npz:"):
        return _load_npz(Path(name.split(":", 1)[1]).expanduser())
    return dataset_info(name).loader(Path(root), download)


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """Load a dataset by registry name into memory (cached per process).

    Args:
        name: A registered name (see :func:`list_datasets`), ``imagefolder:PATH`` or ``npz:PATH``.
        root: Folder with torchvision-layout files; default ``$DATACOMP_DATA`` or ``~/.cache/datacomp/data``.
        download: Allow torchvision to download missing files.

    Returns:
        The dataset; treat its tensors as read-only (they are shared by the per-process cache).

    Raises:
        ConfigError: Unknown name (a ``ValueError``).
        DataError: Malformed or unreadable files (a ``ValueError``; the message names the file and the fix).
        DataNotFoundError: Files missing (a ``FileNotFoundError``); the message says which files to place where.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("dataset name must be a non-empty string, e.g. 'digits' or 'cifar10'")
    if not re.match(r"^(imagefolder|npz):", name):
        dataset_info(name)  # unknown names fail here, before touching the disk
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    return _load_cached(name, str(root_path), bool(download))
