"""Selection's run layer: registry, full-content cache keys, bad labels and texts, one random rule, run folders."""

import json

import numpy as np
import pytest
import torch

from datacomp import cli as top_cli
from datacomp.data import ImageDataset, load_dataset
from datacomp.errors import ConfigError, DataError, DeviceError, RunDirError
from datacomp.evaluation import random_subset
from datacomp.io import RunDir
from datacomp.record import RunRecord
from datacomp.selectors import (
    METHODS,
    SELECTORS,
    EvalOptions,
    ProxyOptions,
    Selection,
    SelectOptions,
    SelectorSpec,
    register_selector,
    select,
    select_dataset,
)
from datacomp.selectors.features import image_features
from datacomp.selectors.registry import base_pool
from datacomp.selectors.text import load_text_dataset

QUICK = dict(quiet=True, proxy=ProxyOptions(model="mlp", epochs=0), eval=EvalOptions(runs=0))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ----------------------------------------------------------------------------------------------------------- registry
def test_registry_holds_every_method_with_inputs_and_parameter_defaults():
    assert tuple(SELECTORS.names()) == METHODS
    fl = SELECTORS.entry("facility-location")
    assert fl.info["needs"] == "features=" and fl.info["source"] == "features" and fl.description
    assert fl.obj.params["n_neighbors"] == 16 and SELECTORS.get("uncertainty").params["kind"] == "entropy"
    assert not SELECTORS.get("el2n").text and SELECTORS.get("longest").source == "lengths"
    with pytest.raises(ConfigError, match="unknown selector 'kcentre'.*did you mean 'kcenter'"):
        SELECTORS.get("kcentre")


def test_a_new_method_is_one_registration():
    def prepare(inputs):
        return base_pool(inputs.n), {}

    def run(pool, budget, rng, offset: int = 0):
        idx = np.arange(offset, offset + budget)
        return idx, idx.astype(float), None, {}

    register_selector(SelectorSpec("first-items", "the first items of each class", prepare=prepare, run=run,
                                   needs="nothing beyond the pool size", score_meaning="index"))
    try:
        sel = select("first-items", n_items=10, budget=3, offset=2)
        np.testing.assert_array_equal(sel.indices, [2, 3, 4])
        with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['step'\]; valid parameters: \['offset'\]"):
            select("first-items", n_items=10, budget=3, step=2)
    finally:
        SELECTORS._entries.pop("first-items")


# -------------------------------------------------------------------------------------------- cache keys, bad input
def test_editing_two_training_images_changes_the_feature_cache_key(digits):
    """The 0.1.0 key hashed 256 strided images: images 1 and 2 were not among them, so edits there reused stale
    features."""
    first = image_features(digits, "mlp", progress=False)
    x = digits.train_x.clone()
    x[1:3] = 1.0 - x[1:3]
    edited = ImageDataset(digits.name, x, digits.train_y, digits.test_x, digits.test_y, digits.classes, digits.mean,
                          digits.std)
    second = image_features(edited, "mlp", progress=False)
    assert second.key != first.key and not second.from_cache
    assert not np.array_equal(second.features[1:3], first.features[1:3])
    assert image_features(digits, "mlp", progress=False).from_cache  # the unedited data still hits


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.r_[-1, np.zeros(5, int)], "labels must be >= 0, got -1"),
        (np.r_[0.5, np.zeros(5)], "labels must be integers"),
        (np.zeros((6, 1), int), "labels must be 1-D"),
    ],
)
def test_bad_labels_raise_data_error_naming_labels(labels, match):
    with pytest.raises(DataError, match=match):
        select("random", n_items=6, labels=labels, budget=2)


def test_labels_out_of_the_probabilities_range_raise_data_error():
    probs = np.full((4, 2), 0.5)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        select("el2n", probs=probs, labels=np.array([0, 1, 2, 0]), budget=2)


def test_all_empty_text_records_are_refused(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": " ", "input": "", "output": None}) for _ in range(5)))
    with pytest.raises(DataError, match=r"all 5 records are empty in the fields .* --text-fields"):
        load_text_dataset(path, progress=False)
    rc = top_cli.main(["select", "--method", "kcenter", "--dataset", str(path), "--budget", "2", "--quiet", "--out",
                       str(tmp_path / "out")])
    assert rc == 2 and "records are empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ one random rule
@pytest.mark.parametrize("seed", [0, 7])
def test_random_selection_is_the_random_subset_draw(digits, seed):
    """select --method random with per-class budgets picks what `datacomp subset random` draws (same seed)."""
    run = select_dataset(digits, "random", ipc=5, seed=seed, options=SelectOptions(**QUICK))
    expected = random_subset(digits, 5, seed=seed)
    torch.testing.assert_close(run.synset.source_indices, expected.source_indices, rtol=0, atol=0)
    assert run.synset.content_digest() == expected.content_digest()
    labels = digits.train_y.numpy()
    arrays = select("random", n_items=len(labels), labels=labels, budget=50, class_budget="equal", seed=seed)
    np.testing.assert_array_equal(arrays.indices, expected.source_indices.numpy())


# ---------------------------------------------------------------------------------------------------- run folders
def test_run_json_is_a_run_record_for_images_and_text(digits, tmp_path):
    img = select_dataset(digits, "herding", ipc=1, options=SelectOptions(out=tmp_path / "img", **QUICK))
    rec = RunRecord.read(tmp_path / "img")
    assert rec.kind == "select" and rec.output_sha256 == img.synset.content_digest() == img.record.output_sha256
    assert rec.extra["subset_sha256"] == Selection.load(tmp_path / "img" / "selection.npz").subset_digest()
    assert rec.extra["outputs"]["synset"] == "synset.safetensors" and rec.ipc == 1
    texts = tmp_path / "t.jsonl"
    texts.write_text("\n".join(json.dumps({"instruction": f"task {i}", "input": "", "output": "y" * i})
                               for i in range(12)))
    txt = select_dataset(str(texts), "longest", budget=3, options=SelectOptions(out=tmp_path / "txt", quiet=True))
    rec = RunRecord.read(tmp_path / "txt")
    assert rec.output_sha256 == txt.selection.subset_digest() == rec.extra["subset_sha256"]
    assert rec.num_items == 3 and rec.full_train_size == 12 and [r["output"] for r in txt.records][0] == "y" * 11


def test_an_out_holding_another_run_is_refused_unless_overwrite(digits, tmp_path, capsys):
    out = tmp_path / "run"
    select_dataset(digits, "random", ipc=1, options=SelectOptions(out=out, **QUICK))
    with pytest.raises(RunDirError, match="already holds a run; choose another folder or pass --overwrite"):
        select_dataset(digits, "kcenter", ipc=1, options=SelectOptions(out=out, **QUICK))
    again = select_dataset(digits, "kcenter", ipc=1, options=SelectOptions(out=out, overwrite=True, **QUICK))
    assert RunRecord.read(out).method == "kcenter" == again.record.method
    argv = ["select", "--method", "random", "--dataset", "digits", "--ipc", "1", "--eval-runs", "0", "--quiet",
            "--out", str(out)]
    assert top_cli.main(argv) == 2 and "--overwrite" in capsys.readouterr().err


def test_a_second_concurrent_run_on_the_same_out_fails_fast(digits, tmp_path):
    with RunDir(tmp_path / "busy"):  # another run holds the lock
        with pytest.raises(RunDirError, match="in use by another datacomp run"):
            select_dataset(digits, "random", ipc=1, options=SelectOptions(out=tmp_path / "busy", **QUICK))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_missing_gpu_is_refused_before_work(tmp_path, capsys):
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        select_dataset("digits", "herding", ipc=1, options=SelectOptions(out=tmp_path / "x", device="cuda", **{
            k: v for k, v in QUICK.items() if k != "quiet"}))
    assert not (tmp_path / "x").exists()
    rc = top_cli.main(["select", "--method", "herding", "--dataset", "digits", "--ipc", "1", "--device", "cuda",
                       "--out", str(tmp_path / "y")])
    assert rc == 2 and "--device cuda" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ipc": 1, "budget": 3}, ConfigError, "exactly one of --ipc, --fraction or --budget"),
        ({}, ConfigError, "exactly one of"),
        ({"ipc": 1, "params": {"radius": 2}}, ConfigError, r"unknown --set parameter\(s\) \['radius'\]"),
        ({"ipc": 1, "seed": -1}, ConfigError, "--seed must be >= 0"),
        ({"ipc": 1, "options": {"proxy": ProxyOptions(ccs_score="loss")}}, ConfigError, "--ccs-score must be"),
        ({"ipc": 1.5}, ConfigError, "--ipc must be an integer"),
        ({"ipc": 1, "options": "fast"}, ConfigError, "options must be a SelectOptions"),
    ],
)
def test_select_dataset_rejects_bad_arguments(digits, kwargs, error, match):
    if isinstance(kwargs.get("options"), dict):
        kwargs["options"] = SelectOptions(**kwargs["options"])
    with pytest.raises(error, match=match):
        select_dataset(digits, "kcenter", **kwargs)


def test_files_of_datacomp_0_1_0_still_load(tmp_path):
    np.savez(tmp_path / "selection.npz", indices=np.array([3, 1]), scores=np.array([0.5, 0.2]),
             metadata=np.array(json.dumps({"method": "kcenter"})))
    assert Selection.load(tmp_path / "selection.npz").subset_digest()
    old = {"kind": "select", "method": "kcenter", "dataset": "digits", "num_items": 2, "ipc": None, "fraction": None,
           "seed": 0, "config": {}, "versions": {}, "cost": {}, "eval": None, "baseline": None,
           "full_train_size": 1257, "outputs": {"selection": "selection.npz"}, "selection_seconds": 0.1,
           "subset_sha256": "ab"}
    (tmp_path / "run.json").write_text(json.dumps(old))
    rec = RunRecord.read(tmp_path)
    assert rec.extra["subset_sha256"] == "ab" and rec.method == "kcenter"
