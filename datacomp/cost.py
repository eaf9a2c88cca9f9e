"""Cost ledger: what each phase of a data-compression pipeline cost, in FLOPs, seconds, memory and energy.

A :class:`CostLedger` holds named phases (``feature-extraction``, ``proxy-training``, ``sae-training``,
``selection``, ``distillation``, ``train-on-subset``, ``train-on-full``, or any other string). Wrap work in
``with ledger.phase(name, flops=...) as ph:`` and, inside loops, ``with ph.step(): ...``::

    ledger = CostLedger()
    with ledger.phase("distillation", flops="sampled", sample_steps=3) as ph:
        for batch in loader:
            with ph.step():
                loss = model(batch).sum()
                loss.backward()

What is measured (all per phase, accumulated over re-entries of the same name):

* **FLOPs**, forward and backward separately, with :class:`torch.utils.flop_counter.FlopCounterMode` (shape
  formulas for matmul / conv / attention ops only; elementwise ops, norms and pooling count 0; bias ignored).
  Convention: **one multiply-add = 2 FLOPs**, so ``nn.Linear(i, o)`` on a batch ``B`` costs ``2*B*i*o`` forward.
  An op is *backward* when it runs inside the autograd engine (``loss.backward()``, ``torch.autograd.grad``,
  activation-checkpoint recomputation); everything else is *forward*. ``flops="sampled"`` counts only the first
  ``sample_steps`` steps and extrapolates (mean per counted step x number of steps); the record's ``flops_mode``
  says so.
* **Wall-clock seconds**, *exclusive*: while a phase (of any ledger, same thread) is open inside another, the outer
  phase's timer and FLOP counter pause, so no work is counted twice and ledgers can be merged safely. CUDA is
  synchronised at phase boundaries so GPU time is not under-reported.
* **CPU memory**: the process's resident-set high-water mark (``VmHWM`` / ``getrusage().ru_maxrss``) at phase end
  (``cpu_peak_rss_bytes``) and how much the phase raised it (``cpu_peak_rss_growth_bytes``). This is process-level
  (torch allocator caches and loaded libraries included) and cannot be reset, so 0 growth means "stayed below an
  earlier peak", not "used no memory". ``tracemalloc`` would miss torch's native allocations.
* **GPU memory** (CUDA phases): ``torch.cuda.max_memory_allocated`` over the phase (inclusive of nested phases).
* **Energy** (``energy=True``): joules from ``codecarbon`` if installed (``pip install 'datacomp[energy]'``), with
  the measurement mode it used; inclusive of nested phases. Without codecarbon the record says so.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

__all__ = [
    "FLOPS_CONVENTION",
    "LEDGER_SCHEMA",
    "LEDGER_VERSION",
    "CostLedger",
    "CostTotals",
    "PhaseHandle",
    "PhaseRecord",
    "load_json",
    "save_json",
    # re-exported from datacomp.report
    "DEFINITIONS",
    "CostReport",
    "UnitCosts",
    "break_even_reuses",
    "cost_ratio",
    "cost_report",
    "savings",
    "selection_to_tuning_ratio",
]

LEDGER_SCHEMA = "datacomp.cost.ledger"
LEDGER_VERSION = 1
FLOPS_CONVENTION = (
    "FLOPs from torch.utils.flop_counter.FlopCounterMode shape formulas: 1 multiply-add = 2 FLOPs; only matmul, "
    "convolution and attention ops are counted (elementwise, normalisation and pooling ops count 0; bias ignored); "
    "backward = ops run by the autograd engine."
)
FLOPS_CHOICES = (None, "off", "full", "sampled")
# extra[...] keys that add up when a phase is re-entered or ledgers are merged; other keys keep the latest value.
ADDITIVE_EXTRA_KEYS = ("runs", "samples_seen")
_ENTRY_KINDS = ("full", "sampled", "off", "estimated", "recorded")
_CODECARBON_MISSING = "unavailable: codecarbon is not installed (pip install 'datacomp[energy]')"


# ----------------------------------------------------------------------------------------------------------------
# FLOP counting with a forward / backward split
# ----------------------------------------------------------------------------------------------------------------
def _in_autograd_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


class _NullModuleTracker:
    """Stands in for FlopCounterMode's per-module tracker, which we do not need (it adds hooks to every module)."""

    parents = frozenset({"Global"})

    def __enter__(self) -> "_NullModuleTracker":
        return self

    def __exit__(self, *args: Any) -> None:
        return None


_SPLIT_SUPPORTED = hasattr(torch._C, "_current_graph_task_id")
try:
    from torch.utils.flop_counter import FlopCounterMode

    _SPLIT_SUPPORTED = _SPLIT_SUPPORTED and hasattr(FlopCounterMode, "_count_flops")
except ImportError:  # pragma: no cover - torch < 2.1
    FlopCounterMode = None  # type: ignore[assignment,misc]


if FlopCounterMode is not None:

    class _SplitFlopCounter(FlopCounterMode):  # type: ignore[misc,valid-type]
        """FlopCounterMode that also attributes each counted op to forward or backward."""

        def __init__(self) -> None:
            super().__init__(display=False)
            self.forward_flops = 0
            self.backward_flops = 0
            if _SPLIT_SUPPORTED and hasattr(self, "mod_tracker"):
                self.mod_tracker = _NullModuleTracker()

        def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
            formula = self.flop_registry.get(func_packet)
            if formula is not None:
                flops = formula(*args, **kwargs, out_val=out)
                if _in_autograd_backward():
                    self.backward_flops += flops
                else:
                    self.forward_flops += flops
            return out

        def totals(self) -> tuple[float, float]:
            if _SPLIT_SUPPORTED:
                return float(self.forward_flops), float(self.backward_flops)
            # Older torch: no per-op hook, so the split is unknown; everything is reported as forward.
            return float(self.get_total_flops()), 0.0


def _open_counter() -> Any:
    if FlopCounterMode is None:  # pragma: no cover
        raise RuntimeError("FLOP counting needs torch.utils.flop_counter (torch >= 2.1); use flops=None")
    counter = _SplitFlopCounter()
    counter.__enter__()
    return counter


def _close_counter(counter: Any) -> tuple[float, float]:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        top = _get_current_dispatch_mode()
        if getattr(counter, "mode", None) is not None and top is not counter.mode:
            raise RuntimeError(
                "a torch dispatch mode entered inside a cost phase is still active when the phase's FLOP counter "
                "closes; exit it before leaving the phase or step"
            )
    except ImportError:  # pragma: no cover
        pass
    counter.__exit__(None, None, None)
    return counter.totals()


# ----------------------------------------------------------------------------------------------------------------
# Device and memory probes
# ----------------------------------------------------------------------------------------------------------------
_DEVICE_NAMES: dict[str, str] = {}


def _peak_rss_bytes() -> int:
    """The process's resident-set high-water mark in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _resolve_device(device: Any) -> str:
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return f"cuda:{torch.cuda.current_device()}"
        return "cpu"
    if isinstance(device, (str, torch.device)):
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device: {device!r} is not a torch device string ({err})") from None
        if resolved.type == "cuda" and resolved.index is None and torch.cuda.is_available():
            resolved = torch.device("cuda", torch.cuda.current_device())
        return str(resolved)
    raise TypeError(f"device must be None, a str or a torch.device, got {type(device).__name__}")


def _device_name(device: str) -> str:
    if device not in _DEVICE_NAMES:
        name = platform.machine() or "unknown"
        if device.startswith("cuda") and torch.cuda.is_available():
            name = torch.cuda.get_device_name(torch.device(device))
        elif device == "cpu":
            name = platform.processor() or name
            try:
                with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
                    for line in cpuinfo:
                        if line.startswith("model name"):
                            name = line.split(":", 1)[1].strip()
                            break
            except OSError:
                pass
        _DEVICE_NAMES[device] = name
    return _DEVICE_NAMES[device]


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda") and torch.cuda.is_available()


def _sync(device: str) -> None:
    if _is_cuda(device) and torch.cuda.is_initialized():
        torch.cuda.synchronize(torch.device(device))


# ----------------------------------------------------------------------------------------------------------------
# Energy (optional codecarbon)
# ----------------------------------------------------------------------------------------------------------------
class _EnergyMeter:
    """One codecarbon tracker per phase entry (a reused tracker accumulates across start/stop in codecarbon 3)."""

    def __init__(self, phase_name: str) -> None:
        self.mode = _CODECARBON_MISSING
        self.joules: float | None = None
        self._tracker: Any = None
        try:
            import codecarbon
        except ImportError:
            return
        version = getattr(codecarbon, "__version__", "?")
        country = os.environ.get("DATACOMP_CARBON_COUNTRY", "USA")
        options = dict(project_name=f"datacomp-{phase_name}", country_iso_code=country, log_level="error",
                       tracking_mode="process", save_to_file=False)
        try:
            try:
                self._tracker = codecarbon.OfflineEmissionsTracker(**options)
            except TypeError:  # option names differ between codecarbon releases
                self._tracker = codecarbon.OfflineEmissionsTracker(country_iso_code=country, log_level="error")
            self._tracker.start()
            self.mode = f"codecarbon {version}"
        except Exception as err:  # energy must never break the measured work
            self._tracker = None
            self.mode = f"failed: codecarbon {version} could not start ({type(err).__name__}: {err})"

    def stop(self) -> None:
        if self._tracker is None:
            return
        tracker, self._tracker = self._tracker, None
        try:
            tracker.stop()
            data = tracker.final_emissions_data
            self.joules = float(data.energy_consumed) * 3.6e6  # kWh -> J
            conf = getattr(tracker, "_conf", {}) or {}
            hardware = conf.get("hardware")
            details = [f"tracking_mode={getattr(data, 'tracking_mode', conf.get('tracking_mode', '?'))}"]
            if hardware:
                details.append("hardware=" + "; ".join(str(h) for h in hardware))
            self.mode = f"{self.mode} ({', '.join(details)})"
        except Exception as err:
            self.mode = f"failed: {self.mode} could not measure ({type(err).__name__}: {err})"


# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------
def _check_number(value: Any, what: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a non-negative number or None" if allow_none else "a non-negative number"
        raise TypeError(f"{what} must be {kind}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite non-negative number, got {value!r}")
    return float(value)


def _add_optional(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _max_optional(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _join_unique(a: str, b: str) -> str:
    parts = [p for p in a.split(", ") if p]
    parts += [p for p in b.split(", ") if p and p not in parts]
    return ", ".join(parts)


@dataclass
class PhaseRecord:
    """Accumulated cost of one named phase. FLOP fields are ``None`` when nothing was counted or estimated.

    Attributes:
        name: Phase name.
        seconds: Exclusive wall-clock seconds.
        flops_forward: Forward FLOPs (counted, extrapolated or added analytically).
        flops_backward: Backward FLOPs.
        calls: Times the phase was entered (or added).
        steps: ``ph.step()`` blocks run.
        entries: How many entries used each FLOP mode (``full``, ``sampled``, ``off``, ``estimated``, ``recorded``).
        sampled_counted_steps: In sampled entries, steps run under the counter.
        sampled_total_steps: In sampled entries, all steps (the extrapolation target).
        analytic_flops_forward: Part of ``flops_forward`` added with ``ph.add_flops`` (not counted).
        analytic_flops_backward: Part of ``flops_backward`` added with ``ph.add_flops``.
        estimated: True when any entry was an estimate (``ledger.add(..., estimated=True)``).
        one_off: True for capital costs shared by many uses (e.g. a pretrained SAE or teacher); excluded from
            *marginal* cost ratios.
        device: Device string(s) the phase ran on.
        device_name: Hardware name(s) (CPU model or GPU name): timings compare only on the same hardware.
        cpu_peak_rss_bytes: Process RSS high-water mark at phase end (max over entries).
        cpu_peak_rss_growth_bytes: How much the phase raised that high-water mark (max over entries).
        gpu_peak_bytes: ``torch.cuda.max_memory_allocated`` during the phase (max over entries).
        energy_joules: Energy from codecarbon, summed over measured entries.
        energy_mode: How energy was measured (``off``, ``codecarbon ... (tracking_mode=..., hardware=...)``,
            ``unavailable: ...`` or ``failed: ...``).
        extra: Free-form JSON-safe metadata (e.g. ``runs``, ``epochs``, ``samples_seen``, ``protocol_kind``).
        notes: Human-readable notes.
    """

    name: str
    seconds: float = 0.0
    flops_forward: float | None = None
    flops_backward: float | None = None
    calls: int = 0
    steps: int = 0
    entries: dict[str, int] = field(default_factory=dict)
    sampled_counted_steps: int = 0
    sampled_total_steps: int = 0
    analytic_flops_forward: float = 0.0
    analytic_flops_backward: float = 0.0
    estimated: bool = False
    one_off: bool = False
    device: str = ""
    device_name: str = ""
    cpu_peak_rss_bytes: int | None = None
    cpu_peak_rss_growth_bytes: int | None = None
    gpu_peak_bytes: int | None = None
    energy_joules: float | None = None
    energy_mode: str = "off"
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float | None:
        """Forward + backward FLOPs, or None when nothing was counted."""
        return _add_optional(self.flops_forward, self.flops_backward)

    @property
    def flops_complete(self) -> bool:
        """False when some entries ran without FLOP counting, so ``flops`` misses their work."""
        return self.flops is not None and self.entries.get("off", 0) == 0

    @property
    def flops_mode(self) -> str:
        """How the FLOPs were obtained, e.g. ``"full"``, ``"sampled (3 of 30 steps, extrapolated)"``."""
        labels = {
            "full": "full",
            "sampled": f"sampled ({self.sampled_counted_steps} of {self.sampled_total_steps} steps, extrapolated)",
            "off": "off",
            "estimated": "estimated",
            "recorded": "recorded",
        }
        used = [kind for kind in _ENTRY_KINDS if self.entries.get(kind, 0) > 0]
        if not used:
            mode = "off"
        elif len(used) == 1:
            mode = labels[used[0]]
        else:
            mode = "mixed: " + ", ".join(f"{labels[k]} x{self.entries[k]}" for k in used)
        if self.analytic_flops_forward or self.analytic_flops_backward:
            mode += " + analytic additions"
        return mode

    def accumulate(self, other: "PhaseRecord") -> None:
        """Add ``other`` (same name) into this record."""
        if other.name != self.name:
            raise ValueError(f"cannot accumulate phase {other.name!r} into phase {self.name!r}")
        if self.calls and other.calls and other.one_off != self.one_off:
            raise ValueError(
                f"phase {self.name!r} was recorded with one_off={self.one_off} and now with one_off={other.one_off}; "
                "use a different phase name for one-off (capital) costs"
            )
        self.one_off = other.one_off if not self.calls else self.one_off
        self.seconds += other.seconds
        self.flops_forward = _add_optional(self.flops_forward, other.flops_forward)
        self.flops_backward = _add_optional(self.flops_backward, other.flops_backward)
        self.calls += other.calls
        self.steps += other.steps
        for kind, count in other.entries.items():
            self.entries[kind] = self.entries.get(kind, 0) + count
        self.sampled_counted_steps += other.sampled_counted_steps
        self.sampled_total_steps += other.sampled_total_steps
        self.analytic_flops_forward += other.analytic_flops_forward
        self.analytic_flops_backward += other.analytic_flops_backward
        self.estimated = self.estimated or other.estimated
        self.device = _join_unique(self.device, other.device)
        self.device_name = _join_unique(self.device_name, other.device_name)
        self.cpu_peak_rss_bytes = _max_optional(self.cpu_peak_rss_bytes, other.cpu_peak_rss_bytes)
        self.cpu_peak_rss_growth_bytes = _max_optional(self.cpu_peak_rss_growth_bytes, other.cpu_peak_rss_growth_bytes)
        self.gpu_peak_bytes = _max_optional(self.gpu_peak_bytes, other.gpu_peak_bytes)
        self.energy_joules = _add_optional(self.energy_joules, other.energy_joules)
        if other.energy_mode != "off":
            self.energy_mode = other.energy_mode if self.energy_mode == "off" else _join_unique(
                self.energy_mode, other.energy_mode)
        _merge_extra(self, other.extra)
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``flops``, ``flops_mode`` and ``flops_complete`` are derived, for readers)."""
        try:
            json.dumps(self.extra, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"phase {self.name!r}: extra must be JSON-serialisable ({err})") from None
        out = {"name": self.name, **{key: getattr(self, key) for key in _FIELD_KINDS}}
        out.update(flops=self.flops, flops_mode=self.flops_mode, flops_complete=self.flops_complete,
                   entries=dict(self.entries), extra=dict(self.extra), notes=list(self.notes))
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "phase") -> "PhaseRecord":
        """Validate and rebuild a record written by :meth:`to_dict` (errors name the offending field)."""
        if not isinstance(d, dict):
            raise TypeError(f"{where} must be a dict, got {type(d).__name__}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name must be a non-empty string, got {name!r}")
        where = f"{where} {name!r}"
        missing = [key for key in _REQUIRED_FIELDS if key not in d]
        if missing:
            raise ValueError(f"{where} is missing required field(s) {missing}")
        unknown = sorted(set(d) - set(_FIELD_KINDS) - {"name", "flops", "flops_mode", "flops_complete"})
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown}; was it written by a newer datacomp?")
        values: dict[str, Any] = {}
        for key, kind in _FIELD_KINDS.items():
            if key not in d:
                continue
            value, optional = d[key], kind.endswith("?")
            if value is None and optional:
                values[key] = None
                continue
            kind = kind.rstrip("?")
            ok = {"num": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and value >= 0,
                  "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                  "bool": isinstance(value, bool), "str": isinstance(value, str), "dict": isinstance(value, dict),
                  "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
                  "entries": isinstance(value, dict) and all(
                      k in _ENTRY_KINDS and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                      for k, v in value.items())}[kind]
            if not ok:
                expected = _KIND_TEXT[kind] + (" or null" if optional else "")
                raise ValueError(f"{where}.{key} must be {expected}, got {value!r}")
            values[key] = float(value) if kind == "num" else value
        return cls(name=name, **values)


# Serialised PhaseRecord fields and their JSON types ("?" = may be null).
_FIELD_KINDS = {
    "seconds": "num", "flops_forward": "num?", "flops_backward": "num?", "calls": "int", "steps": "int",
    "entries": "entries", "sampled_counted_steps": "int", "sampled_total_steps": "int",
    "analytic_flops_forward": "num", "analytic_flops_backward": "num", "estimated": "bool", "one_off": "bool",
    "device": "str", "device_name": "str", "cpu_peak_rss_bytes": "int?", "cpu_peak_rss_growth_bytes": "int?",
    "gpu_peak_bytes": "int?", "energy_joules": "num?", "energy_mode": "str", "extra": "dict", "notes": "strs",
}
_REQUIRED_FIELDS = ("seconds", "flops_forward", "flops_backward", "calls")
_KIND_TEXT = {"num": "a finite non-negative number", "int": "a non-negative integer", "bool": "true or false",
              "str": "a string", "dict": "an object", "strs": "a list of strings",
              "entries": f"an object mapping {list(_ENTRY_KINDS)} to non-negative integers"}


def _merge_extra(record: PhaseRecord, extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        old = record.extra.get(key)
        if key in ADDITIVE_EXTRA_KEYS and isinstance(old, (int, float)) and isinstance(value, (int, float)):
            record.extra[key] = old + value
            continue
        if key in record.extra and old != value:
            note = f"extra[{key!r}] differed between entries ({old!r} then {value!r}); the latest is kept"
            if note not in record.notes:
                record.notes.append(note)
        record.extra[key] = value


@dataclass
class CostTotals:
    """Sum over some phases. ``flops`` is None when no included phase has FLOPs; ``flops_complete`` is False when
    some included phase ran (partly) without FLOP counting."""

    phases: list[str]
    seconds: float
    flops_forward: float | None
    flops_backward: float | None
    flops: float | None
    flops_complete: bool
    energy_joules: float | None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------------------------------------------
# Active phases
# ----------------------------------------------------------------------------------------------------------------
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

    def __init__(self, ledger: "CostLedger", name: str, flops: str | None, sample_steps: int, device: str,
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
        self._meter: _EnergyMeter | None = None

    # -- public API --------------------------------------------------------------------------------------------
    def step(self) -> _Step:
        """Context manager for one loop iteration; with ``flops="sampled"`` only the first steps are counted."""
        return self._step_ctx

    def add_flops(self, forward: float = 0.0, backward: float = 0.0) -> None:
        """Add FLOPs computed analytically (work the counter cannot see, e.g. a custom kernel)."""
        self._analytic[0] += _check_number(forward, "add_flops(forward=...)")
        self._analytic[1] += _check_number(backward, "add_flops(backward=...)")

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
        self._rss_start = _peak_rss_bytes()
        if _is_cuda(self.device):
            self._gpu_peak = 0
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        if self.energy:
            self._meter = _EnergyMeter(self.name)
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
        _sync(self.device)
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
        self._counter = _open_counter()
        self._counter_kind = kind

    def _close(self) -> None:
        if self._counter is None:
            return
        forward, backward = _close_counter(self._counter)
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
        rss_end = _peak_rss_bytes()
        record = PhaseRecord(name=self.name, seconds=self._seconds, calls=1, steps=self._steps,
                             one_off=self.one_off, device=self.device, device_name=_device_name(self.device),
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
        if mode is not None and not _SPLIT_SUPPORTED:
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


# ----------------------------------------------------------------------------------------------------------------
# Ledger
# ----------------------------------------------------------------------------------------------------------------
def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"phase name must be a non-empty string, got {name!r}")
    return name


class CostLedger:
    """Named cost phases of one pipeline run (see the module docstring for what is measured).

    Args:
        metadata: Free-form JSON-safe metadata stored with the ledger (e.g. run id, config hash).
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._phases: dict[str, PhaseRecord] = {}

    # -- recording ---------------------------------------------------------------------------------------------
    def phase(self, name: str, flops: str | None = None, sample_steps: int = 3, device: Any = None,
              energy: bool = False, one_off: bool = False) -> PhaseHandle:
        """Measure a block: ``with ledger.phase("selection", flops="sampled") as ph: ...``.

        Args:
            name: Phase name; re-entering a name accumulates into the same record.
            flops: ``None``/``"off"`` (timer only, near-zero overhead), ``"full"`` (count every op) or
                ``"sampled"`` (count the first ``sample_steps`` ``ph.step()`` blocks and extrapolate; ops outside
                steps are counted before the first step only; without steps the whole body is counted). FLOP
                formulas depend on shapes only, so the extrapolation is exact when steps share shapes; a smaller last
                batch is over-counted by its share of the missing samples.
            sample_steps: Steps counted in sampled mode (>= 1).
            device: Where the work runs (``"cpu"``, ``"cuda:0"``, a ``torch.device``); ``None`` infers ``cuda`` if
                CUDA is initialised, else ``cpu``. CUDA phases also record peak GPU memory.
            energy: Also measure energy with codecarbon (optional dependency).
            one_off: Mark a capital cost shared by many uses (excluded from marginal ratios).

        Returns:
            The phase handle (a context manager).
        """
        name = _check_name(name)
        if flops not in FLOPS_CHOICES:
            raise ValueError(f"flops must be one of {FLOPS_CHOICES}, got {flops!r}")
        if isinstance(sample_steps, bool) or not isinstance(sample_steps, int) or sample_steps < 1:
            raise ValueError(f"sample_steps must be an integer >= 1, got {sample_steps!r}")
        if not isinstance(energy, bool) or not isinstance(one_off, bool):
            raise TypeError("energy and one_off must be bools")
        existing = self._phases.get(name)
        if existing is not None and existing.one_off != one_off:
            raise ValueError(f"phase {name!r} was recorded with one_off={existing.one_off}; got one_off={one_off}")
        return PhaseHandle(self, name, None if flops == "off" else flops, sample_steps, _resolve_device(device),
                           energy, one_off)

    def add(self, name: str, *, seconds: float = 0.0, flops_forward: float | None = None,
            flops_backward: float | None = None, estimated: bool = True, note: str | None = None,
            one_off: bool = False, device: Any = "", extra: dict[str, Any] | None = None,
            energy_joules: float | None = None) -> PhaseRecord:
        """Record a phase that was not measured here (an estimate, or a cost measured elsewhere).

        Args:
            name: Phase name (accumulates into an existing record).
            seconds: Wall-clock seconds.
            flops_forward: Forward FLOPs, or None if unknown.
            flops_backward: Backward FLOPs, or None if unknown.
            estimated: True for estimates (the record says ``estimated``), False for costs measured elsewhere.
            note: Why / how it was estimated.
            one_off: Capital cost shared by many uses.
            device: Device string, or "" if not applicable.
            extra: Free-form JSON-safe metadata.
            energy_joules: Energy, if known.

        Returns:
            The accumulated record for ``name``.
        """
        name = _check_name(name)
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        if note is not None and not isinstance(note, str):
            raise TypeError(f"note must be a str or None, got {type(note).__name__}")
        record = PhaseRecord(
            name=name, seconds=_check_number(seconds, "seconds"),
            flops_forward=_check_number(flops_forward, "flops_forward", allow_none=True),
            flops_backward=_check_number(flops_backward, "flops_backward", allow_none=True), calls=1,
            entries={"estimated" if estimated else "recorded": 1}, estimated=bool(estimated), one_off=one_off,
            device=_resolve_device(device) if device else "", extra=dict(extra or {}),
            energy_joules=_check_number(energy_joules, "energy_joules", allow_none=True),
            notes=[note] if note else [])
        record.device_name = _device_name(record.device) if record.device else ""
        if energy_joules is not None:
            record.energy_mode = "estimated" if estimated else "recorded"
        return self._record(record)

    def _record(self, record: PhaseRecord) -> PhaseRecord:
        target = self._phases.get(record.name)
        if target is None:
            target = self._phases[record.name] = PhaseRecord(name=record.name, one_off=record.one_off)
        target.accumulate(record)
        return target

    # -- reading -----------------------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._phases

    def __getitem__(self, name: str) -> PhaseRecord:
        if name not in self._phases:
            raise KeyError(f"no phase {name!r} in the ledger; phases: {list(self._phases)}")
        return self._phases[name]

    def __iter__(self) -> Iterator[PhaseRecord]:
        return iter(self._phases.values())

    def __len__(self) -> int:
        return len(self._phases)

    def names(self) -> list[str]:
        """Phase names in first-recorded order."""
        return list(self._phases)

    def total(self, phases: Iterable[str] | None = None, *, include_one_off: bool = True) -> CostTotals:
        """Sum seconds, FLOPs and energy over ``phases`` (all by default).

        Args:
            phases: Names to include; None for every phase. Unknown names raise ``ValueError``.
            include_one_off: False leaves out phases marked ``one_off`` (the marginal cost).

        Returns:
            A :class:`CostTotals`.
        """
        if isinstance(phases, str):
            raise TypeError("phases must be a list of phase names, not a single string")
        names = self.names() if phases is None else list(phases)
        unknown = [n for n in names if n not in self._phases]
        if unknown:
            raise ValueError(f"phases {unknown} are not in the ledger; recorded phases: {self.names()}")
        chosen = [self._phases[n] for n in dict.fromkeys(names) if include_one_off or not self._phases[n].one_off]
        forward = backward = energy = None
        for rec in chosen:
            forward = _add_optional(forward, rec.flops_forward)
            backward = _add_optional(backward, rec.flops_backward)
            energy = _add_optional(energy, rec.energy_joules)
        return CostTotals(phases=[r.name for r in chosen], seconds=sum(r.seconds for r in chosen),
                          flops_forward=forward, flops_backward=backward, flops=_add_optional(forward, backward),
                          flops_complete=all(r.flops_complete for r in chosen), energy_joules=energy)

    # -- combining and serialising -----------------------------------------------------------------------------
    def merge(self, other: "CostLedger") -> "CostLedger":
        """Accumulate every phase of ``other`` into this ledger (in place) and return ``self``."""
        if not isinstance(other, CostLedger):
            raise TypeError(f"merge expects a CostLedger, got {type(other).__name__}; use CostLedger.from_dict first")
        for record in other:
            self._record(PhaseRecord.from_dict(record.to_dict()))
        for key, value in other.metadata.items():
            self.metadata.setdefault(key, value)
        return self

    def copy(self) -> "CostLedger":
        """Independent deep copy."""
        return CostLedger.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, versioned dict."""
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"ledger metadata must be JSON-serialisable ({err})") from None
        return {"schema": LEDGER_SCHEMA, "version": LEDGER_VERSION, "flops_convention": FLOPS_CONVENTION,
                "metadata": dict(self.metadata), "phases": [rec.to_dict() for rec in self._phases.values()]}

    @classmethod
    def from_dict(cls, d: Any) -> "CostLedger":
        """Rebuild a ledger from :meth:`to_dict` output, validating every field.

        Raises:
            TypeError: ``d`` is not a dict.
            ValueError: Wrong schema or version, or an invalid phase (the message names the field).
        """
        if not isinstance(d, dict):
            raise TypeError(f"cost ledger must be a dict, got {type(d).__name__}")
        if d.get("schema") != LEDGER_SCHEMA:
            raise ValueError(f"cost ledger: schema must be {LEDGER_SCHEMA!r}, got {d.get('schema')!r}")
        version = d.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= LEDGER_VERSION:
            raise ValueError(f"cost ledger: unsupported version {version!r} (this datacomp reads 1..{LEDGER_VERSION})")
        metadata = d.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ValueError(f"cost ledger: metadata must be a dict, got {type(metadata).__name__}")
        phases = d.get("phases")
        if not isinstance(phases, list):
            raise ValueError(f"cost ledger: phases must be a list, got {type(phases).__name__}")
        ledger = cls(metadata)
        for i, item in enumerate(phases):
            record = PhaseRecord.from_dict(item, where=f"cost ledger: phases[{i}]")
            if record.name in ledger._phases:
                raise ValueError(f"cost ledger: phase {record.name!r} appears twice")
            ledger._phases[record.name] = record
        return ledger

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically; returns the path."""
        return save_json(self.to_dict(), path)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "CostLedger":
        """Read a ledger written by :meth:`save_json`."""
        return cls.from_dict(load_json(path))

    def __repr__(self) -> str:
        return f"CostLedger(phases={self.names()})"


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as strict JSON (no NaN/inf) to ``path`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file with a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


_RATIO_NAMES = ("DEFINITIONS", "CostReport", "UnitCosts", "break_even_reuses", "cost_ratio", "cost_report", "savings",
                "selection_to_tuning_ratio")


def __getattr__(name: str) -> Any:
    # Cost ratios live in datacomp.report (kept separate for size); re-exported lazily to avoid a circular import.
    if name in _RATIO_NAMES:
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
