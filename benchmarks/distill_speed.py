"""Seconds per iteration and peak memory of NCFM and DM at fixed settings, beside the bare network passes.

Fixed settings: CIFAR-10-shaped data (3x32x32, 10 classes), IPC 10, ConvNet-3 (instance norm, width 128).
- NCFM: 4096 Gaussian frequencies, 256 real images per class, factor 2 (40 decoded images per class), calibration on,
  per-class AdamW steps (the released code's schedule) -- the ``official`` preset with ``real_batch=256``.
- DM: 256 real images per class, DSA, one SGD step per iteration.

Each method is also timed against a plain-PyTorch restatement of the released code's inner loop
(``reference_loops.py``: same ops and batch shapes as the released code, no datacomp helpers), interleaved round by
round in the same process, so ``it/ref`` (datacomp's iteration over the released loop's) holds on a host whose speed
drifts. ``GFLOP/s`` is the real-image forward's convolution FLOPs over its time, beside a measured float32 matmul
peak (2048^3).

For each method the same iteration's *bare network passes* are timed on their own, so the overhead of augmentation,
loss, sampler and optimiser shows as a ratio:
- ``real_forward``: the real-image feature forward alone (inference mode, all classes in one batch, evaluated
  in chunks as the distillers do);
- ``network``: every network pass the iteration makes (real forward, synthetic forward + backward in the distiller's
  class groups, and for NCFM the calibration forward + backward).

``s/it`` is the median of ``--iterations`` back-to-back iterations. The ratios come from a second, interleaved loop:
each round times one iteration and then the bare passes, so a host whose speed drifts over a minute (shared 2-core
VMs do, by 10-20 %) moves both sides of the ratio alike; each ratio is the median of the per-round ratios (all of them
are in the JSON; files written before 2026-12-04 hold the ratio of the two medians instead).
``--cf-bf16 auto|on|off`` sets NCFM's ``cf_bf16`` (the real-side characteristic-function matmul in bfloat16; default
``auto``, as the library: on where the CPU has native bfloat16; ``--cf-bf16`` alone = on).

Each method runs in its own child process; its peak resident memory is ``VmHWM`` reset after data loading and
warm-up (``/proc/self/clear_refs``) and read right after the timed iterations: the iteration loop's peak with the
training split, pool and models resident. Timings depend on
shapes only, so random pixels stand in for CIFAR-10 (``--data cifar10`` uses the shared copy instead).

``--op-split`` also times one more iteration operator by operator (each ATen call timed synchronously with the
script's clock through a ``TorchDispatchMode``) and records the seconds per operator name: where the iteration's time
goes, without ``torch.profiler``'s attribution (which put tens of ms on cheap memory-bound calls here).

``--clock cpu`` times process CPU seconds instead of elapsed ones: with ``OMP_NUM_THREADS=1`` the figures then hold
while other jobs share the host.

Full run (~10 minutes on 2 cores)::

    # library defaults (cf_bf16 auto: on with AVX-512-BF16 / AMX)
    OMP_NUM_THREADS=2 python benchmarks/distill_speed.py --iterations 10 --json benchmarks/results/distill_speed.json
    # NCFM's real characteristic-function matmul forced to float32
    OMP_NUM_THREADS=2 python benchmarks/distill_speed.py --iterations 10 --cf-bf16 off --json ...

Validation at tiny sizes: ``python benchmarks/distill_speed.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from datacomp.cost import save_json
from datacomp.data import ImageDataset, load_dataset
from datacomp.distillers.base import Job, autocast_bf16, features_no_grad
from datacomp.distillers.dm import DMDistiller
from datacomp.distillers.ncfm import NCFMDistiller
from datacomp.distillers.pool import FeaturePool
from datacomp.distillers.presets import get_config
from datacomp.errors import run_script
from datacomp.models import create_model
from datacomp.runtime import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_loops import (PlainConvNet, ReleasedDM, ReleasedNCFM, convnet_forward_flops,  # noqa: E402
                             matmul_peak_gflops, matmul_rates_gflops)

REPO = Path(__file__).resolve().parents[1]
# The offline dataset copies beside the repository (shared CIFAR-10), unless the caller points elsewhere.
if "DATACOMP_SHARED_DATA" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["DATACOMP_SHARED_DATA"] = str(REPO.parent / "shared" / "data")

TARGETS = {
    "released code, measured on a 2-core CPU": {"ncfm": {"s_per_it": 6.5, "peak_gb": 2.1},
                                                "dm": {"s_per_it": 1.65, "peak_gb": 2.4}},
    "targets": "DM iteration <= 0.6 x the released DM loop, NCFM <= 0.33 x the released NCFM loop (interleaved, "
               "same process); real-image forward >= 70 % of the measured fp32 matmul peak",
}


def _rss_gb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _bf16_switches(args: argparse.Namespace) -> dict[str, str]:
    """The ``real_bf16`` / ``syn_bf16`` settings of ``--bf16``: ``auto`` = the method's defaults (no override),
    ``off`` = float32 passes, ``real`` = the real forward in bf16, ``all`` = the synthetic passes too."""
    if args.bf16 == "auto":
        return {}
    return {"real_bf16": "off" if args.bf16 == "off" else "on", "syn_bf16": "on" if args.bf16 == "all" else "off"}


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so loading the dataset does not count as the loop's peak."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_gb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _dataset(args: argparse.Namespace):
    if args.data == "cifar10":
        return load_dataset("cifar10")
    gen = torch.Generator().manual_seed(0)
    per_class = max(args.real_batch, 4 * args.ipc) + 8
    n = 10 * per_class
    x = torch.rand(n, 3, args.size, args.size, generator=gen)
    y = torch.arange(10).repeat_interleave(per_class)
    return ImageDataset("random-cifar-shape", x, y, x[:100], y[:100], [str(i) for i in range(10)],
                        (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), source="random pixels (speed only)")


CLOCK = time.perf_counter


def per_round(numerator: list[float], denominator: list[float]) -> list[float]:
    """Round-by-round ratios (each round timed both sides back to back); their median is the reported ratio."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return times


def op_split(fn) -> dict:
    """Run ``fn`` once with every ATen call timed synchronously (``CLOCK``); seconds and calls per operator name,
    largest first, and the total of the run beside the sum of its calls."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seconds: dict[str, float] = {}
    calls: dict[str, int] = {}

    class Timer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = CLOCK()
            out = func(*args, **(kwargs or {}))
            name = func.__name__.split(".")[0]  # e.g. "convolution" for aten.convolution.default
            seconds[name] = seconds.get(name, 0.0) + CLOCK() - start
            calls[name] = calls.get(name, 0) + 1
            return out

    start = CLOCK()
    with Timer():
        fn()
    total = CLOCK() - start
    ops = sorted(seconds, key=seconds.get, reverse=True)
    return {"total_s": total, "sum_of_calls_s": sum(seconds.values()),
            "ops": [{"op": op, "seconds": seconds[op], "calls": calls[op]} for op in ops]}


def _reference_loop(args: argparse.Namespace, ds):
    """The released code's inner loop restated in plain PyTorch, on the same data and shapes."""
    real = [ds.train_x[ds.train_y == k] for k in range(10)]
    if args.child == "ncfm":
        # As on datacomp's side, one untrained network stands in for the pool member (speed does not depend on it).
        state = PlainConvNet(3, 10, size=args.size).state_dict()
        return ReleasedNCFM(real, args.ipc, [(state, state)], real_batch=args.real_batch, num_freqs=args.num_freqs)
    return ReleasedDM([ds.normalize(r) for r in real], args.ipc, real_batch=args.real_batch)


def _child(args: argparse.Namespace) -> dict:
    """Measure one method in this process; returns a JSON-ready dict."""
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    malloc_kept = keep_freed_memory() if args.malloc == "keep" else False
    torch.manual_seed(0)
    ds = _dataset(args)
    model = "convnet-3-in"
    classes = list(range(10))
    if args.child == "ncfm":
        cfg = get_config("ncfm", "official", real_batch=args.real_batch, num_freqs=args.num_freqs,
                         step_mode=args.step_mode, real_sampling="random", cf_bf16=args.cf_bf16,
                         **_bf16_switches(args))
        net = create_model(model, 3, 10, ds.image_size)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        # Speed does not depend on the weights: one untrained member stands in for the trained pool.
        pool = FeaturePool(model, [state], [state], [{"test_accuracy": 0.0, "epochs": 0, "cost": None}])
        distiller = NCFMDistiller(cfg, Job(ds, classes, args.ipc, model, seed=0), pool)
        reference = _reference_loop(args, ds)
        decoded = args.ipc * distiller.config.factor**2  # the resolved factor (presets say 0 = auto)
    else:
        cfg = get_config("dm", "paper", real_batch=args.real_batch, **_bf16_switches(args))
        distiller = DMDistiller(cfg, Job(ds, classes, args.ipc, model, seed=0))
        reference = _reference_loop(args, ds)
        decoded = args.ipc
    real_in_bf16 = distiller.config.real_bf16 == "on"  # resolved when the distiller was built
    distiller.step(0)  # warm-up (allocator, oneDNN primitives)
    loaded_gb = _rss_gb()
    _reset_peak_rss()  # from here VmHWM is the iteration loop's peak (data and models resident included)
    iteration = _timed(lambda: distiller.step(1), args.iterations)
    peak_gb = _peak_rss_gb()  # the distillation's own peak, before the bare passes below

    net = create_model(model, 3, 10, ds.image_size).requires_grad_(False)
    real = ds.normalize(ds.train_x[: 10 * min(args.real_batch, distiller.real_count)])
    syn = torch.randn(10 * decoded, 3, *ds.image_size, requires_grad=True)

    def real_forward() -> None:
        with torch.inference_mode():  # chunked like the distillers (same result, bounded activation memory)
            features_no_grad(net, real, bf16=real_in_bf16)

    # The synthetic passes in the groups the distiller uses (NCFM: whole classes, at most SYN_CHUNK decoded images
    # per forward/backward; DM: one batch), so the bare passes get the same cache behaviour as the iteration.
    if args.child == "ncfm":
        group_sizes = [len(group) * decoded for group in distiller._class_groups()]
    else:
        group_sizes = [syn.shape[0]]

    def syn_pass(head: bool = False) -> None:
        for part in syn.split(group_sizes):
            with autocast_bf16(part, distiller.config.syn_bf16 == "on"):
                out = net(part) if head else net.forward_features(part)
            out.float().sum().backward()

    def calib_pass() -> None:
        syn_pass(head=True)

    real_forward()
    syn_pass()
    reference.step()  # warm-up
    # Interleaved: each round times one more iteration and then the bare passes, so both see the same machine state
    # (a shared 2-core host drifts by 10-20 % over a minute, which would otherwise move the ratio).
    calibrated = args.child == "ncfm" and cfg.calibration
    paired_it, real_t, network, ref_t = [], [], [], []
    for _ in range(args.iterations):
        paired_it += _timed(lambda: distiller.step(1), 1)
        ref_t += _timed(reference.step, 1)
        r, s = _timed(real_forward, 1)[0], _timed(syn_pass, 1)[0]
        c = _timed(calib_pass, 1)[0] if calibrated else 0.0
        real_t.append(r)
        network.append(r + s + c)
    med = statistics.median
    ops = op_split(lambda: distiller.step(1)) if args.op_split else None
    # the yardstick of the real forward: the matmul peak of the dtype it runs in
    peak = matmul_peak_gflops(CLOCK, torch.bfloat16 if real_in_bf16 else torch.float32)
    real_gflops = real.shape[0] * convnet_forward_flops(args.size) / med(real_t) / 1e9
    return {
        "method": args.child,
        "settings": {"ipc": args.ipc, "real_batch_per_class": min(args.real_batch, distiller.real_count),
                     "decoded_per_class": decoded, "image_size": args.size, "model": model, "bf16": args.bf16,
                     "data": args.data, "malloc": "keep" if malloc_kept else "default", "cf_bf16": distiller.config.cf_bf16 if args.child == "ncfm" else None,
                     **({"num_freqs": args.num_freqs, "factor": distiller.config.factor, "calibration": True,
                         "sampler": "gaussian",
                         "step_mode": args.step_mode} if args.child == "ncfm" else {"augment": "dsa"})},
        "s_per_iteration": med(iteration),
        "s_per_iteration_all": iteration,
        "real_forward_s": med(real_t),
        "network_passes_s": med(network),
        "s_per_iteration_paired": med(paired_it),
        "ratio_to_real_forward": med(per_round(paired_it, real_t)),
        "ratio_to_network_passes": med(per_round(paired_it, network)),
        "ratio_to_network_passes_per_round": per_round(paired_it, network),
        "released_loop_s": med(ref_t),
        "ratio_to_released_loop": med(per_round(paired_it, ref_t)),
        "ratio_to_released_loop_per_round": per_round(paired_it, ref_t),
        "real_forward_gflops": real_gflops,
        "matmul_peak_gflops": peak,
        "matmul_peak_dtype": "bfloat16" if real_in_bf16 else "float32",
        "real_forward_fraction_of_peak": real_gflops / peak,
        "clock": args.clock,
        "peak_rss_gb": peak_gb,
        "rss_before_loop_gb": loaded_gb,
        "threads": torch.get_num_threads(),
        "op_split": ops,
    }


def _cpuinfo() -> str:
    """``/proc/cpuinfo`` (Linux only; empty elsewhere)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    """The CPU's model name and family (Linux only; empty elsewhere): BLAS and oneDNN speeds differ by vendor and
    generation, so runs on different hosts compare only by their ratios."""
    text = _cpuinfo()
    if not text:
        return ""
    fields = dict(line.split(":", 1) for line in text.splitlines()[:30] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return f"{fields.get('model name', '')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def _cpu_flags() -> list[str]:
    """The CPU's vector-extension flags that decide fp32/bf16 speed (Linux only; empty elsewhere)."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo().splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per method (median reported)")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--real-batch", type=int, default=256)
    parser.add_argument("--num-freqs", type=int, default=4096)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--step-mode", default="per-class", help="NCFM image steps: per-class or joint")
    parser.add_argument("--data", default="random", help="random (CIFAR-10 shape) or cifar10 (shared copy)")
    parser.add_argument("--methods", nargs="+", default=["ncfm", "dm"])
    parser.add_argument("--bf16", choices=["auto", "off", "real", "all"], default="auto",
                        help="bfloat16 autocast: the library default (auto: the real features where bf16 is "
                             "native), none (off), the real features (real) or every network pass (all)")
    parser.add_argument("--cf-bf16", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                        help="NCFM config cf_bf16: real-side characteristic-function matmul in bfloat16 (default auto, "
                             "as the library; the flag alone = on)")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="keep: glibc keeps freed memory for reuse, as the datacomp CLI sets it "
                             "(datacomp.runtime); default: glibc's own behaviour")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed seconds; cpu: process CPU seconds (holds on a shared host with "
                             "OMP_NUM_THREADS=1)")
    parser.add_argument("--op-split", action="store_true", help="also time one iteration operator by operator")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to validate the script")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.ipc, args.real_batch, args.num_freqs, args.size = 2, 1, 16, 256, 16
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    results = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--child", method, "--iterations", str(args.iterations), "--ipc",
               str(args.ipc), "--real-batch", str(args.real_batch), "--num-freqs", str(args.num_freqs), "--size",
               str(args.size), "--step-mode", args.step_mode, "--data", args.data, "--bf16", args.bf16]
        cmd += ["--cf-bf16", args.cf_bf16, "--malloc", args.malloc, "--clock", args.clock]
        cmd += ["--op-split"] if args.op_split else []
        done = subprocess.run(cmd, capture_output=True, text=True)  # one process per method: its own peak memory
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'method':<6} {'s/it':>7} {'released s/it':>13} {'it/ref':>7} {'real fwd s':>10} {'GFLOP/s':>8} "
          f"{'of peak':>7} {'it/net':>7} {'peak GB':>8}   ({args.clock} seconds)")
    for r in results:
        print(f"{r['method']:<6} {r['s_per_iteration']:7.3f} {r['released_loop_s']:13.3f} "
              f"{r['ratio_to_released_loop']:7.2f} {r['real_forward_s']:10.3f} {r['real_forward_gflops']:8.1f} "
              f"{100 * r['real_forward_fraction_of_peak']:6.0f}% {r['ratio_to_network_passes']:7.2f} "
              f"{r['peak_rss_gb']:8.2f}")
    for r in results:
        if r["op_split"]:
            split = r["op_split"]
            print(f"{r['method']}: one iteration by operator ({split['total_s']:.2f} s, calls "
                  f"{split['sum_of_calls_s']:.2f} s):", ", ".join(f"{o['op']} {o['seconds']:.3f}" for o in split["ops"][:10]))
    print("reference:", json.dumps(TARGETS))
    if args.json:
        doc = {"results": results, "reference": TARGETS, "quick": args.quick,
               "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "processor": platform.processor(), "torch": torch.__version__,
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": _cpu_flags(),
                        "cpu_model": _cpu_model(),
                        "matmul_rates_gflops": {str(dt).removeprefix("torch."): matmul_rates_gflops(CLOCK, dt)
                                                for dt in (torch.float32, torch.bfloat16)}}}
        save_json(doc, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_script(main)
