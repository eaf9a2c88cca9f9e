"""``datacomp subset random``: a random real subset, the baseline every method is compared to."""

from __future__ import annotations

import argparse

from datacomp.cost import CostLedger
from datacomp.data import load_dataset
from datacomp.evaluation import random_subset

from .options import add_dataset, add_seed
from .outputs import check_output_file

__all__ = ["add_parser"]


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, "--out", overwrite=args.overwrite)
    ds = load_dataset(args.dataset, root=args.data_root, download=args.download)
    ledger = CostLedger()
    with ledger.phase("selection", flops="full"):
        synset = random_subset(ds, args.ipc, seed=args.seed)
    synset.metadata["cost"] = ledger.to_dict()
    path = synset.save(out)
    print(f"wrote {path}: {len(synset)} random real images ({args.ipc} per class) of {ds.name}, seed {args.seed}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("subset", help="real-image subsets (the baseline every method is compared to)")
    p.add_argument("method", choices=["random"])
    add_dataset(p, required=True)
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    add_seed(p)
    p.add_argument("--out", required=True, help="output FILE.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)
    return p
