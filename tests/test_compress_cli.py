"""``datacomp train`` / ``datacomp compress`` and their library entries ``train_teacher`` / ``compress`` on digits
(tiny models, few epochs)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import datacomp.compression.stages as stages
from datacomp.cli import main
from datacomp.compression import (
    CompressConfig,
    CompressResult,
    KDConfig,
    KDSettings,
    TrainConfig,
    compress,
    load_model,
    resolve_small_set,
    train_teacher,
    upgrade_compress_record,
)
from datacomp.compression.quantize import QUANT_SUPPORT, QuantizationUnavailable
from datacomp.data import load_dataset
from datacomp.errors import ConfigError, DeviceError, MissingInputError, RunDirError
from datacomp.models import create_model
from datacomp.record import RunRecord
from datacomp.synset import SyntheticSet

RUN_KEYS = {"schema", "kind", "method", "dataset", "num_items", "ipc", "fraction", "seed", "config", "versions", "cost",
            "eval", "baseline", "full_train_size", "output_sha256", "teacher", "stages"}
FAST = ["--epochs", "3", "--latency-repeats", "3", "--quiet", "--device", "cpu"]
TRAIN = ["train", "--dataset", "digits", "--model", "convnet-3-in", "--model-arg", "width=16", "--protocol", "smoke",
         "--epochs", "8", "--batch-size", "64", "--lr", "0.05", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert main([*TRAIN, "--out", str(out), "--overwrite"]) == 0
    return out


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return load_model(teacher_dir)[0]


def fast(**kwargs) -> CompressConfig:
    return CompressConfig(**{"epochs": 2, "latency_repeats": 2, **kwargs})


# ------------------------------------------------------------------------------------------------------------ train
@pytest.mark.slow
def test_train_writes_a_safe_teacher_and_run_record(teacher_dir, digits):
    record = RunRecord.read(teacher_dir)
    run = json.loads((teacher_dir / "run.json").read_text())
    assert record.kind == "train" and record.dataset == "digits" and record.num_items == len(digits.train_y)
    assert run["eval"]["accuracies"][0] > 0.5 and "train-on-full" in [p["name"] for p in run["cost"]["phases"]]
    model, spec = load_model(teacher_dir)
    assert spec["arch"] == {"name": "convnet-3-in", "in_channels": 1, "num_classes": 10, "image_size": [8, 8],
                            "kwargs": {"width": 16}}
    assert spec["dataset"]["name"] == "digits" and spec["metadata"]["test_accuracy"] == run["eval"]["accuracies"][0]
    x = digits.normalize(digits.test_x)
    with torch.no_grad():
        acc = (model(x).argmax(1) == digits.test_y).float().mean().item()
    assert acc == pytest.approx(run["eval"]["accuracies"][0])
    assert oct((teacher_dir / "model.safetensors").stat().st_mode & 0o777) != oct(0o600)  # umask, not mkstemp's 0600


@pytest.mark.slow
def test_train_teacher_library_call_equals_the_command(teacher_dir, digits):
    config = TrainConfig(model="convnet-3-in", model_kwargs={"width": 16}, protocol="smoke",
                         overrides={"epochs": 8, "batch_size": 64, "lr": 0.05})
    result = train_teacher(digits, config, device="cpu", quiet=True)
    assert result.record.output_sha256 == RunRecord.read(teacher_dir).output_sha256
    assert result.accuracy == RunRecord.read(teacher_dir).eval["accuracies"][0] and result.model_file is None


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--model-arg", "widht=16"], r"--model-arg: model 'convnet-3-in' has no argument\(s\) widht; its arguments "
                                      r"are width, "),
        (["--model", "convnet-9-in"], "--model: unknown model 'convnet-9-in'"),
        (["--lr", "-0.1"], "lr > 0"),
        (["--set", "momentun=0.5"], "unknown protocol field"),
        (["--set", "lr=0.1"], "--set lr: also given as --lr"),
        (["--model-arg", "width"], "--model-arg expects KEY=VALUE"),
    ],
)
def test_train_rejects_bad_options_before_work(extra, match, tmp_path, capsys):
    code = main([*TRAIN, *extra, "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "t").exists()  # refused before any work: nothing written


def test_train_library_rejects_unknown_constructor_argument(digits):
    with pytest.raises(ConfigError, match=r"--model-arg: .* has no argument\(s\) depht; its arguments are width"):
        train_teacher(digits, TrainConfig(model_kwargs={"depht": 2}), device="cpu")


# ---------------------------------------------------------------------------------------------------------- compress
@pytest.mark.slow
def test_compress_all_stages(teacher_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["compress", "--teacher", str(teacher_dir), "--data", "random:5", "--prune", "0.5", "--structured",
                 "--importance", "taylor", "--kd", "--quantize", "int8", *FAST, "--out", str(out)])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert RUN_KEYS <= set(run) and run["kind"] == "compress"
    assert run["method"] == "prune-structured-taylor-0.5+kd+int8"
    assert run["num_items"] == 50 and run["ipc"] == 5 and run["config"]["stages"] == ["prune", "kd", "quantize"]
    teacher = run["teacher"]["report"]
    assert [s["stage"] for s in run["stages"]] == ["prune", "kd", "quantize"]
    prune, kd, quant = run["stages"]
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
    assert [p["name"] for p in kd["cost"]["phases"]] == ["train-on-subset"] and kd["model_file"] == "kd.safetensors"
    assert kd["details"]["kd"] is True
    if QUANT_SUPPORT["available"]:
        # (on models this tiny, per-channel scales and the header outweigh the 4x weight saving; see test_quantize)
        assert quant["status"] == "done" and quant["report"]["size_bytes"] < 0.5 * teacher["size_bytes"]
        assert run["output_sha256"] == quant["sha256"]
    assert {"prune", "train-on-subset"} <= {p["name"] for p in run["cost"]["phases"]}


@pytest.mark.slow
def test_compress_library_call_equals_the_command(teacher_dir, teacher, digits, tmp_path):
    args = ["--data", "random:3", "--prune", "0.5", "--structured", "--kd", "--augment", "color_crop_cutout"]
    assert main(["compress", "--teacher", str(teacher_dir), *args, *FAST, "--out", str(tmp_path / "cli")]) == 0
    result = compress(teacher, "random:3", digits, CompressConfig(prune=0.5, structured=True, kd=True, epochs=3,
                                                                 augment="color_crop_cutout", latency_repeats=3),
                      device="cpu", quiet=True)
    assert isinstance(result, CompressResult) and result.out is None
    cli = RunRecord.read(tmp_path / "cli")
    assert result.record.output_sha256 == cli.output_sha256 == result.stage("kd").sha256
    assert result.stage("kd").report["test_accuracy"] == cli.extra["stages"][1]["report"]["test_accuracy"]


@pytest.mark.slow
def test_compress_unstructured_finetune_and_student(teacher, digits):
    result = compress(teacher, "random:3", digits, fast(prune=0.3, finetune=True, augment="dsa"), device="cpu",
                      quiet=True)
    prune = result.stage("prune")
    assert prune.details["method"] == "global-unstructured-l1"
    assert prune.report["nonzero_parameters"] < prune.report["parameters"]
    assert result.stage("finetune").details["kd"] is False
    result = compress(teacher, "random:3", digits, fast(student="mlp", kd=True, augment="color_crop_cutout",
                                                        hint_weight=0.5), device="cpu", quiet=True)
    (stage,) = result.stages
    assert stage.details["hint"] is True and stage.details["student"]["name"] == "mlp"
    assert result.model.spec["name"] == "mlp"


def test_quantize_stage_reports_unavailable_instead_of_failing(teacher, digits, monkeypatch):
    def unavailable(*args, **kwargs):
        raise QuantizationUnavailable("no int8 flow in this torch build")

    monkeypatch.setattr(stages, "quantize_int8", unavailable)
    result = compress(teacher, resolve_small_set("random:2", digits), digits, fast(quantize="int8"), device="cpu",
                      quiet=True)
    (stage,) = result.stages
    assert stage.status == "unavailable" and "no int8 flow" in stage.reason and "report" not in stage.to_dict()


def test_small_sets_are_synthetic_sets(digits, tmp_path):
    from datacomp.evaluation import random_subset

    path = random_subset(digits, 2, seed=1).save(tmp_path / "s.safetensors")
    small = resolve_small_set(str(path), digits)
    assert isinstance(small, SyntheticSet) and len(small) == 20 and small.metadata["small_set"]["method"] == "random"
    full = resolve_small_set("full", digits)
    assert isinstance(full, SyntheticSet) and len(full) == len(digits.train_y)
    assert resolve_small_set("random:2:1", digits).content_digest() == small.content_digest()


def test_selection_file_data_source(digits, tmp_path):
    from datacomp.selectors import select

    selection = select("random", budget=30, labels=digits.train_y.numpy(), n_items=len(digits.train_y), seed=0)
    selection.save(tmp_path / "sel.npz")
    small = resolve_small_set(str(tmp_path / "sel.npz"), digits)
    idx = torch.as_tensor(selection.indices)
    assert len(small) == 30 and torch.equal(small.labels, digits.train_y[idx])
    torch.testing.assert_close(small.images, digits.train_x[idx])
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
        (dict(kd=True), "need a model to train"),
        (dict(prune=0.5, student="mlp", kd=True), "choose one"),
        (dict(student="mlp"), "a student needs training"),
        (dict(prune=0.5, hint_weight=1.0), "hint_weight .* needs kd"),
        (dict(prune=0.5, kd=True, augment="mixup"), "unknown augmentation"),
        (dict(prune=0.5, kd=True, augment="color_crop"), "not offered for this stage"),
        (dict(prune=0.5, kd=True, epochs=0), "epochs must be an integer >= 1"),
        (dict(prune=0.5, kd=True, alpha=1.2), r"alpha must lie in \[0, 1\]"),
        (dict(prune=0.5, kd=True, alpha=float("nan")), r"alpha must lie in \[0, 1\]"),
        (dict(prune=0.5, kd=True, lr=0.0), "lr must be > 0"),
        (dict(prune=0.5, kd=True, lr=-0.01), "lr must be > 0"),
        (dict(prune=0.5, kd=True, lr=float("inf")), "lr must be > 0"),
        (dict(prune=0.5, kd=True, weight_decay=-1e-4), "weight_decay must be >= 0"),
        (dict(prune=0.5, kd=True, momentum=-0.9), "momentum must be >= 0"),
        (dict(prune=0.5, kd=True, hint_weight=-1.0), "hint_weight must be >= 0"),
        (dict(prune=0.5, kd=True, temperature=0.0), "temperature must be > 0"),
        (dict(prune=0.5, kd=True, temperature=-2.0), "temperature must be > 0"),
        (dict(quantize="int8", calibration_size=0), "calibration_size must be an integer >= 1"),
        (dict(), "no stage selected"),
    ],
)
def test_config_rejects_bad_stage_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CompressConfig(**kwargs)


def test_legacy_diffaug_reads_as_the_pipeline_it_was():
    assert CompressConfig(prune=0.5, kd=True, augment="diffaug").augment == "color_crop_cutout"
    legacy = {"kind": "compress", "method": "prune-unstructured-0.5+kd", "dataset": "digits", "seed": 0,
              "config": {"prune": 0.5, "kd": True, "augment": "diffaug", "device": "cpu",
                         "stages": ["prune", "distill"]},
              "stages": [{"stage": "prune"}, {"stage": "distill", "details": {"kd": True},
                                              "model_file": "distill.safetensors"}]}
    record = upgrade_compress_record(RunRecord.from_dict(legacy))
    assert [s["stage"] for s in record.extra["stages"]] == ["prune", "kd"]
    assert record.config["stages"] == ["prune", "kd"] and record.config["augment"] == "color_crop_cutout"
    assert record.extra["stages"][1]["model_file"] == "distill.safetensors"
    config = CompressConfig.from_dict(legacy["config"])
    assert config.augment == "color_crop_cutout" and config.stages == ["prune", "kd"]


@pytest.mark.parametrize("stage", ["kd", "finetune"])
def test_training_settings_are_declared_once_and_keep_the_recorded_order(stage):
    """CompressConfig's training fields are KDSettings' (one declaration); kd_config() carries every one of them;
    the field order (the key order of run.json's config) is the one datacomp 0.1.0 recorded."""
    assert [f.name for f in dataclasses.fields(CompressConfig)] == [
        "prune", "structured", "importance", "global_pruning", "kd", "finetune", "student", "student_kwargs",
        "epochs", "batch_size", "lr", "momentum", "weight_decay", "temperature", "alpha", "hint_weight", "augment",
        "quantize", "calibration", "calibration_size", "latency_batch", "latency_repeats", "seed", "teachers",
        "teacher_weights", "born_again", "born_again_ensemble", "binarize"]
    shared = {f.name for f in dataclasses.fields(KDSettings)}
    assert shared == {f.name for f in dataclasses.fields(KDConfig)} - {"seed"}
    assert {f.name: f.default for f in dataclasses.fields(CompressConfig) if f.name in shared} == \
        {f.name: f.default for f in dataclasses.fields(KDSettings)}
    config = CompressConfig(prune=0.5, **{stage: True}, epochs=7, batch_size=9, lr=0.2, momentum=0.5,
                            weight_decay=1e-3, temperature=2.0, alpha=0.3, seed=5)
    assert config.kd_config() == KDConfig(epochs=7, batch_size=9, lr=0.2, momentum=0.5, weight_decay=1e-3,
                                          temperature=2.0, alpha=0.3 if stage == "kd" else 0.0, seed=5)
    assert list(CompressConfig.from_dict(config.to_dict()).to_dict()) == list(config.to_dict())


# ------------------------------------------------------------------------------------------- teacher / data mismatch
def test_teacher_of_other_classes_channels_or_size_is_refused_before_work(digits):
    small = resolve_small_set("random:1", digits)
    for channels, classes, size in ((1, 5, (8, 8)), (3, 10, (8, 8)), (1, 10, (16, 16))):
        torch.manual_seed(0)
        other = create_model("convnet-3-in", channels, classes, size, width=8)
        with pytest.raises(ConfigError, match=r"^--teacher is a convnet-3-in for .* pass a teacher trained on digits"):
            compress(other, small, digits, fast(quantize="int8"), device="cpu")
    three_class = SyntheticSet(torch.rand(6, 1, 8, 8), torch.arange(6) % 3,
                               {"dataset": "digits", "space": "pixel", "num_classes": 3, "method": "toy"})
    with pytest.raises(ConfigError, match="--data has 3 classes but dataset 'digits'"):
        resolve_small_set(three_class, digits)
    big = SyntheticSet(torch.rand(10, 1, 16, 16), torch.arange(10),
                       {"dataset": "digits", "space": "pixel", "num_classes": 10, "method": "toy"})
    with pytest.raises(ConfigError, match=r"--data images are \(1, 16, 16\)"):
        compress(create_model("convnet-3-in", 1, 10, (8, 8)), big, digits, fast(quantize="int8"), device="cpu")


@pytest.mark.slow
def test_cli_teacher_of_another_dataset_is_one_line_naming_teacher(tmp_path, capsys):
    teacher = tmp_path / "t"
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--protocol", "smoke", "--epochs", "1", "--quiet",
                 "--device", "cpu", "--out", str(teacher)]) == 0
    spec = json.loads((teacher / "model.json").read_text())
    spec["arch"]["in_channels"] = 3  # a teacher for RGB images (e.g. CIFAR-10) offered with digits
    spec["dataset"]["name"] = "cifar10"
    (teacher / "model.json").write_text(json.dumps(spec))
    code = main(["compress", "--teacher", str(teacher), "--dataset", "digits", "--data", "random:2", "--quantize",
                 "int8", *FAST, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("datacomp compress: error: ") and "--teacher" in err


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("random:x", ConfigError, "expected random:IPC"),
        ("random:1:2:3", ConfigError, "expected random:IPC"),
        ("nope.safetensors", MissingInputError, "neither 'full'"),
        ("", ConfigError, "--data must be"),
    ],
)
def test_bad_data_specs(spec, error, match, digits):
    with pytest.raises(error, match=match):
        resolve_small_set(spec, digits)


def test_unknown_student_argument_is_refused_before_work(teacher, digits):
    with pytest.raises(ConfigError, match=r"--student-arg: model 'convnet-2-in' has no argument\(s\) widht; its arguments are width"):
        compress(teacher, "random:1", digits, fast(student="convnet-2-in", student_kwargs={"widht": 8}, kd=True),
                 device="cpu")
    with pytest.raises(ConfigError, match="--student: unknown model 'convnet-9-in'"):
        compress(teacher, "random:1", digits, fast(student="convnet-9-in", kd=True), device="cpu")


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--prune", "1.5"], "prune must lie strictly between 0 and 1"),
        (["--prune", "0.5", "--kd", "--lr", "-1"], "lr must be > 0"),
        (["--prune", "0.5", "--kd", "--alpha", "2"], r"alpha must lie in \[0, 1\]"),
        (["--prune", "0.5", "--kd", "--temperature", "0"], "temperature must be > 0"),
        (["--prune", "0.5", "--kd", "--set", "weight_decay=-1"], "weight_decay must be >= 0"),
        (["--prune", "0.5", "--set", "prnue=0.5"], r"--set prnue: unknown compress setting \(did you mean prune\?\)"),
        (["--prune", "0.5", "--set", "prune=0.3"], "--set prune: also given as --prune"),
        (["--student", "mlp", "--kd", "--student-arg", "hiden=3"], r"--student-arg: model 'mlp' has no argument\(s\) hiden"),
        (["--quantize", "int8", "--device", "cuda:7"], "--device cuda:7"),
        (["--quantize", "int8", "--device", "tpu"], "--device"),
    ],
)
def test_cli_reports_bad_options_in_one_line(extra, match, teacher_dir, tmp_path, capsys):
    code = main(["compress", "--teacher", str(teacher_dir), "--data", "random:2", *extra, "--quiet",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "x").exists()


def test_cli_missing_teacher_and_bad_choices(teacher_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--teacher", str(teacher_dir), "--data", "random:2", "--quantize", "int4",
              "--out", str(tmp_path / "y")])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    code = main(["compress", "--teacher", str(tmp_path / "missing"), "--data", "random:2", "--quantize", "int8",
                 "--out", str(tmp_path / "z")])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_corrupt_or_mismatched_teacher_file_is_a_format_error(teacher_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(teacher_dir, bad)
    spec = json.loads((bad / "model.json").read_text())
    spec["arch"]["name"] = "convnet-2-in"  # the weights are of a convnet-3-in
    (bad / "model.json").write_text(json.dumps(spec))
    code = main(["compress", "--teacher", str(bad), "--data", "random:2", "--quantize", "int8", *FAST,
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "which the rebuilt architecture does not have" in err and len(err.strip().splitlines()) == 1
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)
    code = main(["compress", "--teacher", str(bad), "--data", "random:2", "--quantize", "int8", *FAST,
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "not a valid safetensors file" in capsys.readouterr().err


def test_out_holding_another_run_is_refused_unless_overwrite(teacher, digits, tmp_path):
    config = fast(quantize="int8")
    compress(teacher, "random:1", digits, config, out=tmp_path / "run", device="cpu", quiet=True)
    with pytest.raises(RunDirError, match="already holds a run"):
        compress(teacher, "random:1", digits, config, out=tmp_path / "run", device="cpu", quiet=True)
    result = compress(teacher, "random:1", digits, config, out=tmp_path / "run", overwrite=True, device="cpu",
                      quiet=True)
    assert RunRecord.read(tmp_path / "run").output_sha256 == result.record.output_sha256
    with pytest.raises(RunDirError, match="already holds a run"):
        train_teacher(digits, TrainConfig(protocol="smoke"), out=tmp_path / "run", device="cpu")


def test_device_is_checked_before_work(teacher, digits, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        compress(teacher, "random:1", digits, fast(quantize="int8"), device="cuda")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        train_teacher(digits, device="cuda")
