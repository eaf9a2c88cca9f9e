"""Compressing a teacher with small data: full set vs random vs selected vs distilled sets, plus the newer stages.

A teacher (ConvNet-3, or ResNet-18 with ``--resnet``) is trained on the full training split (or loaded with
``--teacher``); its test accuracy and training cost (seconds, FLOPs, from its cost ledger) head the table. It is
pruned once (structured, magnitude importance: data-free, so every row starts from the same pruned model), then
recovered by fine-tuning on each data source, with KD from the unpruned teacher and without (plain CE):

  (a) ``full``        the whole training split (``--full-epochs``): the ceiling, and the reference of the cost ratio,
  (b) ``random``      ``--ipc`` random real images per class,
  (c) ``<selector>``  ``--ipc`` per class chosen by ``datacomp.selectors.select`` (``--selector``, default ``herding``
                      on the teacher's penultimate features; the row is named after the selector; skipped with a note
                      when the selectors package is absent),
  (d) ``<NAME>``      a distilled SyntheticSet per ``--synset NAME=PATH`` (e.g. ``dm``, ``ncfm``; a plain
                      ``--synset PATH`` is the row ``distilled``); every set must hold ``--ipc`` images per class.

Each row reports test accuracy, how much of the pruning drop it recovered, parameters, MACs, latency, size, and its
cost (producing the data + recovery training, seconds and FLOPs from the cost ledger) with the project's cost ratio
R = (recovery cost on the full set - recovery cost on the small set) / cost of producing the small set (worth it
only when R > 1; "n/a (free)" for random, "n/a" without the full row).

Every KD-recovered small-set row is then quantized to int8 (post-training static), calibrated on its own small set;
the random row's model is also calibrated on the field's default (1,024 random training images; torchvision's
reference draws them from a shuffled loader) and on the literal first 1,024 training images (one class on
class-sorted copies such as the shared CIFAR-10).

``--stages`` adds rows of the newer ``datacomp compress`` stages, all recovered on the small set of one row
(``--stage-data``, default ``random``) for the small-set epochs:

  ``multi-kd``    the same pruned model recovered by KD from the weighted average of the softened outputs of the
                  teacher and ``--extra-teachers`` (``--teacher-weights``; default equal),
  ``born-again``  ``--born-again N`` generations (default 2) of fresh, full-size copies of the teacher's
                  architecture, each trained by KD from the one before (the first from the teacher), plus the
                  ensemble of their averaged logits (born-again excludes pruning: these rows are not smaller),
  ``binarize``    the same pruned model, XNOR-binarized (``--binarize-mode weights`` or ``weights+activations``;
                  first and last layer kept in full precision) and recovered by KD from the teacher.

Every row (and every int8 model) is cached as JSON under ``--work-dir``, keyed by its full settings (config, data and
their digests, teacher digest): re-running skips finished rows, so long runs can be split: ``--rows random herding``
runs only those (kinds ``full random selected distilled`` or row names). Results: ``benchmarks/results/compress_
<dataset>_<model>.{json,md}`` with the exact command.

Examples::

    python benchmarks/compress_table.py --dataset digits                      # fast, CPU
    DATACOMP_SHARED_DATA=/work/shared/data python benchmarks/compress_table.py --dataset cifar10 \\
        --teacher runs/teachers/convnet3-s0 --extra-teachers runs/teachers/convnet3-s1 --ipc 10 --full-epochs 2 \\
        --synset dm=runs/.../dm/synset.safetensors --synset ncfm=runs/.../ncfm/synset.safetensors \\
        --synset-command 'dm=datacomp distill --method dm ...' --synset-command 'ncfm=datacomp distill ...' \\
        --stages multi-kd born-again binarize --no-ce
    python benchmarks/compress_table.py --dataset digits --quick              # smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import torch

from datacomp.compression import (
    CompressConfig,
    TrainConfig,
    compress,
    load_model,
    model_report,
    resolve_small_set,
    save_model,
    train_teacher,
)
from datacomp.compression.binarize import BINARIZE_MODES
from datacomp.compression.config import AUGMENT_OPTIONS, LEGACY_AUGMENT
from datacomp.compression.modelio import model_digest
from datacomp.compression.quantize import QUANT_SUPPORT, QuantizationUnavailable, calibration_images, quantize_int8
from datacomp.compression.smallset import small_set_info, small_set_ledger, small_set_tensors
from datacomp.cost import CostLedger
from datacomp.cost.ratios import NON_SELECTION_PHASES, cost_ratio
from datacomp.data import load_dataset
from datacomp.errors import ConfigError, run_script
from datacomp.io import atomic_write, package_versions, write_json
from datacomp.synset import SyntheticSet, base_metadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_report import markdown  # noqa: E402

ROWS = ("full", "random", "selected", "distilled")  # row kinds of --rows (row names work too)
STAGES = ("multi-kd", "born-again", "binarize")
TEACHER_PROTOCOLS = ("quick", "quick-bf16", "auto")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", help="digits (fast) or cifar10 (shared offline copy)")
    p.add_argument("--resnet", action="store_true", help="ResNet-18 (IN) teacher instead of ConvNet-3 (IN)")
    p.add_argument("--model", default=None, help="any registered teacher model (overrides --resnet)")
    p.add_argument("--teacher", default=None, help="reuse a teacher from `datacomp train` instead of training one")
    p.add_argument("--teacher-epochs", type=int, default=100, help="epochs of teacher training")
    p.add_argument("--teacher-protocol", choices=TEACHER_PROTOCOLS, default=None,
                   help="protocol of teacher training: quick (default), quick-bf16 (bfloat16 autocast: faster only on "
                        "hardware with native bf16) or auto (quick-bf16 where the CPU has native bf16, else quick)")
    p.add_argument("--prune", type=float, default=0.5, help="channel fraction removed")
    p.add_argument("--ipc", type=int, default=10, help="images per class of the small sets")
    p.add_argument("--small-epochs", type=int, default=300, help="recovery epochs on a small set")
    p.add_argument("--full-epochs", type=int, default=30, help="recovery epochs on the full training split")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--augment", choices=[*AUGMENT_OPTIONS, *LEGACY_AUGMENT], default="none",
                   help="augmentation of the recovery training (diffaug = color_crop_cutout, the name datacomp 0.1.0 "
                        "used)")
    p.add_argument("--selector", default="herding", help="datacomp.selectors method on teacher features (row name)")
    p.add_argument("--synset", action="append", default=[], metavar="NAME=PATH",
                   help="a distilled SyntheticSet of --ipc images per class, as row NAME (repeatable); a plain PATH "
                        "is the row 'distilled'")
    p.add_argument("--synset-command", action="append", default=[], metavar="NAME=CMD",
                   help="the command that produced --synset NAME (recorded; repeatable); a plain CMD belongs to the "
                        "plain --synset PATH")
    p.add_argument("--rows", nargs="+", default=list(ROWS),
                   help="rows to run: kinds full random selected distilled, or row names (default: all)")
    p.add_argument("--no-ce", action="store_true", help="skip the recovery-without-KD rows")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=[],
                   help="rows of the newer compress stages on the --stage-data small set (default: none)")
    p.add_argument("--stage-data", default=None, help="row whose small set the --stages rows use (default random)")
    p.add_argument("--extra-teachers", nargs="+", default=[], metavar="PATH",
                   help="model files / `datacomp train` run folders distilled from together with the teacher "
                        "(multi-kd)")
    p.add_argument("--teacher-weights", nargs="+", type=float, default=None,
                   help="multi-kd weights: one for the teacher, then one per --extra-teachers (default equal)")
    p.add_argument("--born-again", type=int, default=None, metavar="N", help="born-again generations (default 2)")
    p.add_argument("--binarize-mode", choices=BINARIZE_MODES, default=None, help="binarize: weights (default) or "
                                                                                  "weights+activations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default=None, help="teacher, row caches and models (default runs/compress_table/...)")
    p.add_argument("--out", default=None, help="results stem (default benchmarks/results/compress_<dataset>_<model>)")
    p.add_argument("--quick", action="store_true", help="tiny settings to check the script end to end")
    args = p.parse_args(argv)
    from datacomp.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does: freed tensor memory is reused, not page-faulted back in
    if args.quick:
        args.teacher_epochs, args.small_epochs, args.full_epochs = 3, 3, 1
        args.ipc = min(args.ipc, 2)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Parse ``--synset`` / ``--synset-command`` into ``args.synsets`` / ``args.synset_commands`` and check the
    options that only make sense together (before any work)."""
    reserved = {"full", "random", "selected", args.selector}
    args.synsets = {}
    for value in args.synset:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "distilled", value
        if not NAME.match(name) or not path:
            raise ConfigError(f"--synset {value!r}: expected NAME=PATH (NAME: a letter, then letters, digits, _ . -) "
                              f"or a plain PATH (row 'distilled')")
        if name in reserved or name in args.synsets:
            raise ConfigError(f"--synset {value!r}: the row name {name!r} is already taken; choose another NAME")
        args.synsets[name] = path
    args.synset_commands = {}
    for value in args.synset_command:
        name, sep, command = value.partition("=")
        if not (sep and name in args.synsets):
            if "distilled" not in args.synsets:
                raise ConfigError(f"--synset-command {value!r}: start it with NAME= naming one of the --synset rows "
                                  f"({', '.join(args.synsets) or 'none given'})")
            name, command = "distilled", value
        if name in args.synset_commands:
            raise ConfigError(f"--synset-command: two commands for the row {name!r}; give one")
        args.synset_commands[name] = command
    names = ["full", "random", args.selector, *args.synsets]
    args.row_names = []
    for entry in args.rows:
        chosen = {"selected": [args.selector], "distilled": list(args.synsets)}.get(entry, [entry])
        if entry not in ROWS and entry not in names:
            raise ConfigError(f"--rows {entry}: choose kinds {' '.join(ROWS)} or row names {' '.join(names)}")
        args.row_names += [n for n in chosen if n not in args.row_names]
    if args.teacher and args.teacher_protocol is not None:
        raise ConfigError("--teacher-protocol sets how the teacher is trained, but --teacher loads a trained one: "
                          "drop one of them")
    args.teacher_protocol = args.teacher_protocol or "quick"
    unused = [(opt, stage) for opt, stage, given in (
        ("--extra-teachers", "multi-kd", bool(args.extra_teachers)),
        ("--teacher-weights", "multi-kd", args.teacher_weights is not None),
        ("--born-again", "born-again", args.born_again is not None),
        ("--binarize-mode", "binarize", args.binarize_mode is not None)) if given and stage not in args.stages]
    if args.stage_data is not None and not args.stages:
        unused.append(("--stage-data", " / ".join(STAGES)))
    if unused:
        opt, stage = unused[0]
        raise ConfigError(f"{opt} belongs to --stages {stage}: add that stage or drop {opt}")
    args.stage_data = args.stage_data or "random"
    args.born_again = 2 if args.born_again is None else args.born_again
    args.binarize_mode = args.binarize_mode or "weights"
    if args.stages and args.stage_data not in args.row_names:
        raise ConfigError(f"--stage-data {args.stage_data}: not a row of this run; choose one of "
                          f"{', '.join(args.row_names)} (or add it to --rows)")
    if "multi-kd" in args.stages:
        if not args.extra_teachers:
            raise ConfigError("--stages multi-kd distils from the teacher and --extra-teachers: give at least one "
                              "--extra-teachers PATH (a model file or `datacomp train` run folder)")
        for path in args.extra_teachers:
            if not Path(path).exists():
                raise ConfigError(f"--extra-teachers {path}: no such model file or run folder")
        wanted = 1 + len(args.extra_teachers)
        if args.teacher_weights is not None and len(args.teacher_weights) != wanted:
            raise ConfigError(f"--teacher-weights has {len(args.teacher_weights)} value(s) for {wanted} teachers (the "
                              f"teacher, then each --extra-teachers): give {wanted}")
    if "born-again" in args.stages and args.born_again < 1:
        raise ConfigError(f"--born-again must be >= 1 generation, got {args.born_again}")


def model_name(args: argparse.Namespace) -> str:
    return args.model or ("resnet18-in" if args.resnet else "convnet-3-in")


def teacher_protocol(args: argparse.Namespace) -> str:
    """The protocol name the teacher trains with (``auto``: quick-bf16 where the CPU has native bf16)."""
    if args.teacher_protocol != "auto":
        return args.teacher_protocol
    from datacomp.runtime import native_bf16

    return "quick-bf16" if native_bf16("cpu") else "quick"


def loaded_teacher_info(source: str, spec: dict) -> dict:
    """Accuracy, protocol and training cost of a saved teacher (its model metadata, else its run folder's run.json)."""
    meta = spec.get("metadata") or {}
    run_json = Path(source) / "run.json"
    record = json.loads(run_json.read_text()) if run_json.is_file() else {}
    config = meta.get("config") or record.get("config") or {}
    protocol = config.get("protocol") or meta.get("protocol") or {}  # older files: the protocol at the top
    accuracy = meta.get("test_accuracy")
    if accuracy is None:
        accuracies = (record.get("eval") or {}).get("accuracies") or []
        accuracy = accuracies[0] if accuracies else None
    return {"source": source, "test_accuracy": accuracy, "cost": meta.get("cost") or record.get("cost"),
            "protocol": protocol.get("name") if isinstance(protocol, dict) else protocol,
            "epochs": protocol.get("epochs") if isinstance(protocol, dict) else None}


def get_teacher(args, ds, work: Path) -> tuple[torch.nn.Module, dict]:
    if args.teacher:
        teacher, spec = load_model(args.teacher)
        info = loaded_teacher_info(args.teacher, spec)
    else:
        protocol = teacher_protocol(args)
        path = work / "teacher" / "model.safetensors"
        tag = {"model": model_name(args), "epochs": args.teacher_epochs, "seed": args.seed, "dataset": ds.name,
               "protocol": protocol}
        teacher = None
        if path.is_file():
            teacher, spec = load_model(path)
            stored = {"protocol": "quick", **(spec["metadata"].get("tag") or {})}  # tags before the protocol: quick
            if stored == tag:
                print(f"reusing teacher {path}")
            else:
                teacher = None
        if teacher is None:
            if protocol == "quick-bf16":
                from datacomp.runtime import native_bf16

                if not native_bf16("cpu"):
                    print("note: this CPU has no native bf16; quick-bf16 trains slower than quick here")
            trained = train_teacher(ds, TrainConfig(model=model_name(args), protocol=protocol,
                                                    overrides={"epochs": args.teacher_epochs}, seed=args.seed),
                                    device="cpu")
            save_model(trained.model, path, dataset=ds.info(), metadata={
                "tag": tag, "test_accuracy": trained.accuracy, "cost": trained.record.cost,
                "config": trained.record.config, "protocol": trained.evaluation.protocol.to_dict()})
            print(f"teacher {model_name(args)}: {100 * trained.accuracy:.2f}% after {args.teacher_epochs} epochs "
                  f"({protocol})")
            teacher, spec = load_model(path)
        info = loaded_teacher_info(str(path), spec)
        info.update(protocol=protocol, epochs=args.teacher_epochs)
    info["sha256"] = model_digest(teacher)
    if info.get("cost"):
        info["seconds"], info["flops"] = phase_sum(info["cost"])
    return teacher, info


def selected_set(args, ds, teacher) -> SyntheticSet | str:
    """``--ipc`` per class picked by a selector on the teacher's penultimate features (or why not)."""
    try:
        from datacomp.selectors import select
    except ImportError as err:
        return f"datacomp.selectors is not available ({err})"
    ledger = CostLedger()
    x = ds.normalize(ds.train_x)
    with ledger.phase("feature-extraction", flops="full"), torch.no_grad():
        feats = torch.cat([teacher.forward_features(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    with ledger.phase("selection"):
        selection = select(args.selector, features=feats.numpy(), budget=args.ipc * ds.num_classes,
                           labels=ds.train_y.numpy(), class_balanced=True, class_budget="equal", seed=args.seed)
    idx = torch.as_tensor(selection.indices, dtype=torch.long)
    info = {"source": f"select:{args.selector}", "method": args.selector, "ipc": args.ipc,
            "features": "teacher forward_features"}
    meta = base_metadata(dataset=ds.name, space="pixel", num_classes=ds.num_classes, method=args.selector,
                         ipc=args.ipc, small_set=info, cost=ledger.to_dict())
    return SyntheticSet(ds.train_x[idx], ds.train_y[idx], meta, source_indices=idx)


def named_synset(args, ds, name: str) -> SyntheticSet:
    """The ``--synset NAME=PATH`` set, checked to hold ``--ipc`` images per class."""
    synset = resolve_small_set(args.synsets[name], ds)
    counts = synset.images_per_class()
    if set(counts) != {args.ipc}:
        raise ConfigError(f"--synset {name}={args.synsets[name]} has {counts} images per class but --ipc is "
                          f"{args.ipc}" + (" (--quick uses at most 2)" if args.quick else "") +
                          ": give a set of --ipc images per class or set --ipc to its size")
    return synset


def phase_sum(cost: dict, names=None, include: bool = True, one_off: bool = True) -> tuple[float, float | None]:
    """Seconds and FLOPs of a ledger dict's phases (``names`` with ``include``: only / all but those; ``one_off``
    False: without phases marked one-off); FLOPs None when a summed phase has none."""
    seconds, flops, known = 0.0, 0.0, True
    for ph in cost["phases"]:
        if names is not None and ((ph["name"] in names) != include):
            continue
        if not one_off and ph.get("one_off"):
            continue
        seconds += ph["seconds"]
        if ph.get("flops") is None:
            known = False
        else:
            flops += ph["flops"]
    return seconds, (flops if known else None)


def selection_cost(small: SyntheticSet, one_off: bool = True) -> tuple[float, float | None]:
    """What producing the small set cost: every phase of its ledger but training and evaluation (the project's
    C_sel); (0, 0) for a set without a ledger (random, full)."""
    ledger = small_set_ledger(small)
    if ledger is None:
        return 0.0, 0.0
    return phase_sum(ledger.to_dict(), set(NON_SELECTION_PHASES), include=False, one_off=one_off)


def data_key(small: SyntheticSet, num_images: int) -> dict:
    info = small_set_info(small, num_images)
    return {"info": info, "sha256": None if info.get("source") == "full" else small.content_digest()}


def teacher_key(teacher_info: dict) -> dict:
    return {"source": teacher_info["source"], "sha256": teacher_info["sha256"]}


def cached(cache: Path, key: dict) -> dict | None:
    if cache.is_file():
        doc = json.loads(cache.read_text())
        if doc.get("key") == key:
            print(f"reusing {cache}")
            return doc
    return None


def recovery_config(args, name: str, **stage) -> CompressConfig:
    epochs = args.full_epochs if name == "full" else args.small_epochs
    return CompressConfig(epochs=epochs, lr=args.lr, temperature=args.temperature, alpha=args.alpha,
                          augment=args.augment, seed=args.seed, **stage)


def run_row(args, ds, teacher, teacher_info, name: str, small: SyntheticSet, kd: bool, work: Path) -> dict:
    config = recovery_config(args, name, prune=args.prune, structured=True, kd=kd, finetune=not kd)
    out_dir = work / f"{name}-{'kd' if kd else 'ce'}"
    cache = out_dir / "row.json"
    num_images = len(small_set_tensors(small, ds)[0])
    data_info = small_set_info(small, num_images)
    key = {"config": config.to_dict(), "data": data_key(small, num_images), "teacher": teacher_key(teacher_info)}
    row = cached(cache, key)
    if row is not None:
        return row
    start = time.perf_counter()
    result = compress(teacher, small, ds, config, out=out_dir, overwrite=True, device="cpu")
    pruned, recovered = result.stages
    data_s, data_flops = selection_cost(small)
    rec_s, rec_flops = phase_sum(recovered.cost.to_dict())
    row = {
        "key": key, "row": name, "kd": kd, "num_images": num_images, "epochs": config.epochs,
        "teacher_accuracy": result.teacher_report["test_accuracy"],
        "pruned_accuracy": pruned.report["test_accuracy"],
        "accuracy": recovered.report["test_accuracy"],
        "teacher_report": result.teacher_report, "pruned_report": pruned.report,
        "recovered_report": recovered.report,
        "data_seconds": data_s, "data_flops": data_flops, "recovery_seconds": rec_s, "recovery_flops": rec_flops,
        "samples_seen": recovered.details["samples_seen"], "wall_seconds": time.perf_counter() - start,
        "run_dir": str(out_dir), "data_info": data_info, "model_file": recovered.model_file,
    }
    drop = row["teacher_accuracy"] - row["pruned_accuracy"]
    row["recovered_fraction"] = (row["accuracy"] - row["pruned_accuracy"]) / drop if drop > 0 else None
    write_json(cache, row)
    print(f"{name:9s} {'KD' if kd else 'CE'}: {100 * row['accuracy']:.2f}% "
          f"(teacher {100 * row['teacher_accuracy']:.2f}%, pruned {100 * row['pruned_accuracy']:.2f}%)")
    return row


def int8_entry(args, ds, row: dict, small: SyntheticSet, source: str) -> dict:
    """int8 PTQ of one recovered model calibrated on ``source`` (its small set, 1,024 random or the first training
    images), cached beside the row."""
    run_dir = Path(row["run_dir"])
    cache = run_dir / f"int8-{source}.json"
    key = {"row": row["key"], "calibration": source, "calibration_size": 1024, "seed": args.seed}
    entry = cached(cache, key)
    if entry is not None:
        return entry
    model, _ = load_model(run_dir / row.get("model_file", "distill.safetensors"))  # 0.1.0 rows: distill
    calib = calibration_images(source, small_set_tensors(small, ds)[0], ds, size=1024, seed=args.seed)
    ledger = CostLedger()
    try:
        q = quantize_int8(model, calib, ledger=ledger)
    except QuantizationUnavailable as err:
        return {"row": row["row"], "calibration": source, "status": "unavailable", "reason": str(err)}
    test = (ds.normalize(ds.test_x), ds.test_y)
    path = save_model(q, run_dir / f"int8-{source}.safetensors")
    entry = {"key": key, "row": row["row"], "calibration": source, "status": "done",
             "calibration_images": len(calib), "report": model_report(q, test[0][:1], test=test, saved_path=path),
             "seconds": ledger["quantize"].seconds, "float_accuracy": row["accuracy"]}
    write_json(cache, entry)
    return entry


def stage_config(args, kind: str, name: str, teacher_info: dict) -> CompressConfig:
    if kind == "multi-kd":
        return recovery_config(args, name, prune=args.prune, structured=True, kd=True,
                               teachers=[teacher_info["source"], *args.extra_teachers],
                               teacher_weights=args.teacher_weights)
    if kind == "born-again":
        return recovery_config(args, name, born_again=args.born_again, born_again_ensemble=args.born_again >= 2)
    return recovery_config(args, name, prune=args.prune, structured=True, binarize=args.binarize_mode)


def measured(report: dict) -> dict:
    return {"accuracy": report["test_accuracy"], "parameters": report["parameters"],
            "macs_per_image": report["macs_per_image"], "latency_ms": report["latency"]["median_ms"],
            "size_bytes": report["size_bytes"]}


def run_stage(args, ds, teacher, teacher_info, kind: str, small: SyntheticSet, work: Path) -> list[dict]:
    """The rows of one ``--stages`` entry on the ``--stage-data`` small set (born-again: one per generation and the
    ensemble)."""
    name = args.stage_data
    config = stage_config(args, kind, name, teacher_info)
    out_dir = work / f"stage-{kind}-{name}"
    cache = out_dir / "rows.json"
    num_images = len(small_set_tensors(small, ds)[0])
    extra = [model_digest(load_model(p)[0]) for p in args.extra_teachers] if kind == "multi-kd" else []
    key = {"config": config.to_dict(), "data": data_key(small, num_images), "teacher": teacher_key(teacher_info),
           "extra_teachers_sha256": extra}
    doc = cached(cache, key)
    if doc is not None:
        return doc["rows"]
    result = compress(teacher, small, ds, config, out=out_dir, overwrite=True, device="cpu")
    data_s, data_flops = selection_cost(small)
    base = {"kind": kind, "data": name, "num_images": num_images, "epochs": config.epochs, "run_dir": str(out_dir),
            "teacher_accuracy": result.teacher_report["test_accuracy"], "data_seconds": data_s,
            "data_flops": data_flops}
    rows = []
    for stage in result.stages:
        if stage.stage == "prune":
            continue
        seconds, flops = phase_sum(stage.cost.to_dict())
        row = {**base, "row": kind if kind != "binarize" else f"binarize-{args.binarize_mode}", "stage": stage.stage,
               **measured(stage.report), "recovery_seconds": seconds, "recovery_flops": flops,
               "model_file": stage.model_file}
        if kind == "multi-kd":
            row["teachers"] = result.record.extra["teachers"]
        if kind == "born-again":
            row.update(row=stage.stage, generation=stage.details["generation"], distilled_from=stage.details["teacher"])
        if kind == "binarize":
            row.update(binary_size=stage.details["size"], binarized_layers=stage.details["layers"],
                       full_precision_layers=stage.details["full_precision_layers"])
        rows.append(row)
    if kind == "born-again" and args.born_again >= 2:
        gens = rows[-args.born_again:]
        flops = [g["recovery_flops"] for g in gens]
        rows.append({**base, "row": "born-again-ensemble", "stage": "ensemble", "generation": None,
                     "accuracy": result.stages[-1].details["ensemble"]["test_accuracy"],
                     "parameters": sum(g["parameters"] for g in gens),
                     "macs_per_image": sum(g["macs_per_image"] for g in gens), "latency_ms": None,
                     "size_bytes": sum(g["size_bytes"] for g in gens),
                     "recovery_seconds": sum(g["recovery_seconds"] for g in gens),
                     "recovery_flops": None if None in flops else sum(flops)})
    write_json(cache, {"key": key, "rows": rows})
    for r in rows:
        print(f"{r['row']:20s} on {name}: {100 * r['accuracy']:.2f}%")
    return rows


def ratio_entry(sel: float | None, c_full: float | None, c_sub: float | None, sel_marginal: float | None) -> dict:
    """The project's cost ratio R = (C_full - C_sub) / C_sel in one unit (None where a number is unknown)."""
    if sel is None or c_full is None or c_sub is None:
        return {"c_sel": sel, "c_full": c_full, "c_sub": c_sub, "savings": None, "ratio": None, "worth_it": None}
    saved = c_full - c_sub
    out = {"c_sel": sel, "c_sel_marginal": sel_marginal, "c_full": c_full, "c_sub": c_sub, "savings": saved,
           "ratio": None, "ratio_marginal": None, "worth_it": None}
    if sel > 0:
        out.update(ratio=cost_ratio(saved, sel), worth_it=cost_ratio(saved, sel) > 1)
    if sel_marginal:
        out["ratio_marginal"] = cost_ratio(saved, sel_marginal)
    return out


def cost_ratios(rows: list[dict], sources: dict[str, SyntheticSet]) -> None:
    """Adds ``cost_ratio`` to every small-set row: status ``ok``, ``free`` (nothing to pay back: random) or
    ``no full row`` (the full row of the same recovery did not run)."""
    full = {r["kd"]: r for r in rows if r["row"] == "full"}
    for r in rows:
        if r["row"] == "full":
            continue
        sel_s, sel_f = r["data_seconds"], r["data_flops"]  # as measured when the row ran (a selector's timing varies)
        all_s, all_f = selection_cost(sources[r["row"]])
        marg_s, marg_f = selection_cost(sources[r["row"]], one_off=False)
        marg_s = sel_s - (all_s - marg_s)  # without the one-off phases (e.g. a pretrained pool): the marginal cost
        marg_f = None if sel_f is None or all_f is None or marg_f is None else sel_f - (all_f - marg_f)
        ref = full.get(r["kd"])
        status = "no full row" if ref is None else ("free" if sel_s == 0 else "ok")
        r["cost_ratio"] = {
            "status": status, "reference": f"full-{'kd' if r['kd'] else 'ce'}" if ref else None,
            "seconds": ratio_entry(sel_s, ref and ref["recovery_seconds"], r["recovery_seconds"], marg_s),
            "flops": ratio_entry(sel_f, ref and ref["recovery_flops"], r["recovery_flops"], marg_f),
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ds = load_dataset(args.dataset)
    if model_name(args) == "resnet18-in" and min(ds.image_size) < 16 and not args.teacher:
        raise SystemExit(f"resnet18-in shrinks {ds.name}'s {ds.image_size} images to 1x1 maps in its last stage, where "
                         f"instance norm zeroes every activation: use --model resnet18-bn")
    tag = f"{ds.name}_{model_name(args)}" + ("_quick" if args.quick else "")
    work = Path(args.work_dir or f"runs/compress_table/{tag}")
    out_stem = Path(args.out) if args.out else RESULTS / f"compress_{tag}"
    synsets = {name: named_synset(args, ds, name) for name in args.synsets if name in args.row_names}
    teacher, teacher_info = get_teacher(args, ds, work)

    sources: dict[str, SyntheticSet] = {}
    skipped: list[str] = []
    for name in args.row_names:
        if name == "full":
            sources[name] = resolve_small_set("full", ds)
        elif name == "random":
            sources[name] = resolve_small_set(f"random:{args.ipc}:{args.seed}", ds)
        elif name == args.selector:
            got = selected_set(args, ds, teacher)
            if isinstance(got, str):
                skipped.append(f"(c) {name}: {got}")
            else:
                sources[name] = got
        else:
            sources[name] = synsets[name]
    if "distilled" in args.rows and not args.synsets:
        skipped.append("(d) distilled: no --synset given")
    if args.stages and args.stage_data not in sources:
        raise ConfigError(f"--stage-data {args.stage_data}: that row has no small set here ({'; '.join(skipped)})")

    rows = []
    for name, small in sources.items():
        for kd in (True,) if args.no_ce else (True, False):
            rows.append(run_row(args, ds, teacher, teacher_info, name, small, kd, work))
    cost_ratios(rows, sources)

    stage_rows = []
    for kind in args.stages:
        stage_rows += run_stage(args, ds, teacher, teacher_info, kind, sources[args.stage_data], work)

    int8, quant, quant_of = [], [], None
    for row in rows:
        if row["kd"] and row["row"] != "full":
            int8.append(int8_entry(args, ds, row, sources[row["row"]], "small"))
            if row["row"] == "random":
                quant_of = "random"
                quant = [int8[-1], *(int8_entry(args, ds, row, sources["random"], s)
                                     for s in ("train-random", "train-first"))]

    doc = {
        "benchmark": "compress_table", "dataset": ds.name, "model": model_name(args),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/compress_table.py",
                                                     *(sys.argv[1:] if argv is None else argv)]),
        "settings": {k: v for k, v in vars(args).items()}, "teacher": teacher_info,
        "full_train_size": len(ds.train_y), "test_size": len(ds.test_y), "host_cpus": os.cpu_count(), "rows": rows,
        "stage_rows": stage_rows, "skipped": skipped, "int8": int8, "quantization": quant,
        "quantization_of": quant_of, "quant_support": QUANT_SUPPORT, "versions": package_versions(),
    }
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(out_stem.with_suffix(".json"), doc)
    atomic_write(out_stem.with_suffix(".md"), markdown(doc))
    print(markdown(doc))
    print(f"wrote {out_stem.with_suffix('.json')} and {out_stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    run_script(main)
