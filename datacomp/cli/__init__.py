"""``datacomp`` command line: ``data``, ``subset``, ``eval``, ``demo`` and the commands of the sub-packages.

Each command lives in a module exposing ``add_parser(subparsers)``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from datacomp.errors import DatacompError
from datacomp.io import write_json

from .options import print_table as _print_table
from .options import protocol_help

__all__ = ["main", "build_parser", "protocol_help"]


# Commands contributed by other modules: (module, fallback help shown when the module is absent).
_PLUGINS = (
    "datacomp.cli.distill",
    "datacomp.cli.select",
    "datacomp.report",
    "datacomp.cli.compress",
)


# ---------------------------------------------------------------------------------------------------------------- data
def _cmd_data(args: argparse.Namespace) -> int:
    from datacomp.data import DATASETS, dataset_info, load_dataset

    if args.action == "list":
        rows = [[s.name, s.num_classes or "?", s.in_channels or "?", "x".join(map(str, s.image_size or ())),
                 s.description] for s in DATASETS.values()]
        rows += [["imagefolder:PATH", "", "", "", "PATH/train/<class>/*, PATH/test/<class>/*"],
                 ["npz:PATH", "", "", "", "x_train, y_train, x_test, y_test (+ classes, mean, std)"]]
        _print_table(rows, ["name", "classes", "channels", "size", "description"])
        return 0
    if not args.name:
        raise SystemExit("datacomp data show: give a dataset NAME (see `datacomp data list`)")
    if not args.name.startswith(("imagefolder:", "npz:")):
        spec = dataset_info(args.name)
        print(f"{spec.name}: {spec.description}\n  expected files: {spec.expected_files}")
    ds = load_dataset(args.name, root=args.data_root, download=args.download)
    info = ds.info()
    info["class_counts"] = ds.class_counts.tolist()
    print(json.dumps(info, indent=2))
    return 0


# -------------------------------------------------------------------------------------------------------------- subset
def _cmd_subset(args: argparse.Namespace) -> int:
    from datacomp.cost import CostLedger
    from datacomp.data import load_dataset
    from datacomp.evaluation import random_subset

    ds = load_dataset(args.dataset, root=args.data_root, download=args.download)
    ledger = CostLedger()
    with ledger.phase("selection", flops="full"):
        synset = random_subset(ds, args.ipc, seed=args.seed)
    synset.metadata["cost"] = ledger.to_dict()
    out = Path(args.out)
    path = synset.save(out)
    print(f"wrote {path}: {len(synset)} random real images ({args.ipc} per class) of {ds.name}, seed {args.seed}")
    return 0


# ---------------------------------------------------------------------------------------------------------------- eval
def run_record(kind: str, synset, dataset, ledger_dict: dict, eval_result=None, baseline=None, **extra) -> dict:
    """The ``run.json`` document (see docs/architecture.md, "Run directories")."""
    meta = synset.metadata
    rec = {
        "kind": kind,
        "method": meta.get("method"),
        "dataset": dataset.name,
        "num_items": len(synset),
        "ipc": meta.get("ipc"),
        "fraction": meta.get("fraction"),
        "seed": meta.get("seed"),
        "config": meta.get("config", {}),
        "versions": meta.get("versions", {}),
        "cost": ledger_dict,
        "eval": eval_result.to_dict() if eval_result is not None else None,
        "baseline": baseline.to_dict() if baseline is not None else None,
        "full_train_size": len(dataset.train_y),
    }
    rec.update(extra)
    return rec


def _cmd_eval(args: argparse.Namespace) -> int:
    from datacomp.cost import CostLedger
    from datacomp.data import load_dataset
    from datacomp.evaluation import (
        baseline_counts, evaluate_random_baseline, evaluate_synset, get_protocol, improvement_over_random,
    )
    from datacomp.synset import SyntheticSet

    synset = SyntheticSet.load(args.path)
    name = args.dataset or synset.metadata.get("dataset")
    if not name:
        raise SystemExit("datacomp eval: the set has no dataset in its metadata; pass --dataset NAME")
    ds = load_dataset(name, root=args.data_root, download=args.download)
    protocol = get_protocol(args.protocol, epochs=args.epochs)
    results, baselines = {}, {}
    for model in args.model:
        results[model] = evaluate_synset(synset, ds, model=model, protocol=protocol, runs=args.runs, seed=args.seed,
                                         device=args.device)
        if args.baseline:
            baselines[model] = evaluate_random_baseline(ds, baseline_counts(synset), seed=args.seed, model=model,
                                                        protocol=protocol, runs=args.runs, device=args.device)
    rows = []
    for model, res in results.items():
        row = [model, protocol.name, len(res.accuracies), f"{100 * res.mean:.2f} +- {100 * res.std:.2f}",
               " ".join(f"{100 * a:.2f}" for a in res.accuracies)]
        if args.baseline:
            b = baselines[model]
            row += [f"{100 * b.mean:.2f} +- {100 * b.std:.2f}", f"{100 * improvement_over_random(res, b):+.2f}"]
        rows.append(row)
    header = ["model", "protocol", "runs", "accuracy %", "per run %"]
    if args.baseline:
        header += ["random same size %", "IOR (pts)"]
    print(f"{args.path}: {len(synset)} images ({synset.metadata.get('method')}) evaluated on {ds.name} test split "
          f"({len(ds.test_y)} images)")
    _print_table(rows, header)
    print(f"protocol '{protocol.name}': {protocol.source}")
    doc = {
        "synset": str(args.path),
        "dataset": ds.name,
        "results": {m: r.to_dict() for m, r in results.items()},
        "baselines": {m: b.to_dict() for m, b in baselines.items()},
    }
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}")
    if args.out:
        first = next(iter(results.values()))
        ledger = CostLedger.from_dict(synset.metadata["cost"]) if "cost" in synset.metadata else CostLedger()
        rec = run_record("eval", synset, ds, ledger.to_dict(), first, baselines.get(first.model),
                         evaluations=doc["results"])
        write_json(Path(args.out) / "run.json", rec)
        print(f"wrote {Path(args.out) / 'run.json'}")
    return 0


# ---------------------------------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: distil digits with NCFM (when available) and evaluate against random real images."""
    try:
        distill_cli = importlib.import_module("datacomp.cli.distill")
    except ImportError:
        distill_cli = None
    if distill_cli is not None and hasattr(distill_cli, "run_demo"):
        return distill_cli.run_demo(args)
    from datacomp.data import load_dataset
    from datacomp.evaluation import evaluate_synset, random_subset

    ds = load_dataset("digits")
    synset = random_subset(ds, 10, seed=args.seed)
    out = Path(args.out)
    synset.save(out / "synset.safetensors")
    synset.to_png_grid(out / "grid.png")
    res = evaluate_synset(synset, ds, protocol="quick", runs=3, seed=args.seed)
    print(f"digits, 10 random real images per class: {res.summary()}")
    return 0


def _add_common_data_args(p: argparse.ArgumentParser, dataset_required: bool) -> None:
    p.add_argument("--dataset", required=dataset_required, help="registry name, imagefolder:PATH or npz:PATH")
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout files (default $DATACOMP_DATA)")
    p.add_argument("--download", action="store_true", help="allow downloading missing files")


def build_parser() -> argparse.ArgumentParser:
    from datacomp import __version__

    parser = argparse.ArgumentParser(prog="datacomp", description="Data-centric model compression toolkit.")
    parser.add_argument("--version", action="version", version=f"datacomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("data", help="list datasets or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("subset", help="real-image subsets (the baseline every method is compared to)")
    p.add_argument("method", choices=["random"])
    _add_common_data_args(p, True)
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output FILE.safetensors")
    p.set_defaults(func=_cmd_subset)

    p = sub.add_parser("eval", help="train fresh models on a small set and test them on the real test split")
    p.add_argument("path", help="a SyntheticSet .safetensors file")
    _add_common_data_args(p, False)
    p.add_argument("--model", nargs="+", default=["convnet-3-in"], help="one or more registered models")
    p.add_argument("--protocol", default="quick", help=protocol_help())
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate a random real subset of the same size (IOR)")
    p.add_argument("--json", default=None, help="write per-run accuracies, mean and std here")
    p.add_argument("--out", default=None, help="run directory to write run.json into")
    p.set_defaults(func=_cmd_eval)

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
    from datacomp.runtime import keep_freed_memory

    keep_freed_memory()  # faster CPU loops, same results (see datacomp.runtime)
    try:
        return int(args.func(args) or 0)
    except (DatacompError, ValueError, FileNotFoundError) as err:
        print(f"datacomp {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
