"""Overhead of cost accounting on a training loop: ledger off vs timer-only vs sampled FLOPs vs full FLOPs.

Each repetition trains the same model for ``--steps`` steps once per configuration; configurations are interleaved
(their order rotates every repetition) in one process so drifts in machine load hit them alike. The overhead of a
configuration is the median over repetitions of its time divided by the ledger-off time of the same repetition.
FlopCounterMode's first use in a process (lazy imports, ~seconds) is measured separately and excluded by a warm-up.

Usage:
    python benchmarks/cost_overhead.py --quick
    python benchmarks/cost_overhead.py --steps 100 --repeats 7 --batch-size 128 \
        --out benchmarks/results/cost_overhead.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
from torch import nn
from sklearn.datasets import load_digits
from tqdm import tqdm

from datacomp.cost import CostLedger, save_json
from datacomp.errors import run_script
from datacomp.models import create_model

CONFIGS = ("off", "timer", "sampled", "full")


def build_model(name: str, channels: int, classes: int, size: int) -> nn.Module:
    """A registered model (``datacomp.models``)."""
    return create_model(name, channels, classes, (size, size))


def make_data(kind: str, n: int, channels: int, size: int, classes: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    if kind == "digits":
        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return (x - x.mean()) / x.std(), torch.tensor(digits.target)
    return torch.randn(n, channels, size, size, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
                batch: int, step_ctx: Callable[[], object] | None, gen: torch.Generator) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        if step_ctx is None:
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with step_ctx():
                loss = loss_fn(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


def run_config(config: str, model: nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...],
               args: argparse.Namespace, seed: int) -> tuple[float, float, CostLedger | None]:
    """Train ``args.steps`` steps under one configuration; returns (wall s, process CPU s, ledger or None)."""
    gen = torch.Generator().manual_seed(seed)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    ledger = None
    if config == "off":
        train_steps(model, opt, *data, args.steps, args.batch_size, None, gen)
    else:
        ledger = CostLedger()
        flops = {"timer": None, "sampled": "sampled", "full": "full"}[config]
        with ledger.phase("train", flops=flops, sample_steps=args.sample_steps, device=args.device) as ph:
            train_steps(model, opt, *data, args.steps, args.batch_size, ph.step, gen)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, ledger


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convnet-3-in")
    parser.add_argument("--data", choices=["random", "digits"], default="random",
                        help="random CIFAR-sized tensors or scikit-learn digits (8x8)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="training steps per configuration and repetition")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sample-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny setting to check the script (~1 min on 1 core)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.batch_size, args.num_samples, args.image_size = 40, 5, 16, 256, 16
    for name in ("steps", "repeats", "batch_size", "sample_steps", "threads", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x, y = make_data(args.data, args.num_samples, args.channels, args.image_size, args.num_classes, args.seed)
    channels, size = x.shape[1], x.shape[-1]
    model = build_model(args.model, channels, int(y.max()) + 1, size).to(args.device)
    x, y = x.to(args.device), y.to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    first_use = time.perf_counter()
    warm = CostLedger()
    with warm.phase("warm-up", flops="full", device=args.device):
        train_steps(model, opt, x, y, 1, args.batch_size, None, torch.Generator().manual_seed(0))
    first_use = time.perf_counter() - first_use
    for config in CONFIGS:  # warm-up every path (allocator, caches) before timing
        run_config(config, model, opt, (x, y), argparse.Namespace(**{**vars(args), "steps": 2}), args.seed)

    times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    cpu_times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    ledgers: dict[str, CostLedger] = {}
    for rep in tqdm(range(args.repeats), desc="repetitions"):
        order = CONFIGS[rep % len(CONFIGS):] + CONFIGS[:rep % len(CONFIGS)]
        for config in order:
            seconds, cpu_seconds, ledger = run_config(config, model, opt, (x, y), args, args.seed + rep)
            times[config].append(seconds)
            cpu_times[config].append(cpu_seconds)
            if ledger is not None:
                ledgers[config] = ledger

    results = {}
    for config in CONFIGS:
        ratios = [t / off for t, off in zip(times[config], times["off"])]
        cpu_ratios = [t / off for t, off in zip(cpu_times[config], cpu_times["off"])]
        results[config] = {"median_seconds": statistics.median(times[config]),
                           "median_ratio": statistics.median(ratios),
                           "ratios": ratios, "seconds": times[config],
                           "median_cpu_seconds": statistics.median(cpu_times[config]),
                           "median_cpu_ratio": statistics.median(cpu_ratios), "cpu_ratios": cpu_ratios,
                           "cpu_seconds": cpu_times[config]}
    full_flops = ledgers["full"]["train"].flops
    sampled_flops = ledgers["sampled"]["train"].flops
    print(f"\ncost-accounting overhead: {args.model} on {args.data} {tuple(x.shape[1:])}, batch {args.batch_size}, "
          f"{args.steps} steps x {args.repeats} interleaved repetitions, {args.threads} thread(s), {args.device}")
    print("(ratios: median over repetitions of time / ledger-off time of the same repetition; process CPU time is "
          "steadier than wall-clock on a shared machine)")
    print(f"{'config':<9}{'wall s':>9}{'wall/off':>10}{'overhead':>10}{'cpu s':>9}{'cpu/off':>9}{'overhead':>10}")
    for config in CONFIGS:
        r = results[config]
        print(f"{config:<9}{r['median_seconds']:>9.3f}{r['median_ratio']:>10.4f}{100 * (r['median_ratio'] - 1):>9.2f}%"
              f"{r['median_cpu_seconds']:>9.3f}{r['median_cpu_ratio']:>9.4f}{100 * (r['median_cpu_ratio'] - 1):>9.2f}%")
    print(f"FLOPs per {args.steps} steps: full {full_flops:.4e}, sampled {sampled_flops:.4e} "
          f"({ledgers['sampled']['train'].flops_mode}); relative difference "
          f"{abs(sampled_flops - full_flops) / full_flops:.2e}")
    print(f"FlopCounterMode first use in this process: {first_use:.2f} s (one-off, excluded above)")
    doc = {"config": vars(args), "device_name": ledgers["full"]["train"].device_name,
           "versions": {"torch": torch.__version__, "python": platform.python_version()},
           "first_use_seconds": first_use, "results": results, "full_flops": full_flops,
           "sampled_flops": sampled_flops, "ledger_full": ledgers["full"].to_dict()}
    if args.out:
        save_json(doc, args.out)
        print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    run_script(main)
