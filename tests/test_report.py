"""Tests for datacomp.report: run.json loading, the cost-ratio table and the md/csv/png outputs."""

import argparse
import csv
import json

import pytest

from datacomp.cost import CostEntry, CostLedger
from datacomp.cli.report import add_parser
from datacomp.errors import ConfigError, FormatError, MissingInputError
from datacomp.report import load_run, write_report

FULL_N = 1000


def make_run_dir(root, name, *, method, num_items, acc, std=0.01, sel_seconds=1.0, sel_flops=100.0,
                 sub_seconds=2.0, sub_flops=40.0, runs=2, epochs=10, one_off_flops=None, baseline=True,
                 kind="distill", protocol_kind="fixed-epoch"):
    """Write a minimal valid run directory (docs/architecture.md, "Run directories"); costs are for all runs."""
    cost = CostLedger()
    if sel_flops is not None or sel_seconds:
        spent = CostEntry(seconds=sel_seconds, flops_forward=sel_flops, flops_backward=0.0 if sel_flops else None)
        cost.add("selection", spent, estimated=False)
    if one_off_flops is not None:
        cost.add("sae-training", CostEntry(seconds=50.0, flops_forward=one_off_flops, flops_backward=0.0), one_off=True)

    def evaluation(mean, n_items):
        ledger = CostLedger()
        spent = CostEntry(seconds=sub_seconds, flops_forward=sub_flops / 3, flops_backward=2 * sub_flops / 3)
        ledger.add("train-on-subset", spent, estimated=False,
                   extra={"runs": runs, "epochs": epochs, "samples_seen": runs * epochs * n_items,
                          "protocol_kind": protocol_kind})
        return {"protocol": "quick", "protocol_config": {}, "model": "convnet-3-in", "dataset": "digits",
                "accuracies": [mean - std, mean + std], "mean": mean, "std": std, "num_train_images": n_items,
                "epochs": epochs, "cost": ledger.to_dict()}

    run = {"kind": kind, "method": method, "dataset": "digits", "num_items": num_items, "ipc": num_items // 10,
           "fraction": None, "seed": 0, "config": {}, "versions": {}, "cost": cost.to_dict(),
           "eval": evaluation(acc, num_items), "baseline": evaluation(acc - 0.05, num_items) if baseline else None,
           "full_train_size": FULL_N}
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(run))
    return run_dir


def _run_cli(argv):
    parser = argparse.ArgumentParser(prog="datacomp")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def run_dirs(tmp_path):
    return [
        make_run_dir(tmp_path, "ncfm", method="ncfm", num_items=100, acc=0.90),
        make_run_dir(tmp_path, "sae", method="sae-greedy", num_items=50, acc=0.80, one_off_flops=5000.0,
                     kind="select"),
        make_run_dir(tmp_path, "full", method="full", num_items=FULL_N, acc=0.97, sel_flops=None, sel_seconds=0.0,
                     sub_flops=800.0, sub_seconds=40.0, baseline=False, kind="train"),
    ]


def test_report_writes_table_markdown_csv_and_png(run_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run_cli(["report", *map(str, run_dirs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "R FLOPs (marg. / full)" in printed and "ncfm" in printed and "sae-greedy" in printed
    assert "R = S / C_sel" in printed and "k* = C_sel / S" in printed
    assert "90.00 ± 1.00 (quick)" in printed and "85.00 ± 1.00" in printed

    md = (out / "report.md").read_text()
    assert md.count("\n| ") >= 4 and "## Definitions" in md and "STR = C_sel / C_full" in md

    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["method"] for r in rows] == ["ncfm", "sae-greedy", "full"]
    ncfm, sae = rows[0], rows[1]
    # per run: C_sub = 40 / 2 = 20 FLOPs; C_full = the full-data run's 800 / 2 = 400 FLOPs (measured)
    assert ncfm["c_full_source"] == "measured (full-data run)"
    assert float(ncfm["c_sub_flops"]) == pytest.approx(20.0) and float(ncfm["c_full_flops"]) == pytest.approx(400.0)
    assert float(ncfm["savings_flops"]) == pytest.approx(380.0)
    assert float(ncfm["r_marginal_flops"]) == pytest.approx(3.8) and ncfm["worth_it_marginal_flops"] == "True"
    assert float(ncfm["k_marginal_flops"]) == pytest.approx(100 / 380)
    assert float(ncfm["str_marginal_flops"]) == pytest.approx(100 / 400)
    # the one-off SAE counts only in the fully loaded ratio
    assert float(sae["c_sel_fully_loaded_flops"]) == pytest.approx(5100.0)
    assert float(sae["r_fully_loaded_flops"]) < 1 < float(sae["r_marginal_flops"])
    # the full-data run: no selection, nothing saved
    assert rows[2]["savings_flops"] == "0.0" and rows[2]["k_marginal_flops"] == "inf"

    import matplotlib.image

    image = matplotlib.image.imread(str(out / "report.png"))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(out.glob(".*.tmp"))


def test_report_estimates_full_cost_without_a_full_data_run(run_dirs, tmp_path):
    result = write_report(run_dirs[:1], tmp_path / "out")
    f = result["rows"][0]["report"].units["flops"]
    # per sample-epoch = 40 FLOPs / (2 runs * 10 epochs * 100 items) -> C_full = 0.02 * 10 * 1000 = 200 per run
    assert result["rows"][0]["report"].c_full_source == "estimated from per-sample cost"
    assert f.c_full == pytest.approx(200.0) and f.savings == pytest.approx(180.0)
    assert f.r_marginal == pytest.approx(1.8) and f.k_marginal == pytest.approx(100 / 180)


def test_report_through_the_datacomp_cli(run_dirs, tmp_path):
    from datacomp import cli

    assert cli.main(["report", *map(str, run_dirs[:1]), "--out", str(tmp_path / "r"), "--cost-unit",
                     "seconds", "--full-epochs", "100"]) == 0
    row = next(csv.DictReader((tmp_path / "r" / "report.csv").open()))
    # per sample-epoch 2 s / 2000 -> C_full = 1e-3 * 100 epochs * 1000 = 100 s
    assert float(row["c_full_seconds"]) == pytest.approx(100.0)


def test_fixed_iteration_run_reports_zero_savings(tmp_path):
    run = make_run_dir(tmp_path, "ccs", method="ccs", num_items=100, acc=0.9, protocol_kind="fixed-iteration")
    result = write_report([run], tmp_path / "out")
    report = result["rows"][0]["report"]
    assert report.units["flops"].savings == 0.0 and report.units["flops"].r_marginal == 0.0
    assert "fixed-iteration" in result["text"]


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda r: r.update(kind="magic"), "kind must be one of"),
    (lambda r: r.pop("method"), "method must be a non-empty string"),
    (lambda r: r.update(num_items=-1), "num_items must be an integer >= 0"),
    (lambda r: r.update(full_train_size="all"), "full_train_size must be an integer >= 1"),
    (lambda r: r.pop("cost"), r"cost \(a CostLedger.to_dict\(\)\) is missing"),
    (lambda r: r["cost"].update(version=7), "unsupported version 7"),
    (lambda r: r["eval"].pop("mean"), "eval.mean must be a number"),
    (lambda r: r.update(baseline=[1]), "baseline must be an object or null"),
    (lambda r: r["eval"]["cost"]["phases"][0].update(seconds=-3), "seconds must be a finite non-negative"),
])
def test_invalid_run_json_is_rejected(tmp_path, mutate, match):
    run_dir = make_run_dir(tmp_path, "bad", method="m", num_items=10, acc=0.5)
    run = json.loads((run_dir / "run.json").read_text())
    mutate(run)
    (run_dir / "run.json").write_text(json.dumps(run))
    with pytest.raises(FormatError, match=match):
        load_run(run_dir)


def test_missing_and_malformed_run_json(tmp_path, capsys):
    with pytest.raises(MissingInputError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match=r"run.json not found: is .* a run directory"):
        load_run(tmp_path / "empty")
    (tmp_path / "empty" / "run.json").write_text("{oops")
    with pytest.raises(FormatError, match="is not valid JSON"):
        load_run(tmp_path / "empty")
    from datacomp import cli

    assert cli.main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"run_dirs": []}, "give at least one RUN_DIR"),
    ({"unit": "joules"}, "unit must be one of"),
])
def test_invalid_write_report_arguments(run_dirs, tmp_path, kwargs, match):
    kwargs = {"run_dirs": run_dirs, "out_dir": tmp_path / "o", **kwargs}
    with pytest.raises(ConfigError, match=match):
        write_report(**kwargs)


@pytest.mark.parametrize(("extra", "match"), [
    (["--full-epochs", "0"], "--full-epochs must be a positive number"),
    (["--full-epochs", "nan"], "--full-epochs must be a positive number"),
    (["--out", "FILE"], "--out .* is a file; give a folder"),
])
def test_report_command_errors_exit_2_with_a_message(run_dirs, tmp_path, capsys, extra, match):
    from datacomp import cli

    (tmp_path / "FILE").write_text("x")
    extra = [str(tmp_path / "FILE") if e == "FILE" else e for e in extra]
    assert cli.main(["report", *map(str, run_dirs), *extra]) == 2
    assert pytest.importorskip("re").search(match, capsys.readouterr().err)
