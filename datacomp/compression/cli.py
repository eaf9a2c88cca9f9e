"""``datacomp train`` (a teacher on the full data) and ``datacomp compress`` (prune -> distill -> quantize).

Examples::

    datacomp train --dataset digits --model convnet-3-in --epochs 100 --out runs/teacher-digits
    datacomp compress --teacher runs/teacher-digits --data random:10 --prune 0.5 --structured --kd \\
        --quantize int8 --out runs/compress-digits
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli import protocol_help

__all__ = ["add_parser", "cmd_train", "cmd_compress", "parse_model_args"]


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """``["width=64", "norm=bn"]`` -> ``{"width": 64, "norm": "bn"}`` (values parsed as JSON when possible)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg expects KEY=VALUE, got '{item}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a dataset's full training split and save it safely (the teacher for ``compress``)."""
    import torch

    from datacomp.compression.modelio import atomic_write_json, save_model
    from datacomp.cost import CostLedger
    from datacomp.data import load_dataset
    from datacomp.evaluation import EvalResult, get_protocol, train_classifier
    from datacomp.models import create_model
    from datacomp.synset import package_versions

    ds = load_dataset(args.dataset, root=args.data_root, download=args.download)
    protocol = get_protocol(args.protocol, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            augment=args.augment)
    model_kwargs = parse_model_args(args.model_arg)
    torch.manual_seed(args.seed)
    model = create_model(args.model, ds.in_channels, ds.num_classes, ds.image_size, **model_kwargs).to(args.device)
    ledger = CostLedger()
    x, y = ds.normalize(ds.train_x), ds.train_y
    test = (ds.normalize(ds.test_x), ds.test_y)
    result = train_classifier(model, x, y, protocol, test=test, dataset_name=ds.name, ledger=ledger,
                              generator=torch.Generator().manual_seed(10_000 + args.seed), phase="train-on-full",
                              progress=not args.quiet)
    model = model.cpu().eval()
    evaluation = EvalResult(protocol, model.spec["name"], ds.name, [result["accuracy"]], len(x), ledger)
    config = {"dataset": ds.name, "model": args.model, "model_kwargs": model_kwargs, "protocol": protocol.to_dict(),
              "seed": args.seed, "device": args.device}
    out = Path(args.out)
    weights = save_model(model, out / "model.safetensors", dataset=ds.info(), metadata={
        "kind": "teacher", "config": config, "seed": args.seed, "versions": package_versions(),
        "test_accuracy": result["accuracy"], "cost": ledger.to_dict()})
    atomic_write_json(out / "run.json", {
        "kind": "train", "method": model.spec["name"], "dataset": ds.name, "num_items": len(x), "ipc": None,
        "fraction": 1.0, "seed": args.seed, "config": config, "versions": package_versions(),
        "cost": ledger.to_dict(), "eval": evaluation.to_dict(), "baseline": None, "full_train_size": len(x),
        "model_file": weights.name,
    })
    print(f"{model.spec['name']} on {ds.name} (full training split, {len(x)} images, protocol '{protocol.name}'): "
          f"test accuracy {100 * result['accuracy']:.2f}%")
    print(f"wrote {weights} (+ {weights.with_suffix('.json').name}) and {out / 'run.json'}")
    return 0


# ------------------------------------------------------------------------------------------------------------- compress
def _config_from_args(args: argparse.Namespace):
    from datacomp.compression.pipeline import CompressConfig

    return CompressConfig(
        prune=args.prune, structured=args.structured, importance=args.importance, global_pruning=args.global_pruning,
        kd=args.kd, finetune=args.finetune, student=args.student, student_kwargs=parse_model_args(args.student_arg),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        temperature=args.temperature, alpha=args.alpha, hint_weight=args.hint_weight, augment=args.augment,
        quantize=args.quantize, calibration=args.calibration, calibration_size=args.calibration_size,
        latency_batch=args.latency_batch, latency_repeats=args.latency_repeats, seed=args.seed, device=args.device,
    )


def _format_row(name: str, report: dict, teacher_acc: float) -> list[str]:
    return [
        name, f"{report['parameters']:,}", f"{report['nonzero_parameters']:,}", f"{report['macs_per_image']:,}",
        f"{report['latency']['median_ms']:.3f}", f"{report['size_bytes'] / 1024:.1f}",
        f"{100 * report['test_accuracy']:.2f}", f"{100 * (report['test_accuracy'] - teacher_acc):+.2f}",
    ]


def print_summary(doc: dict) -> None:
    """Table of the teacher and every stage."""
    teacher = doc["teacher"]["report"]
    rows = [_format_row("teacher", teacher, teacher["test_accuracy"]) + ["-"]]
    notes = []
    for stage in doc["stages"]:
        if stage["status"] != "done":
            notes.append(f"{stage['stage']}: {stage['status']} ({stage.get('reason')})")
            continue
        seconds = sum(p["seconds"] for p in stage["cost"]["phases"])
        rows.append(_format_row(stage["stage"], stage["report"], teacher["test_accuracy"]) + [f"{seconds:.1f}"])
    header = ["stage", "params", "nonzero", "MACs/img", "latency ms", "size KiB", "test acc %", "vs teacher", "cost s"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    lat = teacher["latency"]
    print(f"latency: median of {lat['repeats']} CPU forward passes, batch {lat['batch_size']}, "
          f"{lat['num_threads']} thread(s)")
    for note in notes:
        print(note)


def cmd_compress(args: argparse.Namespace) -> int:
    """Run the selected stages on a saved teacher with a small set."""
    from datacomp.compression.modelio import load_model
    from datacomp.compression.pipeline import resolve_small_set, run_compression
    from datacomp.data import load_dataset

    config = _config_from_args(args)  # validates the stage options before loading anything
    teacher, spec = load_model(args.teacher)
    if spec.get("quantization"):
        raise ValueError(f"teacher '{args.teacher}' is an int8 model: compress a float teacher")
    name = args.dataset or (spec.get("dataset") or {}).get("name")
    if not name:
        raise ValueError(f"teacher '{args.teacher}' records no dataset: pass --dataset NAME")
    ds = load_dataset(name, root=args.data_root, download=args.download)
    small = resolve_small_set(args.data, ds, seed=args.seed)
    doc = run_compression(teacher, ds, small, config, out_dir=args.out, teacher_source=str(args.teacher),
                          progress=not args.quiet)
    print(f"{config.method} on {ds.name}: teacher {spec['arch']['name']}, small set '{args.data}' "
          f"({len(small.x)} images)")
    print_summary(doc)
    print(f"wrote {Path(args.out) / 'run.json'} and the stage models")
    return 0


# --------------------------------------------------------------------------------------------------------------- parser
def _add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--dataset", required=required, default=None,
                   help="registry name" + ("" if required else " (default: the teacher's dataset)"))
    p.add_argument("--data-root", default=None, help="folder with torchvision-layout files (default $DATACOMP_DATA)")
    p.add_argument("--download", action="store_true", help="allow downloading missing files")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``compress``."""
    p = subparsers.add_parser("train", help="train a model on a dataset's full training split (a teacher)")
    _add_data_args(p, True)
    p.add_argument("--model", default="convnet-3-in", help="registered model name")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="constructor option, e.g. width=64")
    p.add_argument("--protocol", default="quick", help=protocol_help())
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the protocol's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the protocol's batch size")
    p.add_argument("--augment", choices=["none", "dsa", "diffaug"], default=None, help="override augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="run directory (model.safetensors, model.json, run.json)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "compress", help="prune -> distill -> quantize a teacher with a small set, measuring every stage")
    p.add_argument("--teacher", required=True, help="teacher from `datacomp train` (directory or .safetensors)")
    p.add_argument("--data", required=True,
                   help="small set: a SyntheticSet .safetensors, a Selection .npz (training-split indices), "
                        "random:IPC[:SEED] or full")
    _add_data_args(p, False)
    g = p.add_argument_group("prune")
    g.add_argument("--prune", type=float, default=None, metavar="RATIO", help="fraction to prune, in (0, 1)")
    g.add_argument("--structured", action="store_true", help="remove whole channels (torch-pruning)")
    g.add_argument("--importance", choices=["magnitude", "taylor"], default="magnitude",
                   help="channel importance (structured); taylor uses the small set")
    g.add_argument("--global-pruning", action="store_true", help="rank channels across layers (structured)")
    g = p.add_argument_group("distill")
    g.add_argument("--kd", action="store_true", help="distil from the unpruned teacher on the small set")
    g.add_argument("--finetune", action="store_true", help="recover with plain cross-entropy (no teacher)")
    g.add_argument("--student", default=None, help="fresh student model to distil into (instead of --prune)")
    g.add_argument("--student-arg", action="append", metavar="KEY=VALUE", help="student constructor option")
    g.add_argument("--epochs", type=int, default=300)
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--temperature", type=float, default=4.0)
    g.add_argument("--alpha", type=float, default=0.9, help="weight of the KD term; 1 - alpha weights CE")
    g.add_argument("--hint-weight", type=float, default=0.0, help="FitNets feature-hint weight (with --kd)")
    g.add_argument("--augment", choices=["none", "dsa", "diffaug"], default="none")
    g = p.add_argument_group("quantize")
    g.add_argument("--quantize", choices=["int8"], default=None, help="post-training static quantization (CPU)")
    g.add_argument("--calibration", choices=["small", "train-random", "train-first"], default="small",
                   help="calibration images: the small set, random training images (the field's default), or the "
                        "first training images in stored order")
    g.add_argument("--calibration-size", type=int, default=1024)
    g = p.add_argument_group("measurement")
    g.add_argument("--latency-batch", type=int, default=1)
    g.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device for training stages (measurements run on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="run directory (run.json and the stage models)")
    p.set_defaults(func=cmd_compress)
