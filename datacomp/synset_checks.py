"""Format checks of a :class:`~datacomp.synset.SyntheticSet`: tensors (images, labels, the optional extras) and
metadata (format_version, num_classes, space, factor, mean/std). Every check raises :class:`SynsetFormatError`
naming the first problem found. The set's module imports this one; this module does not import it."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from .errors import FormatError, is_int

__all__ = ["SynsetFormatError", "FORMAT_VERSION", "check_set", "check_metadata", "check_format_version", "describe"]

FORMAT_VERSION = 1
_REQUIRED_META = ("format_version", "dataset", "space", "num_classes", "method")


class SynsetFormatError(FormatError):
    """A SyntheticSet file or object is malformed."""


# Public under the name ``datacomp.synset.SynsetFormatError``, as before the checks moved here: tracebacks and
# pickles keep naming it there (that module re-exports this very class).
SynsetFormatError.__module__ = "datacomp.synset"


def check_set(images: Any, labels: Any, metadata: dict, optional: Mapping[str, torch.Tensor | None]) -> None:
    """Raise :class:`SynsetFormatError` naming the first problem of a set's tensors and metadata.

    ``optional`` maps the optional tensors' names (``lr``, ``weights``, ``source_indices``) to the tensor or None;
    they are checked in its order.
    """
    x, y = images, labels
    if not torch.is_tensor(x) or x.ndim != 4 or x.dtype != torch.float32:
        raise SynsetFormatError(f"images must be a float32 tensor [N, C, H, W], got {describe(x)}")
    if len(x) == 0:
        raise SynsetFormatError("images is empty: a SyntheticSet needs at least one image")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise SynsetFormatError(f"images contain NaN or inf pixels in {bad} image(s)")
    missing = [k for k in _REQUIRED_META if k not in metadata]
    if missing:
        raise SynsetFormatError(f"metadata lacks {missing}; required keys: {list(_REQUIRED_META)}")
    k = metadata["num_classes"]
    if not isinstance(k, int) or k < 2:
        raise SynsetFormatError(f"metadata num_classes must be an int >= 2, got {k!r}")
    if metadata["space"] not in ("pixel", "normalized"):
        raise SynsetFormatError(f"metadata space must be 'pixel' or 'normalized', got {metadata['space']!r}")
    check_metadata(metadata, tuple(x.shape[1:]))
    if not torch.is_tensor(y) or len(y) != len(x):
        raise SynsetFormatError(f"labels must be a tensor with {len(x)} rows, got {describe(y)}")
    if y.ndim == 1:
        if y.dtype != torch.int64:
            raise SynsetFormatError(f"hard labels must be int64, got {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= k:
            raise SynsetFormatError(f"labels must lie in [0, {k}), got range [{int(y.min())}, {int(y.max())}]")
    elif y.ndim == 2:
        if y.dtype != torch.float32 or y.shape[1] != k:
            raise SynsetFormatError(f"soft labels must be float32 [N, {k}], got {describe(y)}")
        if not torch.isfinite(y).all() or (y < 0).any() or not torch.allclose(y.sum(1), torch.ones(len(y)), atol=1e-3):
            raise SynsetFormatError("soft labels must be finite probabilities whose rows sum to 1")
    else:
        raise SynsetFormatError(f"labels must be [N] (hard) or [N, K] (soft), got {describe(y)}")
    for name, t in optional.items():
        if t is None:
            continue
        if not torch.is_tensor(t):
            raise SynsetFormatError(f"{name} must be a tensor, got {type(t).__name__}")
        if name == "source_indices":
            if t.dtype != torch.int64 or t.shape != (len(x),) or (t < 0).any():
                raise SynsetFormatError(f"source_indices must be non-negative int64 [{len(x)}], got {describe(t)}")
        elif t.ndim > 1 or (t.ndim == 1 and len(t) not in (1, len(x))) or not torch.isfinite(t).all():
            raise SynsetFormatError(f"{name} must be a finite scalar or a vector of {len(x)}, got {describe(t)}")
        elif name == "lr" and not bool((t > 0).all()):
            raise SynsetFormatError(f"lr must be > 0, got minimum {float(t.min())}")
        elif name == "weights" and (bool((t < 0).any()) or not bool((t > 0).any())):
            raise SynsetFormatError(f"weights must be >= 0 and not all 0, got range [{float(t.min())}, "
                                    f"{float(t.max())}]")


def check_format_version(value: Any, where: str = "") -> None:
    if not is_int(value) or value < 1:
        raise SynsetFormatError(f"{where}metadata format_version must be an int >= 1, got {value!r}")
    if value > FORMAT_VERSION:
        raise SynsetFormatError(f"{where}format_version {value} is newer than this datacomp reads ({FORMAT_VERSION}); "
                                "upgrade datacomp to read it")


def check_metadata(meta: dict, image_shape: tuple[int, int, int]) -> None:
    """format_version, factor (divides the image size) and mean/std (finite, one per channel, std > 0)."""
    check_format_version(meta["format_version"])
    c, h, w = image_shape
    factor = meta.get("factor", 1)
    if not is_int(factor) or factor < 1 or h % factor or w % factor:
        raise SynsetFormatError(f"metadata factor must be an int >= 1 that divides the image size {h}x{w}, "
                                f"got {factor!r}")
    for key in ("mean", "std"):
        v = meta.get(key)
        if v is None and meta["space"] == "pixel":
            continue
        if (not isinstance(v, (list, tuple)) or len(v) != c
                or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in v)):
            raise SynsetFormatError(f"metadata '{key}' must be {c} finite numbers (one per channel)"
                                    + (" for normalized images" if meta["space"] == "normalized" else "")
                                    + f", got {v!r}")
        if key == "std" and min(v) <= 0:
            raise SynsetFormatError(f"metadata 'std' must be > 0 per channel, got {list(v)}")


def describe(t: Any) -> str:
    if torch.is_tensor(t):
        return f"{t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__
