"""``datacomp distill``: distil a dataset with NCFM or DM (or draw the random real baseline) and evaluate it.

Examples::

    datacomp distill                                   # NCFM, digits, IPC 10, cpu-quick preset
    datacomp distill --method dm --dataset cifar10 --ipc 10 --out runs/dm-c10
    datacomp distill --dataset cifar10 --ipc 10 --preset paper --device cuda --out runs/ncfm-c10
    datacomp distill --set lr_img=0.01 sampler=gaussian --iterations 200
    torchrun --nproc_per_node=4 -m datacomp distill --dataset cifar100 --ipc 10 --preset paper --out runs/c100

SIGINT / SIGTERM write a checkpoint and print the command that continues the run (``--resume``); outside the
iterations (pool training, evaluation) they stop at once, keeping what is on disk, and print the same command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import threading
from collections.abc import Iterator
from typing import Any

from datacomp.distillers import DISTILLERS, DistillOptions, DistillResult, distill
from datacomp.errors import RunAborted

from .options import add_device, add_out, add_quiet, add_seed, add_set, parse_set, protocol_help

__all__ = ["add_parser", "configure_parser", "run_command", "run_demo"]

# Flags that map one-to-one onto config fields (value None = keep the preset's value); --set reaches every field.
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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``distill`` on an argparse sub-parser collection and return its parser."""
    parser = subparsers.add_parser(
        "distill", help="distil a dataset (NCFM, DM) or draw the random baseline, then evaluate it",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure_parser(parser)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``distill`` flags to ``parser``."""
    methods = "; ".join(f"{e.name}: {e.description}" for e in DISTILLERS.entries())
    parser.add_argument("--method", default="ncfm", help=f"distillation method (default ncfm). {methods}")
    parser.add_argument("--dataset", default="digits", help="dataset name (default: digits, offline)")
    parser.add_argument("--data-root", default=None, help="folder with dataset files (default $DATACOMP_DATA)")
    parser.add_argument("--download", action="store_true", help="allow torchvision to download missing dataset files")
    parser.add_argument("--ipc", type=int, default=10, help="stored images per class (default 10)")
    parser.add_argument("--preset", default="cpu-quick", help="paper, official or cpu-quick (default)")
    add_out(parser, help="run folder (default runs/METHOD-DATASET-ipcK)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument("--model", default=None, help="matching and evaluation model (default: paper's ConvNet)")
    add_seed(parser)
    add_device(parser)
    add_quiet(parser)
    parser.add_argument("--checkpoint-every", type=int, default=20, help="iterations between checkpoints (default 20)")
    parser.add_argument("--snapshot-at", type=int, nargs="+", default=[], metavar="N",
                        help="also keep the synthetic set after these iterations in snapshots/itN/ (for curves)")
    parser.add_argument("--eval-protocol", default="quick", help="evaluation protocol, a " + protocol_help())
    parser.add_argument("--eval-runs", type=int, default=3, help="models trained in the evaluation (0 = skip)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate random real images with the same stored images per class (default on)")
    parser.add_argument("--pool-dir", default=None, help="feature-pool cache (default $DATACOMP_CACHE/pool)")
    for field_name, (flag, kind, text) in _CONFIG_FLAGS.items():
        parser.add_argument(flag, dest=field_name, type=kind, default=None, help=text)
    add_set(parser, "any config field of the method (e.g. --set lr_img=10 syn_bf16=true)")
    parser.set_defaults(func=run_command)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_set(args.set)
    overrides.update({k: getattr(args, k) for k in _CONFIG_FLAGS if getattr(args, k) is not None})
    return overrides


def default_out(method: str, dataset: str, ipc: int) -> str:
    return f"runs/{method}-{dataset.replace(':', '_').replace('/', '_')}-ipc{ipc}"


def resume_command(args: argparse.Namespace, out: str, overrides: dict[str, Any]) -> str:
    """The command that continues this run (the resolved arguments, ``--resume`` instead of ``--overwrite``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    head = ["torchrun", f"--nproc_per_node={world}", "-m", "datacomp"] if world > 1 else ["datacomp"]
    argv = ["distill", "--method", args.method, "--dataset", args.dataset, "--ipc", str(args.ipc), "--preset",
            args.preset, "--out", out, "--seed", str(args.seed), "--device", args.device, "--checkpoint-every",
            str(args.checkpoint_every), "--eval-protocol", args.eval_protocol, "--eval-runs", str(args.eval_runs)]
    for flag, value in (("--data-root", args.data_root), ("--model", args.model), ("--pool-dir", args.pool_dir)):
        if value is not None:
            argv += [flag, str(value)]
    if args.snapshot_at:
        argv += ["--snapshot-at", *(str(n) for n in args.snapshot_at)]
    if not args.baseline:
        argv.append("--no-baseline")
    if args.quiet:
        argv.append("--quiet")
    if overrides:
        argv += ["--set", *(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items())]
    return shlex.join([*head, *argv, "--resume"])


def run_command(args: argparse.Namespace) -> int:
    """``datacomp distill`` from parsed arguments: parse -> config -> :func:`datacomp.distillers.distill`."""
    overrides = _overrides(args)
    out = args.out or default_out(args.method, args.dataset, args.ipc)
    options = DistillOptions(
        out=out, overwrite=args.overwrite, resume=args.resume, device=args.device, quiet=args.quiet, model=args.model,
        checkpoint_every=args.checkpoint_every, eval_protocol=args.eval_protocol, eval_runs=args.eval_runs,
        baseline=args.baseline, data_root=args.data_root, download=args.download, pool_dir=args.pool_dir,
        snapshot_at=tuple(args.snapshot_at),
        resume_hint=resume_command(args, out, overrides),
    )
    try:
        with _sigterm_as_interrupt():
            result = distill(args.dataset, args.method, args.ipc, preset=args.preset, overrides=overrides,
                             seed=args.seed, options=options)
    except KeyboardInterrupt as stop:  # outside the iterations (pool training, evaluation): nothing to checkpoint
        name = "SIGTERM" if isinstance(stop, _Terminated) else "SIGINT"
        err = RunAborted(f"{name} received outside the iterations (pool training or evaluation); what the run "
                         "folder and the pool cache hold is kept (finished pool networks are reused). Continue with: "
                         f"{options.resume_hint}")
        err.exit_code = 143 if isinstance(stop, _Terminated) else 130
        raise err from None
    if result is not None:
        _print_summary(result)
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside the iterations, raised like Ctrl-C so that the same clean stop applies."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM stops it as SIGINT would (the iteration loop installs its own handlers, which
    checkpoint first); the previous handler comes back afterwards. Main thread only (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_summary(result: DistillResult) -> None:
    lines = [f"wrote {result.out}/ (synset.safetensors, grid.png, loss.png, log.json, run.json); "
             f"output_sha256 {result.record.output_sha256}"]
    for res, label in ((result.eval, result.record.method), (result.baseline, "random real")):
        if res is not None:
            lines.append(f"  {label:>12}: {100 * res.mean:.2f} +- {100 * res.std:.2f} % ({len(res.accuracies)} runs, "
                         f"protocol {res.protocol.name}, model {res.model})")
    print("\n".join(lines))


def run_demo(args: argparse.Namespace) -> int:
    """``datacomp demo``: the README's main job, NCFM on digits (IPC 10, cpu-quick), evaluated against random real
    images of the same size; ``args`` needs ``out`` and ``seed``. An earlier demo in ``out`` is replaced."""
    parser = configure_parser(argparse.ArgumentParser(prog="datacomp demo"))
    return run_command(parser.parse_args(["--out", str(args.out), "--seed", str(args.seed), "--overwrite"]))
