"""benchmarks/seed_study.py: settings read back from run.json, paired comparison, misuse errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from conftest import load_benchmark
from datacomp.distillers.presets import config_dict, get_config


@pytest.fixture(scope="module")
def seed_study():
    return load_benchmark("seed_study")


def _summary(tmp_path: Path, name: str, rows: dict[tuple[str, str], dict[int, float]], **overrides) -> Path:
    """A ``..._seeds.json`` whose results point at run directories holding the recorded config."""
    results = []
    for (row, method), per_seed in rows.items():
        for seed, mean in per_seed.items():
            run_dir = tmp_path / name / f"seed{seed}" / row
            run_dir.mkdir(parents=True)
            config = config_dict(get_config(method, "cpu-quick", dataset="digits", ipc=1,
                                            **(overrides if method == "ncfm" else {})))
            (run_dir / "run.json").write_text(json.dumps({"config": {"config": config}}))
            results.append({"row": row, "ipc": 1, "method": method, "mean": mean, "seed": seed,
                            "run_dir": str(run_dir)})
    path = tmp_path / f"{name}_seeds.json"
    path.write_text(json.dumps({"dataset": "digits", "preset": "cpu-quick", "protocol": "quick", "runs": 3,
                                "results": results}))
    return path


NCFM = {0: 87.0, 1: 87.5, 2: 88.6, 3: 87.2}
DM = {0: 86.5, 1: 85.4, 2: 87.2, 3: 88.0}


def test_paired_comparison_matches_scipy(seed_study, tmp_path):
    path = _summary(tmp_path, "base", {("ncfm-learned", "ncfm"): NCFM, ("dm", "dm"): DM})
    out = tmp_path / "study"
    seed_study.main(["--title", "t", "--out", str(out), "--group", "g", str(path), "--compare", "ncfm-learned", "dm"])
    doc = json.loads(out.with_suffix(".json").read_text())
    (comparison,) = doc["groups"][0]["paired"]
    expected = stats.ttest_rel(list(NCFM.values()), list(DM.values()))
    assert comparison["seeds"] == [0, 1, 2, 3]
    assert comparison["mean"] == pytest.approx(sum(NCFM.values()) / 4 - sum(DM.values()) / 4)
    assert comparison["t"] == pytest.approx(expected.statistic)
    assert comparison["p"] == pytest.approx(expected.pvalue)
    assert comparison["a_above"] == 3
    assert "ncfm-learned - dm = **+0.80" in out.with_suffix(".md").read_text()


def test_rows_are_labelled_by_their_recorded_settings(seed_study, tmp_path):
    base = _summary(tmp_path, "base", {("ncfm-learned", "ncfm"): NCFM, ("dm", "dm"): DM})
    swept = _summary(tmp_path, "lr3e3", {("ncfm-learned", "ncfm"): {0: 88.0, 1: 88.0, 2: 88.0}}, lr_img=0.003)
    out = tmp_path / "study"
    seed_study.main(["--title", "t", "--out", str(out), "--group", "g", str(base), str(swept),
                     "--compare", "ncfm-learned:lr_img=0.003", "dm", "--compare", "ncfm-learned", "dm"])
    doc = json.loads(out.with_suffix(".json").read_text())
    assert {r["settings"] for r in doc["groups"][0]["rows"]} == {"default", "lr_img=0.003"}
    swept_vs_dm, default_vs_dm = doc["groups"][0]["paired"]
    assert swept_vs_dm["seeds"] == [0, 1, 2]  # only the seeds both rows ran
    assert swept_vs_dm["a"] == "ncfm-learned:lr_img=0.003"
    assert (default_vs_dm["a"], default_vs_dm["seeds"]) == ("ncfm-learned:default", [0, 1, 2, 3])


def test_no_spread_gives_no_t_statistic(seed_study):
    rows = [{"ipc": 1, "row": "a", "settings": "default", "seeds": [0, 1], "per_seed": [2.0, 3.0]},
            {"ipc": 1, "row": "b", "settings": "default", "seeds": [0, 1], "per_seed": [1.0, 2.0]}]
    comparison = seed_study.paired(rows, ("a", "default"), ("b", "default"), 1)
    assert comparison["mean"] == 1.0 and comparison["t"] is None and comparison["p"] is None
    assert "no spread" in seed_study.describe(comparison)


def test_missing_row_is_skipped(seed_study):
    rows = [{"ipc": 1, "row": "a", "settings": "default", "seeds": [0, 1], "per_seed": [2.0, 3.0]}]
    assert seed_study.paired(rows, ("a", "default"), ("b", "default"), 1) is None


def test_compare_needs_two_shared_seeds(seed_study, tmp_path, capsys):
    path = _summary(tmp_path, "base", {("ncfm-learned", "ncfm"): {0: 87.0, 1: 88.0}, ("dm", "dm"): {1: 86.0, 2: 85.0}})
    with pytest.raises(SystemExit):
        seed_study.main(["--title", "t", "--out", str(tmp_path / "s"), "--group", "g", str(path),
                         "--compare", "ncfm-learned", "dm"])
    assert "share 1 seed(s) at IPC 1" in capsys.readouterr().err
    assert not (tmp_path / "s.md").exists()


def test_group_without_files_is_rejected(seed_study, tmp_path, capsys):
    with pytest.raises(SystemExit):
        seed_study.main(["--title", "t", "--out", str(tmp_path / "s"), "--group", "empty"])
    assert "--group 'empty' lists no ..._seeds.json file" in capsys.readouterr().err


def test_a_row_is_default_with_its_own_settings(seed_study, tmp_path):
    """ncfm-gaussian is the Gaussian sampler by definition: its label is ``default``, not ``sampler=gaussian``."""
    path = _summary(tmp_path, "gauss", {("ncfm-gaussian", "ncfm"): {0: 87.0, 1: 88.0}}, sampler="gaussian")
    (row,) = seed_study.rows_of(path)
    assert row["settings"] == "default"
    learned = _summary(tmp_path, "learned", {("ncfm-learned", "ncfm"): {0: 87.0, 1: 88.0}}, sampler="gaussian")
    assert seed_study.rows_of(learned)[0]["settings"] == "sampler=gaussian"


def test_paired_rejects_rows_with_fewer_than_two_shared_seeds(seed_study):
    rows = [{"ipc": 1, "row": "a", "settings": "default", "seeds": [0, 1], "per_seed": [2.0, 3.0]},
            {"ipc": 1, "row": "b", "settings": "default", "seeds": [1, 2], "per_seed": [1.0, 2.0]}]
    with pytest.raises(ValueError, match=r"--compare: a:default and b:default share 1 seed\(s\) at IPC 1"):
        seed_study.paired(rows, ("a", "default"), ("b", "default"), 1)
