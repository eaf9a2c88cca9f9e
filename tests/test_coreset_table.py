"""benchmarks/coreset_table.py: the accuracy-vs-size plot from a partial table."""

from __future__ import annotations

import argparse
import json

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def coreset_table():
    return load_benchmark("coreset_table")


def _row(method: str, size: str, n: int, acc: float | None) -> dict:
    return {"method": method, "size": size, "num_items": n, "accuracy_mean": acc}


DOC = {"dataset": "digits", "model": "mlp", "protocol": "smoke", "runs": 1, "methods": ["random", "herding", "kcenter"],
       "rows": [_row("random", "ipc5", 50, 0.7), _row("random", "ipc1", 10, 0.5), _row("random", "frac0.05", 50, 0.7),
                _row("herding", "ipc1", 10, 0.6), _row("kcenter", "ipc1", 10, None)]}


def test_series_keeps_finished_cells_and_merges_repeated_subsets(coreset_table):
    labels, lines = coreset_table._series(DOC)
    assert labels == {50: ["ipc5", "frac0.05"], 10: ["ipc1"]}
    assert lines == {"random": ([10, 50], [50.0, 70.0]), "herding": ([10], [60.0])}  # kcenter: nothing finished


@pytest.mark.parametrize("rows", [DOC["rows"], []])
def test_plot_writes_a_png_even_before_any_cell_finished(coreset_table, rows):
    assert coreset_table._plot({**DOC, "rows": rows}).startswith(b"\x89PNG")


QUICK_SETTINGS = {"dataset": "digits", "quick": True, "model": "mlp", "protocol": "smoke", "schedule": "multistep",
                  "runs": 1, "proxy_epochs": 2,
                  "proxy_bf16": False, "seed": 0, "device": "cpu", "sae": {"latents": 256, "k": 8, "epochs": 5}}


def _record(n: int, acc: float | None) -> dict:
    """What ``datacomp select`` returns, reduced to the fields a table row reads."""
    return {"num_items": n, "eval": None if acc is None else {"mean": acc, "std": 0.0, "accuracies": [acc]},
            "config": {}, "cost": {"phases": [{"name": "select", "seconds": 1.0}]}, "selection_seconds": 1.0}


def _results_file(coreset_table, path, **changes):
    rows = [coreset_table._row(m, s, _record(n, acc)) for m, s, n, acc in
            [("random", "ipc1", 10, 0.5), ("herding", "ipc1", 10, 0.6), ("random", "ipc5", 50, 0.7),
             ("herding", "ipc5", 50, None)]]
    path.write_text(json.dumps({**QUICK_SETTINGS, **changes, "rows": rows}))


def _two_by_two(tmp_path) -> list[str]:
    """Quick-mode arguments for the 2 methods x 2 IPC cells that ``_results_file`` describes."""
    return ["--quick", "--methods", "random", "herding", "--ipc", "1", "5", "--runs-dir", str(tmp_path / "runs")]


@pytest.fixture
def results_dir(coreset_table, tmp_path, monkeypatch):
    monkeypatch.setattr(coreset_table, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    return tmp_path / "results"


def test_finished_rows_of_the_results_file_are_reused_and_missing_cells_run(coreset_table, results_dir, tmp_path,
                                                                            monkeypatch):
    _results_file(coreset_table, results_dir / "coreset_table_digits_quick.json")
    ran = []

    def fake_cell(args, method, kind, value, out):
        ran.append((method, f"{kind}{value}"))
        return _record(50, 0.9)

    monkeypatch.setattr(coreset_table, "_run_cell", fake_cell)
    argv = _two_by_two(tmp_path)
    assert coreset_table.main(argv) == 0
    assert ran == [("herding", "ipc5")]  # the one cell the file has no finished row for
    doc = json.loads((results_dir / "coreset_table_digits_quick.json").read_text())
    assert [(r["method"], r["size"], r["accuracy_mean"]) for r in doc["rows"]] == [
        ("random", "ipc1", 0.5), ("herding", "ipc1", 0.6), ("random", "ipc5", 0.7), ("herding", "ipc5", 0.9)]
    ran.clear()
    assert coreset_table.main([*argv, "--overwrite"]) == 0
    assert len(ran) == 4


def test_finished_only_rebuilds_the_table_without_running_missing_cells(coreset_table, results_dir, tmp_path,
                                                                        monkeypatch, capsys):
    _results_file(coreset_table, results_dir / "coreset_table_digits_quick.json")
    monkeypatch.setattr(coreset_table, "_run_cell", lambda *a: pytest.fail("a missing cell was run"))
    argv = _two_by_two(tmp_path)
    assert coreset_table.main([*argv, "--finished-only"]) == 0
    assert "herding     ipc5: not run (--finished-only)" in capsys.readouterr().out
    doc = json.loads((results_dir / "coreset_table_digits_quick.json").read_text())
    assert [(r["method"], r["size"]) for r in doc["rows"]] == [("random", "ipc1"), ("herding", "ipc1"),
                                                               ("random", "ipc5")]


@pytest.mark.parametrize(("changes", "reason"), [({"protocol": "quick"}, "other protocol"),
                                                   ({"schedule": "dc-reference"}, "other schedule"),
                                                   ({"runs": 3, "seed": 1}, "other runs, seed"),
                                                   ({"sae": {"latents": 2048, "k": 32, "epochs": 5}}, "other sae")])
def test_rows_measured_with_other_settings_are_not_reused(coreset_table, results_dir, changes, reason, capsys):
    path = results_dir / "t.json"
    _results_file(coreset_table, path, **changes)
    assert coreset_table._previous_rows(path, QUICK_SETTINGS) == {}
    assert reason in capsys.readouterr().out


def test_an_unreadable_results_file_is_ignored_and_said_so(coreset_table, results_dir, capsys):
    path = results_dir / "t.json"
    path.write_text("{ half-written")
    assert coreset_table._previous_rows(path, QUICK_SETTINGS) == {}
    assert "unreadable" in capsys.readouterr().out
    assert coreset_table._previous_rows(results_dir / "missing.json", QUICK_SETTINGS) == {}


def test_markdown_shows_a_spread_only_where_a_cell_has_more_than_one_run(coreset_table):
    one = coreset_table._row("random", "ipc1", _record(10, 0.5))
    two = coreset_table._row("herding", "ipc1", {**_record(10, 0.6), "eval": {"mean": 0.6, "std": 0.02,
                                                                               "accuracies": [0.58, 0.62]}})
    doc = {**QUICK_SETTINGS, "methods": ["random", "herding"], "cells": ["ipc1"], "rows": [one, two],
           "versions": {}, "host": "test"}
    table = coreset_table._markdown(doc)
    assert "| random | 50.0 |" in table
    assert "| herding | 60.0 +- 2.0 (+10.0) |" in table


def test_overwrite_and_finished_only_together_are_refused(coreset_table, capsys):
    with pytest.raises(SystemExit):
        coreset_table.main(["--quick", "--overwrite", "--finished-only"])
    assert "--overwrite recomputes every cell and --finished-only runs none" in capsys.readouterr().err


def test_rows_name_their_subset_by_digest(coreset_table, tmp_path):
    import numpy as np

    from datacomp.selectors import Selection

    sel = Selection(indices=np.array([4, 0, 2]), scores=np.zeros(3))
    assert coreset_table._row("random", "ipc1", {**_record(3, 0.5), "subset_sha256": "abc"})["subset_sha256"] == "abc"
    sel.save(tmp_path / "selection.npz")  # a run folder written before run.json carried the digest
    row = coreset_table._row("random", "ipc1", {**_record(3, 0.5), "_out": str(tmp_path)})
    assert row["subset_sha256"] == sel.subset_digest()
    assert coreset_table._row("random", "ipc1", _record(3, 0.5))["subset_sha256"] is None


def test_a_cell_is_one_select_dataset_call(coreset_table, tmp_path, monkeypatch):
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "cache"))
    args = argparse.Namespace(dataset="digits", seed=0, model="mlp", proxy_epochs=1, protocol="smoke", runs=1,
                              device="cpu", sae_latents=32, sae_k=4, sae_epochs=1, data_root=None, progress=False,
                              proxy_bf16=False, overwrite=False)
    record = coreset_table._run_cell(args, "herding", "ipc", 1, tmp_path / "cell")
    assert record["kind"] == "select" and record["num_items"] == 10 and len(record["eval"]["accuracies"]) == 1
    assert record["baseline"] is None and record["subset_sha256"] and record["output_sha256"]
    again = coreset_table._run_cell(args, "herding", "ipc", 1, tmp_path / "cell")  # read back, not re-run
    assert again["created"] == record["created"] and again["output_sha256"] == record["output_sha256"]
