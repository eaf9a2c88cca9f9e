"""Options every command shares, parsed one way: ``--set KEY=VALUE``, ``--quiet``, ``--device``, ``--seed``,
``--out`` / ``--overwrite`` and the dataset flags.

Values of ``--set`` are read as JSON when they parse (``3``, ``0.5``, ``true``, ``null``, ``[1, 2]``) and as strings
otherwise (``norm=bn``); dashes in keys become underscores (``--set lr-img=10`` sets ``lr_img``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from datacomp.errors import ConfigError
from datacomp.runtime import resolve_device  # noqa: F401  (moved to datacomp.runtime; re-exported here)

__all__ = [
    "add_set", "parse_set", "add_quiet", "add_device", "resolve_device", "add_seed", "add_out", "add_dataset",
    "protocol_help", "print_table",
]


def add_set(parser: argparse.ArgumentParser, what: str = "a setting of the method") -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]`` (repeatable) into ``args.set``; ``what`` says which settings (with an
    example valid for the command)."""
    parser.add_argument("--set", dest="set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"override {what}; repeatable, values read as JSON when they parse")


def parse_set(items: list[str] | None, option: str = "--set") -> dict[str, Any]:
    """``["width=64", "norm=bn", "lr-img=1e-2"]`` -> ``{"width": 64, "norm": "bn", "lr_img": 0.01}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{option} expects KEY=VALUE, got {item!r}")
        value = value.strip()
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N")


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def add_out(parser: argparse.ArgumentParser, required: bool = False, help: str = "run folder to write into") -> None:
    parser.add_argument("--out", required=required, default=None, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace what --out already holds")


def add_dataset(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--dataset", required=required, help="registry name, imagefolder:PATH or npz:PATH")
    parser.add_argument("--data-root", default=None, help="folder with torchvision-layout files (default "
                        "$DATACOMP_DATA)")
    parser.add_argument("--download", action="store_true", help="allow downloading missing files")


def protocol_help() -> str:
    """``--protocol`` help naming every preset of :data:`datacomp.evaluation.PROTOCOLS` (imported only when called)."""
    from datacomp.evaluation import PROTOCOLS

    return "named training preset: " + ", ".join(PROTOCOLS)


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    """Print rows as aligned columns under ``header``."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
