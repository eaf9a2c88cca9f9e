"""``datacomp demo``: the README's main job on digits (no network): NCFM, IPC 10, evaluated against random real
images of the same size."""

from __future__ import annotations

import argparse

from .distill import run_demo

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the README's main job on digits (no network)")
    p.add_argument("--out", default="runs/demo", help="run folder (an earlier demo there is replaced)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_demo)
    return p
