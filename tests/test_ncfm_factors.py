"""benchmarks/ncfm_factors.py: one setting changed per row, the baseline and Gaussian rows shared with
convergence.py's runs, the verdict rule, and a tiny end-to-end run on digits that is read back on a second call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_benchmark
from datacomp.errors import ConfigError


@pytest.fixture(scope="module")
def fac():
    return load_benchmark("ncfm_factors")


def test_each_factor_changes_one_setting_and_shares_convergence_folders(fac) -> None:
    args = fac.parse_args(["--set", "real_batch=16"])
    base, pool = fac.factor_args("baseline", args), fac.factor_args("pool-6", args)
    gauss = fac.factor_args("gaussian", args)
    assert base.tag == gauss.tag == "" and pool.tag == "-pool-6"
    assert base.overrides == {"ncfm": {"real_batch": "16"}}
    assert pool.overrides == {"ncfm": {"real_batch": "16", "pool_size": "6"}}
    assert fac.FACTORS["gaussian"][0] == "ncfm-gaussian"
    assert all(len(changed) <= 1 for _, changed, _ in fac.FACTORS.values())
    assert base.checkpoints == [300] and fac.convergence.points_for(10, base) == [300]


def test_verdict_needs_one_point_and_twice_the_spread(fac) -> None:
    base = {"mean": 50.0, "std": 0.2}
    assert fac.verdict({"mean": 51.5, "std": 0.3}, base) == "moved"
    assert fac.verdict({"mean": 50.9, "std": 0.1}, base) == "within noise"  # under 1 point
    assert fac.verdict({"mean": 52.0, "std": 1.5}, base) == "within noise"  # under twice the spread


@pytest.mark.parametrize("argv, match", [
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--ipc", "0"], "--ipc must be >= 1"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--protocol", "nope"], "protocol"),
])
def test_misconfigurations_fail_before_work(fac, argv, match) -> None:
    with pytest.raises(ConfigError, match=match):
        fac.check_args(fac.parse_args(argv))


def test_set_needs_key_value(fac) -> None:
    with pytest.raises(SystemExit):
        fac.parse_args(["--set", "pool_size"])


def test_tiny_run_writes_the_table_and_reads_it_back(fac, tmp_path: Path, monkeypatch) -> None:
    argv = ["--dataset", "digits", "--ipc", "1", "--iterations", "2", "--protocol", "smoke", "--runs", "1",
            "--factors", "baseline", "freqs-4096", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path), "--pool-dir", str(tmp_path / "pool"), "--no-progress",
            "--set", "pool_size=1", "--set", "pool_min_steps=0", "--set", "real_batch=16", "--set", "num_freqs=64"]
    assert fac.main(argv) == 0
    doc = json.loads((tmp_path / "ncfm_factors_digits_ipc1_it2.json").read_text())
    assert [r["factor"] for r in doc["rows"]] == ["baseline", "freqs-4096"]
    assert doc["rows"][1]["changed"] == {"num_freqs": "4096"}
    assert Path(doc["rows"][0]["run_dir"]).name == "digits-cpu-quick-ipc1-ncfm-learned"
    assert Path(doc["rows"][1]["run_dir"]).name == "digits-cpu-quick-freqs-4096-ipc1-ncfm-learned"
    text = (tmp_path / "ncfm_factors_digits_ipc1_it2.md").read_text()
    assert "| freqs-4096 |" in text and "vs baseline" in text

    def refuse(*a, **k):
        raise AssertionError("a finished factor was distilled again")

    monkeypatch.setattr(fac.convergence, "distill", refuse)
    assert fac.main(argv) == 0
    assert json.loads((tmp_path / "ncfm_factors_digits_ipc1_it2.json").read_text())["rows"] == doc["rows"]
