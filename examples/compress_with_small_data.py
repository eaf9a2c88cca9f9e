"""Compress a trained classifier with a small training set: prune half its channels, recover with knowledge
distillation from the unpruned teacher on a few images per class, quantize to int8, and compare the stages.

    python examples/compress_with_small_data.py                       # digits: teacher, herding subset, compress
    python examples/compress_with_small_data.py --small runs/example-distill/synset.safetensors

The small set can be any SyntheticSet file (distilled or selected), or is chosen here with herding.
"""

from __future__ import annotations

import argparse

import datacomp
from datacomp.compression import CompressConfig, TrainConfig, train_teacher
from datacomp.selectors import EvalOptions, SelectOptions

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset", default="digits")
parser.add_argument("--small", default=None, help="a SyntheticSet file (default: 10 herding images per class)")
parser.add_argument("--teacher-epochs", type=int, default=30)
parser.add_argument("--kd-epochs", type=int, default=100)
parser.add_argument("--out", default="runs/example-compress")
parser.add_argument("--overwrite", action="store_true")
args = parser.parse_args()

dataset = datacomp.load_dataset(args.dataset)
teacher = train_teacher(dataset, TrainConfig(overrides={"epochs": args.teacher_epochs}), quiet=True)
print(f"teacher {teacher.accuracy:.2%} on the test split")

if args.small:
    small = datacomp.SyntheticSet.load(args.small)
else:
    no_evaluation = SelectOptions(eval=EvalOptions(runs=0), quiet=True)  # the compression stages are measured below
    small = datacomp.select_dataset(dataset, "herding", ipc=10, seed=0, options=no_evaluation).synset

config = CompressConfig(prune=0.5, structured=True, kd=True, epochs=args.kd_epochs, quantize="int8")
result = datacomp.compress(teacher.model, small, dataset, config, out=args.out, overwrite=args.overwrite, quiet=True)
for stage in result.stages:
    report = stage.report or {}
    accuracy = report.get("test_accuracy")
    print(f"{stage.stage:10s} {stage.status:8s} params {report.get('parameters', '-')!s:>8}  "
          f"accuracy {'-' if accuracy is None else f'{accuracy:.2%}'}")
print(f"run folder {result.out}")
