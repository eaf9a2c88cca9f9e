"""The end point of the convergence runs under the papers' own evaluation protocols (CIFAR-10, IPC 10 by default).

``convergence.py`` evaluates every snapshot with the CPU-sized ``quick-bf16`` protocol. This script takes the last
point those runs share (``--iteration``), picks the better NCFM sampler there by that quick evaluation (learned psi or
Gaussian), and evaluates that NCFM set and DM's set under the protocols the papers report with: ``ncfm`` (the NCFM
evaluation script: AdamW, 2000 epochs, DiffAug + CutMix, best test accuracy over checkpoints) and ``dm`` (the DC/DM
``evaluate_synset``: SGD, 1000 epochs, DSA, final-epoch accuracy), ``--runs`` runs each (default 1: each is tens of
minutes on two cores). Beside them: the NCFM paper's figures (20000 iterations, Table 1/5) and what users of the
released NCFM code report in its public issue threads (CIFAR-10 IPC 1 about 36 % against 49.5; IPC 50 about 72 %
against 77.4; ``../shared/specs/ncfm.md`` section 6).

It never distils: the snapshots must exist (run ``convergence.py`` first; a clear error names the missing one), except
the losing NCFM sampler's, whose quick score may come from the convergence results file. Each
evaluation is stored beside its snapshot (``eval_<protocol>.json``, keyed by the snapshot's content, protocol, runs
and seed) and read back on a second call.

Outputs (atomic): ``benchmarks/results/endpoint_<dataset>_ipc<IPC>_it<N>.{json,md}``. A run of some rows only
(``--methods``) merges them into that file: the other rows it holds are kept when they were made with the same
settings (dataset, preset, IPC, iteration, seed, protocols, runs), so two processes may each evaluate one row.

Command (after the convergence run of IPC 10 to 300 iterations)::

    OMP_NUM_THREADS=2 python benchmarks/endpoint_protocols.py --dataset cifar10 --ipc 10 --iteration 300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence  # noqa: E402
from ncfm_table import PAPER  # noqa: E402

from datacomp.cost import save_json  # noqa: E402
from datacomp.distillers.outputs import snapshot_path  # noqa: E402
from datacomp.errors import ConfigError, run_script  # noqa: E402
from datacomp.io import atomic_write  # noqa: E402
from datacomp.runtime import keep_freed_memory, resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NCFM_SAMPLERS = ("ncfm-learned", "ncfm-gaussian")
# What users of the released NCFM code report in its issue threads (CIFAR-10; ../shared/specs/ncfm.md section 6).
USERS_REPORT = {"cifar10": {1: "about 36 (NCFM #10)", 50: "about 72 (NCFM #5)"}}


def with_protocol(args: argparse.Namespace, protocol: str, runs: int) -> argparse.Namespace:
    run = argparse.Namespace(**vars(args))
    run.protocol, run.runs = protocol, runs
    return run


def end_snapshot(method: str, args: argparse.Namespace) -> Path:
    return snapshot_path(convergence.run_folder(method, args.ipc, args), args.iteration)


def missing_snapshot(method: str, args: argparse.Namespace, also: str = "") -> ConfigError:
    """The error for an end point without a snapshot of ``method`` (``also``: what else was looked for)."""
    return ConfigError(f"--iteration {args.iteration}: no snapshot {end_snapshot(method, args)}{also}; run "
                       f"benchmarks/convergence.py for IPC {args.ipc} with that checkpoint first (or pass the "
                       "--runs-dir it used)")


def require_snapshot(method: str, args: argparse.Namespace) -> None:
    if not end_snapshot(method, args).is_file():
        raise missing_snapshot(method, args)


def stored_point(method: str, quick: argparse.Namespace) -> dict:
    """The quick score of ``method``'s end point as kept in the convergence results file (its run folder is on
    another machine), marked ``kept``; a clear error when the file does not hold it."""
    path = Path(quick.results_dir) / f"{convergence.result_stem(quick)}.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    points = [p for c in doc.get("curves", []) if c["ipc"] == quick.ipc and c["method"] == method
              for p in c["points"] if p["iteration"] == quick.iteration]
    if not points or doc.get("runs") != quick.runs or doc.get("seed") != quick.seed:
        raise missing_snapshot(method, quick, also=f" and no such point in {path}")
    return dict(points[0], kept=True)


def better_sampler(args: argparse.Namespace) -> tuple[str, dict[str, dict]]:
    """The NCFM sampler whose set scores higher under the quick protocol at the end point (and both scores).

    A sampler whose snapshot is not on this machine competes with its score kept in the convergence results file;
    if that one wins, its set is needed and its absence is an error."""
    quick = with_protocol(args, args.quick_protocol, args.quick_runs)
    scores = {m: convergence.evaluate_point(m, args.ipc, args.iteration, quick) if end_snapshot(m, args).is_file()
              else stored_point(m, quick) for m in NCFM_SAMPLERS}
    best = max(scores, key=lambda m: scores[m]["mean"])
    if scores[best].get("kept"):
        raise ConfigError(f"--iteration {args.iteration}: {best} scores higher by {args.quick_protocol} "
                          f"({scores[best]['mean']:.1f} %, kept in the convergence results file) but its snapshot is "
                          "not on this machine; run benchmarks/convergence.py for it first")
    return best, scores


# The settings a stored table must share with this run for its rows to be kept beside the new ones.
SAME_TABLE = ("dataset", "preset", "ipc", "iteration", "seed", "protocols", "runs", "quick_protocol")


def merge_stored(doc: dict, path: Path) -> dict:
    """``doc`` with the rows of the stored table at ``path`` that this run did not evaluate (same settings only).

    Rows are kept in the table's order: the NCFM row first, then DM."""
    if not path.is_file():
        return doc
    stored = json.loads(path.read_text())
    if any(stored.get(key) != doc[key] for key in SAME_TABLE):
        return doc
    methods = {row["method"] for row in doc["rows"]}
    ran_ncfm = any(m.startswith("ncfm") for m in methods)
    kept = [row for row in stored.get("rows", []) if row["method"] not in methods
            and not (ran_ncfm and row["method"].startswith("ncfm"))]
    merged = dict(doc, rows=sorted(doc["rows"] + kept, key=lambda row: row["method"] == "dm"))
    if not ran_ncfm and stored.get("ncfm_method"):
        merged.update(ncfm_method=stored["ncfm_method"], sampler_choice=stored["sampler_choice"])
    return merged


def markdown(doc: dict) -> str:
    ipc, it = doc["ipc"], doc["iteration"]
    quick = ", ".join(f"{m} {s['mean']:.1f} +- {s['std']:.1f}" + (" kept in the convergence results file, its set "
                                                                  "not on this machine" if s.get("kept") else "")
                      for m, s in doc["sampler_choice"].items())
    chosen = (f"NCFM sampler chosen by `{doc['quick_protocol']}` at that point ({quick}): **{doc['ncfm_method']}**. "
              if doc["ncfm_method"] else "")
    lines = [f"# End point under the papers' protocols: {doc['dataset']}, IPC {ipc}, {it} distillation iterations",
             "",
             f"Sets: the {it}-iteration snapshots of the convergence runs (preset `{doc['preset']}`, seed "
             f"{doc['seed']}). {chosen}{doc['runs']} evaluation run(s) per cell; `ncfm` reports the best test "
             "accuracy over checkpoints every 100 epochs (as the NCFM script does), `dm` the final epoch.", "",
             "| method | " + " | ".join(f"protocol `{p}`" for p in doc["protocols"]) +
             f" | `{doc['quick_protocol']}` | paper (20000 it) | users of the released code |",
             "|---|" + "---|" * (len(doc["protocols"]) + 3)]
    for row in doc["rows"]:
        cells = [f"{row[p]['mean']:.1f}" + (f" +- {row[p]['std']:.1f}" if len(row[p]["accuracies"]) > 1 else "")
                 for p in doc["protocols"]]
        lines.append(f"| {row['method']} | " + " | ".join(cells) +
                     f" | {row['quick']['mean']:.1f} +- {row['quick']['std']:.1f} | {row['paper'] or '-'} | "
                     f"{row['users'] or '-'} |")
    lines += ["", "The paper's figures come from 20000 iterations with 20 pool networks trained 60 epochs and 1024 real "
                  f"images per class; these sets had {it} iterations under `{doc['preset']}`. Compare the columns of "
                  "one row to see what the protocol alone changes; the paper column is for orientation only.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--preset", default="cpu-quick")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iteration", type=int, default=300, help="the convergence snapshot to evaluate")
    parser.add_argument("--protocols", nargs="+", default=["ncfm", "dm"])
    parser.add_argument("--methods", nargs="+", default=["ncfm", "dm"], choices=["ncfm", "dm"],
                        help="rows to evaluate (ncfm: the better sampler's set); e.g. two processes, one per row")
    parser.add_argument("--runs", type=int, default=1, help="evaluation runs per protocol")
    parser.add_argument("--quick-protocol", default="quick-bf16", help="the convergence run's protocol")
    parser.add_argument("--quick-runs", type=int, default=2, help="the convergence run's runs per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="the convergence run's --tag")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--runs-dir", default="runs/convergence")
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    for name in ("ipc", "iteration", "runs", "quick_runs"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for protocol in (*args.protocols, args.quick_protocol):
        convergence.get_protocol(protocol)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    keep_freed_memory()
    args.device = args.device_resolved = str(resolve_device(args.device or "auto"))
    dm = ["dm"] if "dm" in args.methods else []
    for method in dm:  # the NCFM samplers' snapshots: better_sampler
        require_snapshot(method, args)
    convergence.dataset(args)  # loaded once: the per-protocol copies of args share it
    ncfm, choice = better_sampler(args) if "ncfm" in args.methods else (None, {})
    rows = []
    for method in ([ncfm] if ncfm else []) + dm:
        quick = convergence.evaluate_point(method, args.ipc, args.iteration,
                                           with_protocol(args, args.quick_protocol, args.quick_runs))
        row = {"method": method, "quick": quick, "paper": PAPER.get(args.dataset, {}).get(method, {}).get(args.ipc),
               "users": USERS_REPORT.get(args.dataset, {}).get(args.ipc) if method.startswith("ncfm") else None}
        for protocol in args.protocols:
            row[protocol] = convergence.evaluate_point(method, args.ipc, args.iteration,
                                                       with_protocol(args, protocol, args.runs))
            print(f"{method:<14} {protocol:<6} {row[protocol]['mean']:6.2f} %", flush=True)
        rows.append(row)
    doc = {"dataset": args.dataset, "preset": args.preset, "ipc": args.ipc, "iteration": args.iteration,
           "protocols": args.protocols, "runs": args.runs, "quick_protocol": args.quick_protocol, "seed": args.seed,
           "device": args.device_resolved, "ncfm_method": ncfm, "sampler_choice": choice, "rows": rows}
    stem = Path(args.results_dir) / f"endpoint_{args.dataset}_ipc{args.ipc}_it{args.iteration}{args.tag}"
    doc = merge_stored(doc, stem.with_suffix(".json"))
    text = markdown(doc)
    print(text)
    save_json(doc, stem.with_suffix(".json"))
    atomic_write(stem.with_suffix(".md"), text)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    run_script(main)
