"""Evaluation-training speed: images per second of the ``quick`` protocol's training against a plain restatement.

The ``quick`` protocol trains a fresh ConvNet-3 (instance norm) on the set for 300 epochs (SGD lr 0.01, momentum 0.9,
weight decay 5e-4, batch 256, no augmentation). Here a CIFAR-10-shaped set of ``--images`` random images trains for
``--epochs`` epochs, three ways, interleaved round by round in one process:

- ``reference``: the DC reference's ``evaluate_synset`` inner loop in plain PyTorch (whole 256-image batches, NCHW,
  one forward/backward per step, no datacomp code);
- ``datacomp quick``: :func:`datacomp.evaluation.train_classifier` with ``quick`` (float32, 32-image micro-batches);
- ``datacomp quick-bf16``: the same under bfloat16 autocast (only faster on CPUs with native bf16).

Reported: median seconds per epoch, training images per second, achieved GFLOP/s (forward + backward counted as
3x the forward's convolution FLOPs) against a measured float32 matmul peak, and each row's ratio to the reference.
A full ``quick`` evaluation is 300 epochs, so its time is about 300 x the epoch time.

Command (committed results)::

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --rounds 5 --clock cpu --out benchmarks/results/eval_speed_1thread

Validation at tiny sizes: ``python benchmarks/eval_speed.py --quick``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_loops import PlainConvNet, convnet_forward_flops, matmul_peak_gflops  # noqa: E402

from datacomp.cost import save_json  # noqa: E402
from datacomp.errors import run_script  # noqa: E402
from datacomp.evaluation import get_protocol  # noqa: E402
from datacomp.evaluation.classifier import TrainingRun, train_classifier  # noqa: E402
from datacomp.io import atomic_write  # noqa: E402
from datacomp.models import create_model  # noqa: E402


def reference_epochs(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int = 256) -> None:
    """``evaluate_synset``'s loop: SGD 0.01 / momentum 0.9 / wd 5e-4, shuffled 256-image batches, NCHW."""
    net = PlainConvNet(x.shape[1], 10, size=x.shape[2]).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def datacomp_epochs(x: torch.Tensor, y: torch.Tensor, epochs: int, protocol: str) -> None:
    net = create_model("convnet-3-in", x.shape[1], 10, (x.shape[2], x.shape[3]))
    train_classifier(net, x, y, get_protocol(protocol, epochs=epochs), run=TrainingRun())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--epochs", type=int, default=10, help="epochs per timed run")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU seconds (holds on a shared host with OMP_NUM_THREADS=1); wall: elapsed")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to validate the script")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.rounds, args.size = 64, 1, 2, 16
        args.out = args.out or str(Path(tempfile.mkdtemp()) / "eval_speed")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, args.size, args.size, generator=gen)
    y = torch.arange(args.images) % 10
    rows = {
        "reference (evaluate_synset loop, batch 256, NCHW)": lambda: reference_epochs(x, y, args.epochs),
        "datacomp quick (float32)": lambda: datacomp_epochs(x, y, args.epochs, "quick"),
        "datacomp quick-bf16": lambda: datacomp_epochs(x, y, args.epochs, "quick-bf16"),
    }
    for fn in rows.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    peak = matmul_peak_gflops(clock)
    flops_per_image = 3.0 * convnet_forward_flops(args.size)
    ref = statistics.median(next(iter(times.values())))
    results = []
    for name, ts in times.items():
        med = statistics.median(ts)
        images_per_s = args.images * args.epochs / med
        results.append({"name": name, "seconds": ts, "seconds_per_epoch": med / args.epochs,
                        "images_per_second": images_per_s, "gflops": images_per_s * flops_per_image / 1e9,
                        "fraction_of_peak": images_per_s * flops_per_image / 1e9 / peak,
                        "ratio_to_reference": med / ref})
    lines = [f"Evaluation training ({args.images} images of {args.size}x{args.size}, {args.epochs} epochs per run, "
             f"{torch.get_num_threads()} threads, {args.clock} seconds, median of {args.rounds} interleaved rounds; "
             f"fp32 matmul peak {peak:.0f} GFLOP/s)", "",
             "| row | s/epoch | images/s | GFLOP/s | of fp32 peak | time / reference | 300 epochs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['seconds_per_epoch']:.3f} | {r['images_per_second']:.0f} | "
                     f"{r['gflops']:.0f} | {100 * r['fraction_of_peak']:.0f} % | {r['ratio_to_reference']:.2f} | "
                     f"{300 * r['seconds_per_epoch']:.0f} s |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        save_json({"settings": vars(args), "matmul_peak_gflops": peak, "rows": results,
                   "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "threads": torch.get_num_threads(), "torch": torch.__version__}}, args.out + ".json")
        atomic_write(Path(args.out + ".md"), text)
        print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    run_script(main)
