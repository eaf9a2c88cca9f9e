"""``datacomp`` command line. Each command is a thin module (parse -> config -> library call) exposing
``add_parser(subparsers)``; the options every command shares are in :mod:`datacomp.cli.options`.

Every anticipated error is a :class:`~datacomp.errors.DatacompError`: :func:`main` prints its one-line message and
returns its exit code (2, or 130 / 143 for an interrupted run), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from datacomp import __version__
from datacomp.errors import DatacompError
from datacomp.runtime import keep_freed_memory

from .options import protocol_help

__all__ = ["main", "build_parser", "protocol_help"]

# The command modules, in the order `datacomp --help` lists them.
_MODULES = ("datacomp.cli.data", "datacomp.cli.subset", "datacomp.cli.evaluate", "datacomp.cli.distill",
            "datacomp.cli.select", "datacomp.cli.finetune", "datacomp.cli.compress", "datacomp.cli.report", "datacomp.cli.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datacomp", description="Data-centric model compression toolkit.")
    parser.add_argument("--version", action="version", version=f"datacomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _MODULES:
        importlib.import_module(module).add_parser(sub)
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
    except KeyboardInterrupt:
        print(f"datacomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
