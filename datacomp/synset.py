"""``SyntheticSet``: the on-disk format for distilled or selected training sets.

One safetensors file holds the tensors (``images``, ``labels`` and optionally ``lr``, ``weights``,
``source_indices``) and, in the safetensors header, one JSON metadata document under the key ``datacomp``
(dataset, space and normalisation, ipc, method, full config, seed, package versions, cost ledger). Loading validates
every field and fails with a message saying what is wrong. Nothing is ever unpickled: legacy ``.pt`` files from
DC/DM/MTT/NCFM are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .io import atomic_write, json_default, package_versions, sha256_arrays
from .synset_checks import FORMAT_VERSION, SynsetFormatError, check_format_version, check_set
from .synset_export import imagefolder, png_grid
from .synset_legacy import read_legacy

__all__ = [
    "SyntheticSet", "SynsetFormatError", "base_metadata", "package_versions", "atomic_write", "decode_multiformation",
]

_META_KEY = "datacomp"
_OPTIONAL_TENSORS = ("lr", "weights", "source_indices")


def base_metadata(**fields: Any) -> dict:
    """Metadata every output carries (versions, time, host), updated with ``fields``."""
    meta = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
    }
    meta.update(fields)
    return meta


@dataclass
class SyntheticSet:
    """A small training set: images, hard or soft labels, optional per-image extras, and metadata.

    Attributes:
        images: ``float32 [N, C, H, W]``, in the space named by ``metadata["space"]`` (``"pixel"`` = [0, 1], or
            ``"normalized"`` = (x - mean) / std with ``metadata["mean"]``/``["std"]``).
        labels: ``int64 [N]`` hard labels, or ``float32 [N, K]`` soft labels (rows are probabilities).
        metadata: JSON-safe dict; needs at least ``dataset``, ``space``, ``num_classes`` and ``method``.
        lr: Optional learnable learning rate (scalar or per image) from methods that distil it.
        weights: Optional per-image weights (e.g. from weighted coresets).
        source_indices: Optional ``int64 [N]`` indices into the real training split (selected subsets).
    """

    images: torch.Tensor
    labels: torch.Tensor
    metadata: dict = field(default_factory=dict)
    lr: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    source_indices: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.metadata.setdefault("format_version", FORMAT_VERSION)
        self.metadata.setdefault("space", "pixel")
        if "num_classes" not in self.metadata and self.labels is not None:
            self.metadata["num_classes"] = (
                int(self.labels.shape[1]) if self.labels.ndim == 2 else int(self.labels.max()) + 1
            )
        self.validate()

    # ---------------------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise :class:`SynsetFormatError` naming the first problem found."""
        check_set(self.images, self.labels, self.metadata, {name: getattr(self, name) for name in _OPTIONAL_TENSORS})

    # -------------------------------------------------------------------------------------------------------- views
    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def is_soft(self) -> bool:
        return self.labels.ndim == 2

    @property
    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1) if self.is_soft else self.labels

    def __len__(self) -> int:
        return len(self.images)

    @property
    def factor(self) -> int:
        """Multi-formation factor recorded in metadata (1 = images are used as stored)."""
        return int(self.metadata.get("factor", 1))

    def training_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel-space images, labels) as a model is trained on them: multi-formation decoded if ``factor > 1``."""
        x, y = self.pixel_images(), self.labels
        if self.factor > 1:
            x = decode_multiformation(x, self.factor)
            y = y.repeat_interleave(self.factor**2, 0)
        return x, y

    def images_per_class(self) -> list[int]:
        return torch.bincount(self.hard_labels, minlength=self.num_classes).tolist()

    def _stats(self, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return torch.tensor(list(mean)).view(shape), torch.tensor(list(std)).view(shape)

    def pixel_images(self) -> torch.Tensor:
        """Images in pixel space (undoing the stored normalisation if needed)."""
        if self.metadata["space"] == "pixel":
            return self.images
        m, s = self._stats(self.metadata["mean"], self.metadata["std"])
        return self.images * s + m

    def normalized_images(self, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """Images in the normalised space of (mean, std), the space models are trained in."""
        m, s = self._stats(mean, std)
        return (self.pixel_images() - m) / s

    def content_digest(self) -> str:
        """SHA-256 of the set's tensors (images, labels and the optional extras, with dtypes and shapes).

        Two sets with the same digest hold bit-identical data (metadata such as time stamps is not hashed).
        """
        parts = [b"images", self.images, b"labels", self.labels]
        for name in _OPTIONAL_TENSORS:
            t = getattr(self, name)
            if t is not None:
                parts += [name.encode(), t]
        return sha256_arrays(np.frombuffer(p, dtype=np.uint8) if isinstance(p, bytes) else p for p in parts)

    # --------------------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the set to one ``.safetensors`` file, atomically."""
        from safetensors.torch import save

        self.validate()
        tensors = {"images": self.images.contiguous(), "labels": self.labels.contiguous()}
        for name in _OPTIONAL_TENSORS:
            t = getattr(self, name)
            if t is not None:
                tensors[name] = t.detach().cpu().contiguous()
        try:
            meta_json = json.dumps(self.metadata, default=json_default)
        except TypeError as err:
            raise SynsetFormatError(f"metadata is not JSON-serialisable: {err}") from err
        blob = save({k: v.detach().cpu() for k, v in tensors.items()}, metadata={_META_KEY: meta_json})
        return atomic_write(path, blob)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SyntheticSet":
        """Read and validate a set written by :meth:`save`."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no SyntheticSet at {path}")
        if path.suffix in (".pt", ".pth"):
            raise SynsetFormatError(f"{path} is a torch file; import it with SyntheticSet.from_legacy(path, dataset=...)")
        raw = path.read_bytes()
        try:
            tensors = load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8 : 8 + header_len])
        except (SafetensorError, ValueError, UnicodeDecodeError) as err:
            raise SynsetFormatError(f"{path} is not a valid safetensors file (truncated or corrupt?): {err}") from err
        meta_json = header.get("__metadata__", {}).get(_META_KEY)
        if meta_json is None:
            raise SynsetFormatError(f"{path} has no datacomp metadata; it was not written by SyntheticSet.save")
        unknown = set(tensors) - {"images", "labels", *_OPTIONAL_TENSORS}
        if unknown or not {"images", "labels"} <= set(tensors):
            raise SynsetFormatError(
                f"{path}: tensors must be images, labels and optionally {list(_OPTIONAL_TENSORS)}; found {sorted(tensors)}"
            )
        try:
            meta = json.loads(meta_json)
        except json.JSONDecodeError as err:
            raise SynsetFormatError(f"{path}: metadata is not valid JSON: {err}") from err
        if not isinstance(meta, dict):
            raise SynsetFormatError(f"{path}: metadata must be a JSON object, got {type(meta).__name__}")
        check_format_version(meta.get("format_version"), where=f"{path}: ")
        try:
            return cls(tensors["images"], tensors["labels"], meta,
                       **{k: tensors.get(k) for k in _OPTIONAL_TENSORS})
        except SynsetFormatError as err:
            raise SynsetFormatError(f"{path}: {err}") from None

    @classmethod
    def from_legacy(
        cls, path: str | os.PathLike | Sequence[str | os.PathLike], dataset: str, space: str = "normalized",
        mean: Sequence[float] | None = None, std: Sequence[float] | None = None, num_classes: int | None = None,
        method: str = "legacy",
    ) -> "SyntheticSet":
        """Import the field's legacy formats with ``torch.load(weights_only=True)``.

        Accepted: a file holding ``[images, labels]`` (DC/DM ``res_*.pt`` entries, NCFM ``data_*.pt``), a dict with
        ``data``/``images`` and ``labels``/``targets``, or a pair of paths ``(images.pt, labels.pt)`` (MTT).
        DC/DM/MTT save *normalised* images (``space="normalized"``, give the dataset's mean/std or let them be
        looked up); NCFM saves pixel-space images in [0, 1] (``space="pixel"``).
        """
        images, labels, fields = read_legacy(path, dataset, space, mean, std, num_classes, method)
        return cls(images, labels, base_metadata(**fields))

    # ------------------------------------------------------------------------------------------------------ export
    def to_png_grid(self, path: str | os.PathLike, max_per_class: int = 10, upscale: int | None = None) -> Path:
        """Save a class-by-row PNG grid of (up to ``max_per_class``) images per class, atomically."""
        return png_grid(self, path, max_per_class, upscale)

    def to_imagefolder(self, folder: str | os.PathLike, class_names: Sequence[str] | None = None) -> Path:
        """Write one PNG per image under ``folder/<class>/`` (readable by torchvision's ImageFolder)."""
        return imagefolder(self, folder, class_names)


def decode_multiformation(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Multi-formation decoding (IDC/NCFM): each stored image holds a ``factor x factor`` mosaic; every tile is
    bilinearly upsampled back to full size, giving ``factor**2`` training images per stored image.

    Output order: all tiles of image 0 (row-major), then image 1, ... so labels decode with
    ``labels.repeat_interleave(factor**2, 0)``.
    """
    if factor == 1:
        return images
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not divisible by factor {factor}")
    th, tw = h // factor, w // factor
    tiles = images.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, th, tw)
    return torch.nn.functional.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)
