"""The on-disk cache of selection inputs (image features, proxy dynamics, text embeddings).

Entries are ``.npz`` files (``allow_pickle=False``, written atomically through :func:`datacomp.io.atomic_write`)
under ``$DATACOMP_CACHE/features`` (:func:`datacomp.io.cache_dir`), named by a SHA-256 of everything that determines
the result. Data enters the key through :func:`data_digest`, a SHA-256 of the *full* content of the arrays (every
byte of every image and label: CIFAR-10's training split hashes in about half a second), so editing any training
image gives a new key. A corrupt entry is recomputed, never trusted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import numpy as np

from datacomp.cost import CostLedger
from datacomp.io import atomic_write, cache_dir, sha256_arrays, sha256_bytes

__all__ = ["Cache", "cache_args", "CACHE_VERSION", "default_cache_dir", "config_key", "data_digest", "save_npz_atomic", "load_npz",
           "cached_arrays"]

# 2: data enters the key by a full-content digest (1: labels and 256 strided images).
CACHE_VERSION = 2


Cache = Union[bool, str, os.PathLike]
"""A cache argument: True (``$DATACOMP_CACHE/features``), False (neither read nor write) or a cache folder."""


def cache_args(cache: Cache) -> tuple[bool, str | os.PathLike | None]:
    """``(enabled, folder)`` of a :data:`Cache` argument."""
    if isinstance(cache, bool):
        return cache, None
    return True, cache


def default_cache_dir() -> Path:
    """``$DATACOMP_CACHE/features``, or ``~/.cache/datacomp/features``."""
    return cache_dir("features")


def config_key(config: dict) -> str:
    """SHA-256 (first 24 hex digits) of the canonical JSON of ``config``."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(blob.encode())[:24]


def data_digest(*arrays: Any) -> str:
    """SHA-256 (first 24 hex digits) of the full content of ``arrays`` (dtype, shape and every byte)."""
    return sha256_arrays(arrays)[:24]


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` plus ``meta`` (as a JSON string under ``__meta__``) to ``path`` atomically."""
    return atomic_write(path, lambda fh: np.savez(fh, __meta__=np.array(json.dumps(meta, default=str)), **arrays))


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and metadata of a file written by :func:`save_npz_atomic`; ``None`` if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
            meta = json.loads(str(f["__meta__"]))
    except (OSError, ValueError, KeyError, EOFError):
        return None  # a corrupt cache entry is recomputed (and overwritten), never trusted
    return arrays, meta


def cached_arrays(
    kind: str,
    config: dict,
    compute: Callable[[CostLedger], dict[str, np.ndarray]],
    cache: bool = True,
    folder: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict, Path | None, bool]:
    """Return cached arrays for ``config`` or compute, store and return them.

    Args:
        kind: file-name prefix (``image-features``, ``proxy-dynamics``, ``text-embeddings``).
        config: everything that determines the result (hashed into the key).
        compute: ``compute(ledger) -> arrays``; records its cost into ``ledger``.
        cache: read and write the cache.
        folder: cache folder (default :func:`default_cache_dir`).

    Returns:
        ``(arrays, meta, path, from_cache)``; ``meta["cost"]`` is the ledger (dict) of the computation.
    """
    full_config = {"kind": kind, "cache_version": CACHE_VERSION, **config}
    key = config_key(full_config)
    root = Path(folder).expanduser() if folder else default_cache_dir()
    path = root / f"{kind}-{key}.npz"
    if cache:
        hit = load_npz(path)
        if hit is not None and hit[1].get("config") == json.loads(json.dumps(full_config, default=str)):
            return hit[0], hit[1], path, True
    ledger = CostLedger()
    t0 = time.perf_counter()
    arrays = compute(ledger)
    meta = {"config": full_config, "key": key, "seconds": time.perf_counter() - t0, "cost": ledger.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if cache:
        save_npz_atomic(path, arrays, meta)
    return arrays, meta, (path if cache else None), False
