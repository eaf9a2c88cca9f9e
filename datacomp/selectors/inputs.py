"""The array inputs of :func:`~datacomp.selectors.select`, and their validation (once, at the boundary).

:class:`Inputs` groups everything a method may read about the pool; ``select(method, features, budget, labels,
scores=..., probs=...)`` fills it from keywords, or takes one with ``inputs=``. :meth:`Inputs.validated` checks
shapes, dtypes, finiteness and that the inputs agree on the pool size, and raises
:class:`~datacomp.errors.DataError` (bad data) or :class:`~datacomp.errors.ConfigError` (bad argument) naming the
argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from datacomp.errors import ConfigError, DataError, is_int

__all__ = ["Inputs", "INPUT_NAMES", "check_int", "check_labels", "jsonable"]


@dataclass
class Inputs:
    """Per-item inputs of a selection (all optional; each method reads the ones it needs).

    Attributes:
        features: ``[n, d]`` finite embeddings.
        scores: ``[n]`` precomputed per-item scores (score-based methods and ``ccs``).
        probs, logits: ``[n, C]`` or ``[runs, n, C]`` model outputs (el2n, grand, uncertainty).
        correct: ``[epochs, n]`` or ``[runs, epochs, n]`` correctness matrix (forgetting).
        embeddings: ``[n, D]`` or ``[runs, n, D]`` penultimate features (grand; default ``features``).
        lengths, texts: item lengths, or texts whose character counts are used (longest; sae-simscale order).
        sae: a trained :class:`~datacomp.selectors.sae.TopKSAE` applied to ``features`` (sae-*).
        activations: ``[n, n_latents]`` non-negative SAE activations, dense or scipy.sparse (sae-*).
        dynamics: :class:`~datacomp.selectors.proxy_training.ProxyDynamics` (forgetting, el2n, grand, uncertainty).
        n_items: pool size when no array gives it (random).
        labels: ``[n]`` integer (or string) labels (set by ``select`` from its ``labels`` argument).
        n: the validated pool size (set by :meth:`validated`).
    """

    features: Any = None
    scores: Any = None
    probs: Any = None
    logits: Any = None
    correct: Any = None
    embeddings: Any = None
    lengths: Any = None
    texts: Sequence[str] | None = None
    sae: Any = None
    activations: Any = None
    dynamics: Any = None
    n_items: int | None = None
    labels: Any = None
    n: int = 0

    def given(self) -> list[str]:
        """Names of the inputs that were passed (``labels`` last)."""
        names = [f.name for f in fields(self) if f.name not in ("labels", "n", "n_items")
                 and getattr(self, f.name) is not None]
        return names + (["labels"] if self.labels is not None else [])

    def validated(self) -> "Inputs":
        """A checked copy: arrays converted and validated, ``n`` and ``labels`` set."""
        out = replace(
            self,
            features=_finite(self.features, "features", (2,), dtype=None),
            scores=_finite(self.scores, "scores", (1,)),
            probs=_finite(self.probs, "probs", (2, 3)),
            logits=_finite(self.logits, "logits", (2, 3)),
            correct=_finite(self.correct, "correct", (2, 3), dtype=bool),
            embeddings=_finite(self.embeddings, "embeddings", (2, 3), dtype=None),
            lengths=_finite(self.lengths, "lengths", (1,)),
            activations=_activations(self.activations),
        )
        if out.texts is not None and isinstance(out.texts, str):
            raise ConfigError("texts must be a sequence of strings, not a single string")
        out.n = _pool_size(out)
        labels = out.labels if out.labels is not None or out.dynamics is None else out.dynamics.labels
        out.labels = check_labels(labels, out.n) if labels is not None else None
        return out


INPUT_NAMES = tuple(f.name for f in fields(Inputs) if f.name not in ("labels", "n"))


def check_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an int (bools and floats refused), at least ``minimum``."""
    if not is_int(value):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__} ({value!r}); "
                          f"for a fraction pass round(fraction * n_items)")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _finite(value: Any, name: str, ndim: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray | None:
    """Validate shape, dtype and finiteness. ``dtype=None`` keeps float32/float64 (no copy of large features)."""
    if value is None:
        return None
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if arr.ndim not in ndim:
        raise DataError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
    arr = arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        flat = arr.reshape(-1)
        step = 1 << 22  # chunked check: no n x d boolean temporary
        bad = sum(int(flat[i : i + step].size - np.count_nonzero(np.isfinite(flat[i : i + step])))
                  for i in range(0, flat.size, step))
        if bad:
            raise DataError(f"{name} contains {bad} NaN/inf values; drop or impute those items first")
    return arr


def check_labels(labels: Any, n: int) -> np.ndarray:
    """``[n]`` labels: integers >= 0 (whole-number floats accepted) or strings; anything else raises DataError."""
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if y.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise DataError(f"labels has length {y.shape[0]} but the pool has {n} items; pass one label per item")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError("labels must be integers (float labels must be whole numbers, no NaN)")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
        raise DataError(f"labels must be integers or strings, got dtype {y.dtype}")
    if y.dtype.kind in "iu" and y.size and y.min() < 0:
        raise DataError(f"labels must be >= 0, got {int(y.min())} (e.g. -1 for 'unlabelled'); drop those items "
                        "or give them a class")
    return y


def _activations(activations: Any) -> sp.csr_matrix | None:
    if activations is None:
        return None
    if sp.issparse(activations):
        mat = sp.csr_matrix(activations, dtype=np.float32)
        if not np.all(np.isfinite(mat.data)):
            raise DataError("activations contains NaN/inf values")
    else:
        mat = sp.csr_matrix(_finite(activations, "activations", (2,), dtype=np.float32))
    if mat.nnz and mat.data.min() < 0:
        raise DataError("activations must be non-negative (post-ReLU SAE activations)")
    return mat


def _pool_size(inputs: Inputs) -> int:
    sizes = {}
    for name in ("features", "scores", "lengths"):
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
    if inputs.n_items is not None:
        sizes["n_items"] = check_int(inputs.n_items, "n_items", minimum=1)
    if not sizes:
        raise ConfigError("no input gives the pool size: pass features=, scores=, ... or n_items=")
    if len(set(sizes.values())) > 1:
        raise DataError(f"inputs disagree on the number of items: {sizes}")
    n = next(iter(sizes.values()))
    if n < 1:
        raise DataError("the pool is empty")
    return n


def jsonable(obj: Any) -> Any:
    """Convert NumPy scalars/arrays and non-string keys so that ``json.dumps`` accepts the metadata."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
