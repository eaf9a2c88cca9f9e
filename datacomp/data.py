"""Dataset registry, per-dataset normalisation and a fast class-indexed image store.

Every dataset loads into memory as an :class:`ImageDataset` whose images are ``float32`` tensors ``[N, C, H, W]`` in
pixel space ``[0, 1]``. Models see ``dataset.normalize(x)`` (per-channel mean/std as in the DC/DM reference code).

Where the files come from, in order:

1. ``root`` (``--data-root``; default ``$DATACOMP_DATA`` or ``~/.cache/datacomp/data``) in torchvision's layout;
2. the offline copies under ``$DATACOMP_SHARED_DATA`` (``cifar10``: all 60k images from a JPEG copy; ``mnist``: the test
   set and the first 10k training images);
3. a download through torchvision when ``download=True``.

If none is available the error lists exactly which files to place where.
"""

from __future__ import annotations

import functools
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

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


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset's files are missing and cannot be downloaded."""


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
                raise ValueError(f"{self.name}: {split}_x must be float32 [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            if y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"{self.name}: {split}_y must be 1-D with {len(x)} labels, got {tuple(y.shape)}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"{self.name}: mean/std need {self.in_channels} channels")

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
            raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
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
            raise ValueError(f"class {c} out of range [0, {self.num_classes})")
        if n < 0 or n > int(self.counts[c]):
            raise ValueError(f"cannot draw n={n} images from class {c}, which has {int(self.counts[c])}")

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


# --------------------------------------------------------------------------------------------------------------------
# Roots


def default_data_root() -> Path:
    """``$DATACOMP_DATA`` or ``~/.cache/datacomp/data``."""
    return Path(os.environ.get("DATACOMP_DATA", Path.home() / ".cache" / "datacomp" / "data")).expanduser()


def shared_data_root() -> Path | None:
    """``$DATACOMP_SHARED_DATA`` if it is set and exists (offline copies of real datasets)."""
    value = os.environ.get("DATACOMP_SHARED_DATA")
    if value and Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    return None


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _nhwc_uint8_to_tensor(x: np.ndarray) -> torch.Tensor:
    if x.ndim == 3:  # [N, H, W] grey
        x = x[..., None]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    data = blob.tobytes()
    first = np.asarray(Image.open(io.BytesIO(data[offsets[0] : offsets[1]])).convert("RGB"))
    out = np.empty((len(offsets) - 1, *first.shape), dtype=np.uint8)
    for i in range(len(offsets) - 1):  # image decoding has no batched form; ~5 s for 50k 32x32 JPEGs
        out[i] = np.asarray(Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]])).convert("RGB"))
    return out


def _missing(name: str, root: Path, expected: str) -> DataNotFoundError:
    shared = os.environ.get("DATACOMP_SHARED_DATA")
    return DataNotFoundError(
        f"dataset '{name}': files not found.\n"
        f"  Looked in --data-root / $DATACOMP_DATA = {root}\n"
        f"  Expected (torchvision layout): {expected}\n"
        + (f"  Offline copies ($DATACOMP_SHARED_DATA={shared}) have no copy of it.\n" if shared else "")
        + "  Fix: place those files there, or pass --download (needs network access)"
        + (", or set DATACOMP_SHARED_DATA to a folder holding the offline copies." if name in ("cifar10", "mnist") else ".")
    )


# --------------------------------------------------------------------------------------------------------------------
# Loaders (each returns an ImageDataset; `download` only applies to torchvision datasets)

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def _load_digits(root: Path, download: bool) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8], pixel values 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=bunch.target
    )
    tr, te = np.sort(tr), np.sort(te)
    train_x = x[tr]
    mean, std = _channel_stats(train_x)
    return ImageDataset(
        "digits", train_x, y[tr], x[te], y[te], [str(c) for c in range(10)], mean, std,
        source=f"sklearn.datasets.load_digits, stratified split test_size={DIGITS_TEST_FRACTION} seed={DIGITS_SPLIT_SEED}",
    )


def _torchvision_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = ds.labels
    targets = targets.numpy() if torch.is_tensor(targets) else np.asarray(targets)
    return data, targets.astype(np.int64)


def _from_torchvision(name: str, cls_name: str, root: Path, download: bool, expected: str, **kw) -> ImageDataset | None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        if cls_name == "SVHN":
            tr, te = cls(str(root), split="train", download=download), cls(str(root), split="test", download=download)
        else:
            tr, te = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        if download:
            raise DataNotFoundError(f"dataset '{name}': download into {root} failed: {err}") from err
        return None
    xtr, ytr = _torchvision_arrays(tr)
    xte, yte = _torchvision_arrays(te)
    if cls_name == "SVHN":  # stored NCHW
        xtr, xte = xtr.transpose(0, 2, 3, 1), xte.transpose(0, 2, 3, 1)
    spec = DATASETS[name]
    classes = list(getattr(tr, "classes", [str(i) for i in range(spec.num_classes)]))
    return ImageDataset(
        name, _nhwc_uint8_to_tensor(xtr), torch.from_numpy(ytr), _nhwc_uint8_to_tensor(xte), torch.from_numpy(yte),
        classes, spec.mean, spec.std, source=f"torchvision.datasets.{cls_name} at {root}",
    )


def _load_cifar10(root: Path, download: bool) -> ImageDataset:
    # torchvision verifies each batch file's md5 against the official release before reading it.
    ds = _from_torchvision("cifar10", "CIFAR10", root, False, "")
    if ds is not None:
        return ds
    shared = shared_data_root()
    if shared is not None and (shared / "cifar10" / "cifar10_jpeg.npz").is_file():
        with np.load(shared / "cifar10" / "cifar10_jpeg.npz", allow_pickle=False) as z:
            train_u8 = _decode_jpegs(z["train_jpeg"], z["train_offsets"])
            train_y = z["train_y"].astype(np.int64)
            classes = [str(c) for c in z["classes"]]
        with np.load(shared / "cifar10" / "cifar10_test.npz", allow_pickle=False) as z:
            test_u8, test_y = z["x"], z["y"].astype(np.int64)
        spec = DATASETS["cifar10"]
        return ImageDataset(
            "cifar10", _nhwc_uint8_to_tensor(train_u8), torch.from_numpy(train_y), _nhwc_uint8_to_tensor(test_u8),
            torch.from_numpy(test_y), classes, spec.mean, spec.std,
            source=f"offline JPEG copy {shared / 'cifar10'} (quality-75 JPEG; train split sorted by class)",
        )
    if download:
        ds = _from_torchvision("cifar10", "CIFAR10", root, True, "")
        if ds is not None:
            return ds
    raise _missing("cifar10", root, DATASETS["cifar10"].expected_files)


def _load_mnist(root: Path, download: bool) -> ImageDataset:
    ds = _from_torchvision("mnist", "MNIST", root, False, "")
    if ds is not None:
        return ds
    shared = shared_data_root()
    if shared is not None and (shared / "mnist" / "mnist_train_first10k.npz").is_file():
        with np.load(shared / "mnist" / "mnist_train_first10k.npz", allow_pickle=False) as z:
            xtr, ytr = z["x"], z["y"].astype(np.int64)
        with np.load(shared / "mnist" / "mnist_test.npz", allow_pickle=False) as z:
            xte, yte = z["x"], z["y"].astype(np.int64)
        spec = DATASETS["mnist"]
        return ImageDataset(
            "mnist", _nhwc_uint8_to_tensor(xtr), torch.from_numpy(ytr), _nhwc_uint8_to_tensor(xte),
            torch.from_numpy(yte), [str(i) for i in range(10)], spec.mean, spec.std,
            source=f"offline copy {shared / 'mnist'} (first 10,000 training images only; full test set)",
        )
    if download:
        ds = _from_torchvision("mnist", "MNIST", root, True, "")
        if ds is not None:
            return ds
    raise _missing("mnist", root, DATASETS["mnist"].expected_files)


def _simple_torchvision(name: str, cls_name: str) -> Callable[[Path, bool], ImageDataset]:
    def load(root: Path, download: bool) -> ImageDataset:
        ds = _from_torchvision(name, cls_name, root, download, "")
        if ds is None:
            raise _missing(name, root, DATASETS[name].expected_files)
        return ds

    return load


def _read_image_tree(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"imagefolder: {folder} has no class sub-folders")
    images, labels, size = [], [], None
    for label, cname in enumerate(classes):
        for f in sorted((folder / cname).rglob("*")):
            if f.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}:
                continue
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
            if arr.ndim == 2:
                arr = arr[..., None]
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise ValueError(f"imagefolder: {f} is {arr.shape}, expected {size} like the others (resize first)")
            images.append(arr)
            labels.append(label)
    if not images:
        raise ValueError(f"imagefolder: no images found under {folder}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def _load_imagefolder(path: Path) -> ImageDataset:
    if not path.is_dir():
        raise DataNotFoundError(f"imagefolder: {path} is not a directory (expected {path}/train/<class>/*.png)")
    test_dir = next((path / d for d in ("test", "val") if (path / d).is_dir()), None)
    if not (path / "train").is_dir() or test_dir is None:
        raise DataNotFoundError(f"imagefolder: expected {path}/train/<class>/... and {path}/test/<class>/... (or val/)")
    xtr, ytr, classes = _read_image_tree(path / "train")
    xte, yte, test_classes = _read_image_tree(test_dir)
    if test_classes != classes:
        raise ValueError(f"imagefolder: train classes {classes} differ from test classes {test_classes}")
    train_x = _nhwc_uint8_to_tensor(xtr)
    mean, std = _channel_stats(train_x)
    return ImageDataset(
        f"imagefolder:{path}", train_x, torch.from_numpy(ytr), _nhwc_uint8_to_tensor(xte), torch.from_numpy(yte),
        classes, mean, std, source=f"image folder {path}",
    )


_NPZ_KEYS = {"train_x": ("x_train", "train_x"), "train_y": ("y_train", "train_y"),
             "test_x": ("x_test", "test_x"), "test_y": ("y_test", "test_y")}


def _npz_images(arr: np.ndarray, key: str) -> torch.Tensor:
    if arr.ndim == 3:
        arr = arr[:, None] if arr.dtype != np.uint8 else arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"npz: '{key}' must be [N, H, W, C] or [N, C, H, W], got shape {arr.shape}")
    if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"npz: float '{key}' must be finite pixel values in [0, 1] (or store uint8)")
    return x


def _load_npz(path: Path) -> ImageDataset:
    if not path.is_file():
        raise DataNotFoundError(f"npz: no file at {path} (expected keys x_train, y_train, x_test, y_test)")
    with np.load(path, allow_pickle=False) as z:
        found = {}
        for field_name, options in _NPZ_KEYS.items():
            key = next((k for k in options if k in z.files), None)
            if key is None:
                raise ValueError(f"npz: {path} lacks '{options[0]}' (has {sorted(z.files)})")
            found[field_name] = (key, z[key])
        classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
        stats = (tuple(map(float, z["mean"])), tuple(map(float, z["std"]))) if "mean" in z.files else None
    train_x = _npz_images(found["train_x"][1], found["train_x"][0])
    test_x = _npz_images(found["test_x"][1], found["test_x"][0])
    train_y = torch.from_numpy(found["train_y"][1].astype(np.int64))
    test_y = torch.from_numpy(found["test_y"][1].astype(np.int64))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    if classes is None:
        classes = [str(i) for i in range(n_classes)]
    if train_y.min() < 0 or n_classes > len(classes):
        raise ValueError(f"npz: labels must lie in [0, {len(classes)})")
    mean, std = stats if stats is not None else _channel_stats(train_x)
    return ImageDataset(f"npz:{path}", train_x, train_y, test_x, test_y, classes, mean, std, source=f"npz file {path}")


def _load_tiny_imagenet(root: Path, download: bool) -> ImageDataset:
    base = root / "tiny-imagenet-200"
    if not base.is_dir() and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip", str(root))
    if not (base / "train").is_dir() or not (base / "val" / "val_annotations.txt").is_file():
        raise _missing("tiny-imagenet", root, DATASETS["tiny-imagenet"].expected_files)
    from PIL import Image

    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}

    def read(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), 64, 64, 3), dtype=np.uint8)
        for i, f in enumerate(files):
            with Image.open(f) as im:
                out[i] = np.asarray(im.convert("RGB"))
        return out

    train_files = [f for w in wnids for f in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    train_y = np.array([index[f.parent.parent.name] for f in train_files], dtype=np.int64)
    ann = [line.split("\t")[:2] for line in (base / "val" / "val_annotations.txt").read_text().splitlines() if line]
    test_files = [base / "val" / "images" / a[0] for a in ann]
    test_y = np.array([index[a[1]] for a in ann], dtype=np.int64)
    spec = DATASETS["tiny-imagenet"]
    return ImageDataset(
        "tiny-imagenet", _nhwc_uint8_to_tensor(read(train_files)), torch.from_numpy(train_y),
        _nhwc_uint8_to_tensor(read(test_files)), torch.from_numpy(test_y), wnids, spec.mean, spec.std,
        source=f"Tiny-ImageNet at {base} (val split used as test)",
    )


# Mean/std as in the DC/DM reference code (utils.get_dataset); digits/imagefolder/npz use train-split statistics.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("digits", 10, 1, (8, 8), None, None,
                    "scikit-learn's bundled 8x8 digits (1,797 images); embedded offline default", _load_digits,
                    "(bundled with scikit-learn)"),
        DatasetSpec("mnist", 10, 1, (28, 28), (0.1307,), (0.3081,), "MNIST handwritten digits", _load_mnist,
                    "ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
        DatasetSpec("fashion-mnist", 10, 1, (28, 28), (0.2861,), (0.3530,), "Fashion-MNIST",
                    _simple_torchvision("fashion-mnist", "FashionMNIST"),
                    "ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
        DatasetSpec("cifar10", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), "CIFAR-10",
                    _load_cifar10, "ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"),
        DatasetSpec("cifar100", 100, 3, (32, 32), (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR-100",
                    _simple_torchvision("cifar100", "CIFAR100"), "ROOT/cifar-100-python/{train, test, meta}"),
        DatasetSpec("svhn", 10, 3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                    "SVHN (cropped digits)", _simple_torchvision("svhn", "SVHN"), "ROOT/{train_32x32.mat, test_32x32.mat}"),
        DatasetSpec("tiny-imagenet", 200, 3, (64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                    "Tiny-ImageNet (200 classes, 64x64; val split as test)", _load_tiny_imagenet,
                    "ROOT/tiny-imagenet-200/{train/<wnid>/images/*.JPEG, val/images, val/val_annotations.txt}"),
    ]
}


def list_datasets() -> list[str]:
    """Registered dataset names (plus the ``imagefolder:PATH`` and ``npz:PATH`` forms)."""
    return sorted(DATASETS) + ["imagefolder:PATH", "npz:PATH"]


def dataset_info(name: str) -> DatasetSpec:
    """Static facts about a registered dataset."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {', '.join(list_datasets())}")
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
        ValueError: Unknown name or malformed files.
        DataNotFoundError: Files missing; the message says which files to place where.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("dataset name must be a non-empty string, e.g. 'digits' or 'cifar10'")
    if not re.match(r"^(imagefolder|npz):", name):
        dataset_info(name)  # unknown names fail here, before touching the disk
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    return _load_cached(name, str(root_path), bool(download))
