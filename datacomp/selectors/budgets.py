"""Budgets: how many items a selection takes in total (``ipc`` / ``fraction`` / ``budget``) and per class.

Per-class budgets follow ``class_budget``: ``"proportional"`` (default) gives class c ``floor(budget * n_c / n)``
and hands the remaining items to the classes with the largest remainders ``budget * n_c mod n`` (ties: smaller class
label first), so the total is exactly ``budget``; ``"equal"`` gives ``budget // C`` to every class and one more to
the first ``budget % C`` classes (error if a class is too small); a ``dict`` ``{label: budget}`` is used as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datacomp.errors import ConfigError, is_int

__all__ = ["class_budgets", "Size", "resolve_size"]


def class_budgets(labels: np.ndarray, budget: int | None, rule: str | dict = "proportional") -> dict:
    """Per-class budgets (module docstring for the rounding rules).

    Args:
        labels: ``[n]`` labels.
        budget: total budget (ignored, may be ``None``, when ``rule`` is a dict).
        rule: ``"proportional"``, ``"equal"`` or ``{label: budget}``.

    Returns:
        ``{label: budget}`` over every class (zero budgets included), in sorted label order.

    Raises:
        ConfigError: a class budget above that class's size, a negative budget, an unknown label or rule.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    if isinstance(rule, dict):
        unknown = set(rule) - set(classes.tolist())
        if unknown:
            raise ConfigError(f"class_budget names labels {sorted(map(str, unknown))} that are not in labels")
        out = {c: int(rule.get(c, 0)) for c in classes.tolist()}
        if any(b < 0 for b in out.values()):
            raise ConfigError("class_budget values must be >= 0")
        if budget is not None and sum(out.values()) != budget:
            raise ConfigError(f"class_budget sums to {sum(out.values())} but budget={budget}; make them agree "
                              "or pass budget=None")
    elif rule == "proportional":
        numer = budget * counts.astype(np.int64)
        base = numer // n
        remainder = numer % n
        extra = budget - int(base.sum())
        bonus = np.zeros_like(base)
        bonus[np.lexsort((np.arange(classes.size), -remainder))[:extra]] = 1
        out = dict(zip(classes.tolist(), (base + bonus).tolist()))
    elif rule == "equal":
        base = np.full(classes.size, budget // classes.size, dtype=np.int64)
        base[: budget % classes.size] += 1
        out = dict(zip(classes.tolist(), base.tolist()))
    else:
        raise ConfigError(f"class_budget must be 'proportional', 'equal' or a dict, got {rule!r}")
    for c, size in zip(classes.tolist(), counts.tolist()):
        if out[c] > size:
            raise ConfigError(f"class {c!r} has {size} items but its budget is {out[c]}; lower the budget, use "
                              "class_budget='proportional' or class_balanced=False")
    return out


@dataclass(frozen=True)
class Size:
    """How many items to select: exactly one of ``ipc`` (items per class), ``fraction`` (of the pool) or
    ``budget`` (items)."""

    ipc: int | None = None
    fraction: float | None = None
    budget: int | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("ipc", "fraction", "budget") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of --ipc, --fraction or --budget"
                              + (f" (got {', '.join('--' + g for g in given)})" if given else ""))


def _int(value, flag: str) -> int:
    if not is_int(value):
        raise ConfigError(f"{flag} must be an integer, got {value!r}")
    return int(value)


def resolve_size(size: Size, n: int, class_counts: np.ndarray | None) -> tuple[int, str]:
    """``(budget, class_budget rule)`` of ``size`` on a pool of ``n`` items; errors name the flag."""
    if size.ipc is not None:
        ipc = _int(size.ipc, "--ipc")
        if class_counts is None:
            raise ConfigError("--ipc needs class labels (image datasets, or text with --label-field); use --budget "
                              "or --fraction")
        if ipc < 1:
            raise ConfigError(f"--ipc must be >= 1, got {ipc}")
        if ipc > int(class_counts.min()):
            raise ConfigError(f"--ipc {ipc} exceeds the smallest class ({int(class_counts.min())} items); "
                              "lower --ipc or use --fraction")
        return ipc * len(class_counts), "equal"
    if size.fraction is not None:
        fraction = size.fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {fraction}")
        budget = int(round(fraction * n))
        if budget < 1:
            raise ConfigError(f"--fraction {fraction} of {n} items rounds to 0; raise it or use --budget")
        return budget, "proportional"
    budget = _int(size.budget, "--budget")
    if budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {budget}")
    if budget > n:
        raise ConfigError(f"--budget {budget} exceeds the pool size ({n} items); lower it or use --fraction")
    return budget, "proportional"
