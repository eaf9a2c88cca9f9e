"""Where NCFM's gap to the paper comes from: one factor of the CPU budget changed at a time (CIFAR-10, IPC 10).

Every row is one NCFM run (the paper's learned sampler psi unless the row says otherwise) of ``--iterations`` iterations under ``--preset``
(default cpu-quick: 2 pool ConvNets trained 1 epoch each, 1024 frequencies, 256 real images per class, sampler step
2e-4) with ONE setting changed towards the paper's (or away from it); its final synthetic set is evaluated with
``--runs`` fresh models under ``--protocol``. The baseline and the Gaussian rows are the run folders of
``convergence.py``'s ``ncfm-learned`` and ``ncfm-gaussian`` curves at that IPC: their snapshots are reused when those
curves have been run, and the other way round.

Factors (``--factors``, any subset, in this order by default):

  ``baseline``       the preset unchanged
  ``pool-6``         6 pool networks instead of 2 (the paper trains 20)
  ``pool-epochs-5``  pool networks trained 5 epochs instead of 1 (the paper: 60)
  ``freqs-4096``     4096 frequencies of the characteristic function instead of 1024
  ``sampler-lr-x10`` the learned sampler's step 2e-3 instead of 2e-4
  ``gaussian``       no learned sampler (the released code's Gaussian frequencies)

What a row can and cannot show: one distillation per factor, so the spread across distillation seeds is not in the
``+-`` (that is the spread of the evaluation runs of one set). The Markdown marks a change as "moved" only when it
exceeds twice the larger of the two evaluation spreads and 1 point; read smaller differences as no evidence either
way.

Outputs (atomic): ``benchmarks/results/ncfm_factors_<dataset>_ipc<IPC>_it<N>.{json,md}``. Resumable: a factor whose
run folder already holds a fitting snapshot and evaluation is read back. Run folders:
``<runs-dir>/<dataset>-<preset>-<factor>-ipc<IPC>-ncfm-learned`` (baseline and gaussian: convergence.py's folders).

Command (CPU, hours on two cores; each factor is one 300-iteration run)::

    OMP_NUM_THREADS=2 python benchmarks/ncfm_factors.py --dataset cifar10 --ipc 10 --iterations 300

Validation at tiny sizes (digits, 2 iterations, protocol smoke, in a temporary folder): ``python
benchmarks/ncfm_factors.py --quick``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence  # noqa: E402
from ncfm_table import QUICK_OVERRIDES  # noqa: E402

from datacomp.cost import save_json  # noqa: E402
from datacomp.errors import ConfigError, run_script  # noqa: E402
from datacomp.io import atomic_write  # noqa: E402
from datacomp.runtime import keep_freed_memory, resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# factor -> (convergence.py's method, NCFM settings changed, what the change means). The baseline and the Gaussian
# row are convergence.py's own ncfm-learned / ncfm-gaussian runs (same folders, no tag): never distilled twice.
FACTORS: dict[str, tuple[str, dict[str, str], str]] = {
    "baseline": ("ncfm-learned", {}, "preset unchanged"),
    "pool-6": ("ncfm-learned", {"pool_size": "6"}, "6 pool networks instead of 2 (paper: 20)"),
    "pool-epochs-5": ("ncfm-learned", {"pool_epochs": "5"}, "pool networks trained 5 epochs instead of 1 (paper: 60)"),
    "freqs-4096": ("ncfm-learned", {"num_freqs": "4096"}, "4096 frequencies instead of 1024"),
    "sampler-lr-x10": ("ncfm-learned", {"sampler_lr": "0.002"}, "learned sampler step 2e-3 instead of 2e-4"),
    "gaussian": ("ncfm-gaussian", {}, "Gaussian frequencies, no learned sampler"),
}


def factor_args(factor: str, args: argparse.Namespace) -> argparse.Namespace:
    """``convergence.py``'s arguments for the one run of ``factor`` (its tag names the run folder)."""
    changed = FACTORS[factor][1]
    run = argparse.Namespace(**vars(args))
    run.tag = f"-{factor}" if changed else ""
    run.overrides = {"ncfm": {**args.base_overrides.get("ncfm", {}), **changed}}
    run.checkpoints, run.capped_ipc, run.max_ipc50_iterations = [args.iterations], -1, args.iterations
    run.stored_only = False  # every row is distilled and evaluated (or read back) in full
    return run


def measure(factor: str, args: argparse.Namespace) -> dict:
    run = factor_args(factor, args)
    method, changed, meaning = FACTORS[factor]
    curve = convergence.run_curve(method, args.ipc, run)
    point = curve["points"][-1]
    return {"factor": factor, "method": method, "changed": changed, "meaning": meaning, "mean": point["mean"],
            "std": point["std"], "accuracies": point["accuracies"], "distill_seconds": point["distill_seconds"],
            "run_dir": curve["run_dir"], "snapshot": point["snapshot"]}


def verdict(row: dict, base: dict) -> str:
    delta = row["mean"] - base["mean"]
    threshold = max(1.0, 2 * max(row["std"], base["std"]))
    return "moved" if abs(delta) > threshold else "within noise"


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    base = next((r for r in rows if r["factor"] == "baseline"), None)
    lines = [f"# NCFM factors: {args.dataset}, IPC {args.ipc}, {args.iterations} iterations, preset `{args.preset}`, "
             f"protocol `{args.protocol}`, {args.runs} evaluation runs, seed {args.seed}", "",
             "One NCFM run (learned sampler) per row with one setting changed; +- is the spread of the evaluation "
             "runs of that one set (distillation-seed spread not included). 'moved': the change exceeds 1 point and "
             "twice the larger evaluation spread. Distill s: wall-clock seconds of the distillation loop (pool "
             "training not included).", "",
             "| factor | change | accuracy % | vs baseline | verdict | distill s |", "|---|---|---|---|---|---|"]
    for r in rows:
        if base is None or r is base:
            delta, said = "-", "-"
        else:
            delta, said = f"{r['mean'] - base['mean']:+.1f}", verdict(r, base)
        lines.append(f"| {r['factor']} | {r['meaning']} | {r['mean']:.1f} +- {r['std']:.1f} | {delta} | {said} | "
                     f"{r['distill_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--preset", default="cpu-quick")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--factors", nargs="+", default=list(FACTORS), choices=list(FACTORS))
    parser.add_argument("--protocol", default="quick-bf16")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--pool-dir", default=None)
    parser.add_argument("--runs-dir", default="runs/convergence", help="shared with convergence.py (the baseline)")
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                        help="change an NCFM setting in every row, e.g. --set real_batch=128 (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="validation: digits, IPC 2, 2 iterations, protocol smoke, in a temporary folder")
    args = parser.parse_args(argv)
    bad = [item for item in args.set_items if "=" not in item]
    if bad:
        parser.error(f"--set takes KEY=VALUE, got {bad[0]!r}")
    args.base_overrides = {"ncfm": dict(item.split("=", 1) for item in args.set_items)} if args.set_items else {}
    if args.quick:
        folder = Path(tempfile.mkdtemp(prefix="ncfm-factors-quick-"))
        args.dataset, args.ipc, args.iterations, args.protocol, args.runs = "digits", 2, 2, "smoke", 2
        args.base_overrides = {"ncfm": dict(QUICK_OVERRIDES["ncfm"])}
        args.runs_dir, args.results_dir, args.pool_dir = str(folder / "runs"), str(folder), str(folder / "pool")
        args.no_progress = True
    return args


def check_args(args: argparse.Namespace) -> None:
    if args.iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {args.iterations}")
    if args.ipc < 1:
        raise ConfigError(f"--ipc must be >= 1, got {args.ipc}")
    if args.runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {args.runs}")
    convergence.get_protocol(args.protocol)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    keep_freed_memory()
    args.device_resolved = str(resolve_device(args.device or "auto"))
    args.device = args.device_resolved
    rows = []
    for factor in args.factors:
        rows.append(measure(factor, args))
        print(f"{factor:<15} {rows[-1]['mean']:6.2f} +- {rows[-1]['std']:.2f} %", flush=True)
    text = markdown(rows, args)
    print(text)
    stem = Path(args.results_dir) / f"ncfm_factors_{args.dataset}_ipc{args.ipc}_it{args.iterations}"
    save_json({"dataset": args.dataset, "preset": args.preset, "ipc": args.ipc, "iterations": args.iterations,
               "protocol": args.protocol, "runs": args.runs, "seed": args.seed, "device": args.device_resolved,
               "rows": rows}, stem.with_suffix(".json"))
    atomic_write(stem.with_suffix(".md"), text)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    run_script(main)
