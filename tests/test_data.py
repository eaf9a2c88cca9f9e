from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cifar10, requires_mnist

from datacomp.data import ClassStore, DataNotFoundError, dataset_info, list_datasets, load_dataset


def test_registry_lists_every_dataset():
    names = list_datasets()
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet",
                 "imagefolder:PATH", "npz:PATH"):
        assert name in names


def test_digits_split_is_fixed_stratified_and_in_pixel_space():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.train_x.dtype == torch.float32
    assert 0 <= float(ds.train_x.min()) and float(ds.train_x.max()) <= 1
    assert len(ds.train_y) + len(ds.test_y) == 1797
    # stratified: every class has ~70% of its images in train
    tr = torch.bincount(ds.train_y, minlength=10).float()
    te = torch.bincount(ds.test_y, minlength=10).float()
    assert torch.all((tr / (tr + te) - 0.7).abs() < 0.02)
    x = ds.normalize(ds.train_x)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2
    torch.testing.assert_close(ds.denormalize(x), ds.train_x)


@pytest.mark.parametrize(
    "name, err, match",
    [("nope", ValueError, "unknown dataset 'nope'"), ("", ValueError, "non-empty"),
     ("npz:/no/such/file.npz", DataNotFoundError, "no file at"),
     ("imagefolder:/no/such/dir", DataNotFoundError, "not a directory")],
)
def test_bad_names_are_rejected(name, err, match):
    with pytest.raises(err, match=match):
        load_dataset(name)


@pytest.mark.parametrize("name", ["cifar100", "svhn", "fashion-mnist", "tiny-imagenet"])
def test_missing_files_say_what_to_place_where(tmp_path, name):
    with pytest.raises(DataNotFoundError, match=rf"'{name}': files not found.*Expected \(torchvision layout\)") as err:
        load_dataset(name, root=tmp_path)
    assert "\n" not in str(err.value)  # one line: scripts and the CLI print it as `prog: error: ...`


def test_missing_cifar_names_files_and_shared_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("DATACOMP_SHARED_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match=r"(?s)cifar-10-batches-py.*DATACOMP_SHARED_DATA"):
        load_dataset("cifar10", root=tmp_path / "empty")


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8), y_train=np.arange(40) % 4,
             x_test=rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8), y_test=np.arange(8) % 4)
    ds = load_dataset(f"npz:{path}")
    assert ds.train_x.shape == (40, 3, 6, 6) and ds.num_classes == 4 and ds.in_channels == 3
    assert ds.class_counts.tolist() == [10, 10, 10, 10]


@pytest.mark.parametrize(
    "arrays, match",
    [({"x_train": np.zeros((4, 2, 2, 3))}, "lacks 'y_train'"),
     ({"x_train": np.full((4, 2, 2, 3), 2.0), "y_train": np.zeros(4), "x_test": np.zeros((2, 2, 2, 3)),
       "y_test": np.zeros(2)}, r"pixel values in \[0, 1\]")],
)
def test_npz_rejects_bad_files(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"npz:{path}")


def test_imagefolder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((5, 5, 3), 40 * i, np.uint8)).save(tmp_path / split / c / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ["cat", "dog"] and ds.train_x.shape == (6, 3, 5, 5)


def _image_tree(root, size=(5, 5)):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"])
def test_imagefolder_corrupt_image_names_the_file_and_the_fix(tmp_path, content):
    from datacomp.errors import DataError

    _image_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=rf"imagefolder: {bad}: cannot read the image .*replace or remove the file"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_imagefolder_truncated_png_is_a_data_error(tmp_path):
    from datacomp.errors import DataError

    _image_tree(tmp_path, size=(16, 16))
    good = tmp_path / "test" / "cat" / "1.png"
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match=str(good)):
        load_dataset(f"imagefolder:{tmp_path}")


@pytest.mark.parametrize(
    "layout, match",
    [("no_classes", "has no class sub-folders"), ("no_images", "no images found"), ("sizes", "expected .* like the others"),
     ("classes", "train classes .* differ from test classes")],
)
def test_imagefolder_layout_errors_are_data_errors(tmp_path, layout, match):
    from PIL import Image

    from datacomp.errors import DataError

    _image_tree(tmp_path)
    if layout == "no_classes":
        for c in ("cat", "dog"):
            for f in (tmp_path / "test" / c).iterdir():
                f.unlink()
            (tmp_path / "test" / c).rmdir()
    elif layout == "no_images":
        for f in (tmp_path / "test").rglob("*.png"):
            f.unlink()
    elif layout == "sizes":
        Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "train" / "dog" / "9.png")
    else:
        (tmp_path / "test" / "cow").mkdir()
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "test" / "cow" / "0.png")
    with pytest.raises(DataError, match=match):
        load_dataset(f"imagefolder:{tmp_path}")


@pytest.mark.parametrize("kind", ["truncated", "pickled", "labels"])
def test_npz_unreadable_files_are_clear_errors(tmp_path, kind):
    from datacomp.errors import DataError, FormatError

    path = tmp_path / "d.npz"
    arrays = dict(x_train=np.zeros((4, 2, 2, 3), np.uint8), y_train=np.arange(4) % 2,
                  x_test=np.zeros((2, 2, 2, 3), np.uint8), y_test=np.array([0, -1]))
    if kind == "pickled":
        arrays["y_train"] = np.array([{"a": 1}] * 4, dtype=object)
    np.savez(path, **arrays)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    error, match = {"truncated": (FormatError, "not a readable .npz file"),
                    "pickled": (FormatError, "not a readable .npz file"),
                    "labels": (DataError, r"labels must lie in \[0, 2\)")}[kind]
    with pytest.raises(error, match=match):
        load_dataset(f"npz:{path}")


def test_dataset_errors_are_datacomp_errors():
    from datacomp.errors import ConfigError, MissingInputError

    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        load_dataset("cifar-10")
    with pytest.raises(MissingInputError):
        load_dataset("npz:/no/such/file.npz")


def test_class_store_draws_the_right_class_without_repeats():
    y = torch.tensor([0, 1, 2] * 20)
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    store = ClassStore(x, y, 3)
    g = torch.Generator().manual_seed(0)
    s = store.sample(2, 7, g)
    assert s.shape == (7, 1, 2, 2) and torch.all(s == 2)
    pos = store.positions(1, 20, g)
    assert len(set(pos.tolist())) == 20
    xb, yb = store.sample_batch(5, g)
    assert yb.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert torch.all(xb[:, 0, 0, 0] == yb.float())
    torch.testing.assert_close(store.first(0, 3), x[y == 0][:3])
    with pytest.raises(ValueError, match="cannot draw n=21"):
        store.sample(0, 21)
    with pytest.raises(ValueError, match="out of range"):
        store.sample(3, 1)


def test_dataset_info_unknown():
    with pytest.raises(ValueError, match="choose one of"):
        dataset_info("imagenet-1k")


@requires_cifar10
def test_cifar10_from_the_offline_copy():
    ds = load_dataset("cifar10", root="/nonexistent-root")
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.class_counts.tolist() == [5000] * 10
    assert ds.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert "offline" in ds.source


@requires_mnist
def test_mnist_from_the_offline_copy():
    ds = load_dataset("mnist", root="/nonexistent-root")
    assert ds.train_x.shape == (10000, 1, 28, 28) and len(ds.test_y) == 10000
