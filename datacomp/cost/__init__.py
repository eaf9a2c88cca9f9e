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

Modules: :mod:`~datacomp.cost.ledger` (:class:`CostLedger`, JSON I/O), :mod:`~datacomp.cost.records`
(:class:`PhaseRecord`, :class:`CostTotals`, :class:`CostEntry`), :mod:`~datacomp.cost.phase` (:class:`PhaseHandle`),
:mod:`~datacomp.cost.measure` (FLOP counter, memory, device, energy probes) and :mod:`~datacomp.cost.ratios`
(C_sel, C_sub, C_full, S, R, k*, STR).
"""

from __future__ import annotations

# FLOPS_CHOICES and ADDITIVE_EXTRA_KEYS stay reachable as datacomp.cost.<name> (outside __all__, as before the split).
from .ledger import (  # noqa: F401
    FLOPS_CHOICES,
    FLOPS_CONVENTION,
    LEDGER_SCHEMA,
    LEDGER_VERSION,
    CostLedger,
    load_json,
    save_json,
)
from .phase import PhaseHandle
from .ratios import (
    DEFINITIONS,
    CostReport,
    UnitCosts,
    break_even_reuses,
    cost_ratio,
    cost_report,
    savings,
    selection_to_tuning_ratio,
)
from .records import ADDITIVE_EXTRA_KEYS, CostEntry, CostTotals, PhaseRecord  # noqa: F401

__all__ = [
    "FLOPS_CONVENTION",
    "LEDGER_SCHEMA",
    "LEDGER_VERSION",
    "CostLedger",
    "CostEntry",
    "CostTotals",
    "PhaseHandle",
    "PhaseRecord",
    "load_json",
    "save_json",
    "DEFINITIONS",
    "CostReport",
    "UnitCosts",
    "break_even_reuses",
    "cost_ratio",
    "cost_report",
    "savings",
    "selection_to_tuning_ratio",
]
