"""Measurement probes for the cost ledger: FLOP counting, process / GPU memory, device names and energy.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` with a forward / backward split; memory from the
process's resident-set high-water mark and ``torch.cuda.max_memory_allocated``; energy from ``codecarbon`` when it is
installed. :mod:`datacomp.cost.phase` combines them per phase.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import Any

import torch

__all__ = [
    "SPLIT_SUPPORTED",
    "EnergyMeter",
    "close_flop_counter",
    "hardware_name",
    "is_cuda",
    "open_flop_counter",
    "peak_rss_bytes",
    "resolve_device",
    "sync_device",
]

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


SPLIT_SUPPORTED = hasattr(torch._C, "_current_graph_task_id")
try:
    from torch.utils.flop_counter import FlopCounterMode

    SPLIT_SUPPORTED = SPLIT_SUPPORTED and hasattr(FlopCounterMode, "_count_flops")
except ImportError:  # pragma: no cover - torch < 2.1
    FlopCounterMode = None  # type: ignore[assignment,misc]


if FlopCounterMode is not None:

    class _SplitFlopCounter(FlopCounterMode):  # type: ignore[misc,valid-type]
        """FlopCounterMode that also attributes each counted op to forward or backward."""

        def __init__(self) -> None:
            super().__init__(display=False)
            self.forward_flops = 0
            self.backward_flops = 0
            if SPLIT_SUPPORTED and hasattr(self, "mod_tracker"):
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
            if SPLIT_SUPPORTED:
                return float(self.forward_flops), float(self.backward_flops)
            # Older torch: no per-op hook, so the split is unknown; everything is reported as forward.
            return float(self.get_total_flops()), 0.0


def open_flop_counter() -> Any:
    """Start a FLOP counter that splits forward / backward (a torch dispatch mode); see :func:`close_flop_counter`."""
    if FlopCounterMode is None:  # pragma: no cover
        raise RuntimeError("FLOP counting needs torch.utils.flop_counter (torch >= 2.1); use flops=None")
    counter = _SplitFlopCounter()
    counter.__enter__()
    return counter


def close_flop_counter(counter: Any) -> tuple[float, float]:
    """Exit ``counter`` (it must be the innermost dispatch mode) and return its ``(forward, backward)`` FLOPs."""
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


def peak_rss_bytes() -> int:
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


def resolve_device(device: Any) -> str:
    """Canonical device string (``"cpu"``, ``"cuda:0"``); None = the current CUDA device if initialised, else cpu."""
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


def hardware_name(device: str) -> str:
    """CPU model or GPU name of ``device`` (cached per device string)."""
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


def is_cuda(device: str) -> bool:
    """True when ``device`` is a CUDA device and CUDA is available."""
    return device.startswith("cuda") and torch.cuda.is_available()


def sync_device(device: str) -> None:
    """Wait for queued CUDA work on ``device`` so wall-clock timings include it (no-op on CPU)."""
    if is_cuda(device) and torch.cuda.is_initialized():
        torch.cuda.synchronize(torch.device(device))


# ----------------------------------------------------------------------------------------------------------------
# Energy (optional codecarbon)
# ----------------------------------------------------------------------------------------------------------------
class EnergyMeter:
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
        """Stop the tracker and fill ``joules`` and ``mode`` (idempotent; never raises)."""
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
