"""Snapshots of a distillation run (``snapshot_at``): the set kept at chosen iterations, bit-identical to a run that
ends there, carried through a resume, cleared by an overwrite, and refused where it cannot be produced."""

from __future__ import annotations

from pathlib import Path

import pytest

from datacomp.distillers import distill
from datacomp.distillers.outputs import snapshot_path
from datacomp.errors import ConfigError
from datacomp.synset import SyntheticSet

TINY = {"dm": {"real_batch": 8},
        "ncfm": {"pool_size": 1, "pool_epochs": 1, "pool_min_steps": 0, "real_batch": 8, "num_freqs": 32}}


def run(out: Path, method: str = "dm", iterations: int = 4, **kwargs):
    return distill("digits", method, 1, preset="cpu-quick", overrides={**TINY[method], "iterations": iterations},
                   out=out, eval_runs=0, checkpoint_every=2, quiet=True, device="cpu",
                   pool_dir=str(out.parent / "pool"), **kwargs)


def kept(out: Path) -> list[int]:
    return sorted(int(p.name[2:]) for p in (out / "snapshots").iterdir())


@pytest.mark.parametrize("method", ["dm", "ncfm"])
def test_snapshots_equal_runs_that_end_there(tmp_path: Path, method: str) -> None:
    full = run(tmp_path / "full", method, snapshot_at=(3, 0, 1, 3))
    assert kept(full.out) == [0, 1, 3]
    plain = run(tmp_path / "plain", method)  # the same steps without snapshots: the same final set
    assert full.synset.content_digest() == plain.synset.content_digest()
    for n in (1, 3):
        snap = SyntheticSet.load(snapshot_path(full.out, n))
        shorter = run(tmp_path / f"short{n}", method, iterations=n)
        assert snap.content_digest() == shorter.synset.content_digest()
        assert snap.metadata["iterations"] == n and snap.metadata["config"]["iterations"] == 4
    init = SyntheticSet.load(snapshot_path(full.out, 0))
    assert init.metadata["iterations"] == 0 and init.content_digest() != full.synset.content_digest()


def test_a_resumed_run_keeps_its_snapshots_and_adds_the_later_ones(tmp_path: Path) -> None:
    out = tmp_path / "r"
    run(out, iterations=2, snapshot_at=(1,))
    first = SyntheticSet.load(snapshot_path(out, 1)).content_digest()
    extended = run(out, iterations=6, snapshot_at=(1, 5), resume=True)
    assert kept(out) == [1, 5] and SyntheticSet.load(snapshot_path(out, 1)).content_digest() == first
    straight = run(tmp_path / "straight", iterations=6, snapshot_at=(5,))
    assert extended.synset.content_digest() == straight.synset.content_digest()
    assert (SyntheticSet.load(snapshot_path(out, 5)).content_digest()
            == SyntheticSet.load(snapshot_path(straight.out, 5)).content_digest())
    with pytest.raises(ConfigError, match=r"no snapshot of iteration\(s\) \[3\]; drop them from snapshot_at"):
        run(out, iterations=8, snapshot_at=(3, 7), resume=True)  # iteration 3 is behind the checkpoint at 6
    run(out, iterations=2, overwrite=True)  # a fresh run in the folder leaves no stale snapshot behind
    assert not (out / "snapshots").exists()


@pytest.mark.parametrize("snapshot_at, match", [
    ((5,), r"snapshot_at \[5\] asks for iterations beyond the run's 4"),
    ((-1,), "every snapshot_at entry must be an integer >= 0"),
    ((2.5,), "every snapshot_at entry must be an integer >= 0"),
    (80, "snapshot_at must be a sequence of iterations"),
])
def test_snapshot_at_misconfigurations_fail_before_work(tmp_path: Path, snapshot_at, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run(tmp_path / "bad", snapshot_at=snapshot_at)
    assert not (tmp_path / "bad").exists()


def test_cli_snapshot_at_writes_snapshots_and_refuses_a_late_one(tmp_path: Path, capsys) -> None:
    from datacomp.cli import main

    out = tmp_path / "cli"
    argv = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--set", "iterations=2",
            "--eval-runs", "0", "--no-baseline", "--quiet", "--out", str(out)]
    assert main([*argv, "--snapshot-at", "1", "2"]) == 0
    assert kept(out) == [1, 2]
    assert main([*argv, "--overwrite", "--snapshot-at", "5"]) == 2
    assert "snapshot_at" in capsys.readouterr().err
