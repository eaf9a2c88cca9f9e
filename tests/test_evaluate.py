from __future__ import annotations

import json

import pytest
import torch
from conftest import requires_cifar10

from datacomp import training
from datacomp.cli import build_parser, main
from datacomp.data import load_dataset
from datacomp.errors import ConfigError
from datacomp.evaluation import (
    PROTOCOLS,
    EvalSettings,
    TrainingRun,
    evaluate_random_baseline,
    evaluate_synset,
    get_protocol,
    hard_label_recovery,
    improvement_over_random,
    random_subset,
)
from datacomp.synset import SyntheticSet

QUIET = EvalSettings(device="cpu", progress=False)


def test_protocols_are_documented_with_their_source():
    assert {"dm", "ncfm", "quick"} <= set(PROTOCOLS)
    dm = PROTOCOLS["dm"]
    assert (dm.optimizer, dm.lr, dm.momentum, dm.weight_decay, dm.epochs, dm.batch_size, dm.augment, dm.select) == (
        "sgd", 0.01, 0.9, 5e-4, 1000, 256, "dsa", "final")
    ncfm = PROTOCOLS["ncfm"]
    assert (ncfm.optimizer, ncfm.lr, ncfm.epochs, ncfm.milestones, ncfm.gamma, ncfm.cutmix_prob, ncfm.select) == (
        "adamw", 0.001, 2000, (0.2, 0.4, 0.6, 0.8), 0.5, 0.5, "best")
    assert all(p.source for p in PROTOCOLS.values())


def test_cli_help_names_every_protocol(capsys):
    for command in ("eval", "train", "select", "distill"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "training preset: " + ", ".join(PROTOCOLS) in text, command


@pytest.mark.parametrize(
    "call, match",
    [(lambda: get_protocol("fast"), "unknown protocol 'fast'"),
     (lambda: get_protocol("quick", epochs=0), "epochs >= 1"),
     (lambda: get_protocol("quick", optimizer="adam"), "optimizer must be"),
     (lambda: get_protocol("quick", augment="mixup"), "protocol augment: unknown augmentation .mixup."),
     (lambda: get_protocol("quick", select="median"), "select must be"),
     (lambda: get_protocol("quick", nonsense=1), "unknown protocol field")],
)
def test_bad_protocols(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_protocols_name_their_augmentation_and_read_0_1_0_configs():
    from datacomp.evaluation import Protocol

    assert PROTOCOLS["ncfm"].augment == "color_crop_flip_scale_rotate" and PROTOCOLS["ncfm"].augment_strategy is None
    old = dict(PROTOCOLS["ncfm"].to_dict(), augment="diffaug", augment_strategy="color_crop_flip_scale_rotate")
    assert Protocol.from_dict(old) == PROTOCOLS["ncfm"]  # a 0.1.0 run.json protocol_config
    assert get_protocol("quick", augment="diffaug").augment == "color_crop_flip_scale_rotate"  # 0.1.0's default
    with pytest.raises(ValueError, match="augment_strategy applies to augment='dsa' only"):
        get_protocol("quick", augment="color_crop", augment_strategy="crop")
    with pytest.raises(ValueError, match="unknown field"):
        Protocol.from_dict(dict(old, colour=1))


def test_override_renames_the_protocol():
    assert get_protocol("quick", epochs=5).name == "quick+epochs=5"


def test_random_subset_is_reproducible_and_balanced():
    ds = load_dataset("digits")
    a, b = random_subset(ds, 3, seed=1), random_subset(ds, 3, seed=1)
    assert a.images_per_class() == [3] * 10
    assert torch.equal(a.source_indices, b.source_indices)
    torch.testing.assert_close(a.images, ds.train_x[a.source_indices])
    assert torch.equal(a.labels, ds.train_y[a.source_indices])
    with pytest.raises(ValueError, match="ipc must be between 1 and"):
        random_subset(ds, 10_000)
    with pytest.raises(ValueError, match="ipc must be between 1 and"):
        random_subset(ds, 0)


@pytest.fixture(scope="module")
def digits_fp32():
    """Two float32 runs of the smoke protocol cut to 15 epochs on 10 random digits per class (~0.79; chance 0.1),
    shared by the end-to-end and the bf16 tests."""
    ds = load_dataset("digits")
    syn = random_subset(ds, 10, seed=0)
    protocol = get_protocol("smoke", epochs=15)
    return ds, syn, protocol, evaluate_synset(syn, ds, protocol=protocol, runs=2, settings=QUIET)


def test_evaluation_end_to_end_on_digits_is_far_above_chance(digits_fp32):
    ds, syn, protocol, res = digits_fp32
    assert len(res.accuracies) == 2 and res.mean > 0.6  # chance is 0.1
    d = res.to_dict()
    assert d["protocol"] == protocol.name and d["num_train_images"] == 100
    ph = res.cost["train-on-subset"]
    assert ph.extra["runs"] == 2 and ph.extra["samples_seen"] == 2 * 100 * 15
    assert ph.flops_forward > 0 and ph.flops_backward > 0
    # the same seed gives the same accuracies
    again = evaluate_synset(syn, ds, protocol=protocol, runs=1, settings=QUIET)
    assert again.accuracies == res.accuracies[:1]
    base = evaluate_random_baseline(ds, [5] * 10, protocol=protocol, runs=1, settings=QUIET)
    assert improvement_over_random(res, base) == pytest.approx(res.mean - base.mean)
    assert hard_label_recovery(res, base) == pytest.approx(res.mean - base.mean)


def test_bf16_protocol_trains_as_well_as_float32_on_digits(digits_fp32):
    ds, syn, protocol, fp32 = digits_fp32  # fp32.accuracies[0]: the run with the seed a runs=1 evaluation uses
    bf16 = evaluate_synset(syn, ds, protocol=get_protocol(protocol, bf16=True), runs=1, settings=QUIET)
    assert bf16.mean > 0.6 and abs(bf16.mean - fp32.accuracies[0]) < 0.05
    assert get_protocol("quick-bf16").bf16 and not get_protocol("quick").bf16


@pytest.mark.parametrize("soft, weighted, cutmix", [(False, False, 0.0), (True, True, 0.0), (False, True, 1.0)])
def test_micro_batches_give_the_whole_batch_gradient(monkeypatch, soft, weighted, cutmix):
    import datacomp.evaluation as evaluate
    from datacomp.models import create_model

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (20,), generator=gen)
    if soft:
        y = torch.softmax(torch.randn(20, 10, generator=gen), 1)
    weights = torch.rand(20, generator=gen) + 0.1 if weighted else None
    protocol = get_protocol("smoke", epochs=2, batch_size=8, cutmix_prob=cutmix)
    params = []
    for micro in (3, 10**6):
        monkeypatch.setattr(training, "MICRO_BATCH", micro)
        torch.manual_seed(1)
        model = create_model("convnet-2-in", 1, 10, (8, 8))
        assert evaluate.micro_batch_size(model, torch.device("cpu")) == micro
        evaluate.train_classifier(model, x, y, protocol, weights=weights,
                                  run=TrainingRun(torch.Generator().manual_seed(2)))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=1e-4, atol=1e-5)


def test_batch_norm_models_train_on_whole_batches():
    from datacomp.evaluation import micro_batch_size
    from datacomp.models import create_model

    assert micro_batch_size(create_model("convnet-2-bn", 1, 10, (8, 8)), torch.device("cpu")) is None


@pytest.mark.parametrize("augment", ["dsa", "diffaug"])
def test_augmented_protocols_and_soft_labels_run(augment):
    ds = load_dataset("digits")
    syn = random_subset(ds, 2, seed=0)
    soft = torch.nn.functional.one_hot(syn.labels, 10).float() * 0.9 + 0.01
    syn = SyntheticSet(syn.images, soft, dict(syn.metadata))
    protocol = get_protocol("smoke", epochs=3, augment=augment, cutmix_prob=0.5, select="best", eval_every=1)
    res = evaluate_synset(syn, ds, protocol=protocol, runs=1, settings=QUIET)
    assert 0 <= res.mean <= 1
    assert "evaluation" in res.cost  # test passes are kept out of the training cost


@pytest.mark.parametrize(
    "change, match",
    [(dict(runs=0), "runs must be >= 1"), (dict(classes=3), "3 classes but dataset 'digits' has 10"),
     (dict(shape=(1, 4, 4)), "images are")],
)
def test_evaluation_rejects_mismatches(change, match):
    ds = load_dataset("digits")
    syn = random_subset(ds, 1)
    if "classes" in change:
        syn = SyntheticSet(syn.images[:3], torch.arange(3), dict(syn.metadata, num_classes=3))
    if "shape" in change:
        syn = SyntheticSet(torch.rand(10, 1, 4, 4), syn.labels, dict(syn.metadata))
    with pytest.raises(ValueError, match=match):
        evaluate_synset(syn, ds, runs=change.get("runs", 1), protocol="smoke", settings=QUIET)


def _mosaic_set(ds, ipc=3, factor=2):
    syn = random_subset(ds, ipc, seed=4)
    return SyntheticSet(syn.images, syn.labels, dict(syn.metadata, factor=factor))


def test_cli_subset_then_eval(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert main(["subset", "random", "--dataset", "digits", "--ipc", "5", "--seed", "1", "--out", str(out)]) == 0
    assert SyntheticSet.load(out).images_per_class() == [5] * 10
    rc = main(["eval", str(out), "--protocol", "smoke", "--epochs", "10", "--runs", "1", "--model", "convnet-3-in",
               "mlp", "--json", str(tmp_path / "e.json"), "--out", str(tmp_path / "run")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "protocol 'smoke+epochs=10'" in text and "IOR" in text
    doc = json.loads((tmp_path / "e.json").read_text())
    assert set(doc["results"]) == {"convnet-3-in", "mlp"} and len(doc["results"]["mlp"]["accuracies"]) == 1
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["kind"] == "eval" and run["eval"]["mean"] > 0.1 and run["baseline"] is not None
    assert run["schema"] == 1 and run["output_sha256"] == SyntheticSet.load(out).content_digest()
    from datacomp.record import RunRecord

    assert RunRecord.read(tmp_path / "run").extra["evaluations"]["mlp"]["model"] == "mlp"


@pytest.fixture()
def small_set(tmp_path):
    return random_subset(load_dataset("digits"), 1, seed=0).save(tmp_path / "s.safetensors")


def _no_training(monkeypatch):
    import datacomp.cli.evaluate as cli_eval

    def boom(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(cli_eval, "evaluate_synset", boom)
    monkeypatch.setattr(cli_eval, "evaluate_random_baseline", boom)


@pytest.mark.parametrize(
    "extra, match",
    [(["--json", "{tmp}"], "--json .* is a folder; give a file path"),
     (["--json", "{tmp}/file.txt/x.json"], "--json .*file.txt is a file, not a folder"),
     (["--json", "{tmp}/locked/x.json"], "--json .*locked is not writable"),
     (["--device", "cuda:3"], "--device cuda:3"),
     (["--model", "convnet-3-in", "nope-net"], "--model: unknown model 'nope-net'"),
     (["--model", "convnet-4-in"], "too small for a depth-4 ConvNet"),
     (["--protocol", "fastest"], "unknown protocol 'fastest'"),
     (["--runs", "0"], "--runs must be >= 1"),
     (["--out", "{tmp}/heldrun"], "--out .*heldrun already holds a run; choose another folder or pass --overwrite")],
)
def test_cli_eval_checks_outputs_and_arguments_before_training(small_set, tmp_path, capsys, monkeypatch, extra, match):
    import os

    if os.geteuid() == 0 and "locked" in " ".join(extra):
        pytest.skip("root can write anywhere")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "locked").mkdir(mode=0o500)
    (tmp_path / "heldrun").mkdir()
    (tmp_path / "heldrun" / "run.json").write_text("{}")
    _no_training(monkeypatch)
    argv = ["eval", str(small_set), "--protocol", "smoke", "--quiet", *[e.format(tmp=tmp_path) for e in extra]]
    assert main(argv) == 2
    assert pytest.importorskip("re").search(match, capsys.readouterr().err)


def test_cli_subset_refuses_an_existing_file_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    out.write_bytes(b"a file of the user")
    argv = ["subset", "random", "--dataset", "digits", "--ipc", "2", "--out", str(out)]
    assert main(argv) == 2
    assert "already exists; choose another path or pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"a file of the user"
    assert main([*argv, "--overwrite"]) == 0 and SyntheticSet.load(out).images_per_class() == [2] * 10
    assert main(["subset", "random", "--dataset", "digits", "--ipc", "2", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_cli_eval_baseline_of_a_multiformation_set_has_the_stored_ipc(tmp_path, capsys):
    ds = load_dataset("digits")
    path = _mosaic_set(ds, ipc=2, factor=2).save(tmp_path / "m.safetensors")
    assert main(["eval", str(path), "--protocol", "smoke", "--epochs", "2", "--runs", "1", "--quiet", "--json",
                 str(tmp_path / "e.json")]) == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["results"]["convnet-3-in"]["num_train_images"] == 80  # 20 mosaics decoded into 4 tiles each
    assert doc["baselines"]["convnet-3-in"]["num_train_images"] == 20  # 2 stored images per class, not 8


def test_baseline_counts_are_the_stored_images_per_class():
    from datacomp.evaluation import baseline_counts

    ds = load_dataset("digits")
    assert baseline_counts(_mosaic_set(ds, ipc=3, factor=2)) == [3] * 10  # not 2 x 2 x 3 decoded images
    assert len(_mosaic_set(ds, 3, 2).training_tensors()[0]) == 120
    sel = random_subset(ds, [1, 2, 3, 1, 1, 1, 1, 1, 1, 4], seed=0)
    assert baseline_counts(sel) == [1, 2, 3, 1, 1, 1, 1, 1, 1, 4]


def test_random_baseline_set_keeps_empty_classes_empty_and_the_other_draws():
    from datacomp.evaluation import random_baseline_set

    ds = load_dataset("digits")
    counts = [0, 2, 3, 0, 1, 1, 1, 1, 1, 4]
    base = random_baseline_set(ds, counts, seed=7)
    assert base.images_per_class() == counts
    full = random_subset(ds, [max(c, 1) for c in counts], seed=7)
    for c, k in enumerate(counts):
        assert torch.equal(base.source_indices[base.labels == c], full.source_indices[full.labels == c][:k])
    assert torch.equal(random_baseline_set(ds, 3, seed=2).images, random_subset(ds, 3, seed=2).images)
    with pytest.raises(ValueError, match="not all 0"):
        random_baseline_set(ds, [0] * 10)


def test_evaluate_scores_a_set_and_its_random_baseline():
    import datacomp
    from datacomp.evaluation import baseline_counts

    ds = load_dataset("digits")
    syn = _mosaic_set(ds, ipc=2, factor=2)
    seeded = EvalSettings(seed=3, device="cpu", progress=False)
    smoke = get_protocol("smoke", epochs=3)  # seed-dependent accuracies (not their level) are what is compared
    res = datacomp.evaluate(syn, ds, protocol=smoke, runs=1, settings=seeded)
    same = evaluate_synset(syn, ds, protocol=smoke, runs=1, settings=seeded)
    base = evaluate_random_baseline(ds, baseline_counts(syn), protocol=smoke, runs=1, settings=seeded)
    assert res.accuracies == same.accuracies and res.baseline.accuracies == base.accuracies
    assert res.baseline.num_train_images == 20 and res.num_train_images == 80
    assert res.improvement_over_random == pytest.approx(improvement_over_random(same, base))
    doc = res.to_dict()
    assert doc["baseline"]["num_train_images"] == 20 and "improvement_over_random" in doc
    assert type(res).from_dict(doc).baseline.accuracies == base.accuracies
    assert datacomp.evaluate(syn, ds, protocol=smoke, runs=1, baseline=False, settings=QUIET).baseline is None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [(dict(device="cuda:7"), "DeviceError", "device cuda:7"), (dict(seed=-1), "ConfigError", "seed must be"),
     (dict(synset=3), "ConfigError", "synset must be"), (dict(runs=0), "ConfigError", "runs must be >= 1"),
     (dict(synset="/no/such.safetensors"), "FileNotFoundError", "no SyntheticSet at"),
     (dict(protocol="fastest"), "ConfigError", "unknown protocol 'fastest'")],
)
def test_evaluate_rejects_bad_arguments_before_training(kwargs, error, match):
    import datacomp
    import datacomp.errors as errors

    ds = load_dataset("digits")
    syn = kwargs.pop("synset", random_subset(ds, 1))
    cls = getattr(errors, error, None) or getattr(__builtins__, error, None) or FileNotFoundError
    settings = {k: kwargs.pop(k) for k in ("device", "seed") if k in kwargs}
    with pytest.raises(cls, match=match):
        datacomp.evaluate(syn, ds, settings=EvalSettings(**settings, progress=False), **kwargs)


@pytest.mark.parametrize(
    "argv, match",
    [(["subset", "random", "--dataset", "digits", "--ipc", "0", "--out", "x.safetensors"], "ipc must be"),
     (["subset", "random", "--dataset", "nope", "--ipc", "1", "--out", "x.safetensors"], "unknown dataset"),
     (["eval", "/no/such.safetensors"], "no SyntheticSet at")],
)
def test_cli_errors_are_clear(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert pytest.importorskip("re").search(match, capsys.readouterr().err)


@requires_cifar10
@pytest.mark.shared_data
def test_cifar10_random_subset_quick_eval_beats_chance(tmp_path):
    import dataclasses

    ds = load_dataset("cifar10")
    syn = random_subset(ds, 10, seed=0)
    # Scored on the first 2000 test images (~200 per class; the standard error of the accuracy is ~1 point).
    ds = dataclasses.replace(ds, test_x=ds.test_x[:2000], test_y=ds.test_y[:2000])
    res = evaluate_synset(syn, ds, protocol=get_protocol("quick", epochs=15), runs=1, settings=QUIET)
    assert res.mean > 0.15  # chance 0.10; 15 epochs give ~0.25, the full 300-epoch quick protocol ~25-28%
