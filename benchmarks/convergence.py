"""Convergence curves of CIFAR-10 distillation: accuracy of one run's synthetic set at chosen iterations.

For every IPC and method (``ncfm-learned``: NCFM with the paper's learned sampler psi; ``ncfm-gaussian``: NCFM with
the released code's Gaussian sampler; ``dm``) ONE distillation runs to ``--iterations`` and keeps a snapshot of its
synthetic set at each of ``--checkpoints`` (the library's ``snapshot_at``: ``snapshots/it{N}/synset.safetensors`` in
the run folder); every snapshot is then evaluated with ``--runs`` fresh models under ``--protocol``. So a curve shows
one run's set as it improves, not separate runs of different lengths. IPC 50 runs end at ``--max-ipc50-iterations``
(its curve ends there; the outputs say so).

References: random real images at each IPC (the same number of stored images per class, evaluated once with the same
protocol and runs; a dashed horizontal line in the plot) and the NCFM paper's figures (Table 1/5: 20000 iterations,
each method's own evaluation protocol; dashed lines in the method's colour) -- compare curves *within* the plot and
read the paper lines for orientation only.

``--stored-only`` distils and evaluates no method: it reports the points already on disk (the random reference is read
back, or made when missing), so runs that stopped at different lengths (one method continued to 1000 iterations,
another not yet) share one table and plot.

Resumable: a point whose evaluation is stored beside its snapshot (same snapshot content, protocol and schedule,
runs and seed) is read back; a distillation interrupted before its last snapshot resumes from its checkpoint (the
library's resume); a finished run whose snapshots cover the points is not run again, and one that ran fewer
iterations than now asked for is continued. A run folder made with other settings is started over.

Run folders stay on the machine that made them; the results file is what is kept. Rows of the previous results file
that an invocation does not produce (a method or IPC not asked for, or a run folder not on this machine) are kept in the
new table, marked ``(kept)``, when the file was written with the same dataset, preset, protocol, runs, seed and
overrides; so one method can be continued on another machine without losing the others' rows.

Outputs (atomic): ``benchmarks/results/convergence_<dataset>_<protocol>[_<preset>][<tag>].{json,md,png}`` (the preset
appears when it is not cpu-quick). Run folders: ``runs/convergence/<dataset>-<preset><tag>-ipc<IPC>-<method>``.

Commands::

    # CPU: the cpu-quick preset's settings except iterations (2 pool ConvNets, 256 real images per class ...),
    # one run to 1000 iterations per method at IPC 1 and 10, IPC 50 capped at 300 (hours on two cores)
    OMP_NUM_THREADS=2 python benchmarks/convergence.py --dataset cifar10 --preset cpu-quick --ipc 1 10 50 \\
        --iterations 1000 --checkpoints 80 300 1000 --max-ipc50-iterations 300 --runs 2 --protocol quick-bf16
    # GPU: the paper's settings (20 pool ConvNets, 1024 real images per class ...) except iterations, IPC 50 uncapped
    python benchmarks/convergence.py --dataset cifar10 --device cuda --preset paper --ipc 1 10 50 \\
        --iterations 1000 --checkpoints 80 300 1000 --max-ipc50-iterations 1000 --runs 2 --protocol quick-bf16

Validation at tiny sizes (digits, 2 and 4 iterations, protocol smoke, everything in a temporary folder; well under
two minutes on a CPU): ``python benchmarks/convergence.py --quick``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ncfm_table import PAPER, QUICK_OVERRIDES, ROWS, config_mismatch, expected_config, run_row  # noqa: E402

from datacomp.cost import save_json  # noqa: E402
from datacomp.data import load_dataset  # noqa: E402
from datacomp.distillers import distill  # noqa: E402
from datacomp.distillers.outputs import snapshot_path  # noqa: E402
from datacomp.errors import ConfigError, DatacompError, run_script  # noqa: E402
from datacomp.evaluation import EvalSettings, evaluate, get_protocol  # noqa: E402
from datacomp.io import atomic_write  # noqa: E402
from datacomp.runtime import keep_freed_memory, resolve_device  # noqa: E402
from datacomp.synset import SyntheticSet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("ncfm-learned", "ncfm-gaussian", "dm")
CAPPED_IPC = 50  # the IPC whose runs --max-ipc50-iterations shortens (--quick caps its largest, tiny IPC instead)
COLORS = {"ncfm-learned": "tab:red", "ncfm-gaussian": "tab:orange", "dm": "tab:blue", "random": "tab:gray"}


# ------------------------------------------------------------------------------------------------------ planning
def points_for(ipc: int, args: argparse.Namespace) -> list[int]:
    """The iterations evaluated at ``ipc``: the checkpoints up to the run's length, and the last iteration it runs."""
    last = run_length(ipc, args)
    return sorted({n for n in args.checkpoints if n <= last} | {last})


def run_length(ipc: int, args: argparse.Namespace) -> int:
    """Iterations of the run at ``ipc`` (IPC 50 capped at ``--max-ipc50-iterations``)."""
    return min(args.iterations, args.max_ipc50_iterations) if ipc == args.capped_ipc else args.iterations


def check_args(args: argparse.Namespace) -> None:
    """Misconfigurations, before any work."""
    if args.iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {args.iterations}")
    if args.max_ipc50_iterations < 1:
        raise ConfigError(f"--max-ipc50-iterations must be >= 1, got {args.max_ipc50_iterations}")
    beyond = [n for n in args.checkpoints if n > args.iterations or n < 1]
    if beyond:
        raise ConfigError(f"--checkpoints {beyond} lie outside 1..--iterations {args.iterations}; give iterations "
                          f"between 1 and {args.iterations} or raise --iterations")
    if args.runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {args.runs}")
    get_protocol(args.protocol)


def run_folder(method: str, ipc: int, args: argparse.Namespace) -> Path:
    return Path(args.runs_dir) / f"{args.dataset}-{args.preset}{args.tag}-ipc{ipc}-{method}"


# ------------------------------------------------------------------------------------------------------ snapshots
def snapshot_mismatch(path: Path, iteration: int, expected: dict, seed: int) -> str | None:
    """Why the snapshot at ``path`` cannot serve as ``iteration`` of the requested run (None: it can)."""
    if not path.is_file():
        return "missing"
    try:
        meta = SyntheticSet.load(path).metadata
    except DatacompError as err:
        return f"unreadable ({err})"
    if meta.get("iterations") != iteration:
        return f"holds iteration {meta.get('iterations')}"
    # The run's length (config iterations) may differ: the set after N iterations does not depend on it.
    return config_mismatch(meta["config"], meta.get("seed"), expected, seed, ignore=frozenset({"iterations"}))


def run_settings(method_name: str, ipc: int, args: argparse.Namespace) -> tuple[str, dict, dict]:
    """The library method, the config overrides and the expected recorded config of the run at ``ipc``."""
    method, overrides = ROWS[method_name]
    overrides = {**overrides, **args.overrides.get(method, {}), "iterations": run_length(ipc, args)}
    return method, overrides, expected_config(method, args, ipc, overrides, args.device_resolved)


def ensure_snapshots(method_name: str, ipc: int, args: argparse.Namespace) -> None:
    """Distil (fresh, resumed or continued) until the run folder holds a fitting snapshot of every point."""
    method, overrides, expected = run_settings(method_name, ipc, args)
    out, points = run_folder(method_name, ipc, args), points_for(ipc, args)
    stale = {n: snapshot_mismatch(snapshot_path(out, n), n, expected, args.seed) for n in points}
    stale = {n: why for n, why in stale.items() if why}
    if not stale:
        return
    print(f"  {out.name}: snapshot(s) {', '.join(f'{n} ({why})' for n, why in stale.items())}; distilling",
          flush=True)
    if any(why != "missing" for why in stale.values()):
        mode = "overwrite"  # another run's snapshots: start over
    elif (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        mode = "resume"
    else:
        mode = "overwrite" if out.exists() else "fresh"
    run = dict(preset=args.preset, overrides=overrides, seed=args.seed, out=out, eval_runs=0, baseline=False,
               device=args.device_resolved, pool_dir=args.pool_dir, quiet=args.no_progress, data_root=args.data_root,
               snapshot_at=tuple(points))
    if mode == "resume":
        try:
            distill(args.dataset, method, ipc, resume=True, **run)
            return
        except ConfigError as err:  # a checkpoint of other settings, beyond this length, or without earlier snapshots
            if not str(err).startswith("--resume"):
                raise
            print(f"  {out.name}: cannot continue ({err}); starting over", flush=True)
            mode = "overwrite"
    distill(args.dataset, method, ipc, overwrite=mode == "overwrite", **run)


# ---------------------------------------------------------------------------------------------------- evaluation
def eval_path(out: Path, iteration: int, protocol: str) -> Path:
    return snapshot_path(out, iteration).parent / f"eval_{protocol}.json"


def cached_point(path: Path, digest: str, args: argparse.Namespace) -> dict | None:
    """The stored evaluation of a snapshot if it was made of this content with the requested protocol and runs."""
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    ev = doc.get("eval") or {}
    schedule = (ev.get("protocol_config") or {}).get("schedule", "multistep")
    if (doc.get("snapshot_sha256") == digest and doc.get("seed") == args.seed and ev.get("protocol") == args.protocol
            and len(ev.get("accuracies", [])) == args.runs and schedule == get_protocol(args.protocol).schedule):
        return doc
    return None


def evaluate_point(method_name: str, ipc: int, iteration: int, args: argparse.Namespace,
                   evaluate_missing: bool = True) -> dict | None:
    """Mean +- std accuracy (%) of the snapshot after ``iteration`` iterations (read back when already evaluated;
    None when it is not and ``evaluate_missing`` is false)."""
    out = run_folder(method_name, ipc, args)
    synset = SyntheticSet.load(snapshot_path(out, iteration))
    digest, path = synset.content_digest(), eval_path(out, iteration, args.protocol)
    doc = cached_point(path, digest, args)
    if doc is None and not evaluate_missing:
        return None
    if doc is None:
        started = time.time()
        result = evaluate(synset, dataset(args), model=synset.metadata["model"], protocol=args.protocol,
                          runs=args.runs, baseline=False,
                          settings=EvalSettings(seed=args.seed, device=args.device_resolved,
                                                progress=not args.no_progress))
        doc = {"snapshot_sha256": digest, "seed": args.seed, "eval": result.to_dict(),
               "eval_seconds": time.time() - started}
        save_json(doc, path)
    ev = doc["eval"]
    return {"iteration": iteration, "mean": 100 * ev["mean"], "std": 100 * ev["std"],
            "accuracies": [100 * a for a in ev["accuracies"]], **distill_cost(synset),
            "eval_seconds": doc.get("eval_seconds"), "snapshot": str(snapshot_path(out, iteration))}


def distill_cost(synset: SyntheticSet) -> dict:
    """Time and memory of the distillation that made ``synset``, from its cost ledger: seconds, seconds per
    iteration, and the peak memory of the device it ran on (GPU: ``max_memory_allocated``; CPU: process RSS)."""
    phases = [p for p in synset.metadata["cost"]["phases"] if p["name"] == "distillation"]
    seconds, steps = sum(p["seconds"] for p in phases), sum(p.get("steps") or 0 for p in phases)
    gpu = max((p.get("gpu_peak_bytes") or 0 for p in phases), default=0)
    rss = max((p.get("cpu_peak_rss_bytes") or 0 for p in phases), default=0)
    return {"distill_seconds": seconds, "seconds_per_iteration": seconds / steps if steps else None,
            "device": phases[0].get("device") if phases else None,
            "peak_memory_bytes": gpu or rss or None, "peak_memory_kind": "gpu" if gpu else ("rss" if rss else None)}


def dataset(args: argparse.Namespace):
    """The real dataset, loaded once."""
    if getattr(args, "_dataset", None) is None:
        args._dataset = load_dataset(args.dataset, root=args.data_root)
    return args._dataset


def run_curve(method_name: str, ipc: int, args: argparse.Namespace) -> dict:
    points = points_for(ipc, args)
    out = run_folder(method_name, ipc, args)
    if args.stored_only:  # report what is on disk; a run that stopped earlier ends earlier
        expected = run_settings(method_name, ipc, args)[2]
        points = [n for n in points if not snapshot_mismatch(snapshot_path(out, n), n, expected, args.seed)]
    else:
        ensure_snapshots(method_name, ipc, args)  # no work when the folder holds fitting snapshots of every point
    curve = []
    for n in points:
        point = evaluate_point(method_name, ipc, n, args, evaluate_missing=not args.stored_only)
        if point is None:  # --stored-only: a snapshot not evaluated yet
            continue
        curve.append(point)
        print(f"ipc {ipc:>3} {method_name:<14} it {n:>5} {point['mean']:6.2f} +- {point['std']:.2f} %  "
              f"(distilled {point['distill_seconds']:.0f} s)", flush=True)
    length = run_length(ipc, args)
    last = (curve[-1]["iteration"] if curve else 0) if args.stored_only else length
    return {"method": method_name, "ipc": ipc, "iterations_run": last, "run_length": length,
            "capped": length < args.iterations, "points": curve, "run_dir": str(out),
            "paper": PAPER.get(args.dataset, {}).get(method_name, {}).get(ipc)}


def random_reference(ipc: int, args: argparse.Namespace) -> dict:
    """Random real images with the same stored images per class, same protocol, runs and seed (ncfm_table's row)."""
    row = run_row("random", args, ipc)
    print(f"ipc {ipc:>3} random real     {row['mean']:6.2f} +- {row['std']:.2f} %", flush=True)
    return {"ipc": ipc, "mean": row["mean"], "std": row["std"], "accuracies": row["accuracies"],
            "run_dir": row["run_dir"], "paper": PAPER.get(args.dataset, {}).get("random", {}).get(ipc)}


# ------------------------------------------------------------------------------------------------------- outputs
KEEP_KEYS = ("dataset", "preset", "protocol", "runs", "seed", "overrides")


def with_kept_rows(path: Path, curves: list[dict], randoms: dict[int, dict],
                   args: argparse.Namespace) -> tuple[list[dict], dict[int, dict]]:
    """This invocation's rows plus the rows of the previous results file that it did not produce.

    Run folders stay on the machine that made them; the results file is what is kept. A row of the file whose
    (IPC, method) this invocation left out, or found no point of on disk, is kept and marked ``kept``, and so is a
    random reference not made this time, when the file was written with the same dataset, preset, protocol,
    runs, seed and overrides. Rows made now always win. Sets ``args.ipc`` to every IPC in the table."""
    previous = json.loads(path.read_text()) if path.exists() else None
    if previous is not None and any(previous.get(key) != getattr(args, key) for key in KEEP_KEYS):
        print(f"{path.name}: written with other settings; its rows are replaced, not kept", flush=True)
        previous = None
    if previous is not None:
        made = {(c["ipc"], c["method"]) for c in curves if c["points"]}
        kept = [dict(c, kept=True) for c in previous["curves"] if c["points"] and (c["ipc"], c["method"]) not in made]
        replaced = {(c["ipc"], c["method"]) for c in kept}  # rows without a point now
        curves = [c for c in curves if (c["ipc"], c["method"]) not in replaced] + kept
        randoms = {**{r["ipc"]: dict(r, kept=True) for r in previous.get("random", [])}, **randoms}
    order = {name: i for i, name in enumerate(METHODS)}
    curves.sort(key=lambda c: (c["ipc"], order[c["method"]]))
    args.ipc = sorted({c["ipc"] for c in curves} | set(randoms) | set(args.ipc))
    return curves, {ipc: randoms[ipc] for ipc in args.ipc if ipc in randoms}


def paper_value(text: str | None) -> float | None:
    """The number in a paper cell such as ``49.5+-0.3`` or ``65.6 (Table 5, w/o psi)``."""
    match = re.match(r"\s*(\d+(?:\.\d+)?)", text or "")
    return float(match.group(1)) if match else None


def row_length(curve: dict) -> int:
    """The iterations the row's run was asked to reach (files from before ``run_length`` was stored: its last)."""
    return curve.get("run_length", curve["iterations_run"])


def cap_line(curves: list[dict]) -> str | None:
    """Which rows ran shorter than the columns, each at its own cap (kept rows of an earlier invocation may differ)."""
    by_ipc: dict[int, dict[int, list[str]]] = {}
    for c in curves:
        if c["capped"]:
            by_ipc.setdefault(c["ipc"], {}).setdefault(row_length(c), []).append(c["method"])
    if not by_ipc:
        return None
    parts = [f"IPC {ipc}: " + "; ".join(f"{', '.join(methods)} at {n}" for n, methods in sorted(lengths.items()))
             for ipc, lengths in sorted(by_ipc.items())]
    return ("Runs capped (--max-ipc50-iterations): " + "; ".join(parts)
            + ". A row's columns beyond its cap are not run.")


def columns(curves: list[dict], args: argparse.Namespace) -> list[int]:
    """The asked-for points of every IPC and any other point a kept row holds."""
    return sorted({n for ipc in args.ipc for n in points_for(ipc, args)}
                  | {p["iteration"] for c in curves for p in c["points"]})


def markdown(curves: list[dict], randoms: dict[int, dict], args: argparse.Namespace) -> str:
    cols = columns(curves, args)
    lines = [
        f"# Convergence: {args.dataset}, preset `{args.preset}` (iterations set per run), protocol `{args.protocol}`, "
        f"{args.runs} evaluation runs per point, seed {args.seed}",
        "",
        "Each row is ONE distillation run; a cell is the mean +- std test accuracy (%) over the evaluation runs of "
        "that run's synthetic set after the column's iterations (a snapshot). Random real: random real images with "
        "the same stored images per class, evaluated once with the same protocol. Paper: NCFM paper Table 1/5 "
        "(20000 iterations, each method's own protocol; for orientation only). Distill s: wall-clock seconds of "
        "the distillation up to the row's last point (feature-pool training not included); s/it: the same per "
        "iteration; peak memory: the distillation's peak on its device (GPU: allocated tensors; CPU: process RSS, "
        "the real dataset included).",
        "",
    ]
    if args.stored_only:
        lines += ["Points on disk only (--stored-only): '-' marks a point this run has not reached.", ""]
    if any(c.get("kept") for c in curves) or any(r.get("kept") for r in randoms.values()):
        lines += ["(kept): a row or random reference read back from this results file, measured by an earlier "
                  "invocation with the same settings (not asked for this time, or its run folder is not on this "
                  "machine).", ""]
    cap = cap_line(curves)
    if cap:
        lines += [cap, ""]
    lines += ["| IPC | method | " + " | ".join(f"it {n}" for n in cols)
              + " | random real | paper | distill s | s/it | peak memory |",
              "|---|---|" + "---|" * (len(cols) + 5)]
    for c in curves:
        by_it = {p["iteration"]: p for p in c["points"]}
        cells = [f"{by_it[n]['mean']:.1f} +- {by_it[n]['std']:.1f}" if n in by_it
                 else ("not run (cap)" if c["capped"] and n > row_length(c) else "-") for n in cols]
        rand = randoms.get(c["ipc"])
        rand_cell = f"{rand['mean']:.1f} +- {rand['std']:.1f}" if rand else "-"
        if rand and rand.get("paper"):
            rand_cell += f" (paper {rand['paper']})"
        last = c["points"][-1] if c["points"] else {}
        seconds = f"{last['distill_seconds']:.0f}" if last else "-"
        per_it = f"{last['seconds_per_iteration']:.2f}" if last.get("seconds_per_iteration") else "-"
        memory = (f"{last['peak_memory_bytes'] / 2**30:.2f} GiB ({last['device']}, {last['peak_memory_kind']})"
                  if last.get("peak_memory_bytes") else "-")
        if rand and rand.get("kept"):
            rand_cell += " (kept)"
        method = c["method"] + (" (kept)" if c.get("kept") else "")
        lines.append(f"| {c['ipc']} | {method} | " + " | ".join(cells) + f" | {rand_cell} | "
                     f"{c['paper'] or '-'} | {seconds} | {per_it} | {memory} |")
    return "\n".join(lines) + "\n"


def plot(curves: list[dict], randoms: dict[int, dict], args: argparse.Namespace) -> bytes:
    """Accuracy against iterations (log x), one panel per IPC, references dashed; PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = Figure(figsize=(4.6 * len(args.ipc), 3.8))
    axes = fig.subplots(1, len(args.ipc), squeeze=False, sharex=True)[0]  # one iteration scale for every IPC
    for ax, ipc in zip(axes, args.ipc):
        for c in (c for c in curves if c["ipc"] == ipc):
            xs = [p["iteration"] for p in c["points"]]
            ax.errorbar(xs, [p["mean"] for p in c["points"]], yerr=[p["std"] for p in c["points"]], marker="o",
                        ms=4, capsize=3, color=COLORS[c["method"]], label=c["method"])
            paper = paper_value(c["paper"])
            if paper is not None:
                ax.axhline(paper, ls="--", lw=1, color=COLORS[c["method"]], alpha=0.7,
                           label=f"{c['method']} (paper)")
        rand = randoms.get(ipc)
        if rand:
            ax.axhline(rand["mean"], ls="--", lw=1.2, color=COLORS["random"], label="random real (ours)")
            paper = paper_value(rand.get("paper"))
            if paper is not None:
                ax.axhline(paper, ls="--", lw=0.8, color="black", alpha=0.6, label="random real (paper)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # plain iteration numbers (no mathtext powers of ten)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ticks = sorted({p["iteration"] for c in curves for p in c["points"]})
        if ticks:
            ax.set_xticks(ticks)
        ax.set_xlabel("distillation iterations")
        ax.set_ylabel("test accuracy (%)")
        caps = sorted({row_length(c) for c in curves if c["ipc"] == ipc and c["capped"]})
        ax.set_title(f"IPC {ipc}" + (f" (capped at {' / '.join(map(str, caps))} it)" if caps else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{args.dataset}, preset {args.preset}, protocol {args.protocol}, {args.runs} runs per point",
                 fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def result_stem(args: argparse.Namespace) -> str:
    preset = "" if args.preset == "cpu-quick" else f"_{args.preset}"
    return f"convergence_{args.dataset}_{args.protocol}{preset}{args.tag}"


# ---------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--preset", default="cpu-quick", help="method settings (iterations come from --iterations)")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--iterations", type=int, default=1000, help="length of each run (its last point)")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[80, 300, 1000],
                        help="iterations at which the run's set is evaluated (the last iteration always is)")
    parser.add_argument("--max-ipc50-iterations", type=int, default=300, help="length of the IPC 50 runs at most")
    parser.add_argument("--protocol", default="quick-bf16")
    parser.add_argument("--runs", type=int, default=2, help="evaluation runs per point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--pool-dir", default=None)
    parser.add_argument("--runs-dir", default="runs/convergence")
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--no-random", action="store_true", help="leave out the random real reference")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                        help="override an NCFM config field in both NCFM runs, e.g. --set cf_bf16=off (repeatable)")
    parser.add_argument("--set-dm", dest="set_dm_items", action="append", default=[], metavar="KEY=VALUE",
                        help="override a DM config field, e.g. --set-dm lr_img=0.5 (repeatable)")
    parser.add_argument("--tag", default="", help="suffix of the run folders and result files")
    parser.add_argument("--stored-only", action="store_true",
                        help="report the points already on disk (snapshot and evaluation); distil and evaluate "
                             "nothing, so runs that stopped at different lengths share one table")
    parser.add_argument("--quick", action="store_true",
                        help="validation: digits, IPC 1 and 5, 4 iterations (checkpoints 2 4; IPC 5 stands in for "
                             "the capped IPC 50, capped at 2), protocol smoke, everything in a temporary folder")
    args = parser.parse_args(argv)
    args.capped_ipc = CAPPED_IPC
    args.overrides = {method: dict(item.split("=", 1) for item in items)
                      for method, items in (("ncfm", args.set_items), ("dm", args.set_dm_items)) if items}
    if args.quick:
        folder = Path(tempfile.mkdtemp(prefix="convergence-quick-"))
        args.dataset, args.ipc, args.iterations, args.checkpoints = "digits", [1, 5], 4, [2, 4]
        args.capped_ipc = 5  # an IPC 50 evaluation alone would take most of the time
        args.max_ipc50_iterations, args.protocol, args.runs = 2, "smoke", 2
        args.overrides = {method: dict(values) for method, values in QUICK_OVERRIDES.items()}
        args.runs_dir, args.results_dir, args.pool_dir = str(folder / "runs"), str(folder), str(folder / "pool")
        args.no_progress = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    keep_freed_memory()  # as the CLI does: freed tensor memory is reused, not page-faulted back in
    args.device_resolved = str(resolve_device(args.device or "auto"))
    args.device = args.device_resolved  # run_row (the random reference) reads args.device
    if args.capped_ipc in args.ipc and args.max_ipc50_iterations < args.iterations:
        print(f"IPC {args.capped_ipc} is capped at {args.max_ipc50_iterations} iterations (--max-ipc50-iterations); "
              "its curve ends there", flush=True)
    curves, randoms = [], {}
    for ipc in args.ipc:
        if not args.no_random:
            randoms[ipc] = random_reference(ipc, args)
        for method_name in args.methods:
            curves.append(run_curve(method_name, ipc, args))
    stem, results = result_stem(args), Path(args.results_dir)
    curves, randoms = with_kept_rows(results / f"{stem}.json", curves, randoms, args)
    text = markdown(curves, randoms, args)
    print(text)
    capped = {f"{c['ipc']} {c['method']}": row_length(c) for c in curves if c["capped"]}
    save_json({"dataset": args.dataset, "preset": args.preset, "protocol": args.protocol, "runs": args.runs,
               "seed": args.seed, "device": args.device_resolved, "iterations": args.iterations,
               "checkpoints": args.checkpoints, "max_ipc50_iterations": args.max_ipc50_iterations,
               "capped": capped, "overrides": args.overrides, "curves": curves,
               "random": [randoms[ipc] for ipc in args.ipc if ipc in randoms], "paper": PAPER.get(args.dataset)},
              results / f"{stem}.json")
    atomic_write(results / f"{stem}.md", text)
    atomic_write(results / f"{stem}.png", plot(curves, randoms, args))
    print(f"wrote {results / stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    run_script(main)
