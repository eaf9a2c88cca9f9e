"""benchmarks/coreset_table.py: the accuracy-vs-size plot from a partial table."""

from __future__ import annotations

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
