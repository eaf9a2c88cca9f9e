"""benchmarks/endpoint_protocols.py: the better NCFM sampler is chosen by the quick evaluation, each set is evaluated
under every named protocol, evaluations are read back, a run of one row merges into the stored table, and a
missing snapshot is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import load_benchmark
from datacomp.errors import ConfigError


@pytest.fixture(scope="module")
def end():
    return load_benchmark("endpoint_protocols")


def _common(tmp_path: Path) -> list[str]:
    return ["--dataset", "digits", "--ipc", "1", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path), "--no-progress"]


def test_missing_snapshot_names_the_fix(end, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--iteration 2: no snapshot .*run benchmarks/convergence.py"):
        end.main([*_common(tmp_path), "--iteration", "2", "--protocols", "smoke", "--quick-protocol", "smoke"])


@pytest.mark.parametrize("argv, match", [
    (["--iteration", "0"], "--iteration must be >= 1"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--quick-runs", "0"], "--quick-runs must be >= 1"),
    (["--protocols", "nope"], "protocol"),
])
def test_misconfigurations_fail_before_work(end, argv, match) -> None:
    with pytest.raises(ConfigError, match=match):
        end.check_args(end.parse_args(argv))


def test_end_point_table_on_tiny_runs(end, tmp_path: Path, monkeypatch) -> None:
    conv = end.convergence
    assert conv.main([*_common(tmp_path), "--iterations", "2", "--checkpoints", "2", "--protocol", "smoke",
                      "--runs", "1", "--no-random", "--pool-dir", str(tmp_path / "pool"), "--set", "pool_size=1",
                      "--set", "pool_min_steps=0", "--set", "real_batch=16", "--set", "num_freqs=64",
                      "--set-dm", "real_batch=16"]) == 0
    curves = {c["method"]: c["points"][-1]["mean"]
              for c in json.loads((tmp_path / "convergence_digits_smoke.json").read_text())["curves"]}
    argv = [*_common(tmp_path), "--iteration", "2", "--protocols", "smoke", "--quick-protocol", "smoke",
            "--quick-runs", "1", "--runs", "1"]
    assert end.main(argv) == 0
    doc = json.loads((tmp_path / "endpoint_digits_ipc1_it2.json").read_text())
    best = max(end.NCFM_SAMPLERS, key=lambda m: curves[m])
    assert doc["ncfm_method"] == best and [r["method"] for r in doc["rows"]] == [best, "dm"]
    assert all(len(r["smoke"]["accuracies"]) == 1 for r in doc["rows"])
    assert "| dm |" in (tmp_path / "endpoint_digits_ipc1_it2.md").read_text()

    def refuse(*a, **k):
        raise AssertionError("a stored evaluation was computed again")

    monkeypatch.setattr(conv, "evaluate", refuse)
    assert end.main(argv) == 0
    table = tmp_path / "endpoint_digits_ipc1_it2.json"
    assert end.main([*argv, "--methods", "dm"]) == 0  # one row alone (e.g. a second process), read back too
    assert json.loads(table.read_text()) == doc  # merged into the stored table: the NCFM row is kept
    assert end.main([*argv, "--methods", "ncfm"]) == 0
    assert json.loads(table.read_text()) == doc
    table.unlink()
    assert end.main([*argv, "--methods", "dm"]) == 0  # nothing stored: the one row alone
    alone = json.loads(table.read_text())
    assert [r["method"] for r in alone["rows"]] == ["dm"] and alone["ncfm_method"] is None

    # the other sampler's run folder on another machine: it competes with the score the convergence file keeps
    other = next(m for m in end.NCFM_SAMPLERS if m != best)
    shutil.rmtree(conv.run_folder(other, 1, conv.parse_args(["--dataset", "digits", "--runs-dir",
                                                                 str(tmp_path / "runs")])))
    assert end.main([*argv, "--methods", "ncfm"]) == 0
    kept = json.loads(table.read_text())
    assert kept["ncfm_method"] == best and kept["sampler_choice"][other]["kept"] is True
    assert kept["sampler_choice"][other]["mean"] == doc["sampler_choice"][other]["mean"]
    assert "kept in the convergence results file" in (tmp_path / "endpoint_digits_ipc1_it2.md").read_text()
    shutil.rmtree(conv.run_folder(best, 1, conv.parse_args(["--dataset", "digits", "--runs-dir",
                                                                str(tmp_path / "runs")])))
    with pytest.raises(ConfigError, match=rf"{best} scores higher by smoke .* not on this machine"):
        end.main([*argv, "--methods", "ncfm"])
    with pytest.raises(ConfigError, match=r"no snapshot .* and no such point"):  # neither a set nor a kept score
        end.main([*argv, "--methods", "ncfm", "--quick-runs", "2"])


def test_stored_rows_of_other_settings_are_not_merged(end, tmp_path: Path) -> None:
    doc = {"dataset": "cifar10", "preset": "cpu-quick", "ipc": 10, "iteration": 300, "seed": 0,
           "protocols": ["ncfm", "dm"], "runs": 1, "quick_protocol": "quick-bf16", "ncfm_method": None,
           "sampler_choice": {}, "rows": [{"method": "dm"}]}
    stored = dict(doc, ncfm_method="ncfm-gaussian", sampler_choice={"ncfm-gaussian": {}},
                  rows=[{"method": "ncfm-gaussian"}, {"method": "dm", "old": True}])
    path = tmp_path / "table.json"
    path.write_text(json.dumps(stored))
    merged = end.merge_stored(doc, path)
    assert [r["method"] for r in merged["rows"]] == ["ncfm-gaussian", "dm"] and "old" not in merged["rows"][1]
    assert merged["ncfm_method"] == "ncfm-gaussian"
    path.write_text(json.dumps(dict(stored, runs=3)))
    assert end.merge_stored(doc, path) == doc
    assert end.merge_stored(doc, tmp_path / "absent.json") == doc
