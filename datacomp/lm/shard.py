"""Split a pool of records over the processes of a ``torchrun`` job and gather per-rank results back in pool order.

Each rank takes one contiguous, balanced slice of the pool (:func:`shard_range`); after the work, every rank calls
:func:`gather_in_order` (arrays whose first axis is one row per record of the rank's slice) or
:func:`all_gather_concat` (a variable number of rows per rank, e.g. token vectors of the slice's records) and gets
the whole result, in pool order, on *every* rank, so what follows (a selection, a score) is the same everywhere::

    join_torchrun(device)                            # under torchrun: join (or start) the process group
    span = local_range(len(texts))                   # this rank's records
    local = score(texts[span.start:span.stop])       # [len(span), ...]
    scores = gather_in_order(local, len(texts))      # [N, ...], pool order, on every rank

The process group is the default ``torch.distributed`` one: ``gloo`` on CPU, ``nccl`` on CUDA (tensors then travel
on the rank's current CUDA device). Under ``torchrun`` without a group yet, :func:`join_torchrun` initialises it
through :func:`datacomp.distillers.distributed.setup` (the same rule as ``datacomp distill``). Without a process group
(or with one process) every function here is a no-op: the pool is one slice and gathers return their input.
Gathers move tensors only (JSON travels as UTF-8 bytes); nothing is pickled.

A group started by :func:`join_torchrun` is closed when the interpreter exits, after the ranks meet at a barrier
(:meth:`~datacomp.distillers.distributed.Context.close`). After finished work the main rank waits there as long as
its peers need (they may still work after the last collective; a rank that tears its gloo group down while a peer
still uses it can abort at exit); after a failure (:func:`mark_failed`, an uncaught exception) it waits only
briefly, since a peer may be gone. The other ranks always wait for the main one (gloo's monitored barrier bounds
only rank 0's wait).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from datacomp.errors import ConfigError, DataError, is_int

__all__ = ["Ranks", "shard_range", "ranks", "join_torchrun", "local_range", "all_gather_concat", "gather_in_order",
           "all_gather_json", "any_rank", "mark_failed"]

_EXIT = {"failed": False}  # whether this process's work under the group failed: how long to wait for peers at exit


def mark_failed() -> None:
    """Record that this rank's work failed, so that at exit it waits only briefly for its peers before closing the
    process group (:func:`join_torchrun`). Uncaught exceptions are recorded without it; call it where an error is
    caught and turned into an exit status (``datacomp select`` does)."""
    _EXIT["failed"] = True


def _exit_wait_s() -> float:
    from datacomp.distillers.distributed import close_wait_s

    return close_wait_s(finished=not _EXIT["failed"])


def _close_at_exit(ctx: Any) -> None:
    ctx.close(_exit_wait_s())


def _record_uncaught() -> None:
    """Chain ``sys.excepthook`` so that an uncaught exception marks the rank failed before the exit handlers run."""
    previous = sys.excepthook

    def hook(*exc_info: Any) -> None:
        mark_failed()
        previous(*exc_info)

    sys.excepthook = hook


@dataclass(frozen=True)
class Ranks:
    """This process's place in the default process group: ``rank`` of ``world`` processes, and its ``device``
    (``cuda:LOCAL_RANK`` under torchrun on CUDA; None when no device was asked for)."""

    rank: int = 0
    world: int = 1
    device: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _count(value: Any, what: str, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def shard_range(n: int, rank: int, world: int) -> range:
    """The contiguous slice of ``range(n)`` that ``rank`` of ``world`` processes takes.

    Slices are balanced (sizes differ by at most one, the larger ones first), cover ``range(n)`` exactly once and
    follow each other in rank order; with more ranks than items the last ranks get empty slices.
    """
    n = _count(n, "n (items to split)", 0)
    world = _count(world, "world (number of processes)", 1)
    rank = _count(rank, "rank", 0)
    if rank >= world:
        raise ConfigError(f"rank must be in 0..{world - 1} for {world} processes, got {rank}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def ranks() -> Ranks:
    """Rank and world size of the initialised default process group, or ``Ranks()`` (0 of 1) when there is none.
    Never initialises a group (see :func:`join_torchrun`)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def _launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_torchrun(device: str | torch.device | None = None) -> Ranks:
    """:func:`ranks`, after initialising the default process group when the process was launched by ``torchrun``
    (``WORLD_SIZE > 1``) and none exists yet (:func:`datacomp.distillers.distributed.setup`: ``gloo`` on CPU,
    ``nccl`` with ``cuda:LOCAL_RANK`` on CUDA). The group then lives until the interpreter exits, so later calls (a
    second selection in the same job) use it too: torchrun's rendezvous cannot be joined twice.

    Returns:
        :class:`Ranks` whose ``device`` is the one this rank should use: ``cuda:LOCAL_RANK`` (or the current CUDA
        device) for a CUDA ``device``, else ``device`` as given (None when None).
    """
    if not (dist.is_available() and dist.is_initialized()) and _launched_by_torchrun():
        from datacomp.distillers.distributed import setup

        ctx = setup(device)
        _record_uncaught()
        atexit.register(_close_at_exit, ctx)
        return Ranks(ctx.rank, ctx.world_size, str(ctx.device))
    current = ranks()
    if device is None:
        return current
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and current.distributed and torch.cuda.is_initialized():
        dev = torch.device("cuda", torch.cuda.current_device())
    return Ranks(current.rank, current.world, str(dev))


def local_range(n: int) -> range:
    """This rank's slice of ``range(n)`` in the current process group (all of it without one)."""
    r = ranks()
    return shard_range(n, r.rank, r.world)


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_tensor(x: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every rank's ``[n_r, ...]`` tensor (same trailing shape and dtype everywhere), on every rank, by rank."""
    dev = _comm_device()
    flag = x.dtype == torch.bool
    buf = (x.to(torch.uint8) if flag else x).to(dev).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([buf.shape[0]], dtype=torch.long, device=dev))
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *buf.shape[1:]), dtype=buf.dtype, device=dev)
    padded[: buf.shape[0]] = buf
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [(p[:c].bool() if flag else p[:c]).to(x.device) for p, c in zip(parts, counts)]


def all_gather_concat(local: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Every rank's rows ``[n_r, ...]`` concatenated in rank order, on every rank (numpy in, numpy out; a tensor
    comes back on its own device). A collective: every rank must call it, with the same trailing shape and dtype.
    Without a process group: ``local`` itself."""
    r = ranks()
    if not r.distributed:
        return local
    if isinstance(local, torch.Tensor):
        return torch.cat(_gather_tensor(local, r.world))
    arr = np.require(local, requirements=["C", "W"])
    if arr.ndim == 0 or arr.dtype.kind not in "biuf":
        raise DataError(f"all_gather_concat needs a numeric or bool array with a first (row) axis, got "
                        f"{arr.dtype} of shape {arr.shape}")
    parts = _gather_tensor(torch.from_numpy(arr), r.world)
    return np.concatenate([p.numpy() for p in parts]).astype(arr.dtype, copy=False)


def gather_in_order(local: np.ndarray | torch.Tensor, n: int) -> np.ndarray | torch.Tensor:
    """The pool-order result ``[n, ...]`` from each rank's rows for its slice ``local_range(n)``, on every rank.

    Raises:
        DataError: ``local`` does not have one row per record of this rank's slice.
    """
    want = len(local_range(n))
    if local.shape[0] != want:
        r = ranks()
        raise DataError(f"rank {r.rank} of {r.world} holds {local.shape[0]} rows but its slice of the {n} records "
                        f"has {want}: give one row per record of local_range(n)")
    return all_gather_concat(local)


def all_gather_json(obj: Any) -> list[Any]:
    """Every rank's JSON-serialisable ``obj``, on every rank, by rank (``[obj]`` without a process group)."""
    if not ranks().distributed:
        return [obj]
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
    r = ranks()
    return [json.loads(bytes(p.tolist()).decode()) for p in _gather_tensor(data, r.world)]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective; ``flag`` itself without a group)."""
    if not ranks().distributed:
        return bool(flag)
    return any(all_gather_json(bool(flag)))
