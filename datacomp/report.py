"""Reports comparing run directories by accuracy and cost ratios (the library side of ``datacomp report``).

Reads ``RUN_DIR/run.json`` files (docs/architecture.md, "Run directories"), computes each run's
:func:`~datacomp.cost.ratios.cost_report` and writes ``report.md``, ``report.csv`` and ``report.png``. The ratio
functions live in :mod:`datacomp.cost.ratios` and are re-exported here for existing callers.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable

from .cost import CostLedger
from .cost.ratios import (
    DEFINITIONS,
    NON_SELECTION_PHASES,
    PROTOCOL_KINDS,
    UNITS,
    CostReport,
    UnitCosts,
    break_even_reuses,
    cost_ratio,
    cost_report,
    fmt,
    phase_cost,
    phase_runs,
    savings,
    selection_to_tuning_ratio,
)
from .errors import ConfigError, FormatError, MissingInputError, is_int
from .io import RUN_FILE, atomic_write, read_json
from .record import RUN_KINDS

__all__ = [
    "DEFINITIONS",
    "NON_SELECTION_PHASES",
    "PROTOCOL_KINDS",
    "CostReport",
    "UnitCosts",
    "break_even_reuses",
    "cost_ratio",
    "cost_report",
    "load_run",
    "savings",
    "selection_to_tuning_ratio",
]


# ----------------------------------------------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------------------------------------------
def _check_eval(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object or null, got {type(value).__name__}")
    for key in ("mean", "std"):
        if isinstance(value.get(key), bool) or not isinstance(value.get(key), (int, float)):
            raise ValueError(f"{where}.{key} must be a number, got {value.get(key)!r}")
    if not isinstance(value.get("protocol"), str):
        raise ValueError(f"{where}.protocol must be a string, got {value.get('protocol')!r}")
    if "cost" in value and value["cost"] is not None:
        CostLedger.from_dict(value["cost"])


def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``RUN_DIR/run.json`` (format: docs/architecture.md, "Run directories").

    Raises:
        MissingInputError: The directory or its run.json is missing (a ``FileNotFoundError``).
        FormatError: run.json is not valid JSON or a field is missing or invalid (a ``ValueError``; the message names
            the field).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingInputError(f"run directory {run_dir} does not exist (give directories written with --out)")
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise MissingInputError(f"{path} not found: is {run_dir} a run directory written with --out?")
    run = read_json(path, what="run record")
    try:
        if not isinstance(run, dict):
            raise ValueError(f"top level must be an object, got {type(run).__name__}")
        if run.get("kind") not in RUN_KINDS:
            raise ValueError(f"kind must be one of {RUN_KINDS}, got {run.get('kind')!r}")
        for key in ("method", "dataset"):
            if not isinstance(run.get(key), str) or not run[key]:
                raise ValueError(f"{key} must be a non-empty string, got {run.get(key)!r}")
        for key, low in (("num_items", 0), ("full_train_size", 1)):
            value = run.get(key)
            if not is_int(value) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
        if "cost" not in run:
            raise ValueError("cost (a CostLedger.to_dict()) is missing")
        CostLedger.from_dict(run["cost"])
        _check_eval(run.get("eval"), "eval")
        _check_eval(run.get("baseline"), "baseline")
    except (TypeError, ValueError) as err:
        raise FormatError(f"{path}: invalid run.json: {err}") from None
    run["_path"] = str(run_dir)
    return run


def run_ledger(run: dict[str, Any]) -> CostLedger:
    """The run's cost ledger merged with its evaluation ledger (the ``train-on-subset`` phase)."""
    ledger = CostLedger.from_dict(run["cost"])
    eval_cost = (run.get("eval") or {}).get("cost")
    if eval_cost is not None and eval_cost != run["cost"]:
        ledger.merge(CostLedger.from_dict(eval_cost))
    return ledger


def _baseline_cost(run: dict[str, Any], unit: str) -> float | None:
    cost = (run.get("baseline") or {}).get("cost")
    if cost is None:
        return None
    ledger = CostLedger.from_dict(cost)
    if "train-on-subset" not in ledger:
        return None
    value = phase_cost(ledger, "train-on-subset", unit)
    return None if value is None else value / phase_runs(ledger, "train-on-subset")


def _full_data_key(run: dict[str, Any]) -> tuple[str, Any, Any]:
    ev = run.get("eval") or {}
    return run["dataset"], ev.get("protocol"), ev.get("model")


def summarise_run(run: dict[str, Any], full_epochs: float | None = None,
                  full_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """One report row: identity, accuracies and the :class:`CostReport` of a loaded run.

    Args:
        run: A run loaded with :func:`load_run`.
        full_epochs: Epochs of full-data training for an estimated ``C_full``.
        full_run: A full-data run (same dataset, protocol and model) whose training cost is used as the measured
            ``C_full`` when ``run`` has no ``train-on-full`` phase.
    """
    ledger = run_ledger(run)
    full_ledger = run_ledger(full_run) if full_run is not None and full_run is not run else None
    if full_ledger is not None and "train-on-full" not in ledger and "train-on-subset" in full_ledger:
        record = full_ledger["train-on-subset"].to_dict()
        record["name"] = "train-on-full"
        record["notes"] = record["notes"] + [f"measured by the full-data run {full_run['_path']}"]
        ledger.merge(CostLedger.from_dict({**full_ledger.to_dict(), "phases": [record]}))
    report = cost_report(ledger, full_train_size=run["full_train_size"], full_epochs=full_epochs)
    if full_ledger is not None and report.c_full_source == "measured":
        report.c_full_source = "measured (full-data run)"
        report.notes.append(f"C_full = training cost of the full-data run {full_run['_path']}")
    ev, base = run.get("eval") or {}, run.get("baseline") or {}
    return {"run": run["_path"], "kind": run["kind"], "method": run["method"], "dataset": run["dataset"],
            "num_items": run["num_items"], "ipc": run.get("ipc"), "fraction": run.get("fraction"),
            "seed": run.get("seed"), "full_train_size": run["full_train_size"],
            "is_full_data": run["num_items"] == run["full_train_size"], "protocol": ev.get("protocol"),
            "model": ev.get("model"), "accuracy_mean": ev.get("mean"), "accuracy_std": ev.get("std"),
            "eval_runs": len(ev.get("accuracies") or []) or None, "baseline_mean": base.get("mean"),
            "baseline_std": base.get("std"), "baseline_c_sub": {u: _baseline_cost(run, u) for u in UNITS},
            "report": report}


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
def _pair(a: float | None, b: float | None, split: bool) -> str:
    return f"{fmt(a)} / {fmt(b)}" if split else fmt(b)


def _accuracy(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the report table (marginal / fully loaded where one-off phases exist)."""
    split = any(r["report"].one_off_phases for r in rows)
    suffix = " (marg. / full)" if split else ""
    header = ["method", "dataset", "size", "accuracy % (protocol)", "random same size %", f"C_sel FLOPs{suffix}",
              f"C_sel s{suffix}", "S FLOPs", "S s", f"R FLOPs{suffix}", f"R s{suffix}", f"STR FLOPs{suffix}",
              f"k* FLOPs{suffix}", "C_full"]
    cells = []
    for r in rows:
        f, s = r["report"].units["flops"], r["report"].units["seconds"]
        size = str(r["num_items"]) + (f" ({r['ipc']} ipc)" if r["ipc"] else "") + (
            f" ({100 * r['fraction']:.3g}%)" if r["fraction"] else "") + (" (full data)" if r["is_full_data"] else "")
        acc = _accuracy(r["accuracy_mean"], r["accuracy_std"]) + (f" ({r['protocol']})" if r["protocol"] else "")
        cells.append([r["method"], r["dataset"], size, acc, _accuracy(r["baseline_mean"], r["baseline_std"]),
                      _pair(f.c_sel_marginal, f.c_sel_fully_loaded, split),
                      _pair(s.c_sel_marginal, s.c_sel_fully_loaded, split), fmt(f.savings), fmt(s.savings),
                      _pair(f.r_marginal, f.r_fully_loaded, split), _pair(s.r_marginal, s.r_fully_loaded, split),
                      _pair(f.str_marginal, f.str_fully_loaded, split), _pair(f.k_marginal, f.k_fully_loaded, split),
                      r["report"].c_full_source + ("" if r["report"].protocol_kind == "fixed-epoch"
                                                   else f" [{r['report'].protocol_kind}]")])
    return header, cells


def render_text(header: list[str], cells: list[list[str]]) -> str:
    """Plain fixed-width table."""
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def render_markdown(rows: list[dict[str, Any]]) -> str:
    """report.md: the table, the definitions and each run's notes."""
    header, cells = table_rows(rows)
    out = ["# datacomp cost report", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    out += ["", "Costs are per training run; accuracies are mean ± std over evaluation runs.", "",
            "## Definitions", ""]
    out += [f"- `{k}`: {v}" for k, v in DEFINITIONS.items()]
    out += ["", "## Runs", ""]
    for r in rows:
        rep = r["report"]
        out.append(f"- `{r['run']}` ({r['method']}, {r['dataset']}): protocol kind {rep.protocol_kind}; C_full "
                   f"{rep.c_full_source}; selection phases {', '.join(rep.selection_phases) or '(none)'}"
                   + (f"; one-off {', '.join(rep.one_off_phases)}" if rep.one_off_phases else ""))
        out += [f"  - {n}" for n in rep.notes]
    return "\n".join(out) + "\n"


def render_csv(rows: list[dict[str, Any]]) -> str:
    """report.csv: one machine-readable row per run (accuracies as fractions, inf as 'inf', unknown empty)."""
    fields = ["run", "kind", "method", "dataset", "num_items", "ipc", "fraction", "seed", "full_train_size",
              "protocol", "model", "eval_runs", "accuracy_mean", "accuracy_std", "baseline_mean", "baseline_std"]
    metric_names = [k for k in UnitCosts("x").to_dict() if k != "unit"]
    header = fields + ["protocol_kind", "c_full_source"] + [f"{m}_{u}" for u in UNITS for m in metric_names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        rep = r["report"]
        values = [r[k] for k in fields] + [rep.protocol_kind, rep.c_full_source]
        values += [rep.units[u].to_dict()[m] for u in UNITS for m in metric_names]
        writer.writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")


def render_plot(rows: list[dict[str, Any]], path: Path, unit: str = "flops") -> list[str]:
    """report.png: accuracy vs total cost (C_sel + C_sub, log x) per dataset, with the full-data break-even line.

    Returns:
        Notes about points that could not be drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    datasets = sorted({r["dataset"] for r in rows})
    methods = list(dict.fromkeys([r["method"] for r in rows if not r["is_full_data"]] + ["random (same size)"]))
    style = {m: (_MARKERS[i % len(_MARKERS)], f"C{i % 10}") for i, m in enumerate(methods)}
    fig = Figure(figsize=(6.5 * len(datasets), 4.8))
    FigureCanvasAgg(fig)
    skipped: list[str] = []
    for i, dataset in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        seen: set[str] = set()
        c_fulls = []
        for r in (r for r in rows if r["dataset"] == dataset):
            c = r["report"].units[unit]
            if c.c_full is not None and c.c_full > 0:
                c_fulls.append(c.c_full)
            points = [(r["method"], c.c_sel_fully_loaded, c.c_sub, r["accuracy_mean"], r["accuracy_std"])]
            if r["baseline_mean"] is not None:
                points.append(("random (same size)", 0.0, r["baseline_c_sub"][unit], r["baseline_mean"],
                               r["baseline_std"]))
            for method, c_sel, c_sub, mean, std in points:
                if mean is None:
                    continue
                if c_sel is None or c_sub is None or c_sel + c_sub <= 0:
                    skipped.append(f"{r['run']} ({method}): total cost in {unit} unknown, not plotted")
                    continue
                marker, color = ("*", "k") if r["is_full_data"] else style[method]
                label = "full data" if r["is_full_data"] else method
                ax.errorbar(c_sel + c_sub, 100 * mean, yerr=100 * (std or 0.0), fmt=marker, color=color,
                            markersize=12 if r["is_full_data"] else 7, capsize=3,
                            label=None if label in seen else label)
                seen.add(label)
        if c_fulls:
            c_full = sorted(c_fulls)[len(c_fulls) // 2]
            ax.axvline(c_full, color="k", linestyle="--", linewidth=1,
                       label="break-even: C_sel + C_sub = C_full")
        ax.set_xscale("log")
        ax.set_xlabel(f"total cost per training run, C_sel + C_sub ({UNITS[unit]})")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: left of the dashed line, R > 1")
        ax.grid(True, which="both", alpha=0.3)
        if seen or c_fulls:
            ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    atomic_write(path, png.getvalue())
    return skipped


def write_report(run_dirs: Iterable[str | os.PathLike], out_dir: str | os.PathLike = "report",
                 full_epochs: float | None = None, unit: str = "flops") -> dict[str, Any]:
    """Load runs, write ``report.md``, ``report.csv`` and ``report.png`` into ``out_dir``; return the rows and text.

    Args:
        run_dirs: Run directories, each holding a run.json.
        out_dir: Output folder (created).
        full_epochs: Epochs of full-data training for estimated ``C_full`` (default: each subset's epochs).
        unit: Cost axis of the plot, ``flops`` or ``seconds``.
    """
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {list(UNITS)}, got {unit!r}")
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ConfigError("give at least one RUN_DIR")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder for report.md, report.csv and report.png")
    runs = [load_run(d) for d in run_dirs]
    full_runs = {_full_data_key(r): r for r in runs if r["num_items"] == r["full_train_size"] and r.get("eval")}
    rows = [summarise_run(r, full_epochs=full_epochs, full_run=full_runs.get(_full_data_key(r))) for r in runs]
    out = Path(out_dir)
    header, cells = table_rows(rows)
    text = render_text(header, cells)
    atomic_write(out / "report.md", render_markdown(rows))
    atomic_write(out / "report.csv", render_csv(rows))
    skipped = render_plot(rows, out / "report.png", unit=unit)
    return {"rows": rows, "text": text, "skipped": skipped, "out": out}
