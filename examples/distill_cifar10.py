"""Distil CIFAR-10 into 10 images per class with NCFM, evaluate it against random real images, save it.

    python examples/distill_cifar10.py --data-root ~/data --download          # the cpu-quick preset (80 iterations)
    python examples/distill_cifar10.py --preset paper --device cuda           # the paper's settings, on a GPU
    python examples/distill_cifar10.py --dataset digits --set iterations=5    # a one-minute try on built-in data

The run folder holds the set (synset.safetensors), a PNG grid, the loss curve and run.json; calling the script again
with --resume continues an interrupted run.
"""

from __future__ import annotations

import argparse

import datacomp
from datacomp.cli.options import parse_set

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset", default="cifar10")
parser.add_argument("--data-root", default=None)
parser.add_argument("--download", action="store_true")
parser.add_argument("--ipc", type=int, default=10)
parser.add_argument("--preset", default="cpu-quick")
parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config fields of NCFM, "
                    "e.g. --set iterations=200 pool_size=2 (values read as JSON)")
parser.add_argument("--eval-protocol", default="quick")
parser.add_argument("--eval-runs", type=int, default=3)
parser.add_argument("--device", default="auto")
parser.add_argument("--out", default="runs/example-distill")
parser.add_argument("--resume", action="store_true")
parser.add_argument("--overwrite", action="store_true")
args = parser.parse_args()

dataset = datacomp.load_dataset(args.dataset, root=args.data_root, download=args.download)
overrides = parse_set(args.set)
run = datacomp.distill(dataset, method="ncfm", ipc=args.ipc, preset=args.preset, overrides=overrides, seed=0,
                       out=args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                       eval_protocol=args.eval_protocol, eval_runs=args.eval_runs)

print(f"{len(run.synset)} synthetic images of {dataset.name} in {run.out}")
print(f"NCFM        {run.eval.summary()}")
print(f"random real {run.baseline.summary()}  (improvement over random {100 * run.ior:+.2f} points)")
cost = datacomp.CostLedger.from_dict(run.record.cost).total()
print(f"content digest {run.record.output_sha256[:16]}; distillation took {cost.seconds:.0f} s")
