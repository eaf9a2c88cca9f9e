"""The public API as a user calls it: the README's tour and the three examples (run as scripts in this process),
on tiny settings."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datacomp
from datacomp.evaluation import EvalSettings
from datacomp.selectors import EvalOptions, ProxyOptions, SelectOptions

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_random5000.json"


def test_every_public_name_resolves_and_import_is_cheap():
    for name in datacomp.__all__:
        assert getattr(datacomp, name) is not None, name
    proc = subprocess.run([sys.executable, "-c", "import sys, datacomp; print('torch' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"  # names load on first use
    with pytest.raises(AttributeError, match="no attribute 'distil'"):
        datacomp.distil


@pytest.mark.slow
def test_readme_tour(tmp_path):
    ds = datacomp.load_dataset("digits")
    tiny = {"iterations": 3, "pool_size": 1, "pool_epochs": 1, "pool_min_steps": 0}
    run = datacomp.distill(ds, method="ncfm", ipc=2, overrides=tiny, seed=0, out=tmp_path / "ncfm",
                           eval_protocol="smoke", eval_runs=1, quiet=True)
    small = run.synset
    assert isinstance(small, datacomp.SyntheticSet) and len(small) == 20
    small.save(tmp_path / "ncfm2.safetensors")
    small = datacomp.SyntheticSet.load(tmp_path / "ncfm2.safetensors")
    assert small.content_digest() == run.record.output_sha256

    result = datacomp.evaluate(small, ds, protocol="smoke", runs=1, settings=EvalSettings(progress=False))
    assert 0 < result.mean <= 1 and result.baseline is not None
    assert result.improvement_over_random == pytest.approx(result.mean - result.baseline.mean)

    options = SelectOptions(proxy=ProxyOptions(epochs=1), eval=EvalOptions(runs=0), quiet=True)
    chosen = datacomp.select_dataset(ds, method="kcenter", ipc=2, options=options)
    assert len(chosen.selection.indices) == 20 and len(chosen.selection.subset_digest()) == 64
    features, labels = torch.randn(60, 5), torch.arange(60) % 3
    picks = datacomp.select("kcenter", features=features, budget=6, labels=labels)
    assert isinstance(picks, datacomp.Selection) and len(picks.indices) == 6

    record = datacomp.RunRecord.read(tmp_path / "ncfm")
    assert record.kind == "distill" and record.method == "ncfm" and record.eval["mean"] == run.eval.mean


def test_anticipated_errors_are_datacomp_errors():
    with pytest.raises(datacomp.DatacompError, match="unknown"):
        datacomp.distill("digits", method="ncfn")
    with pytest.raises(datacomp.DatacompError, match="unknown"):
        datacomp.select_dataset("digits", "hearding", ipc=1)


@pytest.fixture()
def run_example(tmp_path, monkeypatch, capsys):
    """``run_example(name, *args)``: what ``python examples/<name> ARGS`` does in ``tmp_path``, run as a script in this
    process (no second import of torch); returns what it printed."""

    def run(name: str, *args: str) -> str:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", [str(ROOT / "examples" / name), *args])
        capsys.readouterr()
        runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
        return capsys.readouterr().out

    return run


@pytest.mark.slow
def test_example_distill(tmp_path, run_example):
    out = run_example("distill_cifar10.py", "--dataset", "digits", "--ipc", "2", "--set", "iterations=2",
                      "pool_size=1", "pool_epochs=1", "pool_min_steps=0",
                      "--eval-protocol", "smoke", "--eval-runs", "1", "--out", str(tmp_path / "d"))
    assert "20 synthetic images of digits" in out and "improvement over random" in out


@pytest.mark.slow
@pytest.mark.skipif(not ALPACA.is_file(), reason="needs ../shared/data/instructions/alpaca_random5000.json")
def test_example_select_finetuning_subset(tmp_path, run_example):
    records = json.loads(ALPACA.read_text())[:80]
    (tmp_path / "small.json").write_text(json.dumps(records))
    out = run_example("select_finetuning_subset.py", str(tmp_path / "small.json"), "--budget", "8",
                      "--sae-epochs", "2", "--out", str(tmp_path / "s"))
    assert "sae-greedy: 8 records chosen" in out
    assert (tmp_path / "s" / "run.json").is_file()


@pytest.mark.slow
def test_example_compress(tmp_path, run_example):
    out = run_example("compress_with_small_data.py", "--teacher-epochs", "2", "--kd-epochs", "2",
                      "--out", str(tmp_path / "c"))
    assert "teacher" in out and "kd" in out and "quantize" in out
