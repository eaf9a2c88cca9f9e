"""benchmarks/ncfm_table.py: a cached row is reused only when it was made with the requested settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_benchmark
from datacomp.distillers.presets import config_dict, get_config


@pytest.fixture(scope="module")
def ncfm_table():
    return load_benchmark("ncfm_table")


def _run(tmp_path: Path, config: dict, seed: int = 0, schedule: str | None = "dc-reference") -> Path:
    out = tmp_path / "row"
    out.mkdir()
    ev = {"accuracies": [0.5, 0.6], "protocol": "quick"}
    if schedule is not None:
        ev["protocol_config"] = {"name": "quick", "schedule": schedule}
    (out / "run.json").write_text(json.dumps({"config": {"seed": seed, "config": config}, "eval": ev}))
    return out


@pytest.mark.parametrize("schedule", ["multistep", None])
def test_a_row_evaluated_on_another_schedule_is_recomputed(ncfm_table, tmp_path, capsys, schedule):
    out = _run(tmp_path, _expected(), schedule=schedule)
    assert ncfm_table._cached(out, 2, "quick", _expected(), seed=0) is None
    assert "evaluated with the 'multistep' schedule of quick; recomputing" in capsys.readouterr().out


def _expected(**overrides) -> dict:
    return config_dict(get_config("ncfm", "cpu-quick", dataset="digits", ipc=1, **overrides))


def _old_record(**changes) -> dict:
    """A run.json config from before ``views`` and ``cf_bf16`` were recorded."""
    record = {k: v for k, v in _expected().items() if k not in ("views", "cf_bf16")}
    return {**record, **changes}


@pytest.mark.parametrize("expected, reused", [
    (dict(views=1, cf_bf16="off"), True),  # what the old run did: one view, float32
    (dict(views=4, cf_bf16="off"), False),  # the old run had one view, not the four asked for
    (dict(views=1, cf_bf16="on"), False),  # the old run computed in float32
])
def test_old_runs_are_reused_only_for_what_they_ran(ncfm_table, tmp_path, expected, reused):
    out = _run(tmp_path, _old_record())
    assert (ncfm_table._cached(out, 2, "quick", _expected(**expected), seed=0) is not None) is reused


def test_bool_cf_bf16_and_other_differences(ncfm_table, tmp_path, capsys):
    out = _run(tmp_path, _old_record(cf_bf16=True, views=1))
    assert ncfm_table._cached(out, 2, "quick", _expected(cf_bf16="on"), seed=0) is not None
    assert ncfm_table._cached(out, 3, "quick", _expected(cf_bf16="on"), seed=0) is None  # other number of runs
    assert ncfm_table._cached(out, 2, "quick", _expected(cf_bf16="on", alpha=0.9), seed=0) is None
    assert "stored config differs in ['alpha']" in capsys.readouterr().out
    assert ncfm_table._cached(out, 2, "quick", _expected(cf_bf16="on"), seed=1) is None


def test_unreadable_stored_config_is_recomputed(ncfm_table, tmp_path, capsys):
    out = _run(tmp_path, {**_expected(), "retired_field": 1})
    assert ncfm_table._cached(out, 2, "quick", _expected(), seed=0) is None
    assert "stored config unreadable" in capsys.readouterr().out
