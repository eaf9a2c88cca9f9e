"""The compress stages multi-teacher KD (``multi-kd``), born-again generations and XNOR binarization, on digits with
tiny models."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from datacomp.cli import main
from datacomp.compression import (
    CompressConfig,
    KDConfig,
    TeacherEnsemble,
    binarize_model,
    binarize_weight,
    binary_size,
    combine_teacher_logits,
    compress,
    freeze_binarized,
    kd_loss,
    load_model,
    save_model,
    sign_ste,
    train_student,
)
from datacomp.compression.binarize import calibrate_thresholds
from datacomp.cost import CostLedger
from datacomp.data import load_dataset
from datacomp.errors import ConfigError, MissingInputError
from datacomp.models import create_model

FAST = dict(epochs=2, latency_repeats=2)
TINY = dict(student="convnet-2-in", student_kwargs={"width": 8})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _teacher(digits, seed: int, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("convnet-3-in", 1, num_classes, (8, 8), width=8)
    y = digits.train_y % num_classes
    train_student(model, (digits.normalize(digits.train_x), y), config=KDConfig(epochs=2, batch_size=64, lr=0.05,
                                                                                 seed=seed), progress=False)
    return model


@pytest.fixture(scope="module")
def teachers(digits, tmp_path_factory):
    """Two digits teachers saved as model files: (paths, models)."""
    folder = tmp_path_factory.mktemp("teachers")
    models = [_teacher(digits, seed) for seed in (0, 1)]
    paths = [str(save_model(m, folder / f"t{i}.safetensors", dataset=digits.info())) for i, m in enumerate(models)]
    return paths, [load_model(p)[0] for p in paths]


class _Fixed(torch.nn.Module):
    """A 'teacher' with fixed logits for every image."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor([logits]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


# ------------------------------------------------------------------------------------------------- multi-teacher KD
def test_multi_teacher_combination_equals_hand_computation():
    # At T = 2, logits (2 ln 3, 0) give (3/4, 1/4) and (0, 0) gives (1/2, 1/2); weights (1, 3) -> (1/4, 3/4):
    # p_mix = 1/4 (3/4, 1/4) + 3/4 (1/2, 1/2) = (9/16, 7/16).
    z1, z2 = [2 * math.log(3.0), 0.0], [0.0, 0.0]
    combined = combine_teacher_logits([torch.tensor([z1]), torch.tensor([z2])], [1.0, 3.0], temperature=2.0)
    torch.testing.assert_close(F.softmax(combined / 2.0, dim=1), torch.tensor([[9 / 16, 7 / 16]]))
    ensemble = TeacherEnsemble([_Fixed(z1), _Fixed(z2)], [1.0, 3.0], temperature=2.0)
    torch.testing.assert_close(ensemble(torch.zeros(3, 1)), combined.expand(3, -1))
    assert ensemble.weight_values == [0.25, 0.75]
    # the KD term against the mixture, by hand: a zero student has (1/2, 1/2)
    kl = 9 / 16 * math.log(9 / 8) + 7 / 16 * math.log(7 / 8)
    got = kd_loss(torch.zeros(1, 2), combined, temperature=2.0, alpha=1.0)
    assert got.item() == pytest.approx(2.0**2 * kl, rel=1e-5)
    # equal weights by default; a zero weight drops its teacher exactly
    torch.testing.assert_close(F.softmax(TeacherEnsemble([_Fixed(z1), _Fixed(z2)], temperature=2.0)(
        torch.zeros(1, 1)) / 2.0, 1), torch.tensor([[5 / 8, 3 / 8]]))
    only_first = combine_teacher_logits(torch.tensor([[z1], [z2]]), [1.0, 0.0], temperature=2.0)
    torch.testing.assert_close(F.softmax(only_first / 2.0, 1), torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize("augment", [False, True])
def test_single_teacher_multi_kd_equals_plain_kd(teachers, digits, augment):
    """One teacher in the ensemble is plain KD: same loss curve and weights, whether the ensemble's outputs are cached
    (no augmentation) or computed per augmented batch."""
    from datacomp.augment import make_augment

    teacher = teachers[1][0]
    x, y = digits.normalize(digits.train_x[:60]), digits.train_y[:60]
    config = KDConfig(epochs=3, batch_size=16, lr=0.05, temperature=3.0, alpha=0.7)
    runs = []
    for kd_teacher in (teacher, TeacherEnsemble([teacher], temperature=3.0)):
        torch.manual_seed(0)
        student = create_model("convnet-2-in", 1, 10, (8, 8), width=8)
        ledger = CostLedger()
        aug = make_augment("color_crop_cutout", dataset="digits", generator=0) if augment else None
        out = train_student(student, (x, y), teacher=kd_teacher, config=config, augment=aug, ledger=ledger,
                            progress=False)
        runs.append((student.state_dict(), out, ledger))
    (plain, plain_out, _), (multi, multi_out, ledger) = runs
    assert multi_out["teacher_cache"] is (not augment) and plain_out["teacher_cache"] is False
    assert ("teacher-logits" in ledger) is (not augment)
    assert multi_out["loss_curve"] == pytest.approx(plain_out["loss_curve"], rel=1e-4)
    for key in plain:
        torch.testing.assert_close(multi[key], plain[key], rtol=1e-4, atol=1e-5)


def test_multi_kd_stage_records_teachers(teachers, digits):
    paths, models = teachers
    result = compress(models[0], "random:2", digits, CompressConfig(kd=True, teachers=paths, teacher_weights=[3, 1],
                                                                    **TINY, **FAST), device="cpu", quiet=True)
    (stage,) = result.stages
    assert stage.stage == "multi-kd" and result.record.method == "student-convnet-2-in+multi-kd-2"
    assert stage.details["teachers"] == paths and stage.details["teacher_weights"] == [0.75, 0.25]
    assert stage.details["teacher_cache"] is True
    assert [p["name"] for p in stage.cost.to_dict()["phases"]] == ["teacher-logits", "train-on-subset"]
    record = result.record.extra["teachers"]
    assert [m["source"] for m in record["members"]] == paths and [m["weight"] for m in record["members"]] == [.75, .25]
    assert 0 <= record["combined_test_accuracy"] <= 1 and record["temperature"] == 4.0


# ------------------------------------------------------------------------------------------------------ born-again
def test_born_again_two_generations(teachers, digits):
    teacher = teachers[1][0]
    config = CompressConfig(born_again=2, born_again_ensemble=True, **TINY, **FAST)
    assert config.stages == ["born-again-1", "born-again-2"] and config.method == "student-convnet-2-in+born-again-2"
    result = compress(teacher, "random:2", digits, config, device="cpu", quiet=True)
    first, second = result.stages
    assert [s.stage for s in result.stages] == ["born-again-1", "born-again-2"]
    assert first.sha256 != second.sha256 and result.record.output_sha256 == second.sha256
    assert first.details["teacher"] == "teacher" and second.details["teacher"] == "born-again-1"
    assert (first.details["init_seed"], second.details["init_seed"]) == (0, 1)
    for stage in result.stages:
        assert 0 <= stage.report["test_accuracy"] <= 1 and stage.model_file == f"{stage.stage}.safetensors"
        assert [p["name"] for p in stage.cost.to_dict()["phases"]] == ["train-on-subset"]
    ensemble = second.details["ensemble"]
    assert ensemble["generations"] == 2 and 0 <= ensemble["test_accuracy"] <= 1
    x = digits.normalize(digits.test_x)
    with torch.no_grad():
        mean_logits = (first.model(x) + second.model(x)) / 2
    assert ensemble["test_accuracy"] == pytest.approx((mean_logits.argmax(1) == digits.test_y).float().mean().item())
    # generation 1 is KD of a fresh student from the teacher: the same model as the kd stage
    kd = compress(teacher, "random:2", digits, CompressConfig(kd=True, **TINY, **FAST), device="cpu", quiet=True)
    assert kd.stages[0].sha256 == first.sha256


# ------------------------------------------------------------------------------------------------------- binarize
def test_binarized_weights_take_two_values_per_channel():
    torch.manual_seed(0)
    for weight in (torch.randn(4, 3, 3, 3), torch.randn(5, 7)):
        binary = binarize_weight(weight)
        for c in range(weight.shape[0]):
            alpha = weight[c].abs().mean()
            assert set(binary[c].unique().tolist()) == {-alpha.item(), alpha.item()}
            assert torch.equal(binary[c] > 0, weight[c] >= 0)


def test_ste_gradients_equal_the_hand_formula():
    torch.manual_seed(1)
    weight = (torch.randn(3, 2, 2, 2) * 0.8).requires_grad_(True)
    with torch.no_grad():
        weight[0, 0, 0, 0], weight[1, 1, 1, 1] = 1.5, -2.0  # outside the STE window
    upstream = torch.randn(3, 2, 2, 2)
    (binarize_weight(weight) * upstream).sum().backward()
    w, n = weight.detach(), 8
    s = torch.where(w >= 0, 1.0, -1.0)
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = alpha * upstream * (w.abs() <= 1) + s / n * (upstream * s).sum(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(weight.grad, expected)
    x = torch.tensor([-1.5, -0.5, 0.0, 0.7, 1.0, 3.0], requires_grad=True)
    out = sign_ste(x)
    assert out.tolist() == [-1, -1, 1, 1, 1, 1]
    out.backward(torch.arange(1.0, 7.0))
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 0]


@pytest.mark.parametrize("mode", ["weights", "weights+activations"])
def test_binarized_model_reloads_with_identical_outputs(digits, tmp_path, mode):
    torch.manual_seed(0)
    model = create_model("convnet-3-in", 1, 10, (8, 8), width=8)
    float_path = save_model(model, tmp_path / "float.safetensors")
    info = binarize_model(model, mode)
    assert info["layers"] == ["features.4", "features.8"]
    assert info["full_precision_layers"] == ["features.0", "classifier"]
    x = digits.normalize(digits.train_x[:40])
    if mode == "weights+activations":
        calibrate_thresholds(model, x)
        torch.testing.assert_close(model.features[4].act_threshold, model.features[:4](x).mean(dim=(0, 2, 3)))
    train_student(model, (x, digits.train_y[:40]), config=KDConfig(epochs=1, batch_size=20), progress=False)
    freeze_binarized(model)
    for name in info["layers"]:
        weight = dict(model.named_modules())[name].weight.detach()
        assert all(len(w.abs().unique()) == 1 and len(w.unique()) == 2 for w in weight)
    path = save_model(model, tmp_path / "binary.safetensors")
    loaded, spec = load_model(path)
    assert spec["binarization"]["mode"] == mode and loaded.datacomp_binary == model.datacomp_binary
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    binarized = sum(dict(model.named_modules())[n].weight.numel() for n in info["layers"])
    saved = float_path.stat().st_size - path.stat().st_size  # the file holds 1-bit signs + 16 fp32 scales
    assert saved > 0.85 * (4 * binarized - binarized / 8 - 4 * 16)
    assert load_model(float_path)[1]["binarization"] is None
    # size: 1 bit per binarized weight + one fp32 scale per output channel; the rest at 32 bits
    size = binary_size(model)
    rest = sum(v.numel() for v in model.state_dict().values()) - binarized
    assert size["binarized_weights"] == binarized and size["scales"] == 16
    assert size["bits"] == binarized + 32 * 16 + 32 * rest and size["size_bytes"] == math.ceil(size["bits"] / 8)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in load_model(float_path)[0].parameters())


# ----------------------------------------------------------------------------------------------- misconfiguration
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kd=True, student="mlp", teachers=["a", "b"], teacher_weights=[1.0]),
         r"teacher_weights has 1 value\(s\) but there are 2"),
        (dict(kd=True, student="mlp", teachers=["a", "b"], teacher_weights=[1.0, -0.5]),
         "teacher_weights must be finite numbers >= 0"),
        (dict(kd=True, student="mlp", teachers=["a"], teacher_weights=[0.0]), "must not all be 0"),
        (dict(kd=True, student="mlp", teacher_weights=[1.0]), "also set teachers"),
        (dict(kd=True, student="mlp", teachers="a"), "teachers must be a list"),
        (dict(quantize="int8", teachers=["a"]), "teachers are distilled from: add kd"),
        (dict(kd=True, student="mlp", teachers=["a"], hint_weight=1.0), "needs a single teacher"),
        (dict(born_again=0), r"born_again must be an integer >= 1"),
        (dict(born_again=True), r"born_again must be an integer >= 1"),
        (dict(born_again=2, kd=True), "drop kd / finetune"),
        (dict(born_again=2, prune=0.5, structured=True), "not a pruned teacher"),
        (dict(born_again=1, born_again_ensemble=True), "born_again >= 2"),
        (dict(binarize="ternary"), "unknown binarize mode 'ternary'"),
        (dict(binarize="weights", quantize="int8"), "choose one"),
        (dict(binarize="weights", prune=0.5), "unstructured pruning's zeros"),
    ],
)
def test_config_rejects_bad_new_stage_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CompressConfig(**kwargs)


def test_new_fields_follow_the_recorded_ones():
    """run.json's config keeps the key order datacomp 0.1.0 recorded; the new stages' fields come after it."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(CompressConfig)]
    assert names[-6:] == ["seed", "teachers", "teacher_weights", "born_again", "born_again_ensemble", "binarize"]
    config = CompressConfig(born_again=2, binarize="weights", student="mlp")
    assert CompressConfig.from_dict(config.to_dict()) == config
    assert config.stages == ["born-again-1", "born-again-2", "binarize"]


def test_teachers_and_models_that_do_not_fit_are_refused_before_work(teachers, digits, tmp_path):
    paths, models = teachers
    other = save_model(create_model("convnet-3-in", 1, 5, (8, 8), width=8), tmp_path / "five.safetensors",
                       dataset=digits.info())
    config = CompressConfig(kd=True, teachers=[paths[0], str(other)], **TINY, **FAST)
    with pytest.raises(ConfigError, match=r"^--teachers .*five.safetensors is a convnet-3-in for 1x8x8 images and 5 "
                                          r"classes, but dataset 'digits' has 1x8x8 images and 10 classes"):
        compress(models[0], "random:1", digits, config, device="cpu", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(MissingInputError, match="^--teachers .*missing: model .* not found"):
        compress(models[0], "random:1", digits, CompressConfig(kd=True, teachers=[str(tmp_path / "missing")], **TINY,
                                                               **FAST), device="cpu")
    with pytest.raises(ConfigError, match=r"binarize: convnet-1-in has 2 conv/linear layer\(s\).*nothing would be "
                                          r"binarized"):
        compress(models[0], "random:1", digits, CompressConfig(binarize="weights", student="convnet-1-in", kd=True,
                                                               **FAST), device="cpu")
    with pytest.raises(ConfigError, match="teachers predict different numbers of classes"):
        TeacherEnsemble([_Fixed([0.0, 1.0]), _Fixed([0.0, 1.0, 2.0])])(torch.zeros(1, 1))
    with pytest.raises(ConfigError, match="temperature 2 but KD runs at 4"):
        train_student(create_model("mlp", 1, 10, (8, 8), width=8), (digits.normalize(digits.train_x[:4]),
                      digits.train_y[:4]), teacher=TeacherEnsemble(models, temperature=2.0), progress=False)


# ---------------------------------------------------------------------------------------------------- end to end
def test_cli_multi_teacher_kd_then_binarize(teachers, tmp_path, capsys):
    paths, _ = teachers
    out = tmp_path / "run"
    code = main(["compress", "--teacher", paths[0], "--data", "random:3", "--student", "convnet-3-in",
                 "--student-arg", "width=8", "--kd", "--teachers", *paths, "--teacher-weights", "2", "1",
                 "--binarize", "weights", "--epochs", "3", "--latency-repeats", "2", "--quiet", "--device", "cpu",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "student-convnet-3-in+multi-kd-2+binarize-weights"
    assert run["config"]["stages"] == ["multi-kd", "binarize"] and run["config"]["teacher_weights"] == [2.0, 1.0]
    kd, binary = run["stages"]
    assert binary["details"]["layers"] == ["features.4", "features.8"]
    assert binary["details"]["recovered_from"] == "teachers"
    assert [p["name"] for p in binary["cost"]["phases"]] == ["binarize", "teacher-logits", "train-on-subset"]
    assert binary["report"]["parameters"] == kd["report"]["parameters"]
    assert binary["report"]["size_bytes"] < 0.6 * kd["report"]["size_bytes"]  # the file holds packed signs
    assert binary["details"]["size"]["size_bytes"] < 0.3 * binary["details"]["size"]["float_size_bytes"]
    model, _ = load_model(out / binary["model_file"])
    digits = load_dataset("digits")
    with torch.no_grad():
        acc = (model(digits.normalize(digits.test_x)).argmax(1) == digits.test_y).float().mean().item()
    assert acc == pytest.approx(binary["report"]["test_accuracy"])
    assert "binarize (weights): 1,152 weights at 1 bit in 2 layers" in printed
    assert re.search(r"teachers combined \(T=4\): test acc", printed)
    code = main(["compress", "--teacher", paths[0], "--data", "random:3", "--born-again", "0", "--quiet",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "born_again must be an integer >= 1" in err
