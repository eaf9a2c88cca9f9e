"""``datacomp eval SET``: train fresh models on a small set and test them on the real test split, next to the set's
random real baseline (:mod:`datacomp.evaluation.baselines`)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from datacomp.cost import CostLedger
from datacomp.data import ImageDataset, load_dataset
from datacomp.errors import ConfigError
from datacomp.evaluation import (
    EvalResult, EvalSettings, Protocol, baseline_counts, evaluate_random_baseline, evaluate_synset, get_protocol,
)
from datacomp.io import RunDir, write_json
from datacomp.models import create_model
from datacomp.record import RunRecord
from datacomp.runtime import resolve_device
from datacomp.synset import SyntheticSet

from .options import add_dataset, add_device, add_out, add_quiet, add_seed, print_table, protocol_help
from .outputs import check_output_file

__all__ = ["add_parser"]


def _table(protocol: Protocol, results: dict[str, EvalResult],
           baselines: dict[str, EvalResult]) -> None:
    rows = []
    for model, res in results.items():
        row = [model, protocol.name, len(res.accuracies), f"{100 * res.mean:.2f} +- {100 * res.std:.2f}",
               " ".join(f"{100 * a:.2f}" for a in res.accuracies)]
        if model in baselines:
            b = baselines[model]
            row += [f"{100 * b.mean:.2f} +- {100 * b.std:.2f}", f"{100 * (res.mean - b.mean):+.2f}"]
        rows.append(row)
    header = ["model", "protocol", "runs", "accuracy %", "per run %"]
    if baselines:
        header += ["random same stored ipc %", "IOR (pts)"]
    print_table(rows, header)
    print(f"protocol '{protocol.name}': {protocol.source}")


def _record(args: argparse.Namespace, synset: SyntheticSet, ds: ImageDataset, doc: dict,
            results: dict[str, EvalResult], baselines: dict[str, EvalResult]) -> RunRecord:
    meta = synset.metadata
    first = next(iter(results))
    seed = meta.get("seed")
    return RunRecord(
        kind="eval", method=meta.get("method"), dataset=ds.name, seed=seed if isinstance(seed, int) else None,
        config=meta.get("config", {}) if isinstance(meta.get("config"), dict) else {},
        cost=CostLedger.from_dict(meta["cost"]).to_dict() if "cost" in meta else CostLedger().to_dict(),
        num_items=len(synset), ipc=meta.get("ipc") if isinstance(meta.get("ipc"), int) else None,
        fraction=meta.get("fraction"), full_train_size=len(ds.train_y), eval=results[first].to_dict(),
        baseline=baselines[first].to_dict() if first in baselines else None,
        output_sha256=synset.content_digest(),
        extra={"evaluations": doc["results"], "synset": str(args.path), "eval_seed": args.seed},
    )


def run(args: argparse.Namespace) -> int:
    # everything that can be wrong is checked before the first model trains
    device = resolve_device(args.device)
    if args.json:
        check_output_file(args.json, "--json")
    if args.runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {args.runs}")
    protocol = get_protocol(args.protocol, epochs=args.epochs)
    synset = SyntheticSet.load(args.path)
    name = args.dataset or synset.metadata.get("dataset")
    if not name:
        raise ConfigError("the set has no dataset in its metadata; pass --dataset NAME")
    ds = load_dataset(name, root=args.data_root, download=args.download)
    for model in args.model:  # unknown names, or images too small for the architecture
        create_model(model, ds.in_channels, ds.num_classes, ds.image_size)
    run_dir = RunDir(args.out, overwrite=args.overwrite) if args.out else contextlib.nullcontext()
    with run_dir:
        kwargs = dict(protocol=protocol, runs=args.runs, settings=EvalSettings(args.seed, device, not args.quiet))
        results, baselines = {}, {}
        for model in args.model:
            results[model] = evaluate_synset(synset, ds, model=model, **kwargs)
            if args.baseline:
                baselines[model] = evaluate_random_baseline(ds, baseline_counts(synset), model=model, **kwargs)
        print(f"{args.path}: {len(synset)} images ({synset.metadata.get('method')}) evaluated on {ds.name} test split "
              f"({len(ds.test_y)} images)")
        _table(protocol, results, baselines)
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
            path = _record(args, synset, ds, doc, results, baselines).write(args.out)
            print(f"wrote {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="train fresh models on a small set and test them on the real test split")
    p.add_argument("path", help="a SyntheticSet .safetensors file")
    add_dataset(p, required=False)
    p.add_argument("--model", nargs="+", default=["convnet-3-in"], help="one or more registered models")
    p.add_argument("--protocol", default="quick", help=protocol_help())
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--runs", type=int, default=3)
    add_seed(p)
    add_device(p)
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate the random real baseline: the same number of stored images per class "
                        "(DD-Ranking's same IPC), same model, protocol and seeds; gives IOR")
    p.add_argument("--json", default=None, help="write per-run accuracies, mean and std to this FILE")
    add_out(p, help="run folder to write run.json into")
    add_quiet(p)
    p.set_defaults(func=run)
    return p
