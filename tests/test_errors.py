"""datacomp.errors: the shared 'an int, not a bool' predicate, the integer-at-least check, and the scripts' exit
wrapper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datacomp.errors import ConfigError, check_int_at_least, is_int, run_script


@pytest.mark.parametrize("value, expected", [
    (1, True), (np.int64(1), True), (True, False), (np.bool_(True), False), (1.0, False), ("1", False), (None, False),
])
def test_is_int(value, expected):
    assert is_int(value) is expected


def test_check_int_at_least_names_the_argument_and_the_fix():
    check_int_at_least(np.int64(2), "folds", 2)
    with pytest.raises(ConfigError, match=r"^folds must be an integer >= 2 \(--set folds=N\), got 1$"):
        check_int_at_least(1, "folds", 2, " (--set folds=N)")
    with pytest.raises(ConfigError, match=r"^ipc must be an integer >= 1, got True$"):
        check_int_at_least(True, "ipc", 1)


@pytest.mark.parametrize("returned, status", [(None, 0), (0, 0), (3, 3)])
def test_run_script_exits_with_what_main_returns(returned, status):
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: returned)
    assert exit_info.value.code == status


def test_run_script_turns_a_datacomp_error_into_one_line_and_status_2(capsys):
    def main():
        raise ConfigError("--runs must be >= 1, got 0")

    with pytest.raises(SystemExit) as exit_info:
        run_script(main, prog="table.py")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "table.py: error: --runs must be >= 1, got 0\n"


def test_run_script_lets_unexpected_errors_through():
    def main():
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_script(main)


@pytest.mark.parametrize("script, argv, names", [
    ("convergence.py", ["--runs", "0"], "--runs"),
    ("ncfm_table.py", ["--ipc", "0"], "--ipc must be an integer >= 1"),
    ("ncfm_table.py", ["--runs", "0"], "--runs must be an integer >= 1"),
    ("ncfm_factors.py", ["--runs", "0"], "--runs"),
    ("coreset_table.py", ["--runs", "0"], "--runs must be an integer >= 1"),
    ("coreset_table.py", ["--quick", "--ipc", "1", "0"], "--ipc must be an integer >= 1"),
])
def test_benchmark_scripts_exit_2_with_one_line(script, argv, names):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    done = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"{script}: error:") and names in done.stderr
