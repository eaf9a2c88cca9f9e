"""The registered datasets: their loaders and static facts (:data:`DATASETS`).

Each loader looks for its files in the order the :mod:`datacomp.data` docstring gives (``root``, the offline copies
under ``$DATACOMP_SHARED_DATA``, a torchvision download) and says exactly which files to place where if none is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .common import (
    _channel_stats, _decode_jpegs, _missing, _nhwc_uint8_to_tensor, load_npz, read_image, shared_data_root,
)
from .dataset import DataNotFoundError, DatasetSpec, ImageDataset

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


def _torchvision_or_shared(name: str, cls_name: str, shared_file: str,
                           from_shared: Callable[[Path], ImageDataset]) -> Callable[[Path, bool], ImageDataset]:
    """Loader trying, in order: torchvision files under ``root``, the offline copy under ``$DATACOMP_SHARED_DATA``
    (``from_shared(shared / name)`` when ``shared_file`` is there), a torchvision download (``download=True``)."""

    def load(root: Path, download: bool) -> ImageDataset:
        # torchvision verifies each file's md5 against the official release before reading it.
        ds = _from_torchvision(name, cls_name, root, False, "")
        if ds is not None:
            return ds
        shared = shared_data_root()
        if shared is not None and (shared / name / shared_file).is_file():
            return from_shared(shared / name)
        if download:
            ds = _from_torchvision(name, cls_name, root, True, "")
            if ds is not None:
                return ds
        raise _missing(name, root, DATASETS[name].expected_files)

    return load


def _cifar10_offline(folder: Path) -> ImageDataset:
    z = load_npz(folder / "cifar10_jpeg.npz", "dataset 'cifar10'")
    train_u8 = _decode_jpegs(z["train_jpeg"], z["train_offsets"], str(folder / "cifar10_jpeg.npz"))
    train_y = z["train_y"].astype(np.int64)
    classes = [str(c) for c in z["classes"]]
    z = load_npz(folder / "cifar10_test.npz", "dataset 'cifar10'")
    test_u8, test_y = z["x"], z["y"].astype(np.int64)
    spec = DATASETS["cifar10"]
    return ImageDataset(
        "cifar10", _nhwc_uint8_to_tensor(train_u8), torch.from_numpy(train_y), _nhwc_uint8_to_tensor(test_u8),
        torch.from_numpy(test_y), classes, spec.mean, spec.std,
        source=f"offline JPEG copy {folder} (quality-75 JPEG; train split sorted by class)",
    )


def _mnist_offline(folder: Path) -> ImageDataset:
    z = load_npz(folder / "mnist_train_first10k.npz", "dataset 'mnist'")
    xtr, ytr = z["x"], z["y"].astype(np.int64)
    z = load_npz(folder / "mnist_test.npz", "dataset 'mnist'")
    xte, yte = z["x"], z["y"].astype(np.int64)
    spec = DATASETS["mnist"]
    return ImageDataset(
        "mnist", _nhwc_uint8_to_tensor(xtr), torch.from_numpy(ytr), _nhwc_uint8_to_tensor(xte),
        torch.from_numpy(yte), [str(i) for i in range(10)], spec.mean, spec.std,
        source=f"offline copy {folder} (first 10,000 training images only; full test set)",
    )


_load_cifar10 = _torchvision_or_shared("cifar10", "CIFAR10", "cifar10_jpeg.npz", _cifar10_offline)
_load_mnist = _torchvision_or_shared("mnist", "MNIST", "mnist_train_first10k.npz", _mnist_offline)


def _simple_torchvision(name: str, cls_name: str) -> Callable[[Path, bool], ImageDataset]:
    def load(root: Path, download: bool) -> ImageDataset:
        ds = _from_torchvision(name, cls_name, root, download, "")
        if ds is None:
            raise _missing(name, root, DATASETS[name].expected_files)
        return ds

    return load


def _load_tiny_imagenet(root: Path, download: bool) -> ImageDataset:
    base = root / "tiny-imagenet-200"
    if not base.is_dir() and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip", str(root))
    if not (base / "train").is_dir() or not (base / "val" / "val_annotations.txt").is_file():
        raise _missing("tiny-imagenet", root, DATASETS["tiny-imagenet"].expected_files)
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}

    def read(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), 64, 64, 3), dtype=np.uint8)
        for i, f in enumerate(files):
            out[i] = read_image(f, f"tiny-imagenet: {f}")
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
