"""``datacomp`` command line: ``data``, ``subset``, ``eval``, ``report``, ``demo`` and the commands of the
sub-packages.

Each command lives in a module exposing ``add_parser(subparsers)``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Sequence

from datacomp.data import load_dataset
from datacomp.errors import DatacompError
from datacomp.evaluation import evaluate_synset, random_subset
from datacomp.runtime import keep_freed_memory

from .options import protocol_help

__all__ = ["main", "build_parser", "protocol_help"]


# The core commands (each module exposes ``add_parser(subparsers)``).
_CORE = ("datacomp.cli.data", "datacomp.cli.subset", "datacomp.cli.evaluate", "datacomp.cli.report")

# Commands contributed by other modules: (module, fallback help shown when the module is absent).
_PLUGINS = (
    "datacomp.cli.distill",
    "datacomp.cli.select",
    "datacomp.cli.compress",
)


# ---------------------------------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: distil digits with NCFM (when available) and evaluate against random real images."""
    try:
        distill_cli = importlib.import_module("datacomp.cli.distill")
    except ImportError:
        distill_cli = None
    if distill_cli is not None and hasattr(distill_cli, "run_demo"):
        return distill_cli.run_demo(args)
    ds = load_dataset("digits")
    synset = random_subset(ds, 10, seed=args.seed)
    out = Path(args.out)
    synset.save(out / "synset.safetensors")
    synset.to_png_grid(out / "grid.png")
    res = evaluate_synset(synset, ds, protocol="quick", runs=3, seed=args.seed)
    print(f"digits, 10 random real images per class: {res.summary()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from datacomp import __version__

    parser = argparse.ArgumentParser(prog="datacomp", description="Data-centric model compression toolkit.")
    parser.add_argument("--version", action="version", version=f"datacomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _CORE:
        importlib.import_module(module).add_parser(sub)

    p = sub.add_parser("demo", help="the README's main job on digits (no network)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    for mod_name in _PLUGINS:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as err:
            if mod_name not in str(err):  # the module exists but one of its imports is broken: say so
                raise
            continue
        if hasattr(mod, "add_parser"):
            mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    keep_freed_memory()  # faster CPU loops, same results (see datacomp.runtime)
    try:
        return int(args.func(args) or 0)
    except (DatacompError, ValueError, FileNotFoundError) as err:
        print(f"datacomp {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
