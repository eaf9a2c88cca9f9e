"""``datacomp train`` (a teacher on the full data) and ``datacomp compress`` (prune -> KD -> binarize / quantize).

Examples::

    datacomp train --dataset digits --model convnet-3-in --set epochs=100 --out runs/teacher-digits
    datacomp compress --teacher runs/teacher-digits --data random:10 --prune 0.5 --structured --kd \\
        --quantize int8 --out runs/compress-digits
    datacomp compress --teacher runs/t1 --data random:10 --student convnet-3-in --student-arg width=32 --kd \\
        --teachers runs/t1 runs/t2 --binarize weights --out runs/multi-binary
    datacomp compress --teacher runs/t1 --data random:10 --born-again 3 --born-again-ensemble --out runs/ban
"""

from __future__ import annotations

import argparse
from typing import Any

from datacomp.augment import PIPELINES
from datacomp.compression import CompressConfig, TrainConfig, compress, train_teacher
from datacomp.compression.binarize import BINARIZE_MODES
from datacomp.compression.config import AUGMENT_OPTIONS, LEGACY_AUGMENT
from datacomp.compression.modelio import read_spec
from datacomp.compression.quantize import CALIBRATION_SOURCES
from datacomp.data import load_dataset
from datacomp.errors import ConfigError

from .options import (
    add_dataset,
    add_device,
    add_out,
    add_quiet,
    add_seed,
    add_set,
    parse_set,
    print_table,
    protocol_help,
    resolve_device,
)

__all__ = ["add_parser", "cmd_train", "cmd_compress", "print_summary"]


def _settings(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """Settings from the dedicated flags that were given, then ``--set KEY=VALUE``; one key given twice is an error."""
    out = {key: getattr(args, dest) for dest, key in flags.items() if getattr(args, dest) is not None}
    for key, value in parse_set(args.set).items():
        if key in out:
            raise ConfigError(f"--set {key}: also given as --{key.replace('_', '-')}; give it once")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------------------- train
_TRAIN_FLAGS = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "augment": "augment"}


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a dataset's full training split and save it safely (the teacher for ``compress``)."""
    config = TrainConfig(model=args.model, model_kwargs=parse_set(args.model_arg, "--model-arg"),
                         protocol=args.protocol, overrides=_settings(args, _TRAIN_FLAGS), seed=args.seed)
    device = resolve_device(args.device)
    ds = load_dataset(args.dataset, root=args.data_root, download=args.download)
    result = train_teacher(ds, config, out=args.out, overwrite=args.overwrite, device=device, quiet=args.quiet)
    protocol = result.evaluation.protocol
    print(f"{result.model.spec['name']} on {ds.name} (full training split, {len(ds.train_y)} images, protocol "
          f"'{protocol.name}'): test accuracy {100 * result.accuracy:.2f}%")
    print(f"wrote {result.model_file} (+ {result.model_file.with_suffix('.json').name}) and "
          f"{result.model_file.parent / 'run.json'}")
    return 0


# ------------------------------------------------------------------------------------------------------------- compress
_COMPRESS_FLAGS = {
    "prune": "prune", "importance": "importance", "student": "student", "epochs": "epochs",
    "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "temperature": "temperature",
    "alpha": "alpha", "hint_weight": "hint_weight", "augment": "augment", "quantize": "quantize",
    "calibration": "calibration", "calibration_size": "calibration_size", "latency_batch": "latency_batch",
    "latency_repeats": "latency_repeats", "teachers": "teachers", "teacher_weights": "teacher_weights",
    "born_again": "born_again", "binarize": "binarize",
}
_COMPRESS_SWITCHES = ("structured", "global_pruning", "kd", "finetune", "born_again_ensemble")


def config_from_args(args: argparse.Namespace) -> CompressConfig:
    """The :class:`CompressConfig` of the command line (dedicated flags, switches and ``--set``)."""
    settings = _settings(args, _COMPRESS_FLAGS)
    for name in _COMPRESS_SWITCHES:
        if getattr(args, name):
            settings[name] = True
    students = parse_set(args.student_arg, "--student-arg")
    if students:
        settings["student_kwargs"] = students
    settings["seed"] = args.seed
    return CompressConfig.with_settings(settings)


def _format_row(name: str, report: dict, teacher_acc: float) -> list[str]:
    return [
        name, f"{report['parameters']:,}", f"{report['nonzero_parameters']:,}", f"{report['macs_per_image']:,}",
        f"{report['latency']['median_ms']:.3f}", f"{report['size_bytes'] / 1024:.1f}",
        f"{100 * report['test_accuracy']:.2f}", f"{100 * (report['test_accuracy'] - teacher_acc):+.2f}",
    ]


def _stage_notes(stage: dict, teacher_acc: float) -> list[str]:
    """Lines under the table for what a stage's row does not show (1-bit size, born-again ensemble)."""
    details, notes = stage.get("details") or {}, []
    size = details.get("size")
    if stage["stage"] == "binarize" and size:
        notes.append(f"binarize ({details['mode']}): {size['binarized_weights']:,} weights at 1 bit in "
                     f"{len(details['layers'])} layers + {size['scales']:,} fp32 scales: "
                     f"{size['size_bytes'] / 1024:.1f} KiB ({size['float_size_bytes'] / 1024:.1f} KiB in float)")
    ensemble = details.get("ensemble")
    if ensemble:
        notes.append(f"{stage['stage']}: ensemble of {ensemble['generations']} generations (mean logits) test acc "
                     f"{100 * ensemble['test_accuracy']:.2f}% ({100 * (ensemble['test_accuracy'] - teacher_acc):+.2f} "
                     f"vs teacher)")
    return notes


def print_summary(doc: dict) -> None:
    """Table of the teacher and every stage of a ``compress`` ``run.json`` document."""
    teacher = doc["teacher"]["report"]
    rows = [_format_row("teacher", teacher, teacher["test_accuracy"]) + ["-"]]
    notes = []
    teachers = doc.get("teachers")
    if teachers:
        for i, member in enumerate(teachers["members"], 1):
            notes.append(f"teachers[{i}] {member['source']} (weight {member['weight']:.3g}): test acc "
                         f"{100 * member['test_accuracy']:.2f}%")
        notes.append(f"teachers combined (T={teachers['temperature']:g}): test acc "
                     f"{100 * teachers['combined_test_accuracy']:.2f}%")
    for stage in doc["stages"]:
        if stage["status"] != "done":
            notes.append(f"{stage['stage']}: {stage['status']} ({stage.get('reason')})")
            continue
        notes.extend(_stage_notes(stage, teacher["test_accuracy"]))
        seconds = sum(p["seconds"] for p in stage["cost"]["phases"])
        rows.append(_format_row(stage["stage"], stage["report"], teacher["test_accuracy"]) + [f"{seconds:.1f}"])
    print_table(rows, ["stage", "params", "nonzero", "MACs/img", "latency ms", "size KiB", "test acc %",
                       "vs teacher", "cost s"])
    lat = teacher["latency"]
    print(f"latency: median of {lat['repeats']} CPU forward passes, batch {lat['batch_size']}, "
          f"{lat['num_threads']} thread(s)")
    for note in notes:
        print(note)


def cmd_compress(args: argparse.Namespace) -> int:
    """Run the selected stages on a saved teacher with a small set."""
    config = config_from_args(args)  # validates the stage options before loading anything
    device = resolve_device(args.device)
    spec = read_spec(args.teacher)
    name = args.dataset or (spec.get("dataset") or {}).get("name")
    if not name:
        raise ConfigError(f"--teacher {args.teacher} records no dataset: pass --dataset NAME")
    ds = load_dataset(name, root=args.data_root, download=args.download)
    result = compress(args.teacher, args.data, ds, config, out=args.out, overwrite=args.overwrite, device=device,
                      quiet=args.quiet)
    doc = result.record.to_dict()
    print(f"{config.method} on {ds.name}: teacher {spec['arch']['name']}, small set '{args.data}' "
          f"({doc['num_items']} images)")
    print_summary(doc)
    print(f"wrote {result.out / 'run.json'} and the stage models")
    return 0


# --------------------------------------------------------------------------------------------------------------- parser
def _augment_help(options: tuple[str, ...] | None = None) -> str:
    names = options or tuple(PIPELINES)
    return "augmentation pipeline: " + ", ".join(f"{n} ({PIPELINES[n]})" if n in PIPELINES else n for n in names)


def _add_run_options(p: argparse.ArgumentParser, set_help: str, out_help: str) -> None:
    add_set(p, set_help)
    add_seed(p)
    add_device(p)
    add_quiet(p)
    add_out(p, required=True, help=out_help)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``compress``."""
    p = subparsers.add_parser("train", help="train a model on a dataset's full training split (a teacher)")
    add_dataset(p, True)
    p.add_argument("--model", default="convnet-3-in", help="registered model name")
    p.add_argument("--model-arg", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="constructor option, e.g. width=64 (repeatable; values read as JSON when they parse)")
    p.add_argument("--protocol", default="quick", help=protocol_help())
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the protocol's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the protocol's batch size")
    p.add_argument("--augment", default=None, help="override the protocol's " + _augment_help())
    _add_run_options(p, "a field of the training protocol (e.g. --set momentum=0.8)",
                     "run folder (model.safetensors, model.json, run.json)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "compress", help="prune -> KD -> binarize / quantize a teacher with a small set, measuring every stage")
    p.add_argument("--teacher", required=True, help="teacher from `datacomp train` (run folder or .safetensors)")
    p.add_argument("--data", required=True,
                   help="small set: a SyntheticSet .safetensors, a Selection .npz (training-split indices), "
                        "random:IPC[:SEED] or full")
    add_dataset(p, False)
    g = p.add_argument_group("prune")
    g.add_argument("--prune", type=float, default=None, metavar="RATIO", help="fraction to prune, in (0, 1)")
    g.add_argument("--structured", action="store_true", help="remove whole channels (torch-pruning)")
    g.add_argument("--importance", choices=["magnitude", "taylor"], default=None,
                   help="channel importance (structured; default magnitude); taylor uses the small set")
    g.add_argument("--global-pruning", action="store_true", help="rank channels across layers (structured)")
    g = p.add_argument_group("kd", "knowledge distillation (or plain fine-tuning) on the small set")
    g.add_argument("--kd", action="store_true", help="distil from the unpruned teacher on the small set")
    g.add_argument("--finetune", action="store_true", help="recover with plain cross-entropy (no teacher)")
    g.add_argument("--student", default=None, help="fresh student model to distil into (instead of --prune)")
    g.add_argument("--student-arg", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="student constructor option (repeatable; values read as JSON when they parse)")
    g.add_argument("--epochs", type=int, default=None, help="default 300")
    g.add_argument("--batch-size", type=int, default=None, help="default 256")
    g.add_argument("--lr", type=float, default=None, help="SGD learning rate, cosine-annealed (default 0.01)")
    g.add_argument("--weight-decay", type=float, default=None, help="default 5e-4")
    g.add_argument("--temperature", type=float, default=None, help="KD temperature (default 4)")
    g.add_argument("--alpha", type=float, default=None, help="weight of the KD term; 1 - alpha weights CE (0.9)")
    g.add_argument("--hint-weight", type=float, default=None, help="FitNets feature-hint weight (with --kd)")
    g.add_argument("--augment", choices=[*AUGMENT_OPTIONS, *LEGACY_AUGMENT], default=None, metavar="NAME",
                   help=_augment_help(AUGMENT_OPTIONS) + " (default none; 'diffaug' of datacomp 0.1.0 reads as "
                        "color_crop_cutout)")
    g.add_argument("--teachers", nargs="+", default=None, metavar="RUN_OR_MODEL",
                   help="multi-teacher KD: distil from these teachers' softened distributions averaged at the KD "
                        "temperature (run folders / model files of the same dataset; list --teacher too to include "
                        "it); used by --kd (stage multi-kd), --born-again and --binarize")
    g.add_argument("--teacher-weights", nargs="+", type=float, default=None, metavar="W",
                   help="one weight >= 0 per --teachers entry (default equal)")
    g = p.add_argument_group("born-again", "self-distillation: generations of the same architecture")
    g.add_argument("--born-again", type=int, default=None, metavar="N",
                   help="N generations, each a fresh copy of the teacher's architecture (or --student) distilled "
                        "from the one before (the first from the teacher); stages born-again-1 ... born-again-N")
    g.add_argument("--born-again-ensemble", action="store_true",
                   help="also report the accuracy of the generations' averaged logits (N >= 2)")
    g = p.add_argument_group("binarize")
    g.add_argument("--binarize", choices=list(BINARIZE_MODES), default=None,
                   help="XNOR-Net 1-bit weights (+ sign activations) in every conv/linear layer but the first and "
                        "last, recovered by KD from the teacher on the small set (excludes --quantize)")
    g = p.add_argument_group("quantize")
    g.add_argument("--quantize", choices=["int8"], default=None, help="post-training static quantization (CPU)")
    g.add_argument("--calibration", choices=list(CALIBRATION_SOURCES), default=None,
                   help="calibration images: small (the small set, default), train-random (random training images, "
                        "the field's default) or train-first (the first training images in stored order)")
    g.add_argument("--calibration-size", type=int, default=None, help="default 1024")
    g = p.add_argument_group("measurement")
    g.add_argument("--latency-batch", type=int, default=None, help="default 1")
    g.add_argument("--latency-repeats", type=int, default=None, help="default 30")
    _add_run_options(p, "any compress setting (a CompressConfig field, e.g. --set momentum=0.8)",
                     "run folder (run.json and the stage models)")
    p.set_defaults(func=cmd_compress)
