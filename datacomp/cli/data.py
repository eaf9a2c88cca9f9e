"""``datacomp data list`` / ``datacomp data show NAME``: the registered datasets and what a loaded one holds."""

from __future__ import annotations

import argparse
import json

from datacomp.data import DATASETS, dataset_info, load_dataset
from datacomp.errors import ConfigError

from .options import print_table

__all__ = ["add_parser"]


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = [[s.name, s.num_classes or "?", s.in_channels or "?", "x".join(map(str, s.image_size or ())),
                 s.description] for s in DATASETS.values()]
        rows += [["imagefolder:PATH", "", "", "", "PATH/train/<class>/*, PATH/test/<class>/*"],
                 ["npz:PATH", "", "", "", "x_train, y_train, x_test, y_test (+ classes, mean, std)"]]
        print_table(rows, ["name", "classes", "channels", "size", "description"])
        return 0
    if not args.name:
        raise ConfigError("give a dataset NAME (see `datacomp data list`)")
    if not args.name.startswith(("imagefolder:", "npz:")):
        spec = dataset_info(args.name)
        print(f"{spec.name}: {spec.description}\n  expected files: {spec.expected_files}")
    ds = load_dataset(args.name, root=args.data_root, download=args.download)
    info = ds.info()
    info["class_counts"] = ds.class_counts.tolist()
    print(json.dumps(info, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("data", help="list datasets or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?")
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout files (default $DATACOMP_DATA)")
    p.add_argument("--download", action="store_true", help="allow downloading missing files")
    p.set_defaults(func=run)
    return p
