"""What a compressed model costs to run: parameters, MACs, measured CPU latency, size on disk, test accuracy.

Conventions:
- MACs are multiply-accumulates of one forward pass over ``example_input`` (``FlopCounterMode`` FLOPs / 2: conv,
  linear and matmul only; norms, pooling and activations count 0). Unstructured sparsity does not reduce them (dense
  kernels still multiply the zeros), so pruned-to-zero weights are reported separately as ``nonzero_parameters``.
- An int8 model keeps the parameter and MAC counts of the float model it was converted from (same arithmetic, 8-bit
  operands); its saving shows in size on disk and latency.
- Latency is the median wall time of repeated forward passes on CPU under ``torch.inference_mode`` with a fixed
  thread count, after warm-up runs.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_parameters",
    "count_nonzero_parameters",
    "count_macs",
    "measure_latency",
    "evaluate_accuracy",
    "file_size_bytes",
    "model_report",
]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (for an int8 model: of the float model it was converted from)."""
    quant = getattr(model, "datacomp_quant", None)
    if quant is not None:
        return int(quant["fp32_num_parameters"])
    return int(sum(p.numel() for p in model.parameters()))


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of non-zero parameters (what unstructured pruning reduces)."""
    quant = getattr(model, "datacomp_quant", None)
    if quant is not None:
        return int(quant["fp32_nonzero_parameters"])
    return int(sum(int(torch.count_nonzero(p.detach())) for p in model.parameters()))


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example_input`` (see module docstring)."""
    quant = getattr(model, "datacomp_quant", None)
    if quant is not None:
        per_image = quant["fp32_macs_per_image"]
        return int(per_image * example_input.shape[0])
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example_input)
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    repeats: int = 30,
    warmup: int = 5,
    num_threads: int = 1,
) -> dict:
    """Median CPU wall time of a forward pass.

    Args:
        model: Model to time (moved to nothing: it must already live on CPU).
        example_input: Input batch; its first dimension is the reported batch size.
        repeats: Timed runs (the median is reported, with the 10th/90th percentiles).
        warmup: Untimed runs first (allocator, kernel selection).
        num_threads: ``torch.set_num_threads`` during timing (restored after).

    Returns:
        ``{"median_ms", "p10_ms", "p90_ms", "repeats", "batch_size", "num_threads"}``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    previous_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    torch.set_num_threads(num_threads)
    times_ms: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(example_input)
            for _ in range(repeats):  # each run is one timed forward pass, not a per-sample loop
                start = time.perf_counter()
                model(example_input)
                times_ms.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    deciles = statistics.quantiles(times_ms, n=10) if len(times_ms) >= 2 else [times_ms[0]] * 9
    return {
        "median_ms": statistics.median(times_ms),
        "p10_ms": deciles[0],
        "p90_ms": deciles[-1],
        "repeats": repeats,
        "batch_size": int(example_input.shape[0]),
        "num_threads": num_threads,
    }


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on normalised images ``x`` with integer labels ``y``."""
    if len(x) != len(y):
        raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
    if len(x) == 0:
        raise ValueError("cannot evaluate accuracy on an empty set")
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


def file_size_bytes(path: str | os.PathLike) -> int:
    """Size on disk of a saved file."""
    return int(Path(path).stat().st_size)


def model_report(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    saved_path: str | os.PathLike | None = None,
    latency_repeats: int = 30,
    latency_warmup: int = 5,
    num_threads: int = 1,
) -> dict:
    """Everything a compression stage reports about its model.

    Args:
        model: Model on CPU.
        example_input: Batch used for MACs (per image) and latency (whole batch).
        test: ``(x_normalised, y)`` of the real test split, or ``None`` to skip accuracy.
        saved_path: The model's ``.safetensors`` file, for size on disk.
        latency_repeats: Timed forward passes.
        latency_warmup: Untimed warm-up passes.
        num_threads: Threads used for latency.

    Returns:
        ``{"parameters", "nonzero_parameters", "macs_per_image", "latency", "size_bytes", "test_accuracy"}``.
    """
    one = example_input[:1]
    return {
        "parameters": count_parameters(model),
        "nonzero_parameters": count_nonzero_parameters(model),
        "macs_per_image": count_macs(model, one),
        "latency": measure_latency(
            model, example_input, repeats=latency_repeats, warmup=latency_warmup, num_threads=num_threads
        ),
        "size_bytes": file_size_bytes(saved_path) if saved_path is not None else None,
        "test_accuracy": evaluate_accuracy(model, *test) if test is not None else None,
    }
