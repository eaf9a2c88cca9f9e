"""``datacomp train`` and ``datacomp compress`` end to end on digits (tiny models, few epochs)."""

from __future__ import annotations

import json

import pytest
import torch

import datacomp.compression.pipeline as pipeline
from datacomp.cli import main
from datacomp.compression.modelio import load_model
from datacomp.compression.pipeline import CompressConfig, SmallSet, resolve_small_set, run_compression
from datacomp.compression.quantize import QUANT_SUPPORT, QuantizationUnavailable
from datacomp.data import load_dataset
from datacomp.models import create_model
from datacomp.synset import SyntheticSet

RUN_KEYS = {"kind", "method", "dataset", "num_items", "ipc", "fraction", "seed", "config", "versions", "cost", "eval",
            "baseline", "full_train_size", "stages"}
FAST = ["--epochs", "3", "--latency-repeats", "3", "--quiet"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    code = main(["train", "--dataset", "digits", "--model", "convnet-3-in", "--model-arg", "width=16",
                 "--protocol", "smoke", "--epochs", "8", "--batch-size", "64", "--lr", "0.05", "--quiet",
                 "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_a_safe_teacher_and_run_record(teacher_dir, digits):
    run = json.loads((teacher_dir / "run.json").read_text())
    assert run["kind"] == "train" and run["dataset"] == "digits" and run["num_items"] == len(digits.train_y)
    assert run["eval"]["accuracies"][0] > 0.5 and "train-on-full" in [p["name"] for p in run["cost"]["phases"]]
    model, spec = load_model(teacher_dir)
    assert spec["arch"] == {"name": "convnet-3-in", "in_channels": 1, "num_classes": 10, "image_size": [8, 8],
                            "kwargs": {"width": 16}}
    assert spec["dataset"]["name"] == "digits" and spec["metadata"]["test_accuracy"] == run["eval"]["accuracies"][0]
    x = digits.normalize(digits.test_x)
    with torch.no_grad():
        acc = (model(x).argmax(1) == digits.test_y).float().mean().item()
    assert acc == pytest.approx(run["eval"]["accuracies"][0])


def test_compress_all_stages(teacher_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["compress", "--teacher", str(teacher_dir), "--data", "random:5", "--prune", "0.5", "--structured",
                 "--importance", "taylor", "--kd", "--quantize", "int8", *FAST, "--out", str(out)])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert RUN_KEYS <= set(run) and run["kind"] == "compress"
    assert run["method"] == "prune-structured-taylor-0.5+kd+int8"
    assert run["num_items"] == 50 and run["ipc"] == 5
    teacher = run["teacher"]["report"]
    names = [s["stage"] for s in run["stages"]]
    assert names == ["prune", "distill", "quantize"]
    prune, distill, quant = run["stages"]
    assert prune["report"]["parameters"] < 0.35 * teacher["parameters"]
    assert prune["report"]["macs_per_image"] < 0.35 * teacher["macs_per_image"]
    for stage in run["stages"]:
        if stage["status"] == "unavailable":
            continue
        report = stage["report"]
        assert set(report) >= {"parameters", "macs_per_image", "latency", "size_bytes", "test_accuracy"}
        assert report["latency"]["median_ms"] > 0 and 0 <= report["test_accuracy"] <= 1
        assert stage["cost"]["phases"], stage["stage"]
        model, _ = load_model(out / stage["model_file"])
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert [p["name"] for p in distill["cost"]["phases"]] == ["train-on-subset"]
    assert distill["details"]["kd"] is True
    if QUANT_SUPPORT["available"]:
        # (on models this tiny, per-channel scales and the header outweigh the 4x weight saving; see test_quantize)
        assert quant["status"] == "done" and quant["report"]["size_bytes"] < 0.5 * teacher["size_bytes"]
    phase_names = {p["name"] for p in run["cost"]["phases"]}
    assert {"prune", "train-on-subset"} <= phase_names


def test_compress_unstructured_finetune_and_student(teacher_dir, tmp_path, digits):
    teacher, _ = load_model(teacher_dir)
    small = resolve_small_set("random:3", digits)
    doc = run_compression(teacher, digits, small, CompressConfig(prune=0.3, finetune=True, epochs=2, augment="dsa",
                                                                 latency_repeats=2), progress=False)
    prune = doc["stages"][0]
    assert prune["details"]["method"] == "global-unstructured-l1"
    assert prune["report"]["nonzero_parameters"] < prune["report"]["parameters"]
    assert doc["stages"][1]["details"]["kd"] is False
    doc = run_compression(teacher, digits, small, CompressConfig(student="mlp", kd=True, epochs=2, augment="diffaug",
                                                                 hint_weight=0.5, latency_repeats=2), progress=False)
    assert doc["stages"][0]["details"]["hint"] is True
    assert doc["stages"][0]["details"]["student"]["name"] == "mlp"


def test_quantize_stage_reports_unavailable_instead_of_failing(teacher_dir, digits, monkeypatch):
    def unavailable(*args, **kwargs):
        raise QuantizationUnavailable("no int8 flow in this torch build")

    monkeypatch.setattr(pipeline, "quantize_int8", unavailable)
    teacher, _ = load_model(teacher_dir)
    doc = run_compression(teacher, digits, resolve_small_set("random:2", digits),
                          CompressConfig(quantize="int8", latency_repeats=2), progress=False)
    (stage,) = doc["stages"]
    assert stage["status"] == "unavailable" and "no int8 flow" in stage["reason"] and "report" not in stage


def test_synset_data_source(teacher_dir, digits, tmp_path):
    from datacomp.evaluation import random_subset

    path = random_subset(digits, 2, seed=1).save(tmp_path / "s.safetensors")
    small = resolve_small_set(str(path), digits)
    assert len(small.x) == 20 and small.info["method"] == "random"
    full = resolve_small_set("full", digits)
    assert len(full.x) == len(digits.train_y)


def test_selection_file_data_source(digits, tmp_path):
    from datacomp.selectors import select

    selection = select("random", budget=30, labels=digits.train_y.numpy(), n_items=len(digits.train_y), seed=0)
    selection.save(tmp_path / "sel.npz")
    small = resolve_small_set(str(tmp_path / "sel.npz"), digits)
    idx = torch.as_tensor(selection.indices)
    assert len(small.x) == 30 and torch.equal(small.y, digits.train_y[idx])
    torch.testing.assert_close(small.x, digits.normalize(digits.train_x[idx]))
    selection.indices = selection.indices + len(digits.train_y)  # indices of some other, larger pool
    selection.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="select from this dataset's training split"):
        resolve_small_set(str(tmp_path / "bad.npz"), digits)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prune=0.0), "strictly between 0 and 1"),
        (dict(prune=1.0), "strictly between 0 and 1"),
        (dict(prune=-0.5), "strictly between 0 and 1"),
        (dict(quantize="int4"), "unknown quantize option 'int4'"),
        (dict(quantize="int8", calibration="first"), "unknown calibration source"),
        (dict(prune=0.5, structured=True, importance="random"), "unknown importance"),
        (dict(prune=0.5, importance="taylor"), "add structured=True"),
        (dict(prune=0.5, kd=True, finetune=True), "not both"),
        (dict(kd=True), "distillation needs a model to train"),
        (dict(prune=0.5, student="mlp", kd=True), "choose one"),
        (dict(student="mlp"), "a student needs training"),
        (dict(prune=0.5, hint_weight=1.0), "hint_weight .* needs kd"),
        (dict(prune=0.5, kd=True, augment="mixup"), "unknown augment"),
        (dict(prune=0.5, kd=True, epochs=0), "epochs must be >= 1"),
        (dict(prune=0.5, kd=True, alpha=1.2), r"alpha must lie in \[0, 1\]"),
        (dict(quantize="int8", calibration_size=0), "calibration_size must be >= 1"),
        (dict(), "no stage selected"),
    ],
)
def test_config_rejects_bad_stage_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompressConfig(**kwargs)


def test_teacher_and_data_with_different_class_counts_are_rejected(digits):
    torch.manual_seed(0)
    five_class_teacher = create_model("convnet-3-in", 1, 5, (8, 8), width=8)
    small = resolve_small_set("random:1", digits)
    with pytest.raises(ValueError, match="teacher and data must have the same classes"):
        run_compression(five_class_teacher, digits, small, CompressConfig(quantize="int8"), progress=False)
    three_class = SyntheticSet(torch.rand(6, 1, 8, 8), torch.arange(6) % 3,
                               {"dataset": "digits", "space": "pixel", "num_classes": 3, "method": "toy"})
    with pytest.raises(ValueError, match="data has 3 classes but dataset 'digits'"):
        resolve_small_set(_save(three_class), digits)
    teacher = create_model("convnet-3-in", 1, 10, (8, 8), width=8)
    labels_beyond = SmallSet(torch.zeros(2, 1, 8, 8), torch.zeros(2, 12), {"source": "toy"})
    with pytest.raises(ValueError, match="labels span 12 classes"):
        run_compression(teacher, digits, labels_beyond, CompressConfig(quantize="int8"), progress=False)


def _save(synset: SyntheticSet) -> str:
    import tempfile
    from pathlib import Path

    return str(synset.save(Path(tempfile.mkdtemp()) / "s.safetensors"))


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("random:x", ValueError, "expected random:IPC"),
        ("random:1:2:3", ValueError, "expected random:IPC"),
        ("nope.safetensors", FileNotFoundError, "neither 'full'"),
        ("", ValueError, "data must be"),
    ],
)
def test_bad_data_specs(spec, error, match, digits):
    with pytest.raises(error, match=match):
        resolve_small_set(spec, digits)


def test_cli_reports_bad_options_clearly(teacher_dir, tmp_path, capsys):
    code = main(["compress", "--teacher", str(teacher_dir), "--data", "random:2", "--prune", "1.5",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "prune must lie strictly between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", "--teacher", str(teacher_dir), "--data", "random:2", "--quantize", "int4",
              "--out", str(tmp_path / "y")])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    code = main(["compress", "--teacher", str(tmp_path / "missing"), "--data", "random:2", "--quantize", "int8",
                 "--out", str(tmp_path / "z")])
    assert code == 2 and "not found" in capsys.readouterr().err
