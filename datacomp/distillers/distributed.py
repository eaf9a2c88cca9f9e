"""Class-parallel distillation across processes (``torchrun``): setup, class split, reductions and gathers.

A run launched with ``torchrun --nproc_per_node=N`` has ``WORLD_SIZE``/``RANK`` in its environment; classes are split
into contiguous blocks, one per rank, and the synthetic images are gathered on rank 0 at the end. Backend: ``gloo``
on CPU, ``nccl`` on CUDA. Gathers use tensors only (JSON text travels as a uint8 tensor), nothing is pickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from datacomp.errors import ConfigError

__all__ = ["Context", "close_wait_s", "setup", "split_classes"]

# Seconds rank 0 waits for the other ranks before tearing the process group down (see Context.close; the other
# ranks wait for rank 0 in any case): after a failure (a peer may be gone), and after finished work, when a peer may
# still be busy after the last collective (a rank whose group is torn down while it still uses it can abort at exit).
CLOSE_BARRIER_S = 10.0
FINISHED_BARRIER_S = 24 * 3600.0


def close_wait_s(finished: bool) -> float:
    """How long :meth:`Context.close` should wait for the peers: long after finished work, briefly after a failure."""
    return FINISHED_BARRIER_S if finished else CLOSE_BARRIER_S


def _balanced(count: int, parts: int) -> list[int]:
    base, extra = divmod(count, parts)
    return [base + (1 if rank < extra else 0) for rank in range(parts)]


def split_classes(num_classes: int, world_size: int, unit: int = 1) -> list[list[int]]:
    """Contiguous, balanced blocks of class indices, one per rank.

    ``unit``: consecutive blocks of this many classes (the last one may be shorter) stay on one rank when there are
    at least ``world_size`` such blocks, so per-block computations match a single process's exactly; otherwise the
    classes themselves are split.
    """
    if world_size > num_classes:
        raise ConfigError(f"{world_size} processes for {num_classes} classes: use at most one process per class")
    units = [min(unit, num_classes - start) for start in range(0, num_classes, max(1, unit))]
    if len(units) < world_size:
        units = [1] * num_classes
    blocks, start, first = [], 0, 0
    for count in _balanced(len(units), world_size):
        size = sum(units[first : first + count])
        blocks.append(list(range(start, start + size)))
        start, first = start + size, first + count
    return blocks


@dataclass
class Context:
    """Where this process stands: rank, world size, device; collective helpers that are no-ops for one process."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _comm_device(self) -> torch.device:
        return self.device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensors: list[Tensor]) -> None:
        """Sum ``tensors`` across processes, in place."""
        if not self.distributed:
            return
        for t in tensors:
            buf = t.to(self._comm_device())
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            t.copy_(buf.to(t.device))

    def gather_rows(self, x: Tensor) -> list[Tensor] | None:
        """Gather variable-length ``[n_r, ...]`` tensors on rank 0 (list by rank); None on other ranks."""
        parts = self.all_gather_rows(x)
        if not self.is_main:
            return None
        return [p.cpu() for p in parts]

    def all_gather_rows(self, x: Tensor) -> list[Tensor]:
        """Every rank's variable-length ``[n_r, ...]`` tensor, on every rank (list by rank)."""
        if not self.distributed:
            return [x]
        dev = self._comm_device()
        x = x.to(dev).contiguous()
        sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=dev))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=dev)
        padded[: x.shape[0]] = x
        bufs = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(bufs, padded)
        return [b[: int(s.item())] for b, s in zip(bufs, sizes)]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (a collective: every rank must call it)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0])
        self.all_reduce_sum([t])
        return bool(t.item() > 0)

    def gather_json(self, obj: Any) -> list[Any] | None:
        """Gather JSON-serialisable objects on rank 0 (list by rank); None on other ranks."""
        data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
        parts = self.gather_rows(data)
        return None if parts is None else [json.loads(bytes(p.tolist()).decode()) for p in parts]

    def close(self, timeout_s: float = CLOSE_BARRIER_S) -> None:
        """Destroy the process group this context created (a no-op otherwise).

        On ``gloo`` the ranks first meet at a barrier bounded by ``timeout_s``, so no rank tears its connections down
        while a peer still uses them (a rank leaving early can abort the other at exit); a rank that failed or left
        only delays the others by ``timeout_s``, it cannot hang them.
        """
        if not (self.initialized_here and dist.is_initialized()):
            return
        if self.distributed and dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=timeout_s))
            except RuntimeError:
                pass  # a peer failed or has gone: tear down anyway
        dist.destroy_process_group()


def setup(device: str | torch.device | None = None) -> Context:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE > 1``); otherwise a 1-process context.

    Args:
        device: ``cpu``, ``cuda`` or None (CUDA when available). Under torchrun on CUDA each rank uses
            ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world <= 1:
        return Context(0, 1, dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        initialized_here = True
    return Context(rank, world, dev, initialized_here)
