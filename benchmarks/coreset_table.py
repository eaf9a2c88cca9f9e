"""Coreset table: every image selection method at IPC 1/10/50 (and 1% / 10% with ``--fractions``) on CIFAR-10.

Each cell is one :func:`datacomp.select_dataset` call (what ``datacomp select`` runs): the proxy (ConvNet-3-IN trained for
``--proxy-epochs`` epochs; features for herding / kcenter / facility-location / sae-*, training dynamics for
forgetting / el2n / grand / uncertainty / ccs) is computed once and reused from the feature cache; the subset is
evaluated by training ``--runs`` fresh ConvNet-3-IN models on it with the foundation's protocol (``--protocol``,
default ``quick``: SGD 0.01, 300 epochs, no augmentation) and testing on the real test split. ``random`` is the
random real subset with the same per-class counts (so no separate baseline is trained per cell).

Beside our numbers the table lists the NCFM paper's Table 1 rows for Random / Herding / Forgetting (ConvNet-IN,
CIFAR-10, spec ncfm.md section 2.1). Those were produced with the DC/DSA-era evaluation (with augmentation, 1000
epochs), not with our protocol, and on the original CIFAR-10 rather than the offline JPEG copy: compare trends, not
decimals.

Outputs ``benchmarks/results/coreset_table_<dataset>[_quick].{json,md,png}`` (the PNG: accuracy against subset size,
one line per method; all rewritten after every cell; cells whose run directory already holds a ``run.json`` are
reused, and so are finished rows of the committed results file written with the same settings (so an interrupted
run resumes, a fresh checkout adds only the missing cells, and a re-run with every cell done only rebuilds the
outputs; ``--overwrite`` recomputes everything).

Validate:   ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/coreset_table.py --quick`` (digits, MLP, tiny settings)
Full run:   ``.venv/bin/python benchmarks/coreset_table.py --device cuda --fractions`` (CIFAR-10; roughly an hour on
            one GPU by a step-count estimate, not run). The committed table is the CPU run in the README
            (``--runs 1 --protocol quick-bf16 --proxy-epochs 5 --proxy-bf16 --sae-epochs 5``): IPC cells take minutes
            each on 2 cores, a 10 % cell (5000 images, 300 epochs) about 35 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from datacomp.errors import check_int_at_least, run_script
from datacomp.evaluation import get_protocol
from datacomp.io import atomic_write, package_versions
from datacomp.selectors import (
    EvalOptions,
    ProxyOptions,
    SAEOptions,
    Selection,
    SelectOptions,
    class_budgets,
    select_dataset,
)

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_METHODS = ("random", "herding", "kcenter", "facility-location", "forgetting", "el2n", "grand", "uncertainty",
                 "ccs", "sae-greedy", "sae-simscale")

# NCFM (Wang et al., CVPR 2025) Table 1, ConvNet (IN) test accuracy %, mean and std, CIFAR-10 (spec ncfm.md 2.1).
PAPER_ROWS = {
    "random": {1: (14.4, 2.0), 10: (26.0, 1.2), 50: (43.4, 1.0)},
    "herding": {1: (21.5, 1.2), 10: (31.6, 0.7), 50: (40.4, 0.6)},
    "forgetting": {1: (13.5, 1.2), 10: (23.3, 1.0), 50: (23.3, 1.1)},
}


FULL = {"dataset": "cifar10", "ipc": [1, 10, 50], "fraction_values": [0.01, 0.1], "model": "convnet-3-in",
        "protocol": "quick", "runs": 3, "proxy_epochs": 10, "sae_latents": 2048, "sae_k": 32, "sae_epochs": 10}
QUICK = {"dataset": "digits", "ipc": [1, 5], "fraction_values": [0.05], "model": "mlp", "protocol": "smoke",
         "runs": 1, "proxy_epochs": 2, "sae_latents": 256, "sae_k": 8, "sae_epochs": 5}


# What a row's number depends on: a row of an earlier results file stands in for a cell only when all of these match.
SETTINGS = ("dataset", "quick", "model", "protocol", "schedule", "runs", "proxy_epochs", "proxy_bf16", "seed", "device",
            "sae")


def _previous_rows(path: Path, doc: dict) -> dict[tuple[str, str], dict]:
    """Finished rows of an earlier results file measured with the same settings, keyed by (method, size label).

    Run directories are scratch (a fresh checkout has none) while the results file is committed, so reading its rows
    back lets the table grow cell by cell across machines and runs without re-running finished cells. A file
    written with other settings contributes nothing, and the reason is printed.
    """
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"not reusing rows of {path}: unreadable ({err})")
        return {}
    old.setdefault("schedule", "multistep")  # results files written before protocols named their schedule
    differs = [k for k in SETTINGS if old.get(k) != doc[k]]
    if differs:
        print(f"not reusing rows of {path}: written with other {', '.join(differs)}")
        return {}
    return {(r["method"], r["size"]): r for r in old.get("rows", []) if r.get("accuracy_mean") is not None}


def _cells(args: argparse.Namespace) -> list[tuple[str, str, float]]:
    cells = [("ipc", f"ipc{k}", k) for k in args.ipc]
    if args.fractions:
        cells += [("fraction", f"frac{f:g}", f) for f in args.fraction_values]
    return cells


def _same_as_ipc(fraction: float, class_counts: list[int], ipcs: list[int]) -> int | None:
    """The IPC whose subset a fraction cell would repeat, or None.

    On a class-balanced pool a fraction's proportional per-class budgets equal an IPC cell's equal ones when
    ``round(fraction * n) / C`` is that IPC (CIFAR-10: 1 % = 500 images = 50 per class); ``select`` sees the same
    per-class budgets, so the subset, and its evaluation, are the same (tests/test_selectors.py checks it).
    """
    labels = np.repeat(np.arange(len(class_counts)), class_counts)
    budget = int(round(fraction * len(labels)))
    proportional = class_budgets(labels, budget, "proportional")
    for ipc in ipcs:
        if ipc * len(class_counts) == budget and class_budgets(labels, budget, "equal") == proportional:
            return ipc
    return None


def _run_cell(args: argparse.Namespace, method: str, kind: str, value: float, out: Path) -> dict:
    if (out / "run.json").is_file() and not args.overwrite:
        return json.loads((out / "run.json").read_text())
    options = SelectOptions(
        out=out, overwrite=args.overwrite, device=args.device, quiet=not args.progress, data_root=args.data_root,
        proxy=ProxyOptions(model=args.model, epochs=args.proxy_epochs, bf16=args.proxy_bf16),
        sae=SAEOptions(latents=args.sae_latents, k=args.sae_k, epochs=args.sae_epochs),
        eval=EvalOptions(runs=args.runs, protocol=args.protocol, model=args.model, baseline=False))
    size = {"ipc": int(value)} if kind == "ipc" else {"fraction": float(value)}
    return select_dataset(args.dataset, method, seed=args.seed, options=options, **size).record.to_dict()


def _phase_seconds(record: dict) -> dict:
    return {p["name"]: round(float(p["seconds"]), 3) for p in record["cost"]["phases"]}


def _row(method: str, label: str, record: dict) -> dict:
    ev = record["eval"] or {}
    return {"method": method, "size": label, "num_items": record["num_items"], "ipc": record.get("ipc"),
            "fraction": record.get("fraction"), "accuracy_mean": ev.get("mean"), "accuracy_std": ev.get("std"),
            "accuracies": ev.get("accuracies"), "protocol": ev.get("protocol"), "model": ev.get("model"),
            "selection_seconds": record.get("selection_seconds"), "cost_seconds": _phase_seconds(record),
            "from_cache": (record["config"].get("features") or record["config"].get("dynamics") or {}).get(
                "from_cache"), "run_dir": str(record.get("_out", "")), "subset_sha256": _subset_digest(record)}


def _subset_digest(record: dict) -> str | None:
    """The run's subset digest; runs written before ``select`` recorded it get it from their ``selection.npz``."""
    if record.get("subset_sha256"):
        return record["subset_sha256"]
    path = Path(record["_out"]) / "selection.npz" if record.get("_out") else None
    return Selection.load(path).subset_digest() if path is not None and path.is_file() else None


def _markdown(doc: dict) -> str:
    cells = doc["cells"]
    rows = doc["rows"]
    lines = [f"# Coreset table: {doc['dataset']} ({'quick' if doc['quick'] else 'full'})", "",
             f"Evaluation: {doc['runs']} fresh {doc['model']} per cell, protocol `{doc['protocol']}`; proxy "
             f"{doc['model']} trained {doc['proxy_epochs']} epochs"
             f"{' under bf16 autocast' if doc.get('proxy_bf16') else ''}; seed {doc['seed']}. Accuracy % mean +- std over "
             "runs (one subset per cell; no +- where a cell has one run). `random` = random real subset with the "
             "same per-class counts.", "",
             "| method | " + " | ".join(c for c in cells) + " |", "|---|" + "---|" * len(cells)]
    same = doc.get("same_subset_as") or {}
    if same:
        lines[4:4] = [" ".join(f"`{f}` selects the same per-class budgets as `{i}`, so its column repeats that "
                               "cell (same subset, same evaluation)." for f, i in same.items()), ""]
    by = {(r["method"], r["size"]): r for r in rows}
    for method in doc["methods"]:
        vals = []
        for c in cells:
            r = by.get((method, c))
            if r is None or r["accuracy_mean"] is None:
                vals.append("")
                continue
            base = by.get(("random", c))
            delta = "" if base is None or method == "random" or base["accuracy_mean"] is None else \
                f" ({100 * (r['accuracy_mean'] - base['accuracy_mean']):+.1f})"
            # One run has no spread to report: "+- 0.0" would read as a measured, perfectly stable result.
            spread = f" +- {100 * r['accuracy_std']:.1f}" if len(r.get("accuracies") or []) > 1 else ""
            vals.append(f"{100 * r['accuracy_mean']:.1f}{spread}{delta}")
        lines.append(f"| {method} | " + " | ".join(vals) + " |")
    if doc["dataset"] == "cifar10":
        for method, values in PAPER_ROWS.items():
            vals = [f"{values[int(c[3:])][0]:.1f} +- {values[int(c[3:])][1]:.1f}" if c.startswith("ipc") and
                    int(c[3:]) in values else "" for c in cells]
            lines.append(f"| {method} (NCFM paper, Table 1) | " + " | ".join(vals) + " |")
    lines += ["", "(+x) = points above `random` at the same size. Paper rows: NCFM Table 1 (ConvNet-IN, DC-era "
              "protocol with augmentation); not the same protocol as ours.", "",
              "## Cost (seconds per phase, from each run's ledger; cached proxies show the cost recorded when they "
              "were computed)", "", "| method | size | items | selection s | phases |", "|---|---|---|---|---|"]
    for r in rows:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["cost_seconds"].items())
        lines.append(f"| {r['method']} | {r['size']} | {r['num_items']} | {r['selection_seconds']:.2f} | {phases} |")
    lines += ["", f"Versions: {json.dumps(doc['versions'])}; host {doc['host']}."]
    return "\n".join(lines) + "\n"


def _series(doc: dict) -> tuple[dict[int, list[str]], dict[str, tuple[list[int], list[float]]]]:
    """What the plot draws: each subset size's cell names (a fraction may repeat an IPC's subset, one point), and
    per method its finished cells as (sizes, accuracies %), sizes ascending."""
    labels: dict[int, list[str]] = {}
    lines: dict[str, tuple[list[int], list[float]]] = {}
    done = [r for r in doc["rows"] if r["accuracy_mean"] is not None]
    for r in done:
        if r["size"] not in labels.setdefault(r["num_items"], []):
            labels[r["num_items"]].append(r["size"])
    for method in doc["methods"]:
        points = {r["num_items"]: 100 * r["accuracy_mean"] for r in done if r["method"] == method}
        if points:
            lines[method] = (sorted(points), [points[n] for n in sorted(points)])
    return labels, lines


def _plot(doc: dict) -> bytes:
    """PNG of accuracy against subset size (log scale), one line per method; cells not yet run are left out."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, lines = _series(doc)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, (xs, ys) in lines.items():
        baseline = method == "random"
        ax.plot(xs, ys, marker="o", lw=2.5 if baseline else 1.2, color="black" if baseline else None, label=method,
                zorder=3 if baseline else 2)
    ax.set_xscale("log")
    ax.set_xticks(sorted(labels), [f"{n}\n{' = '.join(labels[n])}" for n in sorted(labels)], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("images selected")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{doc['dataset']}: {doc['model']}, protocol {doc['protocol']}, {doc['runs']} run(s) per cell",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="default cifar10 (digits with --quick)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--methods", nargs="+", default=list(IMAGE_METHODS), choices=IMAGE_METHODS)
    p.add_argument("--ipc", nargs="+", type=int, default=None, help="default 1 10 50 (1 5 with --quick)")
    p.add_argument("--fractions", action="store_true", help="also run the fraction budgets")
    p.add_argument("--fraction-values", nargs="+", type=float, default=None, help="default 0.01 0.1 (0.05 quick)")
    p.add_argument("--model", default=None, help="proxy and evaluation model (default convnet-3-in; mlp quick)")
    p.add_argument("--protocol", default=None, help="evaluation protocol (default quick; smoke with --quick)")
    p.add_argument("--runs", type=int, default=None, help="evaluation runs per cell (default 3; 1 quick)")
    p.add_argument("--proxy-epochs", type=int, default=None, help="default 10 (2 with --quick)")
    p.add_argument("--proxy-bf16", action="store_true", help="train the proxies under bfloat16 autocast (CPUs with "
                   "native bf16 only)")
    p.add_argument("--sae-latents", type=int, default=None, help="default 2048 (256 quick)")
    p.add_argument("--sae-k", type=int, default=None, help="default 32 (8 quick)")
    p.add_argument("--sae-epochs", type=int, default=None, help="default 10 (5 quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs-dir", default=None, help="where the per-cell run directories go "
                   "(default runs/coreset_table_<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="recompute every cell (ignore existing run.json files and "
                   "the results file's rows)")
    p.add_argument("--finished-only", action="store_true", help="rebuild the outputs from finished cells (run.json "
                   "files and the results file's rows) without running the missing ones")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quick", action="store_true", help="validation: digits, IPC 1/5, MLP, 1 run, smoke protocol, "
                   "2 proxy epochs, small SAE (flags given explicitly still win)")
    args = p.parse_args(argv)
    if args.overwrite and args.finished_only:
        p.error("--overwrite recomputes every cell and --finished-only runs none: pass one of them")
    from datacomp.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does: freed tensor memory is reused, not page-faulted back in
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("runs", "proxy_epochs", "sae_latents", "sae_k", "sae_epochs"):
        check_int_at_least(getattr(args, name), f"--{name.replace('_', '-')}", 1)
    for ipc in args.ipc:
        check_int_at_least(ipc, "--ipc", 1)
    tag = f"{args.dataset.replace(':', '_').replace('/', '_')}{'_quick' if args.quick else ''}"
    runs_dir = Path(args.runs_dir or f"runs/coreset_table_{tag}")
    cells = _cells(args)
    doc = {"dataset": args.dataset, "quick": args.quick, "methods": args.methods, "cells": [c[1] for c in cells],
           "model": args.model, "protocol": args.protocol, "schedule": get_protocol(args.protocol).schedule,
           "runs": args.runs, "proxy_epochs": args.proxy_epochs,
           "proxy_bf16": args.proxy_bf16, "seed": args.seed, "device": args.device,
           "sae": {"latents": args.sae_latents, "k": args.sae_k, "epochs": args.sae_epochs},
           "paper_rows": {m: {str(k): v for k, v in vals.items()} for m, vals in PAPER_ROWS.items()},
           "paper_source": "NCFM (CVPR 2025) Table 1, ConvNet-IN, CIFAR-10 (spec ncfm.md 2.1)",
           "versions": package_versions(), "host": f"{platform.node()} ({platform.processor() or 'cpu'})",
           "rows": []}
    aliases: dict[str, str] = {}  # fraction label -> the IPC label whose subset it repeats
    if args.fractions:
        from datacomp.data import load_dataset

        counts = [int(c) for c in load_dataset(args.dataset, root=args.data_root).class_counts]
        for kind, label, value in cells:
            ipc = _same_as_ipc(value, counts, args.ipc) if kind == "fraction" else None
            if ipc is not None:
                aliases[label] = f"ipc{ipc}"
    doc["same_subset_as"] = aliases
    previous = {} if args.overwrite else _previous_rows(RESULTS / f"coreset_table_{tag}.json", doc)
    t_start = time.perf_counter()
    for kind, label, value in cells:
        for method in args.methods:
            # A fraction that repeats an IPC cell's per-class budgets reads that cell (same subset, same evaluation).
            out = runs_dir / f"{method}-{aliases.get(label, label)}"
            t0 = time.perf_counter()
            has_run = (out / "run.json").is_file()  # a run folder of this machine wins over the committed row
            if not has_run and (method, label) in previous:
                row, source = previous[(method, label)], "from the results file"
            elif args.finished_only and not has_run:
                print(f"{method:>29} {label:>8}: not run (--finished-only)", flush=True)
                continue
            else:
                record = _run_cell(args, method, kind, value, out)
                record["_out"] = str(out)
                row, source = _row(method, label, record), f"{time.perf_counter() - t0:.1f} s"
            doc["rows"].append(row)
            print(f"[{time.perf_counter() - t_start:7.1f} s] {method:>18} {label:>8}: "
                  f"{100 * (row['accuracy_mean'] or 0):.2f} % ({source})", flush=True)
            doc["total_seconds"] = time.perf_counter() - t_start
            RESULTS.mkdir(parents=True, exist_ok=True)
            atomic_write(RESULTS / f"coreset_table_{tag}.json", json.dumps(doc, indent=2) + "\n")
            atomic_write(RESULTS / f"coreset_table_{tag}.md", _markdown(doc))
            atomic_write(RESULTS / f"coreset_table_{tag}.png", _plot(doc))
    print(f"wrote {RESULTS / f'coreset_table_{tag}.md'} and .json, .png")
    return 0


if __name__ == "__main__":
    run_script(main)
