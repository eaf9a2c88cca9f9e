"""Cost ratios ("is the selection worth it?") computed from a :class:`~datacomp.cost.CostLedger`.

Definitions (all per downstream training run, in FLOPs and in seconds; :data:`DEFINITIONS` carries the text printed
next to every number):

* ``C_sel`` - selection cost: every ledger phase except ``train-on-subset``, ``train-on-full`` and ``evaluation``
  (feature extraction, proxy / SAE training, scoring, distillation, ...). *Marginal* leaves out phases marked
  ``one_off`` (a pretrained SAE or teacher shared by many uses); *fully loaded* includes them.
* ``C_sub`` - one training run on the subset (the ``train-on-subset`` phase divided by ``extra["runs"]``).
* ``C_full`` - one training run on the full data: *measured* (a ``train-on-full`` phase) or *estimated from
  per-sample cost* (``C_sub / samples seen`` x epochs x ``N_full``).
* savings ``S = C_full - C_sub``; cost ratio ``R = S / C_sel`` (worth it in a single use when ``R > 1``, i.e. when
  ``C_sel + C_sub < C_full``); break-even reuses ``k* = C_sel / S``; selection-to-tuning ratio
  ``STR = C_sel / C_full``.
* Under a *fixed-iteration* protocol the subset trains for as many steps as the full data, so ``S = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import is_int
from .ledger import CostLedger

__all__ = [
    "DEFINITIONS",
    "NON_SELECTION_PHASES",
    "PROTOCOL_KINDS",
    "UNITS",
    "CostReport",
    "UnitCosts",
    "break_even_reuses",
    "cost_ratio",
    "cost_report",
    "fmt",
    "phase_cost",
    "phase_runs",
    "savings",
    "selection_to_tuning_ratio",
]

NON_SELECTION_PHASES = ("train-on-subset", "train-on-full", "evaluation")
PROTOCOL_KINDS = ("fixed-epoch", "fixed-iteration")
UNITS = {"flops": "FLOPs", "seconds": "s"}
DEFINITIONS = {
    "C_sel": "selection cost: all phases except train-on-subset, train-on-full and evaluation (feature extraction, "
             "proxy/SAE training, scoring, distillation...); marginal = without phases marked one-off (pretrained "
             "SAE/teacher), fully loaded = with them",
    "C_sub": "cost of one training run on the subset (train-on-subset phase / runs)",
    "C_full": "cost of one training run on the full data: measured (train-on-full phase) or estimated from the "
              "per-sample cost of train-on-subset x epochs x N_full",
    "S": "savings S = C_full - C_sub (0 under a fixed-iteration protocol: the subset trains for as many steps)",
    "R": "cost ratio R = S / C_sel; the selection pays for itself in a single use when R > 1 (C_sel + C_sub < C_full)",
    "k*": "break-even reuses k* = C_sel / S: trainings on the subset needed to repay the selection (inf if S <= 0)",
    "STR": "selection-to-tuning ratio STR = C_sel / C_full (Data Whisperer, arXiv 2505.12212)",
}


# ----------------------------------------------------------------------------------------------------------------
# Scalar ratios
# ----------------------------------------------------------------------------------------------------------------
def savings(c_full: float, c_sub: float) -> float:
    """Savings ``S = C_full - C_sub``: what training on the subset instead of the full data saves (may be < 0)."""
    return c_full - c_sub


def cost_ratio(s: float, c_sel: float) -> float:
    """Cost ratio ``R = S / C_sel``: savings per unit of selection cost; worth it in one use when ``R > 1``.

    Returns ``inf`` for a free selection with positive savings and ``nan`` for ``0 / 0``.
    """
    if c_sel == 0:
        return math.inf if s > 0 else (math.nan if s == 0 else -math.inf)
    return s / c_sel


def break_even_reuses(c_sel: float, s: float) -> float:
    """Break-even reuses ``k* = C_sel / S``: how many trainings on the subset repay its selection cost.

    Returns ``inf`` when the subset saves nothing (``S <= 0``): it never breaks even.
    """
    if s <= 0:
        return math.inf
    return c_sel / s


def selection_to_tuning_ratio(c_sel: float, c_full: float) -> float:
    """Selection-to-tuning ratio ``STR = C_sel / C_full`` (Data Whisperer); ``nan`` when ``C_full`` is 0."""
    return c_sel / c_full if c_full > 0 else math.nan


# ----------------------------------------------------------------------------------------------------------------
# Ledger-level report
# ----------------------------------------------------------------------------------------------------------------
def _json_number(value: float | None) -> float | str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


@dataclass
class UnitCosts:
    """All costs and ratios in one unit (FLOPs or seconds); ``None`` where the ledger lacks the numbers."""

    unit: str
    c_sel_marginal: float | None = None
    c_sel_fully_loaded: float | None = None
    c_sub: float | None = None
    c_full: float | None = None
    savings: float | None = None
    r_marginal: float | None = None
    r_fully_loaded: float | None = None
    k_marginal: float | None = None
    k_fully_loaded: float | None = None
    str_marginal: float | None = None
    str_fully_loaded: float | None = None

    @property
    def worth_it_marginal(self) -> bool | None:
        return None if self.r_marginal is None else bool(self.r_marginal > 1)

    @property
    def worth_it_fully_loaded(self) -> bool | None:
        return None if self.r_fully_loaded is None else bool(self.r_fully_loaded > 1)

    def to_dict(self) -> dict[str, Any]:
        out = {k: _json_number(v) for k, v in self.__dict__.items()}
        out.update(worth_it_marginal=self.worth_it_marginal, worth_it_fully_loaded=self.worth_it_fully_loaded)
        return out


@dataclass
class CostReport:
    """Cost ratios of one run, with the definitions to print beside them."""

    protocol_kind: str
    c_full_source: str
    selection_phases: list[str]
    one_off_phases: list[str]
    units: dict[str, UnitCosts]
    notes: list[str] = field(default_factory=list)
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``inf`` as the string ``"inf"``, undefined values as null)."""
        return {"protocol_kind": self.protocol_kind, "c_full_source": self.c_full_source,
                "selection_phases": list(self.selection_phases), "one_off_phases": list(self.one_off_phases),
                "units": {k: v.to_dict() for k, v in self.units.items()}, "notes": list(self.notes),
                "definitions": dict(self.definitions)}

    def format(self) -> str:
        """Human-readable block: the numbers in both units, then notes and definitions."""
        lines = [f"protocol: {self.protocol_kind}; C_full: {self.c_full_source}; selection phases: "
                 f"{', '.join(self.selection_phases) or '(none)'}"
                 + (f" (one-off: {', '.join(self.one_off_phases)})" if self.one_off_phases else "")]
        for unit, c in self.units.items():
            label = UNITS[unit]
            lines.append(f"  [{label}] C_sel {fmt(c.c_sel_marginal)} marginal / {fmt(c.c_sel_fully_loaded)} fully "
                         f"loaded; C_sub {fmt(c.c_sub)}; C_full {fmt(c.c_full)}; S {fmt(c.savings)}; "
                         f"R {fmt(c.r_marginal)} / {fmt(c.r_fully_loaded)}; k* {fmt(c.k_marginal)} / "
                         f"{fmt(c.k_fully_loaded)}; STR {fmt(c.str_marginal)} / {fmt(c.str_fully_loaded)}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {k}: {v}" for k, v in self.definitions.items()]
        return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    """Compact number: ``n/a`` for None/NaN, ``inf``, ``1.23e+12`` for large or small magnitudes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-2):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def phase_cost(ledger: CostLedger, name: str, unit: str) -> float | None:
    """Total cost of phase ``name`` in ``unit`` (``"seconds"`` or ``"flops"``; None when it has no FLOPs)."""
    record = ledger[name]
    return record.seconds if unit == "seconds" else record.flops


def phase_runs(ledger: CostLedger, name: str) -> int:
    """Training runs covered by phase ``name`` (``extra["runs"]``, default 1); raises ValueError if invalid."""
    runs = ledger[name].extra.get("runs", 1)
    if not is_int(runs) or runs < 1:
        raise ValueError(f"phase {name!r}: extra['runs'] must be a positive integer, got {runs!r}")
    return runs


def cost_report(ledger: CostLedger, *, full_train_size: int | None = None, protocol_kind: str | None = None,
                full_epochs: float | None = None, exclude: Iterable[str] = NON_SELECTION_PHASES) -> CostReport:
    """Compute C_sel, C_sub, C_full, S, R, k* and STR (marginal and fully loaded, in FLOPs and seconds).

    Args:
        ledger: All phases of one run (selection phases plus the ``train-on-subset`` evaluation phase; merge the
            ledgers first if they were recorded separately).
        full_train_size: ``N_full``, needed to estimate ``C_full`` when there is no ``train-on-full`` phase.
        protocol_kind: ``fixed-epoch`` or ``fixed-iteration``; default: ``train-on-subset``'s
            ``extra["protocol_kind"]``, else fixed-epoch (with a note).
        full_epochs: Epochs of the full-data training used for the estimate; default: the subset's
            ``extra["epochs"]`` (distillation protocols often train small sets far longer than full data).
        exclude: Phase names that are not part of the selection cost.

    Returns:
        A :class:`CostReport`.
    """
    if not isinstance(ledger, CostLedger):
        raise TypeError(f"ledger must be a CostLedger, got {type(ledger).__name__}")
    if full_train_size is not None and (not is_int(full_train_size) or full_train_size < 1):
        raise ValueError(f"full_train_size must be a positive integer, got {full_train_size!r}")
    if full_epochs is not None and (isinstance(full_epochs, bool) or not isinstance(full_epochs, (int, float))
                                    or not full_epochs > 0):
        raise ValueError(f"full_epochs must be a positive number, got {full_epochs!r}")
    notes: list[str] = []
    has_sub, has_full = "train-on-subset" in ledger, "train-on-full" in ledger
    sub_extra = ledger["train-on-subset"].extra if has_sub else {}
    if protocol_kind is None:
        protocol_kind = sub_extra.get("protocol_kind")
        if protocol_kind is None:
            protocol_kind = "fixed-epoch"
            notes.append("training protocol kind not recorded; assumed fixed-epoch")
    if protocol_kind not in PROTOCOL_KINDS:
        raise ValueError(f"protocol_kind must be one of {PROTOCOL_KINDS}, got {protocol_kind!r}")
    excluded = set(exclude)
    selection = [r.name for r in ledger if r.name not in excluded]
    one_off = [r.name for r in ledger if r.name in selection and r.one_off]
    incomplete = [r.name for r in ledger if r.name in selection and not r.flops_complete]
    if incomplete:
        notes.append(f"C_sel in FLOPs is incomplete: {incomplete} ran (partly) without FLOP counting")
    if not has_sub:
        notes.append("no train-on-subset phase: C_sub, S, R and k* are unknown")

    if protocol_kind == "fixed-iteration":
        source = "fixed-iteration: same number of steps as the subset"
        notes.append("fixed-iteration protocol: the subset saves no training compute (S = 0, R = 0)")
    elif has_full:
        source = "measured"
    elif has_sub and full_train_size is not None and isinstance(sub_extra.get("samples_seen"), (int, float)) \
            and sub_extra["samples_seen"] > 0:
        epochs = full_epochs if full_epochs is not None else sub_extra.get("epochs")
        if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
            source = "unknown"
            notes.append("cannot estimate C_full: no epochs recorded; pass full_epochs (--full-epochs)")
        else:
            source = "estimated from per-sample cost"
            notes.append(f"C_full estimated as per-sample-epoch cost x {epochs:g} epochs x {full_train_size} samples"
                         + ("" if full_epochs is None else " (full-data epochs given explicitly)"))
    else:
        source = "unknown"
        notes.append("C_full unknown: record a train-on-full phase, or give full_train_size and record "
                     "extra['samples_seen'] and extra['epochs'] in train-on-subset")

    units: dict[str, UnitCosts] = {}
    for unit in UNITS:
        c = UnitCosts(unit=unit)
        for kind, totals in (("marginal", ledger.total(selection, include_one_off=False)),
                             ("fully_loaded", ledger.total(selection))):
            # no phases at all costs 0; phases without any FLOP count leave the FLOP cost unknown
            value = totals.seconds if unit == "seconds" else (totals.flops if totals.phases else 0.0)
            setattr(c, f"c_sel_{kind}", value)
        if has_sub:
            total_sub = phase_cost(ledger, "train-on-subset", unit)
            c.c_sub = None if total_sub is None else total_sub / phase_runs(ledger, "train-on-subset")
            if source == "estimated from per-sample cost" and total_sub is not None:
                epochs = full_epochs if full_epochs is not None else sub_extra["epochs"]
                c.c_full = total_sub / sub_extra["samples_seen"] * epochs * full_train_size
        if source == "measured":
            total_full = phase_cost(ledger, "train-on-full", unit)
            c.c_full = None if total_full is None else total_full / phase_runs(ledger, "train-on-full")
        elif source.startswith("fixed-iteration"):
            c.c_full = c.c_sub
        if c.c_full is not None and c.c_sub is not None:
            c.savings = 0.0 if protocol_kind == "fixed-iteration" else savings(c.c_full, c.c_sub)
        for kind in ("marginal", "fully_loaded"):
            c_sel = getattr(c, f"c_sel_{kind}")
            if c_sel is None:
                continue
            if c.savings is not None:
                setattr(c, f"r_{kind}", cost_ratio(c.savings, c_sel))
                setattr(c, f"k_{kind}", break_even_reuses(c_sel, c.savings))
            if c.c_full is not None:
                setattr(c, f"str_{kind}", selection_to_tuning_ratio(c_sel, c.c_full))
        units[unit] = c
    if protocol_kind == "fixed-iteration":
        for c in units.values():
            c.r_marginal = 0.0 if c.r_marginal is not None else None
            c.r_fully_loaded = 0.0 if c.r_fully_loaded is not None else None
    return CostReport(protocol_kind=protocol_kind, c_full_source=source, selection_phases=selection,
                      one_off_phases=one_off, units=units, notes=notes)
