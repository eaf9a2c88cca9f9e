"""Datasets from the user's own files: ``imagefolder:PATH`` (class sub-folders) and ``npz:PATH`` (arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .common import _channel_stats, _nhwc_uint8_to_tensor, load_npz, read_image
from .dataset import DataNotFoundError, ImageDataset


_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _read_image_tree(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {folder} has no class sub-folders (expected {folder}/<class>/*.png)")
    images, labels, size = [], [], None
    for label, cname in enumerate(classes):
        for f in sorted((folder / cname).rglob("*")):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            arr = read_image(f, f"imagefolder: {f}", rgb=False)
            if arr.ndim == 2:
                arr = arr[..., None]
            if size is None:
                size = arr.shape
            elif arr.shape != size:
                raise DataError(f"imagefolder: {f} is {arr.shape}, expected {size} like the others (resize first)")
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataError(f"imagefolder: no images found under {folder} (suffixes: "
                        f"{', '.join(sorted(_IMAGE_SUFFIXES))})")
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
        raise DataError(f"imagefolder: train classes {classes} differ from test classes {test_classes}")
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
        raise DataError(f"npz: '{key}' must be [N, H, W, C] or [N, C, H, W], got shape {arr.shape}")
    if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"npz: float '{key}' must be finite pixel values in [0, 1] (or store uint8)")
    return x


def _load_npz(path: Path) -> ImageDataset:
    if not path.is_file():
        raise DataNotFoundError(f"npz: no file at {path} (expected keys x_train, y_train, x_test, y_test)")
    z = load_npz(path, "npz")
    found = {}
    for field_name, options in _NPZ_KEYS.items():
        key = next((k for k in options if k in z), None)
        if key is None:
            raise DataError(f"npz: {path} lacks '{options[0]}' (has {sorted(z)})")
        found[field_name] = (key, z[key])
    classes = [str(c) for c in z["classes"]] if "classes" in z else None
    stats = (tuple(map(float, z["mean"])), tuple(map(float, z["std"]))) if "mean" in z else None
    train_x = _npz_images(found["train_x"][1], found["train_x"][0])
    test_x = _npz_images(found["test_x"][1], found["test_x"][0])
    train_y = torch.from_numpy(found["train_y"][1].astype(np.int64))
    test_y = torch.from_numpy(found["test_y"][1].astype(np.int64))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    if classes is None:
        classes = [str(i) for i in range(n_classes)]
    if train_y.min() < 0 or test_y.min() < 0 or n_classes > len(classes):
        raise DataError(f"npz: labels must lie in [0, {len(classes)})")
    mean, std = stats if stats is not None else _channel_stats(train_x)
    return ImageDataset(f"npz:{path}", train_x, train_y, test_x, test_y, classes, mean, std, source=f"npz file {path}")
