"""Why is a ConvNet forward faster inside the released DM loop than on its own? One factor at a time.

Times, interleaved per round in one process (so a drifting host moves every row alike):
- the released DM iteration restated in plain PyTorch (``reference_loops.ReleasedDM``) and datacomp's DM iteration
  (``DMDistiller.step``), same shapes (CIFAR-10, IPC 10, 256 real images per class, DSA);
- the real-image forward of one DM iteration (10 x 256 images through a ConvNet-3 embed) under variations of one
  factor each: batch size, memory layout, autograd mode, augmented vs fresh input, a fresh network per call (DM
  builds one per iteration) vs a reused one, bfloat16 autocast;
- a float32 (and bfloat16) matmul of 2048 x 2048 x 2048 as the machine's measured peak; each forward row reports its
  achieved GFLOP/s (convolution FLOPs only: ~101 MFLOP per 32 x 32 image at width 128) and the fraction of that peak.

Command (the committed results)::

    # one thread, CPU seconds: holds while other jobs share the host
    OMP_NUM_THREADS=1 python benchmarks/forward_study.py --rounds 5 --out benchmarks/results/forward_study_1thread
    # two threads, wall seconds: only on a quiet host
    OMP_NUM_THREADS=2 python benchmarks/forward_study.py --rounds 5 --clock wall --out benchmarks/results/forward_study

Validation at tiny sizes: ``python benchmarks/forward_study.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_loops import (PlainConvNet, ReleasedDM, convnet_forward_flops,  # noqa: E402
                             matmul_peak_gflops, plain_dsa)

from datacomp.cost import save_json  # noqa: E402
from datacomp.data import ImageDataset  # noqa: E402
from datacomp.distillers.base import Job, features_no_grad  # noqa: E402
from datacomp.distillers.dm import DMDistiller  # noqa: E402
from datacomp.distillers.presets import get_config  # noqa: E402
from datacomp.errors import run_script  # noqa: E402
from datacomp.io import atomic_write  # noqa: E402
from datacomp.models import create_model  # noqa: E402


def _variants(real: torch.Tensor, chunk: int) -> dict:
    """name -> (description, callable) for the real-image forward of one DM iteration."""
    c, size = real.shape[1], real.shape[2]
    net = PlainConvNet(c, 10, size=size).train().requires_grad_(False)
    per_class = real.split(real.shape[0] // 10)
    cl = real.contiguous(memory_format=torch.channels_last)
    augmented = torch.cat([plain_dsa(part, seed=i) for i, part in enumerate(per_class)])

    def per_class_batches(x, grad=True, fresh=False, layout=None, size_=None, bf16=False, net_=None):
        def run():
            model = net_ or (PlainConvNet(c, 10, size=size).train().requires_grad_(False) if fresh else net)
            ctx = torch.enable_grad() if grad else torch.inference_mode()
            with ctx, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for part in x.split(size_ or x.shape[0] // 10):
                    if layout is not None:
                        part = part.contiguous(memory_format=layout)
                    model.embed(part)
        return run

    ours = create_model("convnet-3-in", c, 10, (size, size)).requires_grad_(False)
    ours.load_state_dict(net.state_dict())

    def datacomp_features(bf16=False):
        def run():
            with torch.inference_mode():
                features_no_grad(ours, real, chunk=chunk, bf16=bf16)
        return run

    return {
        "released: 256/class, NCHW, grad mode, fresh net": per_class_batches(real, fresh=True),
        "same, DSA-augmented input": per_class_batches(augmented, fresh=True),
        "same, reused net": per_class_batches(real),
        "256, NCHW, inference mode": per_class_batches(real, grad=False),
        "256, channels-last, inference mode": per_class_batches(cl, grad=False),
        f"{chunk}, channels-last, inference mode": per_class_batches(real, grad=False,
                                                                                layout=torch.channels_last,
                                                                                size_=chunk),
        f"{chunk}, NCHW, inference mode": per_class_batches(real, grad=False, size_=chunk),
        "64, channels-last, inference mode": per_class_batches(real, grad=False, layout=torch.channels_last,
                                                               size_=64),
        "all at once, NCHW, inference mode": per_class_batches(real, grad=False, size_=real.shape[0]),
        f"{chunk}, channels-last, inference mode, bf16": per_class_batches(real, grad=False,
                                                                          layout=torch.channels_last,
                                                                          size_=chunk, bf16=True),
        "256, channels-last, inference mode, bf16": per_class_batches(cl, grad=False, bf16=True),
        f"datacomp features_no_grad ({chunk}, channels-last, NHWC instance norm)": datacomp_features(),
        f"datacomp features_no_grad ({chunk}, channels-last, NHWC instance norm), bf16": datacomp_features(True),
    }


def _dataset(per_class: int, size: int) -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(10 * per_class, 3, size, size, generator=gen)
    y = torch.arange(10).repeat_interleave(per_class)
    return ImageDataset("random-cifar-shape", x, y, x[:100], y[:100], [str(i) for i in range(10)],
                        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), source="random pixels (speed only)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--real-batch", type=int, default=256)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu: process CPU seconds (robust to other jobs on the host; use with OMP_NUM_THREADS=1), "
                        "wall: elapsed seconds")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to validate the script")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.real_batch, args.size, args.chunk, args.matmul_size = 2, 16, 16, 8, 256
        args.out = args.out or str(Path(tempfile.mkdtemp()) / "forward_study")
    torch.manual_seed(0)
    ds = _dataset(args.real_batch + 8, args.size)
    real = ds.normalize(ds.train_x).view(10, -1, 3, args.size, args.size)[:, : args.real_batch].reshape(
        -1, 3, args.size, args.size).contiguous()
    rows = _variants(real, args.chunk)
    released = ReleasedDM([ds.normalize(ds.train_x[ds.train_y == k]) for k in range(10)], args.ipc, args.real_batch)
    cfg = get_config("dm", "paper", real_batch=args.real_batch, real_bf16="off", syn_bf16="off")
    ours = DMDistiller(cfg, Job(ds, list(range(10)), args.ipc, "convnet-3-in", seed=0))
    loops = {"released DM iteration (plain restatement)": released.step,
             "datacomp DM iteration": lambda: ours.step(1)}
    everything = {**loops, **rows}
    for fn in everything.values():  # warm-up: allocator, oneDNN primitives
        fn()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in everything}
    for _ in range(args.rounds):
        for name, fn in everything.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    peak32 = matmul_peak_gflops(clock, torch.float32, args.matmul_size)
    peak16 = matmul_peak_gflops(clock, torch.bfloat16, args.matmul_size)
    flops = real.shape[0] * convnet_forward_flops(args.size)
    base = statistics.median(times["released: 256/class, NCHW, grad mode, fresh net"])
    results = []
    for name, ts in times.items():
        med = statistics.median(ts)
        row = {"name": name, "seconds_median": med, "seconds": ts}
        if name in rows:
            bf16 = "bf16" in name
            row |= {"gflops": flops / med / 1e9, "fraction_of_peak": flops / med / 1e9 / (peak16 if bf16 else peak32),
                    "ratio_to_released_forward": med / base}
        results.append(row)
    doc = {"settings": vars(args) | {"images": real.shape[0], "conv_flops_per_image": convnet_forward_flops(args.size)},
           "matmul_peak_gflops": {"float32": peak32, "bfloat16": peak16}, "rows": results,
           "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    lines = [f"Forward study ({real.shape[0]} images of {args.size}x{args.size}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}, {args.clock} seconds, median of {args.rounds} interleaved rounds; "
             f"matmul peak "
             f"{peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16)", "",
             "| row | s | GFLOP/s | of peak | / released forward |", "|---|---:|---:|---:|---:|"]
    for r in results:
        extra = (f"{r['gflops']:.0f} | {100 * r['fraction_of_peak']:.0f} % | {r['ratio_to_released_forward']:.2f}"
                 if "gflops" in r else " | | ")
        lines.append(f"| {r['name']} | {r['seconds_median']:.3f} | {extra} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        save_json(doc, args.out + ".json")
        atomic_write(Path(args.out + ".md"), text)
        print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    run_script(main)
