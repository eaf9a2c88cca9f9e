"""Knowledge distillation: the pinned loss convention, feature hints, teacher relabelling, the training loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from datacomp.compression.kd import KDConfig, train_student
from datacomp.compression.losses import FeatureHint, KDLoss, kd_loss
from datacomp.compression.losses import cross_entropy as soft_cross_entropy
from datacomp.compression.relabel import relabel, teacher_soft_labels
from datacomp.cost import CostLedger
from datacomp.models import create_model
from datacomp.synset import SyntheticSet


def tiny(num_classes: int = 4, width: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("convnet-2-in", 3, num_classes, (8, 8), width=width)


def test_kd_loss_equals_hand_computed_value():
    # Teacher logits (2 ln 3, 0) at T = 2 give p_t = (3/4, 1/4); a zero student gives p_s = (1/2, 1/2).
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    student = torch.zeros(1, 2)
    target = torch.tensor([0])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = -math.log(0.5)
    expected = 0.3 * 2.0**2 * kl + 0.7 * ce  # alpha (=0.3) on T^2 * KL, 1 - alpha on CE
    got = kd_loss(student, teacher, target, temperature=2.0, alpha=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert KDLoss(temperature=2.0, alpha=0.3)(student, teacher, target).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_is_batch_mean_of_per_sample_losses():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 7), torch.randn(5, 7), torch.randint(0, 7, (5,))
    batch = kd_loss(s, t, y, temperature=3.0, alpha=0.6)
    singles = torch.stack([kd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], temperature=3.0, alpha=0.6)
                           for i in range(5)])
    assert batch.item() == pytest.approx(singles.mean().item(), rel=1e-5)
    # equivalent closed form: sum over classes of p_t (log p_t - log p_s), averaged over samples
    pt, log_ps = F.softmax(t / 3, 1), F.log_softmax(s / 3, 1)
    manual = 0.6 * 9 * (pt * (pt.log() - log_ps)).sum(1).mean() + 0.4 * F.cross_entropy(s, y)
    assert batch.item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_term_is_zero_and_minimal_when_student_equals_teacher(temperature):
    torch.manual_seed(1)
    t = torch.randn(6, 5)
    s = t.clone().requires_grad_(True)
    loss = kd_loss(s, t, temperature=temperature, alpha=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert s.grad.abs().max().item() < 1e-6  # a stationary point
    for _ in range(3):  # any perturbation increases it
        assert kd_loss(t + 0.1 * torch.randn_like(t), t, temperature=temperature, alpha=1.0).item() > 1e-6
    # with alpha < 1 only the CE part remains
    y = torch.randint(0, 5, (6,))
    mixed = kd_loss(t, t, y, temperature=temperature, alpha=0.25)
    assert mixed.item() == pytest.approx(0.75 * F.cross_entropy(t, y).item(), rel=1e-5)


def test_soft_cross_entropy_matches_hard_for_one_hot():
    torch.manual_seed(0)
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    assert soft_cross_entropy(logits, F.one_hot(y, 3).float()).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(temperature=-1.0), "temperature must be > 0"),
        (dict(alpha=1.5), r"alpha must lie in \[0, 1\]"),
        (dict(alpha=-0.1), r"alpha must lie in \[0, 1\]"),
    ],
)
def test_kd_loss_rejects_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **kwargs)
    with pytest.raises(ValueError, match=match):
        KDLoss(**kwargs)


def test_kd_loss_rejects_class_mismatch_and_missing_targets():
    with pytest.raises(ValueError, match="same number of classes"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets are required when alpha < 1"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), None, alpha=0.5)
    with pytest.raises(ValueError, match="soft targets must have the logits' shape"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))


def test_feature_hint_projects_and_trains():
    torch.manual_seed(0)
    hint = FeatureHint(6, 10)
    s_feat, t_feat = torch.randn(8, 6, requires_grad=True), torch.randn(8, 10)
    loss = hint(s_feat, t_feat)
    assert loss.item() == pytest.approx(F.mse_loss(hint.projector(s_feat), t_feat).item())
    loss.backward()
    assert hint.projector.weight.grad is not None and s_feat.grad is not None
    with pytest.raises(ValueError, match="projector expects 6"):
        hint(torch.randn(8, 5), t_feat)
    with pytest.raises(ValueError, match="feature dims must be positive"):
        FeatureHint(0, 3)


def _synset(num_classes: int = 4, n: int = 8) -> SyntheticSet:
    torch.manual_seed(0)
    return SyntheticSet(torch.rand(n, 3, 8, 8), torch.arange(n) % num_classes,
                        {"dataset": "toy", "space": "pixel", "num_classes": num_classes, "method": "random"})


def test_relabel_returns_teacher_probabilities_as_soft_labels():
    teacher = tiny().eval()
    synset = _synset()
    mean, std = [0.5] * 3, [0.25] * 3
    out = relabel(teacher, synset, mean, std, temperature=2.0)
    assert isinstance(out, SyntheticSet) and out.is_soft
    with torch.no_grad():
        expected = F.softmax(teacher(synset.normalized_images(mean, std)) / 2.0, 1)
    torch.testing.assert_close(out.labels, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.images, synset.images)
    assert out.metadata["relabel"]["temperature"] == 2.0
    torch.testing.assert_close(teacher_soft_labels(teacher, synset.normalized_images(mean, std), temperature=2.0),
                               expected)


def test_relabel_rejects_bad_input():
    with pytest.raises(ValueError, match="teacher and data must share classes"):
        relabel(tiny(num_classes=5), _synset(4), [0.5] * 3, [0.25] * 3)
    with pytest.raises(TypeError, match="SyntheticSet"):
        relabel(tiny(), torch.zeros(2, 3, 8, 8), [0.5] * 3, [0.25] * 3)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        teacher_soft_labels(tiny(), torch.zeros(2, 3, 8, 8), temperature=0)


@pytest.mark.parametrize("hint_weight", [0.0, 1.0])
def test_train_student_with_kd_moves_student_towards_teacher(hint_weight):
    teacher, student = tiny(seed=0).eval(), tiny(seed=1)
    torch.manual_seed(2)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))

    def gap() -> float:
        with torch.no_grad():
            return kd_loss(student(x), teacher(x), temperature=1.0, alpha=1.0).item()

    before = gap()
    ledger = CostLedger()
    out = train_student(student, (x, y), teacher=teacher, ledger=ledger, progress=False,
                        config=KDConfig(epochs=40, batch_size=16, lr=0.05, alpha=1.0, hint_weight=hint_weight))
    assert gap() < 0.5 * before
    assert out["kd"] and out["hint"] == (hint_weight > 0) and out["steps"] == 80
    assert len(out["loss_curve"]) == 80 and out["loss_curve"][-1] < out["loss_curve"][0]  # record_every = 80 // 50 = 1
    phase = ledger["kd"]
    assert phase.extra["samples_seen"] == 40 * 32 and phase.flops > 0
    assert all(p.requires_grad for p in teacher.parameters())  # restored after training


def test_train_student_without_teacher_is_plain_cross_entropy():
    student = tiny(seed=1)
    torch.manual_seed(3)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    out = train_student(student, (x, y), config=KDConfig(epochs=60, batch_size=16, lr=0.05), progress=False)
    assert not out["kd"]
    with torch.no_grad():
        assert (student(x).argmax(1) == y).float().mean().item() > 0.9  # memorises 16 images


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs must be an integer >= 1"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(alpha=2.0), r"alpha must lie in \[0, 1\]"),
        (dict(hint_weight=-1.0), "hint_weight must be >= 0"),
    ],
)
def test_kd_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KDConfig(**kwargs)


def test_train_student_rejects_bad_input():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    cfg = KDConfig(epochs=1)
    with pytest.raises(ValueError, match="teacher and student must share classes"):
        train_student(tiny(4), (x, y), teacher=tiny(5), config=cfg, progress=False)
    with pytest.raises(ValueError, match="data and model must share classes"):
        train_student(tiny(4), (x, torch.tensor([0, 1, 2, 7])), config=cfg, progress=False)
    with pytest.raises(ValueError, match="lengths differ"):
        train_student(tiny(4), (x, y[:3]), config=cfg, progress=False)
    with pytest.raises(ValueError, match="y \\(labels\\) is required"):
        train_student(tiny(4), (x, None), config=cfg, progress=False)
    with pytest.raises(ValueError, match="hint_weight > 0 needs a teacher"):
        train_student(tiny(4), (x, y), config=KDConfig(epochs=1, hint_weight=1.0), progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        train_student(tiny(4), (torch.zeros(0, 3, 8, 8), y[:0]), config=cfg, progress=False)
