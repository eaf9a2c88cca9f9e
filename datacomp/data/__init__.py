"""Dataset registry, per-dataset normalisation and a fast class-indexed image store.

Every dataset loads into memory as an :class:`ImageDataset` whose images are ``float32`` tensors ``[N, C, H, W]`` in
pixel space ``[0, 1]``. Models see ``dataset.normalize(x)`` (per-channel mean/std as in the DC/DM reference code).

Where the files come from, in order:

1. ``root`` (``--data-root``; default ``$DATACOMP_DATA`` or ``~/.cache/datacomp/data``) in torchvision's layout;
2. the offline copies under ``$DATACOMP_SHARED_DATA`` (``cifar10``: all 60k images from a JPEG copy; ``mnist``: the test
   set and the first 10k training images);
3. a download through torchvision when ``download=True``.

If none is available the error lists exactly which files to place where.

Modules:
  * :mod:`~datacomp.data.dataset`: ``ImageDataset``, ``ClassStore``, ``DatasetSpec``, ``DataNotFoundError``;
  * :mod:`~datacomp.data.common`: data roots and helpers shared by the loaders;
  * :mod:`~datacomp.data.builtin`: the registered datasets' loaders and the ``DATASETS`` table;
  * :mod:`~datacomp.data.local`: ``imagefolder:PATH`` and ``npz:PATH``;
  * :mod:`~datacomp.data.registry`: ``list_datasets``, ``dataset_info`` and ``load_dataset``.
"""

from __future__ import annotations

from .builtin import DATASETS, DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION
from .common import default_data_root, shared_data_root
from .dataset import ClassStore, DataNotFoundError, DatasetSpec, ImageDataset
from .registry import dataset_info, list_datasets, load_dataset

__all__ = [
    "ImageDataset",
    "ClassStore",
    "DatasetSpec",
    "DataNotFoundError",
    "load_dataset",
    "list_datasets",
    "dataset_info",
    "default_data_root",
    "shared_data_root",
]
