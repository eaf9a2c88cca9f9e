"""Recovering a 50%-channel-pruned model with small data: full set vs random vs selected vs distilled.

A teacher (ConvNet-3, or ResNet-18 with ``--resnet``) is trained on the full training split; it is pruned once
(structured, magnitude importance: data-free, so every row starts from the same pruned model), then recovered by
fine-tuning on each data source, with KD from the unpruned teacher and without (plain CE):

  (a) ``full``      the whole training split (``--full-epochs``),
  (b) ``random``    ``--ipc`` random real images per class,
  (c) ``selected``  ``--ipc`` per class chosen by ``datacomp.selectors.select`` (``--selector``, default herding on the
                    teacher's penultimate features; skipped with a note when the selectors package is absent),
  (d) ``distilled`` a SyntheticSet given with ``--synset`` (skipped when none is given).

Each row reports test accuracy, how much of the pruning drop it recovered, and its cost (producing the data +
recovery training, seconds and FLOPs from the cost ledger). The KD-recovered random-subset model is then quantized
to int8 three times, calibrated on the small set, on the field's default (1,024 random training images; torchvision's
reference draws them from a shuffled loader) and on the literal first 1,024 training images (one class on
class-sorted copies such as the shared CIFAR-10).

Every row is cached as JSON under ``--work-dir`` (re-running skips finished rows with the same settings), so long
runs can be split: ``--rows random selected`` runs only those. Results: ``benchmarks/results/compress_<dataset>_
<model>.{json,md}`` with the exact command.

Examples::

    python benchmarks/compress_table.py --dataset digits                      # fast, CPU
    DATACOMP_SHARED_DATA=/work/shared/data python benchmarks/compress_table.py --dataset cifar10 \\
        --teacher-epochs 30 --full-epochs 5
    python benchmarks/compress_table.py --dataset digits --quick              # smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import os
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
from datacomp.compression.config import AUGMENT_OPTIONS, LEGACY_AUGMENT
from datacomp.compression.quantize import QUANT_SUPPORT, QuantizationUnavailable, calibration_images, quantize_int8
from datacomp.compression.smallset import small_set_info, small_set_ledger, small_set_tensors
from datacomp.cost import CostLedger
from datacomp.data import load_dataset
from datacomp.io import atomic_write, package_versions, write_json
from datacomp.synset import SyntheticSet, base_metadata

ROWS = ("full", "random", "selected", "distilled")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", help="digits (fast) or cifar10 (shared offline copy)")
    p.add_argument("--resnet", action="store_true", help="ResNet-18 (IN) teacher instead of ConvNet-3 (IN)")
    p.add_argument("--model", default=None, help="any registered teacher model (overrides --resnet)")
    p.add_argument("--teacher", default=None, help="reuse a teacher from `datacomp train` instead of training one")
    p.add_argument("--teacher-epochs", type=int, default=100, help="epochs of teacher training (quick protocol)")
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
    p.add_argument("--selector", default="herding", help="datacomp.selectors method on teacher features")
    p.add_argument("--synset", default=None, help="distilled SyntheticSet of the same size for row (d)")
    p.add_argument("--synset-command", default=None, help="the command that produced --synset (recorded)")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--no-ce", action="store_true", help="skip the recovery-without-KD rows")
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
    return args


def model_name(args: argparse.Namespace) -> str:
    return args.model or ("resnet18-in" if args.resnet else "convnet-3-in")


def get_teacher(args, ds, work: Path) -> tuple[torch.nn.Module, dict]:
    if args.teacher:
        teacher, spec = load_model(args.teacher)
        return teacher, {"source": args.teacher, "test_accuracy": spec["metadata"].get("test_accuracy"),
                         "cost": spec["metadata"].get("cost")}
    path = work / "teacher" / "model.safetensors"
    tag = {"model": model_name(args), "epochs": args.teacher_epochs, "seed": args.seed, "dataset": ds.name}
    if path.is_file():
        teacher, spec = load_model(path)
        if spec["metadata"].get("tag") == tag:
            print(f"reusing teacher {path}")
            return teacher, {"source": str(path), "test_accuracy": spec["metadata"]["test_accuracy"],
                             "cost": spec["metadata"]["cost"]}
    trained = train_teacher(ds, TrainConfig(model=model_name(args), protocol="quick",
                                            overrides={"epochs": args.teacher_epochs}, seed=args.seed), device="cpu")
    cost = trained.record.cost
    save_model(trained.model, path, dataset=ds.info(), metadata={
        "tag": tag, "test_accuracy": trained.accuracy, "cost": cost, "protocol": trained.evaluation.protocol.to_dict()})
    print(f"teacher {model_name(args)}: {100 * trained.accuracy:.2f}% after {args.teacher_epochs} epochs")
    return trained.model, {"source": str(path), "test_accuracy": trained.accuracy, "cost": cost}


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


def phase_sum(cost: dict, names: set[str] | None = None, include: bool = True) -> tuple[float, float | None]:
    seconds, flops, known = 0.0, 0.0, True
    for ph in cost["phases"]:
        if names is not None and ((ph["name"] in names) != include):
            continue
        seconds += ph["seconds"]
        if ph.get("flops") is None:
            known = False
        else:
            flops += ph["flops"]
    return seconds, (flops if known else None)


def run_row(args, ds, teacher, teacher_info, name: str, small: SyntheticSet, kd: bool, work: Path) -> dict:
    epochs = args.full_epochs if name == "full" else args.small_epochs
    config = CompressConfig(prune=args.prune, structured=True, kd=kd, finetune=not kd, epochs=epochs, lr=args.lr,
                            temperature=args.temperature, alpha=args.alpha, augment=args.augment, seed=args.seed)
    out_dir = work / f"{name}-{'kd' if kd else 'ce'}"
    cache = out_dir / "row.json"
    num_images = len(small_set_tensors(small, ds)[0])
    data_info = small_set_info(small, num_images)
    key = {"config": config.to_dict(), "data": data_info, "teacher": teacher_info["source"]}
    if cache.is_file():
        row = json.loads(cache.read_text())
        if row.get("key") == key:
            print(f"reusing {cache}")
            return row
    start = time.perf_counter()
    result = compress(teacher, small, ds, config, out=out_dir, overwrite=True, device="cpu")
    pruned, recovered = result.stages
    data_ledger = small_set_ledger(small)
    data_s, data_flops = phase_sum(data_ledger.to_dict()) if data_ledger is not None else (0.0, 0.0)
    rec_s, rec_flops = phase_sum(recovered.cost.to_dict())
    row = {
        "key": key, "row": name, "kd": kd, "num_images": num_images, "epochs": epochs,
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


def quantization_comparison(args, ds, row: dict, small: SyntheticSet) -> list[dict]:
    """int8 of one recovered model, calibrated on its small set vs 1,024 random / first training images."""
    model, _ = load_model(Path(row["run_dir"]) / row.get("model_file", "distill.safetensors"))  # 0.1.0 rows: distill
    small_x = small_set_tensors(small, ds)[0]
    test = (ds.normalize(ds.test_x), ds.test_y)
    out = []
    for source in ("small", "train-random", "train-first"):
        calib = calibration_images(source, small_x, ds, size=1024, seed=args.seed)
        ledger = CostLedger()
        try:
            q = quantize_int8(model, calib, ledger=ledger)
        except QuantizationUnavailable as err:
            out.append({"calibration": source, "status": "unavailable", "reason": str(err)})
            continue
        path = save_model(q, Path(row["run_dir"]) / f"int8-{source}.safetensors")
        report = model_report(q, test[0][:1], test=test, saved_path=path)
        out.append({"calibration": source, "status": "done", "calibration_images": len(calib), "report": report,
                    "seconds": ledger["quantize"].seconds})
    return out


def fmt_flops(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def markdown(doc: dict) -> str:
    settings = doc["settings"]
    t = doc["rows"][0]["teacher_report"] if doc["rows"] else None
    p = doc["rows"][0]["pruned_report"] if doc["rows"] else None
    lines = [f"# Pruned-model recovery with small data: {doc['dataset']}, {doc['model']}", "",
             f"Command: `{doc['command']}`", "",
             (f"Teacher loaded from `{doc['settings']['teacher']}`" if doc["settings"].get("teacher") else
              f"Teacher trained {doc['settings']['teacher_epochs']} epochs (quick protocol)") +
             f" on the full training split ({doc['full_train_size']} images). Structured pruning removes "
             f"{100 * settings['prune']:.0f}% of the channels of every layer (magnitude importance, same pruned model "
             f"for every row); recovery: SGD lr {settings['lr']} cosine, KD T={settings['temperature']} "
             f"alpha={settings['alpha']} "
             f"(alpha on T^2*KL, 1-alpha on CE), augmentation {doc['settings']['augment']}. Test split: "
             f"{doc['test_size']} real images. Latency: median of 30 CPU forward passes, batch 1, 1 thread, on a host "
             f"with {doc['host_cpus']} CPUs (on a shared machine timings are noisy: compare only large gaps).", ""]
    if t and p:
        lines += ["| model | params | MACs/image | latency ms | size KiB | test acc % |", "|---|---|---|---|---|---|"]
        for label, r in (("teacher", t), ("pruned, before recovery", p)):
            lines.append(f"| {label} | {r['parameters']:,} | {r['macs_per_image']:,} | {r['latency']['median_ms']:.3f} "
                         f"| {r['size_bytes'] / 1024:.1f} | {100 * r['test_accuracy']:.2f} |")
        lines.append("")
    lines += ["| data | images | recovery | epochs | test acc % | vs teacher (pts) | recovered % of drop | "
              "data cost s | recovery s | recovery FLOPs | total s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        frac = "n/a" if r["recovered_fraction"] is None else f"{100 * r['recovered_fraction']:.1f}"
        lines.append(
            f"| {r['row']} | {r['num_images']} | {'KD' if r['kd'] else 'CE'} | {r['epochs']} | "
            f"{100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - r['teacher_accuracy']):+.2f} | {frac} | "
            f"{r['data_seconds']:.1f} | {r['recovery_seconds']:.1f} | {fmt_flops(r['recovery_flops'])} | "
            f"{r['data_seconds'] + r['recovery_seconds']:.1f} |")
    for note in doc["skipped"]:
        lines.append(f"\nSkipped: {note}")
    if doc["settings"].get("synset"):
        made = doc["settings"].get("synset_command")
        lines.append(f"\nDistilled set: `{doc['settings']['synset']}`" + (f", made with `{made}`" if made else ""))
    lines.append("\nRows are cached per setting under the work directory; a row computed by an earlier invocation "
                 "with identical settings is reused (its cache key holds the full config).")
    if doc["quantization"]:
        lines += ["", f"int8 post-training quantization of the KD-recovered '{doc['quantization_of']}' model "
                      f"({QUANT_SUPPORT.get('api')}, backend {QUANT_SUPPORT.get('backend')}):", "",
                  "| calibration | images | test acc % | size KiB | latency ms | seconds |",
                  "|---|---|---|---|---|---|"]
        for q in doc["quantization"]:
            if q["status"] != "done":
                lines.append(f"| {q['calibration']} | - | unavailable: {q['reason']} | | | |")
                continue
            r = q["report"]
            lines.append(f"| {q['calibration']} | {q['calibration_images']} | {100 * r['test_accuracy']:.2f} | "
                         f"{r['size_bytes'] / 1024:.1f} | {r['latency']['median_ms']:.3f} | {q['seconds']:.1f} |")
    lines += ["", "Costs come from the cost ledger (FLOPs: FlopCounterMode, 1 multiply-add = 2 FLOPs, recovery FLOPs "
                  "include the teacher's forward passes under KD). 'data cost' is what producing the small set cost "
                  "(feature extraction + selection; 0 for random; the distilled set's own ledger when it has one).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ds = load_dataset(args.dataset)
    if model_name(args) == "resnet18-in" and min(ds.image_size) < 16 and not args.teacher:
        raise SystemExit(f"resnet18-in shrinks {ds.name}'s {ds.image_size} images to 1x1 maps in its last stage, where "
                         f"instance norm zeroes every activation: use --model resnet18-bn")
    tag = f"{ds.name}_{model_name(args)}" + ("_quick" if args.quick else "")
    work = Path(args.work_dir or f"runs/compress_table/{tag}")
    out_stem = Path(args.out) if args.out else RESULTS / f"compress_{tag}"
    teacher, teacher_info = get_teacher(args, ds, work)

    sources: dict[str, SyntheticSet] = {}
    skipped: list[str] = []
    for name in args.rows:
        if name == "full":
            sources[name] = resolve_small_set("full", ds)
        elif name == "random":
            sources[name] = resolve_small_set(f"random:{args.ipc}:{args.seed}", ds)
        elif name == "selected":
            got = selected_set(args, ds, teacher)
            if isinstance(got, str):
                skipped.append(f"(c) selected: {got}")
            else:
                sources[name] = got
        elif name == "distilled":
            if args.synset is None:
                skipped.append("(d) distilled: no --synset given")
            else:
                sources[name] = resolve_small_set(args.synset, ds)
                got = len(small_set_tensors(sources[name], ds)[0])
                if got != args.ipc * ds.num_classes:
                    print(f"note: distilled set has {got} images, not {args.ipc * ds.num_classes}")

    rows = []
    for name, small in sources.items():
        for kd in (True,) if args.no_ce else (True, False):
            rows.append(run_row(args, ds, teacher, teacher_info, name, small, kd, work))

    quant, quant_of = [], None
    base = next((r for r in rows if r["row"] == "random" and r["kd"]), None)
    if base is not None:
        quant, quant_of = quantization_comparison(args, ds, base, sources["random"]), "random"

    doc = {
        "benchmark": "compress_table", "dataset": ds.name, "model": model_name(args),
        "command": " ".join(shlex.quote(a) for a in ["python", "benchmarks/compress_table.py",
                                                     *(sys.argv[1:] if argv is None else argv)]),
        "settings": {k: v for k, v in vars(args).items()}, "teacher": teacher_info,
        "full_train_size": len(ds.train_y), "test_size": len(ds.test_y), "host_cpus": os.cpu_count(), "rows": rows, "skipped": skipped,
        "quantization": quant, "quantization_of": quant_of, "quant_support": QUANT_SUPPORT,
        "versions": package_versions(),
    }
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(out_stem.with_suffix(".json"), doc)
    atomic_write(out_stem.with_suffix(".md"), markdown(doc))
    print(markdown(doc))
    print(f"wrote {out_stem.with_suffix('.json')} and {out_stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
