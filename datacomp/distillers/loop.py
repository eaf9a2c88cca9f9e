"""The iteration loop of a distillation run: steps, progress, checkpoints, snapshots, the non-finite guard and
interrupts.

Snapshots: at every iteration of ``LoopState.snapshot_at`` (0 = before the first step) the loop calls
``LoopState.snapshot`` (on every process: gathering the set is collective), before that iteration's checkpoint, so a
run killed in between resumes from an earlier checkpoint and writes the snapshot again. A checkpoint segment ends at
each snapshot iteration; the steps run are the same, so the set is bit-identical to a run without snapshots.

After every iteration the loop checks the loss, the synthetic images and any learned sampler for NaN/inf (on every
process, agreed between them): a non-finite state stops the run before it can be checkpointed, so the last
checkpoint on disk is always finite. SIGINT and SIGTERM are caught while the loop runs: the current iteration ends,
a checkpoint is written and the run stops with the command that continues it (exit status 130 / 143).
"""

from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from datacomp.cost import CostLedger
from datacomp.distillers.base import Distiller
from datacomp.distillers.checkpoints import CHECKPOINT_FORMAT, save_checkpoint
from datacomp.distillers.distributed import Context
from datacomp.errors import RunAborted

__all__ = ["LoopState", "run_loop", "DistillationDiverged", "Interrupted"]


class DistillationDiverged(RunAborted, FloatingPointError):
    """The loss, the synthetic images or the sampler became NaN or infinite; the run stopped and its last (finite)
    checkpoint is kept."""


class Interrupted(RunAborted):
    """SIGINT or SIGTERM stopped the run after writing a checkpoint (exit status 128 + signal number)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class LoopState:
    """What the loop needs besides the distiller: where to checkpoint, the run's settings, its log and cost, and at
    which iterations ``snapshot(iteration)`` keeps a copy of the synthetic set."""

    folder: Path
    settings: dict[str, Any]
    checkpoint_every: int
    start: int = 0
    ledger: CostLedger = field(default_factory=CostLedger)
    log: dict[str, Any] = field(default_factory=lambda: {"loss": [], "lr": [], "events": []})
    progress: bool = True
    resume_hint: str = "run the same command with --resume"
    snapshot_at: tuple[int, ...] = ()
    snapshot: Callable[[int], None] | None = None


@contextmanager
def _catch_signals() -> Iterator[dict[str, int]]:
    """Record SIGINT / SIGTERM in the yielded dict instead of raising (main thread only; a no-op elsewhere)."""
    caught: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        caught.setdefault("signal", signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _mean_loss(losses: torch.Tensor, ctx: Context) -> float:
    """Mean over all classes of all processes, summed in class order (the same float operations as one process)."""
    every = torch.cat([p.cpu() for p in ctx.all_gather_rows(losses)])
    return float(every.sum().double() / float(len(every)))


def _save(distiller: Distiller, ctx: Context, state: LoopState, iteration: int) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT, "iteration": iteration, "settings": json.dumps(state.settings),
        "distiller": distiller.state_dict(), "torch_rng": torch.get_rng_state(), "log": json.dumps(state.log),
        "ledger": json.dumps(state.ledger.to_dict()), "rank": ctx.rank, "world_size": ctx.world_size,
    }
    save_checkpoint(state.folder, ctx, iteration, payload)


def run_loop(distiller: Distiller, ctx: Context, state: LoopState) -> None:
    """Run iterations ``state.start .. config.iterations``, checkpointing every ``state.checkpoint_every`` and at
    every ``state.snapshot_at`` iteration (after its snapshot).

    Raises:
        DistillationDiverged: a NaN/inf loss, image or sampler parameter (nothing non-finite is saved).
        Interrupted: SIGINT / SIGTERM (a checkpoint of the last finished iteration is saved first).
    """
    total, every, method = distiller.config.iterations, state.checkpoint_every, state.settings["method"]
    last_saved: int | None = state.start if state.start else None
    iteration = state.start
    snapshots = sorted(set(state.snapshot_at)) if state.snapshot is not None else []
    if iteration == 0 and 0 in snapshots:
        state.snapshot(0)
    bar = tqdm(total=total, initial=iteration, desc=f"distill {method}", disable=not (state.progress and ctx.is_main),
               dynamic_ncols=True)
    try:
        with _catch_signals() as caught:
            while iteration < total:
                segment_end = min([total, (iteration // every + 1) * every] + [n for n in snapshots if n > iteration])
                # One ledger entry per checkpoint segment, so every checkpoint carries the cost so far.
                with state.ledger.phase("distillation", flops="sampled", sample_steps=1,
                                        device=str(ctx.device)) as ph:
                    while iteration < segment_end:
                        with ph.step():
                            losses = distiller.step(iteration)
                        mean_loss = _mean_loss(losses, ctx)
                        iteration += 1
                        bad = distiller.nonfinite() + ([] if bool(torch.isfinite(losses).all()) else ["loss"])
                        if ctx.any(bool(bad)):
                            raise _diverged(method, iteration, bad, mean_loss, last_saved, state.folder)
                        distiller.after_step(mean_loss)
                        state.log["loss"].append(mean_loss)
                        state.log["lr"].append(distiller.current_lr())
                        bar.update(1)
                        bar.set_postfix(loss=f"{mean_loss:.4g}")
                        if ctx.any("signal" in caught):
                            break
                    ph.extra.update(iterations=iteration)
                if iteration in snapshots:
                    state.snapshot(iteration)
                _save(distiller, ctx, state, iteration)
                last_saved = iteration
                if ctx.any("signal" in caught):
                    signum = caught.get("signal", signal.SIGTERM)
                    name = signal.Signals(signum).name
                    raise Interrupted(f"{name} received: stopped after iteration {iteration} of {total}; the "
                                      f"checkpoint is in {state.folder}. Continue with: {state.resume_hint}", signum)
    finally:
        bar.close()


def _diverged(method: str, iteration: int, bad: list[str], mean_loss: float, last_saved: int | None,
              folder: Path) -> DistillationDiverged:
    what = ", ".join(bad) if bad else f"values on another process (loss {mean_loss})"
    where = (f"the last good checkpoint (iteration {last_saved}) is kept in {folder}; continue from it with --resume"
             if last_saved is not None else "no checkpoint was written yet")
    return DistillationDiverged(
        f"the {method} run became non-finite at iteration {iteration} ({what}; loss {mean_loss}): stopped; {where}. "
        "Lower the image learning rate (--set lr_img=...) and try again")

