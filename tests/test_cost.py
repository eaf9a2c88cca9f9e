"""Tests for datacomp.cost: FLOP counting, phases, (de)serialisation and cost ratios."""

import json
import sys
import time
import types

import pytest
import torch
from torch import nn

from datacomp.cost import CostEntry, CostLedger, PhaseRecord, load_json


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def _train_step(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad()
    model(x).square().mean().backward()


# ---------------------------------------------------------------------------------------------------------------
# FLOP counting
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("batch", "fan_in", "fan_out"), [(4, 16, 8), (1, 3, 5), (7, 32, 2)])
def test_linear_forward_and_backward_flops(batch, fan_in, fan_out):
    layer = nn.Linear(fan_in, fan_out)
    x = torch.randn(batch, fan_in, requires_grad=True)  # input grad makes backward = weight grad + input grad
    ledger = CostLedger()
    with ledger.phase("train", flops="full"):
        layer(x).sum().backward()
    record = ledger["train"]
    assert record.flops_forward == 2 * batch * fan_in * fan_out
    assert record.flops_backward == 2 * record.flops_forward
    assert record.flops == 3 * record.flops_forward
    assert record.flops_mode == "full"


def test_backward_without_input_grad_counts_weight_grad_only():
    layer = nn.Linear(10, 6)
    ledger = CostLedger()
    with ledger.phase("train", flops="full"):
        layer(torch.randn(3, 10)).sum().backward()
    assert ledger["train"].flops_backward == ledger["train"].flops_forward == 2 * 3 * 10 * 6


def test_forward_only_under_no_grad_has_zero_backward():
    layer = nn.Linear(10, 6)
    ledger = CostLedger()
    with ledger.phase("feature-extraction", flops="full"), torch.no_grad():
        layer(torch.randn(5, 10))
    assert ledger["feature-extraction"].flops_forward == 2 * 5 * 10 * 6
    assert ledger["feature-extraction"].flops_backward == 0


@pytest.mark.parametrize(("stride", "padding", "groups"), [(1, 1, 1), (2, 0, 1), (1, 2, 3)])
def test_conv2d_forward_matches_analytic_count(stride, padding, groups):
    batch, c_in, c_out, kernel, size = 2, 3, 6, 3, 9
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups)
    x = torch.randn(batch, c_in, size, size)
    ledger = CostLedger()
    with ledger.phase("f", flops="full"), torch.no_grad():
        out = conv(x)
    h_out, w_out = out.shape[-2:]
    expected = 2 * batch * c_out * (c_in // groups) * kernel * kernel * h_out * w_out
    assert ledger["f"].flops_forward == expected


def test_sampled_extrapolation_matches_full_counting_on_a_steady_loop():
    model, x = _mlp(), torch.randn(8, 12)
    ledger = CostLedger()
    for mode in ("full", "sampled"):
        with ledger.phase(mode, flops=mode, sample_steps=3) as ph:
            for _ in range(30):
                with ph.step():
                    _train_step(model, x)
    full, sampled = ledger["full"], ledger["sampled"]
    assert sampled.flops == pytest.approx(full.flops, rel=0.05)
    assert sampled.flops_forward == pytest.approx(full.flops_forward, rel=0.05)
    assert sampled.flops_mode == "sampled (3 of 30 steps, extrapolated)"
    assert (sampled.steps, sampled.sampled_counted_steps, sampled.sampled_total_steps) == (30, 3, 30)
    # The extrapolation really uses the counted steps: one step is 1/30 of the total.
    one = CostLedger()
    with one.phase("one", flops="full"):
        _train_step(model, x)
    assert full.flops == pytest.approx(30 * one["one"].flops)


def test_sampled_mode_counts_setup_before_first_step_unscaled():
    model, x = _mlp(), torch.randn(8, 12)
    probe = CostLedger()
    with probe.phase("step", flops="full"):
        _train_step(model, x)
    ledger = CostLedger()
    with ledger.phase("p", flops="sampled", sample_steps=2) as ph:
        with torch.no_grad():
            model(x)  # setup work, counted once
        for _ in range(10):
            with ph.step():
                _train_step(model, x)
    setup_forward = 2 * 8 * (12 * 16 + 16 * 4)
    assert ledger["p"].flops == pytest.approx(setup_forward + 10 * probe["step"].flops)


def test_sampled_without_steps_counts_whole_body_and_says_so():
    ledger = CostLedger()
    with ledger.phase("p", flops="sampled"):
        nn.Linear(4, 4)(torch.randn(2, 4))
    assert ledger["p"].flops_forward == 2 * 2 * 4 * 4
    assert ledger["p"].flops_mode == "full"
    assert any("whole phase body" in note for note in ledger["p"].notes)


def test_timer_only_phase_counts_steps_but_no_flops():
    ledger = CostLedger()
    with ledger.phase("selection") as ph:
        for _ in range(5):
            with ph.step():
                nn.Linear(4, 4)(torch.randn(2, 4))
    record = ledger["selection"]
    assert record.flops is None and record.flops_mode == "off" and record.steps == 5
    assert record.seconds > 0 and record.device == "cpu" and record.cpu_peak_rss_bytes > 0


def test_add_flops_is_analytic_and_reported():
    ledger = CostLedger()
    with ledger.phase("selection") as ph:
        ph.add_flops(forward=100, backward=50)
    record = ledger["selection"]
    assert (record.flops_forward, record.flops_backward) == (100, 50)
    assert record.flops_mode == "off + analytic additions"


# ---------------------------------------------------------------------------------------------------------------
# Phase semantics
# ---------------------------------------------------------------------------------------------------------------
def test_reentering_a_phase_accumulates():
    ledger = CostLedger()
    layer = nn.Linear(8, 8)
    for _ in range(2):
        with ledger.phase("train-on-subset", flops="full") as ph:
            layer(torch.randn(2, 8))
            ph.extra.update(runs=3, epochs=10, samples_seen=300, protocol_kind="fixed-epoch")
    record = ledger["train-on-subset"]
    assert record.calls == 2 and record.flops_forward == 2 * (2 * 2 * 8 * 8)
    assert record.extra == {"runs": 6, "epochs": 10, "samples_seen": 600, "protocol_kind": "fixed-epoch"}


def test_nested_phases_are_exclusive():
    model, x = _mlp(), torch.randn(4, 12)
    probe = CostLedger()
    with probe.phase("step", flops="full"):
        _train_step(model, x)
    outer_ledger, inner_ledger = CostLedger(), CostLedger()
    with outer_ledger.phase("distillation", flops="full"):
        _train_step(model, x)
        with inner_ledger.phase("train-on-subset", flops="full"):  # another ledger: still exclusive
            _train_step(model, x)
            _train_step(model, x)
            time.sleep(0.2)
    assert outer_ledger["distillation"].flops == probe["step"].flops
    assert inner_ledger["train-on-subset"].flops == 2 * probe["step"].flops
    assert outer_ledger["distillation"].seconds < inner_ledger["train-on-subset"].seconds


def test_phase_records_even_when_the_body_raises():
    ledger = CostLedger()
    with pytest.raises(KeyError), ledger.phase("selection"):
        raise KeyError("boom")
    assert ledger["selection"].calls == 1
    assert "phase ended with KeyError" in ledger["selection"].notes
    with ledger.phase("ok", flops="full"):  # no counter left behind on the dispatch-mode stack
        pass


def test_estimated_phase_via_add():
    ledger = CostLedger()
    ledger.add("sae-training", CostEntry(seconds=3600.0, flops_forward=1e15, flops_backward=2e15), one_off=True,
               note="public SAE, cost from its model card")
    record = ledger["sae-training"]
    assert record.estimated and record.one_off and record.flops == 3e15 and record.flops_mode == "estimated"
    assert ledger.total(include_one_off=False).seconds == 0.0
    ledger.add("measured-elsewhere", CostEntry(seconds=2.0, energy_joules=5.0, device="cpu"), estimated=False)
    other = ledger["measured-elsewhere"]
    assert (other.energy_joules, other.energy_mode, other.device, other.estimated) == (5.0, "recorded", "cpu", False)


def test_total_over_selected_phases():
    ledger = CostLedger()
    ledger.add("a", CostEntry(seconds=1.0, flops_forward=10.0, flops_backward=20.0))
    ledger.add("b", CostEntry(seconds=2.0))
    ledger.add("c", CostEntry(seconds=4.0, flops_forward=1.0, flops_backward=0.0), one_off=True)
    assert ledger.total().seconds == 7.0 and ledger.total().flops == 31.0
    assert not ledger.total().flops_complete  # phase b has no FLOPs
    sub = ledger.total(["a", "c"])
    assert sub["seconds"] == 5.0 and sub.flops_complete and sub.phases == ["a", "c"]
    assert ledger.total(["a", "c"], include_one_off=False).flops == 30.0


def test_merge_accumulates_and_keeps_sources_unchanged():
    a, b = CostLedger(), CostLedger()
    a.add("selection", CostEntry(seconds=1.0, flops_forward=5.0, flops_backward=0.0))
    b.add("selection", CostEntry(seconds=2.0, flops_forward=7.0, flops_backward=1.0))
    b.add("train-on-subset", CostEntry(seconds=3.0, flops_forward=1.0, flops_backward=2.0))
    assert a.merge(b) is a
    assert a["selection"].seconds == 3.0 and a["selection"].flops == 13.0 and a["selection"].calls == 2
    assert a.names() == ["selection", "train-on-subset"] and b["selection"].calls == 1


def test_one_off_conflict_is_rejected():
    ledger = CostLedger()
    ledger.add("sae-training", CostEntry(seconds=1.0), one_off=True)
    with pytest.raises(ValueError, match="one_off"):
        ledger.phase("sae-training")


def test_energy_without_codecarbon_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # makes `import codecarbon` raise ImportError
    ledger = CostLedger()
    with ledger.phase("selection", energy=True):
        pass
    assert ledger["selection"].energy_joules is None
    assert ledger["selection"].energy_mode.startswith("unavailable: codecarbon is not installed")


def test_energy_with_codecarbon_records_joules_and_mode(monkeypatch):
    class FakeTracker:
        def __init__(self, **kwargs):
            self._conf = {"hardware": ["CPU(mode=intel_rapl)"]}
            self.final_emissions_data = None

        def start(self):
            pass

        def stop(self):
            self.final_emissions_data = types.SimpleNamespace(energy_consumed=2e-6, tracking_mode="process")

    fake = types.SimpleNamespace(__version__="9.9", OfflineEmissionsTracker=FakeTracker)
    monkeypatch.setitem(sys.modules, "codecarbon", fake)
    ledger = CostLedger()
    with ledger.phase("selection", energy=True):
        pass
    record = ledger["selection"]
    assert record.energy_joules == pytest.approx(7.2)  # 2e-6 kWh
    assert "codecarbon 9.9" in record.energy_mode and "intel_rapl" in record.energy_mode


# ---------------------------------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------------------------------
def _sample_ledger() -> CostLedger:
    ledger = CostLedger(metadata={"run": "t"})
    with ledger.phase("selection", flops="sampled", sample_steps=2) as ph:
        for _ in range(4):
            with ph.step():
                _train_step(_mlp(), torch.randn(2, 12))
        ph.extra["k"] = [1, 2]
    ledger.add("sae-training", CostEntry(seconds=5.0, flops_forward=1e12, flops_backward=None), one_off=True,
               note="est")
    return ledger


def test_round_trip_through_dict_and_json(tmp_path):
    ledger = _sample_ledger()
    d = ledger.to_dict()
    assert CostLedger.from_dict(json.loads(json.dumps(d))).to_dict() == d
    path = ledger.save_json(tmp_path / "sub" / "cost.json")
    assert CostLedger.load_json(path).to_dict() == d
    assert [p.name for p in path.parent.iterdir()] == ["cost.json"]  # atomic write leaves no temp file
    assert load_json(path)["phases"][0]["flops_mode"] == "sampled (2 of 4 steps, extrapolated)"


def _broken(**changes):
    d = _sample_ledger().to_dict()
    for path, value in changes.items():
        target = d
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return d


@pytest.mark.parametrize(("changes", "match"), [
    ({"schema": "other"}, "schema must be"),
    ({"version": 99}, "unsupported version 99"),
    ({"phases": {}}, "phases must be a list"),
    ({"metadata": []}, "metadata must be a dict"),
    ({"phases.0.seconds": -1.0}, r"phases\[0\] 'selection'.seconds must be a finite non-negative number"),
    ({"phases.0.calls": 1.5}, "calls must be a non-negative integer"),
    ({"phases.0.flops_forward": "many"}, "flops_forward must be a finite non-negative number or null"),
    ({"phases.0.one_off": "yes"}, "one_off must be true or false"),
    ({"phases.0.entries": {"guess": 1}}, "entries must be an object mapping"),
    ({"phases.0.seconds": KeyError}, r"missing required field\(s\) \['seconds'\]"),
    ({"phases.0.bogus": 1}, r"unknown field\(s\) \['bogus'\]"),
    ({"phases.1.name": "selection"}, "appears twice"),
    ({"phases.0.name": ""}, "name must be a non-empty string"),
])
def test_invalid_ledger_dicts_are_rejected(changes, match):
    with pytest.raises(ValueError, match=match):
        CostLedger.from_dict(_broken(**changes))


def test_non_dict_ledger_is_rejected():
    with pytest.raises(TypeError, match="cost ledger must be a dict"):
        CostLedger.from_dict([1])
    with pytest.raises(TypeError, match="phase must be a dict"):
        PhaseRecord.from_dict(3)


def test_load_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no JSON file at .*missing.json"):
        CostLedger.load_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        CostLedger.load_json(tmp_path / "bad.json")
    from datacomp.errors import FormatError, MissingInputError

    with pytest.raises(MissingInputError):
        CostLedger.load_json(tmp_path / "missing.json")
    with pytest.raises(FormatError):
        CostLedger.load_json(tmp_path / "bad.json")


def test_cost_package_has_no_import_circle():
    import ast
    from pathlib import Path

    import datacomp.cost.phase as phase

    tree = ast.parse(Path(phase.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "ledger" not in imported  # phase.py reports to a Recorder protocol, not to the ledger module


def test_non_json_extra_is_rejected_on_save():
    ledger = CostLedger()
    with ledger.phase("p") as ph:
        ph.extra["tensor"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra must be JSON-serialisable"):
        ledger.to_dict()


# ---------------------------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"name": ""}, ValueError, "phase name must be a non-empty string"),
    ({"name": "p", "flops": "some"}, ValueError, "flops must be one of"),
    ({"name": "p", "flops": "sampled", "sample_steps": 0}, ValueError, "sample_steps must be an integer >= 1"),
    ({"name": "p", "device": "gpu7"}, ValueError, "device: 'gpu7' is not a torch device"),
    ({"name": "p", "device": 3}, TypeError, "device must be None, a str or a torch.device"),
    ({"name": "p", "energy": "yes"}, TypeError, "energy and one_off must be bools"),
])
def test_invalid_phase_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CostLedger().phase(**kwargs)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"seconds": -1.0}, ValueError, "seconds must be a finite non-negative number"),
    ({"flops_forward": "x"}, TypeError, "flops_forward must be a non-negative number or None"),
    ({"flops_backward": float("nan")}, ValueError, "flops_backward must be a finite"),
    ({"energy_joules": -2.0}, ValueError, "energy_joules must be a finite"),
    ({"extra": [1]}, TypeError, "extra must be a dict or None"),
    ({"note": 5}, TypeError, "note must be a str or None"),
    ({"cost": {"seconds": 1.0}}, TypeError, "cost must be a CostEntry, got dict"),
])
def test_invalid_add_arguments(kwargs, error, match):
    amounts = {k: kwargs.pop(k) for k in ("seconds", "flops_forward", "flops_backward", "energy_joules")
               if k in kwargs}
    with pytest.raises(error, match=match):
        CostLedger().add("p", kwargs.pop("cost", None) or CostEntry(**amounts), **kwargs)


def test_misused_steps_and_handles():
    ledger = CostLedger()
    with ledger.phase("p") as ph:
        with ph.step(), pytest.raises(RuntimeError, match="cannot be nested"):
            ph.step().__enter__()
        with ledger.phase("inner"), pytest.raises(RuntimeError, match="while a nested phase is open"):
            ph.step().__enter__()
    with pytest.raises(RuntimeError, match="outside its 'with ledger.phase"):
        ph.step().__enter__()
    with pytest.raises(RuntimeError, match="entered only once"):
        ph.__enter__()
    with pytest.raises(ValueError, match="add_flops\\(forward=...\\) must be a finite"):
        ledger.phase("q").add_flops(forward=-1)


# ---------------------------------------------------------------------------------------------------------------
# Cost ratios
# ---------------------------------------------------------------------------------------------------------------
from datacomp.cost import break_even_reuses, cost_ratio, cost_report, selection_to_tuning_ratio  # noqa: E402


def _hand_ledger(**sub_extra) -> CostLedger:
    """Selection 30 FLOPs / 3 s (+ one-off SAE 1000 FLOPs / 100 s), subset training 2 runs of 10 FLOPs / 1 s."""
    ledger = CostLedger()
    ledger.add("sae-training", CostEntry(seconds=100.0, flops_forward=600.0, flops_backward=400.0), one_off=True)
    ledger.add("feature-extraction", CostEntry(seconds=1.0, flops_forward=10.0, flops_backward=0.0), estimated=False)
    ledger.add("selection", CostEntry(seconds=2.0, flops_forward=20.0, flops_backward=0.0), estimated=False)
    extra = {"runs": 2, "epochs": 5, "samples_seen": 2 * 5 * 100, "protocol_kind": "fixed-epoch", **sub_extra}
    ledger.add("train-on-subset", CostEntry(seconds=2.0, flops_forward=10.0, flops_backward=10.0), estimated=False,
               extra=extra)
    return ledger


def test_ratios_on_a_hand_made_ledger_with_measured_full_training():
    ledger = _hand_ledger()
    ledger.add("train-on-full", CostEntry(seconds=31.0, flops_forward=100.0, flops_backward=200.0), estimated=False)
    report = cost_report(ledger)
    f, s = report.units["flops"], report.units["seconds"]
    assert report.c_full_source == "measured" and report.protocol_kind == "fixed-epoch"
    assert report.selection_phases == ["sae-training", "feature-extraction", "selection"]
    assert report.one_off_phases == ["sae-training"]
    assert (f.c_sel_marginal, f.c_sel_fully_loaded, f.c_sub, f.c_full) == (30.0, 1030.0, 10.0, 300.0)
    assert f.savings == 290.0
    assert f.r_marginal == pytest.approx(290 / 30) and f.worth_it_marginal
    assert f.r_fully_loaded == pytest.approx(290 / 1030) and not f.worth_it_fully_loaded
    assert f.k_marginal == pytest.approx(30 / 290) and f.k_fully_loaded == pytest.approx(1030 / 290)
    assert f.str_marginal == pytest.approx(0.1) and f.str_fully_loaded == pytest.approx(1030 / 300)
    assert (s.c_sel_marginal, s.c_sub, s.c_full, s.savings) == (3.0, 1.0, 31.0, 30.0)
    assert s.r_marginal == pytest.approx(10.0) and s.k_fully_loaded == pytest.approx(103 / 30)
    text = report.format()
    assert "R = S / C_sel" in text and "k* = C_sel / S" in text and "STR = C_sel / C_full" in text


def test_full_training_estimated_from_per_sample_cost():
    report = cost_report(_hand_ledger(), full_train_size=1000)
    f, s = report.units["flops"], report.units["seconds"]
    assert report.c_full_source == "estimated from per-sample cost"
    # per sample-epoch: 20 FLOPs / 1000 samples seen; x 5 epochs x 1000 samples = 100 FLOPs per run
    assert f.c_full == pytest.approx(100.0) and f.savings == pytest.approx(90.0)
    assert s.c_full == pytest.approx(10.0) and s.savings == pytest.approx(9.0)
    assert f.r_marginal == pytest.approx(3.0)
    longer = cost_report(_hand_ledger(), full_train_size=1000, full_epochs=50)
    assert longer.units["flops"].c_full == pytest.approx(1000.0)
    assert any("full-data epochs given explicitly" in n for n in longer.notes)


def test_fixed_iteration_protocol_saves_nothing():
    ledger = _hand_ledger(protocol_kind="fixed-iteration")
    ledger.add("train-on-full", CostEntry(seconds=31.0, flops_forward=100.0, flops_backward=200.0))
    report = cost_report(ledger, full_train_size=1000)
    for unit in report.units.values():
        assert unit.savings == 0.0 and unit.r_marginal == 0.0 and unit.r_fully_loaded == 0.0
        assert unit.k_marginal == float("inf") and unit.worth_it_marginal is False
    assert any("fixed-iteration protocol: the subset saves no training compute (S = 0" in n for n in report.notes)
    assert report.to_dict()["units"]["flops"]["k_marginal"] == "inf"
    json.dumps(report.to_dict(), allow_nan=False)


def test_unknown_full_cost_and_missing_phases_are_reported_not_guessed():
    ledger = CostLedger()
    ledger.add("selection", CostEntry(seconds=1.0))
    report = cost_report(ledger)
    f = report.units["flops"]
    assert f.c_sel_marginal is None and f.c_full is None and f.r_marginal is None
    assert report.c_full_source == "unknown"
    assert any("no train-on-subset phase" in n for n in report.notes)
    assert any("assumed fixed-epoch" in n for n in report.notes)
    assert any("C_sel in FLOPs is incomplete" in n for n in report.notes)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"full_train_size": 0}, ValueError, "full_train_size must be a positive integer"),
    ({"full_epochs": -2}, ValueError, "full_epochs must be a positive number"),
    ({"protocol_kind": "fixed-time"}, ValueError, "protocol_kind must be one of"),
])
def test_invalid_cost_report_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        cost_report(_hand_ledger(), **kwargs)


def test_invalid_runs_extra_is_rejected():
    with pytest.raises(ValueError, match=r"extra\['runs'\] must be a positive integer"):
        cost_report(_hand_ledger(runs=0), full_train_size=10)


def test_scalar_ratio_edge_cases():
    assert cost_ratio(10.0, 0.0) == float("inf")
    assert break_even_reuses(5.0, 0.0) == float("inf") and break_even_reuses(5.0, -1.0) == float("inf")
    assert break_even_reuses(5.0, 10.0) == 0.5
    assert selection_to_tuning_ratio(1.0, 4.0) == 0.25
    assert cost_ratio(0.0, 0.0) != cost_ratio(0.0, 0.0)  # nan: undefined
