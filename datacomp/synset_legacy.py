"""Reading the field's legacy DC/DM/MTT/NCFM ``.pt`` files, with ``torch.load(weights_only=True)`` only (nothing is
ever unpickled). :meth:`~datacomp.synset.SyntheticSet.from_legacy` calls :func:`read_legacy` and builds the set from
what it returns; this module does not import the set's module, since that one imports this."""

from __future__ import annotations

import os
from typing import Sequence

import torch

from .synset_checks import SynsetFormatError

__all__ = ["read_legacy"]


def read_legacy(
    path: str | os.PathLike | Sequence[str | os.PathLike], dataset: str, space: str = "normalized",
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None, num_classes: int | None = None,
    method: str = "legacy",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images, labels, metadata fields) of a legacy file, as ``SyntheticSet.from_legacy`` documents its arguments.

    The metadata fields are the set's own (``dataset``, ``space``, ``num_classes``, ``method``, ``imported_from``
    and, for normalised images, ``mean``/``std``), to be completed by ``datacomp.synset.base_metadata(**fields)``.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 2:
            raise SynsetFormatError("pass (images.pt, labels.pt) as a pair of paths")
        images, labels = (torch.load(p, map_location="cpu", weights_only=True) for p in path)
        source = [str(p) for p in path]
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        source = str(path)
        if isinstance(obj, dict):
            images = next((obj[k] for k in ("data", "images", "x", "image_syn") if k in obj), None)
            labels = next((obj[k] for k in ("labels", "targets", "y", "label_syn") if k in obj), None)
        elif isinstance(obj, (list, tuple)) and len(obj) >= 2:
            if isinstance(obj[0], (list, tuple)):  # DC/DM 'data' list of [images, labels] per experiment
                obj = obj[0]
            images, labels = obj[0], obj[1]
        else:
            images = labels = None
        if images is None or labels is None:
            raise SynsetFormatError(f"{path}: expected [images, labels] or a dict with images/labels")
    if space == "normalized" and (mean is None or std is None):
        from .data import dataset_info

        spec = dataset_info(dataset)
        if spec.mean is None:
            raise SynsetFormatError(f"give mean= and std= for normalised images of dataset '{dataset}'")
        mean, std = spec.mean, spec.std
    labels = labels.float() if labels.is_floating_point() and labels.ndim == 2 else labels.long()
    if num_classes is None:
        num_classes = int(labels.shape[1]) if labels.ndim == 2 else int(labels.max()) + 1
    fields = dict(dataset=dataset, space=space, num_classes=num_classes, method=method, imported_from=source)
    if space == "normalized":
        fields.update(mean=list(mean), std=list(std))
    return images.float().contiguous(), labels, fields
