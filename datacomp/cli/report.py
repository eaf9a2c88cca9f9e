"""``datacomp report RUN_DIR...``: compare runs by accuracy and cost ratios (:mod:`datacomp.report`)."""

from __future__ import annotations

import argparse
import math

from datacomp.cost.ratios import DEFINITIONS, UNITS
from datacomp.errors import ConfigError
from datacomp.report import write_report

__all__ = ["add_parser"]


def run(args: argparse.Namespace) -> int:
    if args.full_epochs is not None and not (math.isfinite(args.full_epochs) and args.full_epochs > 0):
        raise ConfigError(f"--full-epochs must be a positive number, got {args.full_epochs}")
    result = write_report(args.run_dirs, args.out, full_epochs=args.full_epochs, unit=args.cost_unit)
    print(result["text"])
    print("\nCosts are per training run; 'a / b' = marginal / fully loaded.")
    for key, text in DEFINITIONS.items():
        print(f"  {key}: {text}")
    for row in result["rows"]:
        for note in row["report"].notes:
            print(f"  note ({row['run']}): {note}")
    for note in result["skipped"]:
        print(f"  plot: {note}")
    out = result["out"]
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'}, {out / 'report.png'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``datacomp report RUN_DIR... [--out DIR] [--full-epochs N] [--cost-unit flops|seconds]``."""
    p = subparsers.add_parser("report", help="accuracy and cost-ratio table across run directories",
                              description="Compare runs: accuracy vs random baseline, selection cost, savings, "
                                          "cost ratio R, STR and break-even reuses; writes report.md/.csv/.png.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories holding run.json")
    p.add_argument("--out", default="report", help="output folder (default: ./report)")
    p.add_argument("--full-epochs", type=float, default=None,
                   help="epochs of full-data training for the estimated C_full (default: the subset's epochs)")
    p.add_argument("--cost-unit", choices=list(UNITS), default="flops", help="cost axis of report.png")
    p.set_defaults(func=run)
    return p
