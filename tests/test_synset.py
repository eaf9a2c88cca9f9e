from __future__ import annotations

import json

import pytest
import torch

from datacomp.synset import SynsetFormatError, SyntheticSet, base_metadata, decode_multiformation


def make(n=6, k=3, soft=False, **extra) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 4, 4, generator=g)
    y = torch.arange(n) % k
    if soft:
        y = torch.softmax(torch.randn(n, k, generator=g), 1)
    meta = base_metadata(dataset="toy", method="test", num_classes=k, ipc=n // k, config={"a": 1}, seed=3,
                         cost={"phases": []})
    return SyntheticSet(x, y, meta, **extra)


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip_keeps_everything(tmp_path, soft):
    s = make(soft=soft, lr=torch.tensor(0.01), weights=torch.rand(6), source_indices=torch.arange(6) * 7)
    path = s.save(tmp_path / "s.safetensors")
    t = SyntheticSet.load(path)
    torch.testing.assert_close(t.images, s.images)
    torch.testing.assert_close(t.labels, s.labels)
    torch.testing.assert_close(t.weights, s.weights)
    assert t.source_indices.tolist() == [0, 7, 14, 21, 28, 35]
    assert t.metadata["config"] == {"a": 1} and t.metadata["seed"] == 3 and "torch" in t.metadata["versions"]
    assert t.is_soft == soft
    if not soft:
        assert t.images_per_class() == [2, 2, 2]


def test_save_leaves_no_temp_files(tmp_path):
    make().save(tmp_path / "a.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def _bad(**kw):
    s = make()
    fields = dict(images=s.images, labels=s.labels, metadata=dict(s.metadata))
    meta_update = kw.pop("meta", {})
    fields["metadata"].update(meta_update)
    for k in kw.pop("drop_meta", []):
        fields["metadata"].pop(k)
    fields.update(kw)
    return fields


@pytest.mark.parametrize(
    "fields, match",
    [
        (_bad(images=torch.rand(6, 4, 4)), r"float32 tensor \[N, C, H, W\]"),
        (_bad(images=torch.rand(6, 3, 4, 4).double()), "float32"),
        (_bad(images=torch.full((6, 3, 4, 4), float("nan"))), "NaN"),
        (_bad(labels=torch.arange(5)), "labels must be a tensor with 6 rows"),
        (_bad(labels=torch.arange(6).int()), "int64"),
        (_bad(labels=torch.arange(6)), r"labels must lie in \[0, 3\)"),
        (_bad(labels=torch.full((6, 3), 0.5)), "rows sum to 1"),
        (_bad(drop_meta=["dataset"]), "metadata lacks"),
        (_bad(meta={"space": "weird"}), "space must be"),
        (_bad(meta={"space": "normalized"}), "metadata 'mean' must be 3 finite numbers .* for normalized images"),
        (_bad(meta={"num_classes": 1}), "num_classes must be an int >= 2"),
        (_bad(weights=torch.rand(4)), "weights must be"),
        (_bad(source_indices=torch.arange(6) - 1), "source_indices"),
    ],
)
def test_invalid_sets_are_rejected(fields, match):
    with pytest.raises(SynsetFormatError, match=match):
        SyntheticSet(**fields)


# Metadata and extras that 0.1.0 accepted silently (or answered with a traceback): rejected on construction and on load.
BAD_METADATA = [
    (dict(meta={"factor": 0}), "factor must be an int >= 1 that divides the image size 4x4, got 0"),
    (dict(meta={"factor": 3}), "factor must be an int >= 1 that divides"),
    (dict(meta={"factor": 2.0}), "factor must be an int"),
    (dict(meta={"std": [0.2, 0.0, 0.2], "mean": [0.5] * 3}), r"'std' must be > 0 per channel"),
    (dict(meta={"std": [0.2, 0.2], "mean": [0.5] * 3}), "'std' must be 3 finite numbers"),
    (dict(meta={"mean": [0.5, float("nan"), 0.5], "std": [0.2] * 3}), "'mean' must be 3 finite numbers"),
    (dict(meta={"format_version": "one"}), "format_version must be an int >= 1, got 'one'"),
    (dict(meta={"format_version": 99}), "format_version 99 is newer"),
    (dict(lr=torch.tensor(-0.01)), "lr must be > 0"),
    (dict(lr=torch.tensor(0.0)), "lr must be > 0"),
    (dict(weights=-torch.ones(6)), "weights must be >= 0 and not all 0"),
    (dict(weights=torch.zeros(6)), "weights must be >= 0 and not all 0"),
    (dict(weights=torch.tensor([1.0, float("inf"), 1, 1, 1, 1])), "weights must be a finite"),
]


@pytest.mark.parametrize("change, match", BAD_METADATA)
def test_bad_metadata_is_rejected_on_construction(change, match):
    with pytest.raises(SynsetFormatError, match=match):
        SyntheticSet(**_bad(**change))


@pytest.mark.parametrize("change, match", BAD_METADATA)
def test_bad_metadata_is_rejected_on_load(tmp_path, change, match):
    from safetensors.torch import save_file

    fields = _bad(**change)
    tensors = {k: v for k, v in fields.items() if k != "metadata"}
    save_file(tensors, tmp_path / "b.safetensors", metadata={"datacomp": json.dumps(fields["metadata"])})
    with pytest.raises(SynsetFormatError, match=match):
        SyntheticSet.load(tmp_path / "b.safetensors")


def test_good_metadata_is_accepted():
    s = SyntheticSet(**_bad(meta={"factor": 2, "mean": [0.5] * 3, "std": [0.2, 0.3, 0.4]}, lr=torch.tensor(0.01),
                            weights=torch.tensor([0.0, 1, 1, 2, 1, 1])))
    assert s.factor == 2 and len(s.training_tensors()[0]) == 24


def test_truncated_file_is_rejected(tmp_path):
    path = make().save(tmp_path / "s.safetensors")
    data = path.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SynsetFormatError, match="truncated or corrupt"):
        SyntheticSet.load(tmp_path / "t.safetensors")


def test_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"images": torch.rand(2, 3, 4, 4), "labels": torch.arange(2)}, tmp_path / "f.safetensors")
    with pytest.raises(SynsetFormatError, match="no datacomp metadata"):
        SyntheticSet.load(tmp_path / "f.safetensors")
    save_file({"images": torch.rand(2, 3, 4, 4), "other": torch.arange(2)}, tmp_path / "g.safetensors",
              metadata={"datacomp": json.dumps({"dataset": "x"})})
    with pytest.raises(SynsetFormatError, match="tensors must be"):
        SyntheticSet.load(tmp_path / "g.safetensors")


def test_metadata_nan_pixels_on_disk_are_caught(tmp_path):
    from safetensors.torch import save_file

    s = make()
    x = s.images.clone()
    x[0, 0, 0, 0] = float("nan")
    save_file({"images": x, "labels": s.labels}, tmp_path / "n.safetensors",
              metadata={"datacomp": json.dumps(s.metadata)})
    with pytest.raises(SynsetFormatError, match="NaN"):
        SyntheticSet.load(tmp_path / "n.safetensors")


def test_spaces_convert_both_ways():
    s = make()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    xn = s.normalized_images(mean, std)
    t = SyntheticSet(xn, s.labels, dict(s.metadata, space="normalized", mean=mean, std=std))
    torch.testing.assert_close(t.pixel_images(), s.images)


def test_multiformation_decoding():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    d = decode_multiformation(x, 2)
    assert d.shape == (4, 1, 4, 4)
    # first tile is the top-left 2x2 block upsampled; its mean is the block's mean
    torch.testing.assert_close(d[0].mean(), x[0, 0, :2, :2].mean())
    s = make()
    s.metadata["factor"] = 2
    xd, yd = s.training_tensors()
    assert xd.shape == (24, 3, 4, 4) and yd.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="not divisible"):
        decode_multiformation(torch.rand(1, 1, 5, 5), 2)


def test_exports(tmp_path):
    s = make()
    png = s.to_png_grid(tmp_path / "grid.png")
    from PIL import Image

    assert Image.open(png).size[0] > 0
    folder = s.to_imagefolder(tmp_path / "tree", class_names=["a", "b", "c"])
    assert sorted(p.name for p in folder.iterdir()) == ["a", "b", "c"]
    assert len(list((folder / "a").glob("*.png"))) == 2


@pytest.mark.parametrize("layout", ["list", "dict", "pair", "dc"])
def test_legacy_import(tmp_path, layout):
    x, y = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    if layout == "list":
        torch.save([x, y], tmp_path / "a.pt")
        path = tmp_path / "a.pt"
    elif layout == "dict":
        torch.save({"data": x, "labels": y}, tmp_path / "a.pt")
        path = tmp_path / "a.pt"
    elif layout == "dc":
        torch.save({"data": [[x, y]], "accs_all_exps": {}}, tmp_path / "a.pt")
        path = tmp_path / "a.pt"
    else:
        torch.save(x, tmp_path / "images.pt")
        torch.save(y, tmp_path / "labels.pt")
        path = (tmp_path / "images.pt", tmp_path / "labels.pt")
    if layout == "dc":
        obj = torch.load(path, weights_only=True)
        torch.save(obj["data"][0], tmp_path / "b.pt")
        path = tmp_path / "b.pt"
    s = SyntheticSet.from_legacy(path, dataset="cifar10")
    assert s.metadata["space"] == "normalized" and s.metadata["mean"][0] == pytest.approx(0.4914)
    torch.testing.assert_close(s.images, x)


class Evil:  # any non-tensor class: loading it would need full unpickling
    pass


def test_legacy_import_refuses_pickled_objects(tmp_path):
    torch.save([Evil(), torch.arange(3)], tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        SyntheticSet.from_legacy(tmp_path / "evil.pt", dataset="cifar10")
