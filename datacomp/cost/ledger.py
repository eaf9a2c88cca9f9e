"""The :class:`CostLedger`: named cost phases of one pipeline run, their totals and their JSON form."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import is_int
from ..io import json_default, read_json, write_json
from .measure import hardware_name, resolve_device
from .phase import PhaseHandle
from .records import CostEntry, CostTotals, PhaseRecord, add_optional

__all__ = ["FLOPS_CHOICES", "FLOPS_CONVENTION", "LEDGER_SCHEMA", "LEDGER_VERSION", "CostLedger", "load_json",
           "save_json"]

LEDGER_SCHEMA = "datacomp.cost.ledger"
LEDGER_VERSION = 1
FLOPS_CONVENTION = (
    "FLOPs from torch.utils.flop_counter.FlopCounterMode shape formulas: 1 multiply-add = 2 FLOPs; only matmul, "
    "convolution and attention ops are counted (elementwise, normalisation and pooling ops count 0; bias ignored); "
    "backward = ops run by the autograd engine."
)
FLOPS_CHOICES = (None, "off", "full", "sampled")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"phase name must be a non-empty string, got {name!r}")
    return name


class CostLedger:
    """Named cost phases of one pipeline run (see :mod:`datacomp.cost` for what is measured).

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
        if not is_int(sample_steps) or sample_steps < 1:
            raise ValueError(f"sample_steps must be an integer >= 1, got {sample_steps!r}")
        if not isinstance(energy, bool) or not isinstance(one_off, bool):
            raise TypeError("energy and one_off must be bools")
        existing = self._phases.get(name)
        if existing is not None and existing.one_off != one_off:
            raise ValueError(f"phase {name!r} was recorded with one_off={existing.one_off}; got one_off={one_off}")
        return PhaseHandle(self, name, None if flops == "off" else flops, sample_steps, resolve_device(device),
                           energy, one_off)

    def add(self, name: str, cost: CostEntry, *, estimated: bool = True, note: str | None = None,
            one_off: bool = False, extra: dict[str, Any] | None = None) -> PhaseRecord:
        """Record a phase that was not measured here (an estimate, or a cost measured elsewhere)::

            ledger.add("sae-training", CostEntry(seconds=3600.0, flops_forward=1e15), one_off=True, note="model card")

        Args:
            name: Phase name (accumulates into an existing record).
            cost: Seconds, forward and backward FLOPs, energy and device (:class:`CostEntry`).
            estimated: True for estimates (the record says ``estimated``), False for costs measured elsewhere.
            note: Why / how it was estimated.
            one_off: Capital cost shared by many uses.
            extra: Free-form JSON-safe metadata.

        Returns:
            The accumulated record for ``name``.
        """
        name = _check_name(name)
        if not isinstance(cost, CostEntry):
            raise TypeError(f"cost must be a CostEntry, got {type(cost).__name__}")
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        if note is not None and not isinstance(note, str):
            raise TypeError(f"note must be a str or None, got {type(note).__name__}")
        record = PhaseRecord(
            name=name, seconds=cost.seconds, flops_forward=cost.flops_forward, flops_backward=cost.flops_backward,
            calls=1, entries={"estimated" if estimated else "recorded": 1}, estimated=bool(estimated), one_off=one_off,
            device=resolve_device(cost.device) if cost.device else "", extra=dict(extra or {}),
            energy_joules=cost.energy_joules, notes=[note] if note else [])
        record.device_name = hardware_name(record.device) if record.device else ""
        if cost.energy_joules is not None:
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
            forward = add_optional(forward, rec.flops_forward)
            backward = add_optional(backward, rec.flops_backward)
            energy = add_optional(energy, rec.energy_joules)
        return CostTotals(phases=[r.name for r in chosen], seconds=sum(r.seconds for r in chosen),
                          flops_forward=forward, flops_backward=backward, flops=add_optional(forward, backward),
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
        if not is_int(version) or not 1 <= version <= LEDGER_VERSION:
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
    """Write ``obj`` as strict JSON (no NaN/inf: a ``ValueError``) to ``path`` atomically
    (:func:`datacomp.io.write_json`)."""
    json.dumps(obj, allow_nan=False, default=json_default)  # refuse NaN/inf before anything is written
    return write_json(path, obj)


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file (:func:`datacomp.io.read_json`: ``MissingInputError`` / ``FormatError`` with the path)."""
    return read_json(path)
