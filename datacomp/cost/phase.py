"""Phase handles: what ``with ledger.phase(...) as ph:`` measures, with exclusive timing of nested phases."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import torch

from .measure import (
    SPLIT_SUPPORTED,
    EnergyMeter,
    close_flop_counter,
    hardware_name,
    is_cuda,
    open_flop_counter,
    peak_rss_bytes,
    sync_device,
)
from .records import PhaseRecord, check_number

__all__ = ["PhaseHandle"]


class Recorder(Protocol):
    """What a phase reports to when it closes (a :class:`~datacomp.cost.CostLedger`)."""

    def _record(self, record: PhaseRecord) -> None: ...

# Open phases of every ledger in this thread, innermost last: entering a phase pauses the one below it, so time
# and FLOPs are counted once (exclusive).
_ACTIVE = threading.local()


def _active_stack() -> list["PhaseHandle"]:
    if not hasattr(_ACTIVE, "stack"):
        _ACTIVE.stack = []
    return _ACTIVE.stack


class _Step:
    """Reusable ``with ph.step():`` context (one object per phase entry keeps the timer-only path cheap)."""

    __slots__ = ("_phase",)

    def __init__(self, phase: "PhaseHandle") -> None:
        self._phase = phase

    def __enter__(self) -> None:
        self._phase._enter_step()

    def __exit__(self, *exc: Any) -> None:
        self._phase._exit_step()


class PhaseHandle:
    """One entry into a ledger phase; returned by :meth:`CostLedger.phase` and used as ``ph``.

    Attributes:
        extra: Free-form metadata for this entry, merged into the phase record on exit (``runs`` and
            ``samples_seen`` add up across entries; other keys keep the latest value).
    """

    def __init__(self, ledger: Recorder, name: str, flops: str | None, sample_steps: int, device: str,
                 energy: bool, one_off: bool) -> None:
        self.ledger = ledger
        self.name = name
        self.flops_mode_requested = flops
        self.sample_steps = sample_steps
        self.device = device
        self.energy = energy
        self.one_off = one_off
        self.extra: dict[str, Any] = {}
        self._notes: list[str] = []
        self._step_ctx = _Step(self)
        self._state = "new"
        self._in_step = False
        self._seconds = 0.0
        self._t0: float | None = None
        self._steps = 0
        self._counted_steps = 0
        self._counter: Any = None
        self._counter_kind = ""  # "body" or "step"
        self._resume_kind = ""
        self._outside = [0.0, 0.0]
        self._counted = [0.0, 0.0]
        self._analytic = [0.0, 0.0]
        self._rss_start = 0
        self._gpu_peak: int | None = None
        self._meter: EnergyMeter | None = None

    # -- public API --------------------------------------------------------------------------------------------
    def step(self) -> _Step:
        """Context manager for one loop iteration; with ``flops="sampled"`` only the first steps are counted."""
        return self._step_ctx

    def add_flops(self, forward: float = 0.0, backward: float = 0.0) -> None:
        """Add FLOPs computed analytically (work the counter cannot see, e.g. a custom kernel)."""
        self._analytic[0] += check_number(forward, "add_flops(forward=...)")
        self._analytic[1] += check_number(backward, "add_flops(backward=...)")

    def note(self, text: str) -> None:
        """Attach a human-readable note to the phase record."""
        if not isinstance(text, str):
            raise TypeError(f"note must be a str, got {type(text).__name__}")
        self._notes.append(text)

    # -- context protocol --------------------------------------------------------------------------------------
    def __enter__(self) -> "PhaseHandle":
        if self._state != "new":
            raise RuntimeError(f"phase {self.name!r}: a PhaseHandle can be entered only once; call ledger.phase again")
        self._state = "active"
        stack = _active_stack()
        if stack:
            stack[-1]._pause()
        stack.append(self)
        self._rss_start = peak_rss_bytes()
        if is_cuda(self.device):
            self._gpu_peak = 0
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        if self.energy:
            self._meter = EnergyMeter(self.name)
        self._resume_kind = "body" if self.flops_mode_requested else ""
        self._resume()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._in_step:  # an exception escaped a step: close it so its counter is not left on the mode stack
            self._exit_step()
        self._pause()
        self._state = "done"
        stack = _active_stack()
        if not stack or stack[-1] is not self:
            raise RuntimeError(f"phase {self.name!r} closed out of order: cost phases must be nested (LIFO)")
        stack.pop()
        if exc_type is not None:
            self._notes.append(f"phase ended with {exc_type.__name__}")
        self.ledger._record(self._build_record())
        if stack:
            stack[-1]._resume()

    # -- internals ---------------------------------------------------------------------------------------------
    def _pause(self) -> None:
        sync_device(self.device)
        if self._t0 is not None:
            self._seconds += time.perf_counter() - self._t0
            self._t0 = None
        if self._gpu_peak is not None:
            self._gpu_peak = max(self._gpu_peak, torch.cuda.max_memory_allocated(torch.device(self.device)))
        self._resume_kind = self._counter_kind
        self._close()

    def _resume(self) -> None:
        if self._resume_kind:
            self._open(self._resume_kind)
        self._t0 = time.perf_counter()

    def _open(self, kind: str) -> None:
        self._counter = open_flop_counter()
        self._counter_kind = kind

    def _close(self) -> None:
        if self._counter is None:
            return
        forward, backward = close_flop_counter(self._counter)
        target = self._counted if self._counter_kind == "step" else self._outside
        target[0] += forward
        target[1] += backward
        self._counter = None
        self._counter_kind = ""

    def _enter_step(self) -> None:
        if self._state != "active":
            raise RuntimeError(f"phase {self.name!r}: ph.step() used outside its 'with ledger.phase(...)' block")
        if self._in_step:
            raise RuntimeError(f"phase {self.name!r}: ph.step() blocks cannot be nested")
        if _active_stack()[-1] is not self:
            raise RuntimeError(f"phase {self.name!r}: ph.step() used while a nested phase is open")
        self._in_step = True
        mode = self.flops_mode_requested
        if mode is None:
            return
        self._close()  # FLOPs before the first step (and between steps, in full mode) count unscaled
        if mode == "full" or self._counted_steps < self.sample_steps:
            self._open("step")

    def _exit_step(self) -> None:
        self._in_step = False
        self._steps += 1
        if self._counter_kind == "step":
            self._close()
            self._counted_steps += 1
        if self.flops_mode_requested == "full":
            self._open("body")

    def _build_record(self) -> PhaseRecord:
        rss_end = peak_rss_bytes()
        record = PhaseRecord(name=self.name, seconds=self._seconds, calls=1, steps=self._steps,
                             one_off=self.one_off, device=self.device, device_name=hardware_name(self.device),
                             cpu_peak_rss_bytes=rss_end, cpu_peak_rss_growth_bytes=max(0, rss_end - self._rss_start),
                             gpu_peak_bytes=self._gpu_peak, extra=dict(self.extra), notes=list(self._notes))
        mode = self.flops_mode_requested
        if mode is None:
            kind = "off"
        elif mode == "sampled" and self._steps > 0:
            kind = "sampled"
            scale = self._steps / max(self._counted_steps, 1)
            record.flops_forward = self._outside[0] + self._counted[0] * scale
            record.flops_backward = self._outside[1] + self._counted[1] * scale
            record.sampled_counted_steps = self._counted_steps
            record.sampled_total_steps = self._steps
        else:
            kind = "full"
            record.flops_forward = self._outside[0] + self._counted[0]
            record.flops_backward = self._outside[1] + self._counted[1]
            if mode == "sampled":
                record.notes.append("flops='sampled' without ph.step(): the whole phase body was counted")
        if mode is not None and not SPLIT_SUPPORTED:
            record.notes.append(f"torch {torch.__version__} cannot split forward/backward: all FLOPs in forward")
        record.entries = {kind: 1}
        if self._analytic[0] or self._analytic[1]:
            record.flops_forward = (record.flops_forward or 0.0) + self._analytic[0]
            record.flops_backward = (record.flops_backward or 0.0) + self._analytic[1]
            record.analytic_flops_forward, record.analytic_flops_backward = self._analytic
        if self._meter is not None:
            self._meter.stop()
            record.energy_joules, record.energy_mode = self._meter.joules, self._meter.mode
        return record
