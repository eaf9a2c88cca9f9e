"""Cost records: :class:`PhaseRecord` (one named phase, accumulated), :class:`CostTotals` (a sum of phases) and
:class:`CostEntry` (the amounts of a cost added by hand: an estimate, or a cost measured elsewhere)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import is_int

__all__ = ["ADDITIVE_EXTRA_KEYS", "CostEntry", "CostTotals", "PhaseRecord", "add_optional", "check_number"]

# extra[...] keys that add up when a phase is re-entered or ledgers are merged; other keys keep the latest value.
ADDITIVE_EXTRA_KEYS = ("runs", "samples_seen")
_ENTRY_KINDS = ("full", "sampled", "off", "estimated", "recorded")


def check_number(value: Any, what: str, *, allow_none: bool = False) -> float | None:
    """``value`` as a float after checking it is a finite non-negative number (or None when ``allow_none``).

    Raises:
        TypeError: Not a number (bools are rejected).
        ValueError: Negative, NaN or infinite; the message starts with ``what``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a non-negative number or None" if allow_none else "a non-negative number"
        raise TypeError(f"{what} must be {kind}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite non-negative number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CostEntry:
    """The amounts of one cost that no ledger phase measured (:meth:`datacomp.cost.CostLedger.add`), checked when made.

    Attributes:
        seconds: Wall-clock seconds.
        flops_forward: Forward FLOPs, or None if unknown.
        flops_backward: Backward FLOPs, or None if unknown.
        energy_joules: Energy, or None if unknown.
        device: Where the work ran (``"cpu"``, ``"cuda:0"``, a ``torch.device``), or "" if not applicable.
    """

    seconds: float = 0.0
    flops_forward: float | None = None
    flops_backward: float | None = None
    energy_joules: float | None = None
    device: Any = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", check_number(self.seconds, "seconds"))
        for name in ("flops_forward", "flops_backward", "energy_joules"):
            object.__setattr__(self, name, check_number(getattr(self, name), name, allow_none=True))


def add_optional(a: float | None, b: float | None) -> float | None:
    """``a + b`` where None means unknown: None only when both are None."""
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
        return add_optional(self.flops_forward, self.flops_backward)

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
        self.flops_forward = add_optional(self.flops_forward, other.flops_forward)
        self.flops_backward = add_optional(self.flops_backward, other.flops_backward)
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
        self.energy_joules = add_optional(self.energy_joules, other.energy_joules)
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
                  "int": is_int(value) and value >= 0,
                  "bool": isinstance(value, bool), "str": isinstance(value, str), "dict": isinstance(value, dict),
                  "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
                  "entries": isinstance(value, dict) and all(
                      k in _ENTRY_KINDS and is_int(v) and v >= 0
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

