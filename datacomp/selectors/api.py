"""``select``: one entry point for every data-selection method, with validation and class balancing.

Methods, their required inputs and the meaning of ``Selection.scores`` (the value recorded for each pick):

===================  ==========================================================  ================================
method               required inputs (one of the listed alternatives)            ``scores[t]``
===================  ==========================================================  ================================
random               any input with the pool size, or ``n_items=``               uniform key (picks = smallest)
herding              ``features=``                                               running-mean error (lower=better)
kcenter              ``features=``                                               distance to earlier picks
facility-location    ``features=``                                               marginal gain (higher first)
forgetting           ``scores=`` | ``correct=`` [epochs, n] | ``dynamics=``       forgetting events
el2n                 ``scores=`` | (``probs=``|``logits=``) + labels | dynamics  EL2N
grand                ``scores=`` | (``probs=``|``logits=``) + labels +           GraNd
                     (``embeddings=``|``features=``) | ``dynamics=``
uncertainty          ``scores=`` | ``probs=`` | ``logits=`` | ``dynamics=``     uncertainty (higher = uncertain)
ccs                  ``scores=`` (any importance score)                          the item's score
longest              ``lengths=`` | ``texts=``                                   length
sae-greedy           ``activations=`` | ``sae=`` + ``features=``                 newly covered latents
sae-simscale         ``activations=`` | ``sae=`` + ``features=``                 max cosine to earlier picks
===================  ==========================================================  ================================

SAE methods take ``threshold`` (activation level above which a latent counts as active) or ``threshold_quantile``
(that level as a quantile of all positive activations: with a TopK SAE every item has exactly k latents above 0,
so a quantile is what makes |A(x)| differ between items). sae-simscale scans by |A(x)| descending, ties by
activation mass, then index (``order_by``: ``n-active``, ``length``, ``score``, ``index``).

Class balance: with ``labels`` and ``class_balanced=True`` (default) the method runs inside each class. Per-class
budgets follow ``class_budget``: ``"proportional"`` (default) gives class c ``floor(budget * n_c / n)`` and hands
the remaining items to the classes with the largest remainders ``budget * n_c mod n`` (ties: smaller class label
first), so the total is exactly ``budget``; ``"equal"`` gives ``budget // C`` to every class and one more to the
first ``budget % C`` classes (error if a class is too small); a ``dict`` ``{label: budget}`` is used as given.
``indices`` are then grouped by class (sorted labels), each class's picks in selection order. Each class gets its
own generator ``numpy.random.default_rng([seed, class_position])``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from datacomp.cost import CostLedger

from . import runners

__all__ = ["Selection", "select", "METHODS", "class_budgets", "method_inputs"]

METHODS: tuple[str, ...] = tuple(runners.RUNNERS)


@dataclass
class Selection:
    """The result of :func:`select`.

    Attributes:
        indices: int64 ``[budget]`` pool indices in selection order (grouped by class when class-balanced).
        scores: float64 ``[budget]`` value per pick; meaning and direction per method (see module docstring and
            ``metadata["score_meaning"]``).
        weights: optional float64 ``[budget]`` per-pick weights (facility location: cluster sizes).
        item_scores: optional float64 ``[n_pool]`` score of every pool item (score-based methods), for custom
            thresholds.
        metadata: JSON-serialisable dict: method, params, budget, seed, class balance and per-class budgets,
            timings, objective values / curves, versions, cost ledger.
    """

    indices: np.ndarray
    scores: np.ndarray
    weights: np.ndarray | None = None
    item_scores: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.size)

    def subset_digest(self) -> str:
        """SHA-256 of the chosen pool indices as a set (sorted, little-endian int64), in hex.

        The same subset gives the same digest whatever the pick order, so two runs (other machines, other sessions,
        a re-trained proxy) can be checked for having chosen the same items without shipping the indices.
        """
        return hashlib.sha256(np.sort(self.indices).astype("<i8").tobytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Atomic ``.npz`` write (no pickle); metadata is stored as a JSON string."""
        path = Path(path)
        arrays = {"indices": self.indices, "scores": self.scores,
                  "metadata": np.array(json.dumps(self.metadata))}
        if self.weights is not None:
            arrays["weights"] = self.weights
        if self.item_scores is not None:
            arrays["item_scores"] = self.item_scores
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Selection:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as f:
            missing = {"indices", "scores", "metadata"} - set(f.files)
            if missing:
                raise ValueError(f"{path} is not a Selection file: missing {sorted(missing)}")
            return cls(
                indices=f["indices"].astype(np.int64), scores=f["scores"].astype(np.float64),
                weights=f["weights"] if "weights" in f.files else None,
                item_scores=f["item_scores"] if "item_scores" in f.files else None,
                metadata=json.loads(str(f["metadata"])),
            )


# --------------------------------------------------------------------------------------------- validation


def _check_int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}); "
                        f"for a fraction pass round(fraction * n_items)")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _finite_array(value, name: str, ndim: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Validate shape, dtype and finiteness. ``dtype=None`` keeps float32/float64 (no copy of large features)."""
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
    arr = arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        flat = arr.reshape(-1)
        step = 1 << 22  # chunked check: no n x d boolean temporary
        bad = sum(int(flat[i : i + step].size - np.count_nonzero(np.isfinite(flat[i : i + step])))
                  for i in range(0, flat.size, step))
        if bad:
            raise ValueError(f"{name} contains {bad} NaN/inf values; drop or impute those items first")
    return arr


def _check_labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"labels has length {y.shape[0]} but the pool has {n} items; pass one label per item")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("labels must be integers (float labels must be whole numbers, no NaN)")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise TypeError(f"labels must be integers or strings, got dtype {y.dtype}")
    return y


def class_budgets(labels: np.ndarray, budget: int | None, rule: str | dict = "proportional") -> dict:
    """Per-class budgets (see the module docstring for the rounding rules).

    Args:
        labels: ``[n]`` labels.
        budget: total budget (ignored, may be ``None``, when ``rule`` is a dict).
        rule: ``"proportional"``, ``"equal"`` or ``{label: budget}``.

    Returns:
        ``{label: budget}`` over every class (zero budgets included), in sorted label order.

    Raises:
        ValueError: a class budget above that class's size, a negative budget, an unknown label or rule.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    if isinstance(rule, dict):
        unknown = set(rule) - set(classes.tolist())
        if unknown:
            raise ValueError(f"class_budget names labels {sorted(map(str, unknown))} that are not in labels")
        out = {c: int(rule.get(c, 0)) for c in classes.tolist()}
        if any(b < 0 for b in out.values()):
            raise ValueError("class_budget values must be >= 0")
        if budget is not None and sum(out.values()) != budget:
            raise ValueError(f"class_budget sums to {sum(out.values())} but budget={budget}; make them agree "
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
        raise ValueError(f"class_budget must be 'proportional', 'equal' or a dict, got {rule!r}")
    for c, size in zip(classes.tolist(), counts.tolist()):
        if out[c] > size:
            raise ValueError(f"class {c!r} has {size} items but its budget is {out[c]}; lower the budget, use "
                             "class_budget='proportional' or class_balanced=False")
    return out


def method_inputs(method: str) -> str:
    """Human-readable description of the inputs ``method`` requires."""
    return runners.REQUIRED[method]


def _versions() -> dict:
    """Installed versions read from package metadata (cheap: nothing is imported)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("datacomp", "numpy", "scipy", "scikit-learn", "torch", "faiss-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _jsonable(obj):
    """Convert numpy scalars/arrays and non-string keys so that ``json.dumps`` accepts the metadata."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


# --------------------------------------------------------------------------------------------- select


def select(
    method: str,
    features=None,
    budget: int | None = None,
    labels=None,
    class_balanced: bool = True,
    seed: int = 0,
    *,
    class_budget: str | dict = "proportional",
    scores=None,
    probs=None,
    logits=None,
    correct=None,
    embeddings=None,
    lengths=None,
    texts: Sequence[str] | None = None,
    sae=None,
    activations=None,
    dynamics=None,
    n_items: int | None = None,
    **params,
) -> Selection:
    """Select ``budget`` items of a pool with ``method`` (see the module docstring for methods and inputs).

    Args:
        method: one of :data:`METHODS`.
        features: ``[n, d]`` finite embeddings.
        budget: number of items, ``1 <= budget <= n``.
        labels: ``[n]`` integer (or string) labels; enables class balancing and label-based scores.
        class_balanced: split the budget across classes when ``labels`` is given.
        seed: seed of every random choice.
        class_budget: per-class budget rule (module docstring).
        scores: ``[n]`` precomputed per-item scores (score-based methods and ``ccs``).
        probs / logits: ``[n, C]`` or ``[runs, n, C]`` model outputs (el2n, grand, uncertainty).
        correct: ``[epochs, n]`` or ``[runs, epochs, n]`` correctness matrix (forgetting).
        embeddings: ``[n, D]`` or ``[runs, n, D]`` penultimate features (grand; default ``features``).
        lengths / texts: item lengths, or texts whose character counts are used (longest; sae-simscale order).
        sae: a trained :class:`~datacomp.selectors.sae.TopKSAE` applied to ``features`` (sae-*).
        activations: ``[n, n_latents]`` precomputed non-negative SAE activations, dense or scipy.sparse (sae-*).
        dynamics: :class:`~datacomp.selectors.proxy_training.ProxyDynamics` (forgetting, el2n, grand,
            uncertainty); its labels are used when ``labels`` is None and its cost ledger is recorded.
        n_items: pool size when no array input is given (random).
        **params: method parameters (e.g. ``n_neighbors`` for facility-location, ``kind`` for uncertainty);
            unknown names raise a TypeError listing the valid ones.

    Returns:
        :class:`Selection`.
    """
    t_start = time.perf_counter()
    if not isinstance(method, str) or method not in runners.RUNNERS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    runner = runners.RUNNERS[method]
    prepare = runners.PREPARE[method]
    allowed = set(inspect.signature(runner).parameters) - {"pool", "budget", "rng"}
    allowed |= set(inspect.signature(prepare).parameters) - {"inputs"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"{method} got unknown parameter(s) {unknown}; valid parameters: {sorted(allowed) or 'none'}")
    seed = _check_int(seed, "seed", minimum=0)

    inputs = runners.Inputs(
        features=_finite_array(features, "features", (2,), dtype=None) if features is not None else None,
        scores=_finite_array(scores, "scores", (1,)) if scores is not None else None,
        probs=_finite_array(probs, "probs", (2, 3)) if probs is not None else None,
        logits=_finite_array(logits, "logits", (2, 3)) if logits is not None else None,
        correct=_finite_array(correct, "correct", (2, 3), dtype=bool) if correct is not None else None,
        embeddings=_finite_array(embeddings, "embeddings", (2, 3), dtype=None) if embeddings is not None else None,
        lengths=_finite_array(lengths, "lengths", (1,)) if lengths is not None else None,
        texts=texts, sae=sae, activations=_check_activations(activations), dynamics=dynamics,
    )
    n = _pool_size(inputs, n_items)
    inputs.n = n
    if labels is None and dynamics is not None:
        labels = dynamics.labels
    y = _check_labels(labels, n) if labels is not None else None
    inputs.labels = y

    balanced = bool(class_balanced and y is not None)
    if budget is None and not (balanced and isinstance(class_budget, dict)):
        raise ValueError("budget is required (an int in [1, n_items])")
    if budget is not None:
        budget = _check_int(budget, "budget")
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if budget > n:
            raise ValueError(f"budget {budget} exceeds the pool size {n}")

    groups: list[tuple[object, np.ndarray, int]]
    if balanced:
        per_class = class_budgets(y, budget, class_budget)
        budget = sum(per_class.values()) if budget is None else budget
        if budget < 1:
            raise ValueError("class_budget gives a total budget of 0; give at least one class a positive budget")
        groups = [(c, np.flatnonzero(y == c), b) for c, b in per_class.items()]
    else:
        per_class = None
        groups = [(None, np.arange(n), budget)]

    prep_params = {k: v for k, v in params.items() if k in inspect.signature(prepare).parameters}
    run_params = {k: v for k, v in params.items() if k not in prep_params}
    ledger = CostLedger()
    picked, picked_scores, picked_weights, infos, seconds = [], [], [], {}, {}
    with ledger.phase("selection") as phase:
        phase.note(f"method={method}")
        t_prep = time.perf_counter()
        pool, prep_info = prepare(inputs, **prep_params)
        prep_seconds = time.perf_counter() - t_prep
        for position, (label, members, b) in enumerate(groups):  # loop over classes
            if b == 0:
                continue
            rng = np.random.default_rng([seed, position]) if balanced else np.random.default_rng(seed)
            sub = runners.subset(pool, members) if balanced else pool
            t0 = time.perf_counter()
            local, sc, w, info = runner(sub, b, rng, **run_params)
            seconds[str(label)] = time.perf_counter() - t0
            picked.append(members[np.asarray(local, dtype=np.int64)])
            picked_scores.append(np.asarray(sc, dtype=np.float64))
            picked_weights.append(None if w is None else np.asarray(w, dtype=np.float64))
            infos[str(label)] = info
    indices = np.concatenate(picked).astype(np.int64)
    if np.unique(indices).size != indices.size:  # invariant of every runner; guards future methods
        raise RuntimeError(f"{method} returned duplicate indices")
    weights = None if any(w is None for w in picked_weights) else np.concatenate(picked_weights)

    total = time.perf_counter() - t_start
    metadata = {
        "method": method,
        "params": params,
        "budget": budget,
        "n_pool": n,
        "seed": seed,
        "class_balanced": balanced,
        "class_budget_rule": (class_budget if not isinstance(class_budget, dict) else "explicit") if balanced
        else None,
        "per_class_budgets": per_class,
        "required_inputs": runners.REQUIRED[method],
        "given_inputs": [name for name, value in vars(inputs).items()
                         if value is not None and name not in ("labels", "n")] + (["labels"] if y is not None else []),
        "score_meaning": runners.SCORE_MEANING[method],
        "prepare": prep_info,
        "info": infos["None"] if not balanced else None,
        "per_class": infos if balanced else None,
        "timings": {"total_s": total, "prepare_s": prep_seconds, "select_s": seconds},
        "versions": _versions(),
        "cost": _cost(ledger, dynamics, sae),
    }
    if balanced:
        metadata["global"] = runners.GLOBAL_SUMMARY[method](pool, indices) if method in runners.GLOBAL_SUMMARY \
            else None
    return Selection(indices=indices, scores=np.concatenate(picked_scores), weights=weights,
                     item_scores=pool.get("item_scores"), metadata=_jsonable(metadata))


def _check_activations(activations):
    if activations is None:
        return None
    if sp.issparse(activations):
        mat = sp.csr_matrix(activations, dtype=np.float32)
        if mat.ndim != 2:
            raise ValueError(f"activations must be 2-D, got shape {mat.shape}")
        if not np.all(np.isfinite(mat.data)):
            raise ValueError("activations contains NaN/inf values")
    else:
        mat = sp.csr_matrix(_finite_array(activations, "activations", (2,), dtype=np.float32))
    if mat.nnz and mat.data.min() < 0:
        raise ValueError("activations must be non-negative (post-ReLU SAE activations)")
    return mat


def _pool_size(inputs: runners.Inputs, n_items: int | None) -> int:
    sizes = {}
    if inputs.features is not None:
        sizes["features"] = inputs.features.shape[0]
    for name in ("scores", "lengths"):
        if getattr(inputs, name) is not None:
            sizes[name] = getattr(inputs, name).shape[0]
    for name in ("probs", "logits", "embeddings"):
        if getattr(inputs, name) is not None:
            sizes[name] = getattr(inputs, name).shape[-2]
    if inputs.correct is not None:
        sizes["correct"] = inputs.correct.shape[-1]
    if inputs.activations is not None:
        sizes["activations"] = inputs.activations.shape[0]
    if inputs.texts is not None:
        sizes["texts"] = len(inputs.texts)
    if inputs.dynamics is not None:
        sizes["dynamics"] = int(inputs.dynamics.labels.shape[0])
    if n_items is not None:
        sizes["n_items"] = _check_int(n_items, "n_items", minimum=1)
    if not sizes:
        raise ValueError("no input gives the pool size: pass features=, scores=, ... or n_items=")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs disagree on the number of items: {sizes}")
    n = next(iter(sizes.values()))
    if n < 1:
        raise ValueError("the pool is empty")
    return n


def _cost(ledger, dynamics, sae) -> dict:
    """The selection ledger merged with the proxy-training ledger carried by ``dynamics`` and the SAE's
    one-off ``sae-training`` phase (kept in ``sae.history["cost"]``), plus the proxy protocol and SAE config."""
    proxy_ledger = getattr(dynamics, "ledger", None) if dynamics is not None else None
    history = getattr(sae, "history", None) or {}
    if proxy_ledger is not None:
        ledger.merge(proxy_ledger)
    if history.get("cost"):
        ledger.merge(CostLedger.from_dict(history["cost"]))
    return {
        "ledger": ledger.to_dict(),
        "proxy_protocol": getattr(dynamics, "protocol", None) if dynamics is not None else None,
        "sae_train": {"seconds": history.get("seconds"), "steps": history.get("steps"),
                      "config": getattr(sae, "config", None)} if sae is not None else None,
    }
