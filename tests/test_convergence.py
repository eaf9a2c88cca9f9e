"""benchmarks/convergence.py: evaluation points, the IPC 50 cap, and resumability (points read back, runs continued,
interrupted runs resumed, runs of other settings started over) at tiny sizes on digits."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import load_benchmark
from datacomp.errors import ConfigError
from datacomp.synset import SyntheticSet


@pytest.fixture(scope="module")
def conv():
    return load_benchmark("convergence")


def test_points_follow_the_checkpoints_and_the_ipc50_cap(conv) -> None:
    args = conv.parse_args([])
    assert (args.iterations, args.checkpoints, args.max_ipc50_iterations) == (1000, [80, 300, 1000], 300)
    assert (args.protocol, args.runs, args.preset) == ("quick-bf16", 2, "cpu-quick")
    assert conv.points_for(1, args) == conv.points_for(10, args) == [80, 300, 1000]
    assert conv.points_for(50, args) == [80, 300]
    args.max_ipc50_iterations = 500
    assert conv.points_for(50, args) == [80, 300, 500]
    args.iterations = 2000  # the last iteration is always a point
    assert conv.points_for(1, args) == [80, 300, 1000, 2000]
    assert conv.paper_value("49.5+-0.3") == 49.5 and conv.paper_value("65.6 (Table 5, w/o psi)") == 65.6
    assert conv.paper_value(None) is None


@pytest.mark.parametrize("argv, match", [
    (["--checkpoints", "80", "2000"], r"--checkpoints \[2000\] lie outside 1..--iterations 1000"),
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--max-ipc50-iterations", "0"], "--max-ipc50-iterations must be >= 1"),
])
def test_misconfigurations_fail_before_work(conv, argv, match) -> None:
    with pytest.raises(ConfigError, match=match):
        conv.check_args(conv.parse_args(argv))


def _main(conv, tmp_path: Path, *extra: str) -> dict:
    argv = ["--dataset", "digits", "--ipc", "1", "--methods", "dm", "--protocol", "smoke", "--runs", "1",
            "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path),
            "--pool-dir", str(tmp_path / "pool"), "--no-progress", "--set-dm", "real_batch=8", *extra]
    assert conv.main(argv) == 0
    return json.loads((tmp_path / "convergence_digits_smoke.json").read_text())


def _counting(conv, monkeypatch) -> dict[str, int]:
    calls = {"distill": 0, "evaluate": 0}
    for name in calls:
        real = getattr(conv, name)

        def wrapper(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(conv, name, wrapper)
    return calls


def test_points_are_read_back_runs_continue_and_resume(conv, tmp_path: Path, monkeypatch) -> None:
    first = _main(conv, tmp_path, "--iterations", "4", "--checkpoints", "2")
    curve = first["curves"][0]
    assert [p["iteration"] for p in curve["points"]] == [2, 4] and first["random"][0]["ipc"] == 1
    last = curve["points"][-1]  # time and memory from the snapshot's cost ledger
    assert last["seconds_per_iteration"] == pytest.approx(last["distill_seconds"] / 4)
    assert (last["device"], last["peak_memory_kind"]) == ("cpu", "rss") and last["peak_memory_bytes"] > 2**20
    assert re.search(r"\| [\d.]+ \| \d+\.\d\d GiB \(cpu, rss\) \|$", (tmp_path / "convergence_digits_smoke.md")
                     .read_text().splitlines()[-1])
    assert {"md", "png"} <= {p.suffix[1:] for p in tmp_path.glob("convergence_digits_smoke.*")}
    out = Path(curve["run_dir"])

    calls = _counting(conv, monkeypatch)
    again = _main(conv, tmp_path, "--iterations", "4", "--checkpoints", "2")  # everything read back
    assert calls == {"distill": 0, "evaluate": 0} and again["curves"] == first["curves"]

    # --stored-only: a longer run asked for, nothing done, the table stops where the run stopped
    partial = _main(conv, tmp_path, "--iterations", "6", "--checkpoints", "2", "4", "--stored-only")
    assert calls == {"distill": 0, "evaluate": 0} and partial["curves"][0]["run_length"] == 6  # asked, not reached
    assert [dict(c, run_length=4) for c in partial["curves"]] == first["curves"]
    table = (tmp_path / "convergence_digits_smoke.md").read_text()
    assert "--stored-only" in table and re.search(r"\| 1 \| dm \| [\d.]+ \+- [\d.]+ \| [\d.]+ \+- [\d.]+ \| - \|", table)

    longer = _main(conv, tmp_path, "--iterations", "6", "--checkpoints", "2", "4")  # the finished run continues
    assert calls == {"distill": 1, "evaluate": 1}  # only iteration 6 is new
    events = json.loads((out / "log.json").read_text())["events"]
    assert {"iteration": 4, "event": "resumed"} in events
    assert longer["curves"][0]["points"][:2] == first["curves"][0]["points"]
    final = SyntheticSet.load(out / "snapshots" / "it6" / "synset.safetensors").content_digest()

    # a run killed between iterations 4 and 6: resumed from its checkpoint at 4, the same set at 6
    for path in [out / "run.json", out / "checkpoints" / "ckpt-r0of1-it6.pt", *(out / "snapshots" / "it6").iterdir()]:
        path.unlink()
    _main(conv, tmp_path, "--iterations", "6", "--checkpoints", "2", "4")
    assert calls == {"distill": 2, "evaluate": 2}
    assert SyntheticSet.load(out / "snapshots" / "it6" / "synset.safetensors").content_digest() == final

    changed = _main(conv, tmp_path, "--iterations", "6", "--checkpoints", "2", "4", "--set-dm", "momentum=0.9")
    assert calls == {"distill": 3, "evaluate": 5}  # other settings: the run starts over, every point is new
    assert json.loads((out / "run.json").read_text())["config"]["config"]["momentum"] == 0.9
    assert [p["iteration"] for p in changed["curves"][0]["points"]] == [2, 4, 6]


def test_rows_of_the_results_file_are_kept_when_their_run_folder_is_gone(conv, tmp_path: Path, monkeypatch) -> None:
    first = _main(conv, tmp_path, "--iterations", "2", "--checkpoints", "1")
    shutil.rmtree(tmp_path / "runs")  # another machine: only the results file travels
    calls = _counting(conv, monkeypatch)
    kept = _main(conv, tmp_path, "--iterations", "2", "--checkpoints", "1", "--stored-only", "--no-random")
    assert calls == {"distill": 0, "evaluate": 0}
    assert kept["curves"] == [dict(first["curves"][0], kept=True)]
    assert kept["random"] == [dict(first["random"][0], kept=True)]
    table = (tmp_path / "convergence_digits_smoke.md").read_text()
    assert re.search(r"\| 1 \| dm \(kept\) \| [\d.]+ \+- [\d.]+ \| [\d.]+ \+- [\d.]+ \|", table) and "(kept):" in table

    # other settings: the file's rows are measurements of something else and are not kept
    other = _main(conv, tmp_path, "--iterations", "2", "--checkpoints", "1", "--stored-only", "--no-random",
                  "--set-dm", "momentum=0.9")
    assert other["curves"][0]["points"] == [] and other["random"] == []


def test_a_capped_run_that_stopped_early_shows_dash_below_the_cap(conv) -> None:
    args = conv.parse_args(["--ipc", "10", "50", "--stored-only"])  # IPC 50 capped at 300; columns 80 300 1000
    point = {"iteration": 80, "mean": 47.5, "std": 0.2, "distill_seconds": 800.0}
    curve = {"method": "dm", "ipc": 50, "iterations_run": 80, "run_length": 300, "capped": True, "points": [point],
             "paper": None}
    row = conv.markdown([curve], {}, args).splitlines()[-1]
    assert row.startswith("| 50 | dm | 47.5 +- 0.2 | - | not run (cap) | - | - | 800 | - | - |")


def test_rows_run_under_different_caps_each_show_their_own(conv) -> None:
    """A kept row run to 300 beside a row of this invocation capped at 80: the header and the cells follow each
    row's own cap."""
    args = conv.parse_args(["--ipc", "50", "--checkpoints", "80", "--max-ipc50-iterations", "80"])
    point = lambda n: {"iteration": n, "mean": 50.0, "std": 0.1, "distill_seconds": 10.0 * n}  # noqa: E731
    dm = {"method": "dm", "ipc": 50, "iterations_run": 300, "run_length": 300, "capped": True, "kept": True,
          "points": [point(80), point(300)], "paper": None}
    ncfm = {"method": "ncfm-gaussian", "ipc": 50, "iterations_run": 80, "run_length": 80, "capped": True,
            "points": [point(80)], "paper": None}
    old = {"method": "ncfm-learned", "ipc": 50, "iterations_run": 80, "capped": True, "kept": True,
           "points": [point(80)], "paper": None}  # a file from before run_length was stored: its last iteration
    lines = conv.markdown([ncfm, old, dm], {}, args).splitlines()
    assert ("Runs capped (--max-ipc50-iterations): IPC 50: ncfm-gaussian, ncfm-learned at 80; dm at 300. "
            "A row's columns beyond its cap are not run.") in lines
    rows = {line.split(" | ")[1]: line.split(" | ")[2:4] for line in lines if line.startswith("| 50 |")}
    assert rows["dm (kept)"] == ["50.0 +- 0.1", "50.0 +- 0.1"]
    assert rows["ncfm-gaussian"] == ["50.0 +- 0.1", "not run (cap)"]
    assert rows["ncfm-learned (kept)"] == ["50.0 +- 0.1", "not run (cap)"]
