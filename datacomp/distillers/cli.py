"""``datacomp distill``: distil a dataset with NCFM or DM (or draw the random real baseline) and evaluate it.

Examples::

    datacomp distill                                   # NCFM, digits, IPC 10, cpu-quick preset
    datacomp distill --method dm --dataset cifar10 --ipc 10 --out runs/dm-c10
    datacomp distill --dataset cifar10 --ipc 10 --preset paper --device cuda --out runs/ncfm-c10
    torchrun --nproc_per_node=4 -m datacomp distill --dataset cifar100 --ipc 10 --preset paper --out runs/c100

Also runnable without the top-level CLI as ``python -m datacomp.distillers.cli`` (same flags).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli import protocol_help

__all__ = ["add_parser", "configure_parser", "run_command", "run_demo", "main"]

# Flags that map one-to-one onto config fields (value None = keep the preset's value).
_CONFIG_FLAGS = {
    "iterations": ("--iterations", int, "outer iterations (preset default otherwise)"),
    "sampler": ("--sampler", str, "NCFM frequency sampler: learned (paper's psi) or gaussian (released code)"),
    "num_freqs": ("--num-freqs", int, "NCFM frequencies per iteration"),
    "alpha": ("--alpha", float, "NCFM amplitude weight in [0, 1] (phase gets 1 - alpha)"),
    "real_batch": ("--real-batch", int, "real images per class per iteration"),
    "factor": ("--factor", int, "NCFM multi-formation factor (1 = off)"),
    "lr_img": ("--lr-img", float, "image learning rate"),
    "pool_size": ("--pool-size", int, "NCFM feature-extractor pool size"),
    "pool_epochs": ("--pool-epochs", int, "training epochs of each pool network"),
    "step_mode": ("--step-mode", str, "NCFM image steps: per-class (released code) or joint"),
}


def _parse_set(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (a config field), got {item!r}")
        key, value = item.split("=", 1)
        values[key.strip().replace("-", "_")] = value.strip()
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``distill`` on an argparse sub-parser collection and return its parser."""
    parser = subparsers.add_parser(
        "distill", help="distil a dataset (NCFM, DM) or draw the random baseline, then evaluate it",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``distill`` flags to ``parser``."""
    parser.add_argument("--method", default="ncfm", help="ncfm (default), dm or random")
    parser.add_argument("--dataset", default="digits", help="dataset name (default: digits, offline)")
    parser.add_argument("--ipc", type=int, default=10, help="stored images per class (default 10)")
    parser.add_argument("--preset", default="cpu-quick", help="paper, official or cpu-quick (default)")
    parser.add_argument("--out", default=None, help="run directory (default runs/METHOD-DATASET-ipcK)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run in --out first")
    parser.add_argument("--model", default=None, help="matching and evaluation model (default: paper's ConvNet)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    parser.add_argument("--data-root", default=None, help="folder with dataset files")
    parser.add_argument("--checkpoint-every", type=int, default=20, help="iterations between checkpoints (default 20)")
    parser.add_argument("--eval-protocol", default="quick", help="evaluation protocol, a " + protocol_help())
    parser.add_argument("--eval-runs", type=int, default=3, help="models trained in the evaluation (0 = skip)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate a random real subset of the same size (default on)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--pool-dir", default=None, help="feature-pool cache (default $DATACOMP_CACHE/pool)")
    for field_name, (flag, kind, text) in _CONFIG_FLAGS.items():
        parser.add_argument(flag, dest=field_name, type=kind, default=None, help=text)
    parser.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set calibration=false (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Execute ``datacomp distill`` from parsed arguments; returns the exit code."""
    from datacomp.distillers.runner import DistillationDiverged, run_distillation

    try:
        overrides = _parse_set(args.set_items)
        overrides.update({k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k) is not None})
        out = args.out or f"runs/{args.method}-{args.dataset.replace(':', '_').replace('/', '_')}-ipc{args.ipc}"
        record = run_distillation(
            method=args.method, dataset=args.dataset, ipc=args.ipc, preset=args.preset, out=out,
            overrides=overrides, model=args.model, seed=args.seed, data_root=args.data_root, resume=args.resume,
            overwrite=args.overwrite, checkpoint_every=args.checkpoint_every, eval_protocol=args.eval_protocol,
            eval_runs=args.eval_runs, baseline=args.baseline, device=args.device, pool_dir=args.pool_dir,
            progress=not args.no_progress,
        )
    except DistillationDiverged as err:
        print(f"datacomp distill: stopped: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as err:
        print(f"datacomp distill: error: {err}", file=sys.stderr)
        return 2
    if record is not None:
        _print_summary(record, out)
    return 0


def _print_summary(record: dict, out: str) -> None:
    lines = [f"wrote {out}/ (synset.safetensors, grid.png, loss.png, log.json, run.json)"]
    for key, label in (("eval", record["method"]), ("baseline", "random real")):
        result = record.get(key)
        if result:
            lines.append(f"  {label:>12}: {100 * result['mean']:.2f} +- {100 * result['std']:.2f} % "
                         f"({len(result['accuracies'])} runs, protocol {result['protocol']}, model {result['model']})")
    print("\n".join(lines))


def run_demo(args: argparse.Namespace) -> int:
    """``datacomp demo``: the README's main job, NCFM on digits (IPC 10, cpu-quick), evaluated against random real
    images of the same size; ``args`` needs ``out`` and ``seed``. An earlier demo in ``out`` is replaced."""
    parser = configure_parser(argparse.ArgumentParser(prog="datacomp demo"))
    demo_args = parser.parse_args(["--out", str(args.out), "--seed", str(args.seed), "--overwrite"])
    return run_command(demo_args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m datacomp.distillers.cli [flags]``."""
    parser = configure_parser(argparse.ArgumentParser(prog="datacomp distill", description=__doc__,
                                                      formatter_class=argparse.RawDescriptionHelpFormatter))
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
