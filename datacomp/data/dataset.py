"""In-memory dataset types: :class:`ImageDataset`, the class-indexed :class:`ClassStore`, and the registry's records.

Every dataset loads into memory as an :class:`ImageDataset` whose images are ``float32`` tensors ``[N, C, H, W]`` in
pixel space ``[0, 1]``. Models see ``dataset.normalize(x)`` (per-channel mean/std as in the DC/DM reference code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError, DataError, MissingInputError


class DataNotFoundError(MissingInputError):
    """Raised when a dataset's files are missing and cannot be downloaded (a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a registered dataset (known before loading anything)."""

    name: str
    num_classes: int | None
    in_channels: int | None
    image_size: tuple[int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str
    loader: Callable[[Path, bool], "ImageDataset"] = field(repr=False, compare=False)
    expected_files: str = ""


@dataclass
class ImageDataset:
    """An in-memory image classification dataset in pixel space ``[0, 1]``."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.ndim != 4 or x.dtype != torch.float32:
                raise DataError(f"{self.name}: {split}_x must be float32 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            if y.ndim != 1 or len(y) != len(x):
                raise DataError(f"{self.name}: {split}_y must be 1-D with {len(x)} labels, got {tuple(y.shape)}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(f"{self.name}: mean/std need {self.in_channels} channels")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.train_y, minlength=self.num_classes)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.in_channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space -> the normalised space models are trained in."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised space -> pixel space."""
        mean, std = self._stats(x)
        return x * std + mean

    def class_store(self, normalized: bool = True, device: str | torch.device = "cpu") -> "ClassStore":
        """A :class:`ClassStore` over the training split (normalised by default)."""
        x = self.normalize(self.train_x) if normalized else self.train_x
        return ClassStore(x.to(device), self.train_y.to(device), self.num_classes)

    def info(self) -> dict:
        """JSON-safe summary (what goes into output metadata)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "num_train": len(self.train_y),
            "num_test": len(self.test_y),
            "mean": list(self.mean),
            "std": list(self.std),
            "source": self.source,
        }


class ClassStore:
    """Images grouped by class for fast random draws (distillers call this thousands of times).

    Images are stored contiguously by class, so a draw is one ``randperm`` slice plus one gather.

    Args:
        x: Images ``[N, ...]`` (any space).
        y: Integer labels ``[N]`` in ``[0, num_classes)``.
        num_classes: Number of classes.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        if len(x) != len(y):
            raise DataError(f"x and y lengths differ: {len(x)} vs {len(y)}")
        order = torch.argsort(y, stable=True)
        self.x = x[order]
        self.y = y[order]
        # Position in the original tensor of each stored image (keeps source indices traceable).
        self.source_index = order
        self.num_classes = num_classes
        self.counts = torch.bincount(y, minlength=num_classes).cpu()
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.indices = [
            self.source_index[int(s) : int(s) + int(n)] for s, n in zip(self.starts, self.counts, strict=True)
        ]

    def _check(self, c: int, n: int) -> None:
        if not 0 <= c < self.num_classes:
            raise ConfigError(f"class {c} out of range [0, {self.num_classes})")
        if n < 0 or n > int(self.counts[c]):
            raise ConfigError(f"cannot draw n={n} images from class {c}, which has {int(self.counts[c])}")

    def positions(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Positions (into the class-sorted store) of n distinct random images of class c."""
        self._check(c, n)
        perm = torch.randperm(int(self.counts[c]), generator=generator)[:n]
        return perm + self.starts[c]

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n distinct random images of class c."""
        return self.x[self.positions(c, n, generator).to(self.x.device)]

    def first(self, c: int, n: int) -> torch.Tensor:
        """The first n images of class c in dataset order (deterministic; NCFM's real batch)."""
        self._check(c, n)
        start = int(self.starts[c])
        return self.x[start : start + n]

    def sample_batch(
        self, n_per_class: int, generator: torch.Generator | None = None, classes: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n distinct random images of every class (class-major order), drawn in one vectorised step."""
        classes = list(range(self.num_classes)) if classes is None else list(classes)
        for c in classes:
            self._check(c, n_per_class)
        counts = self.counts[classes]
        # Random keys per (class, slot); slots beyond a class's size get +inf so topk never picks them.
        keys = torch.rand(len(classes), int(counts.max()), generator=generator)
        keys[torch.arange(keys.shape[1])[None, :] >= counts[:, None]] = float("inf")
        slots = torch.topk(keys, n_per_class, dim=1, largest=False).indices
        pos = (slots + self.starts[classes][:, None]).reshape(-1).to(self.x.device)
        return self.x[pos], self.y[pos]
