""":class:`Selection`: the chosen pool indices with their scores, weights and metadata, and its ``.npz`` file."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datacomp.errors import FormatError, MissingInputError
from datacomp.io import atomic_write, sha256_bytes

__all__ = ["Selection"]


@dataclass
class Selection:
    """The result of :func:`~datacomp.selectors.select`.

    Attributes:
        indices: int64 ``[budget]`` pool indices in selection order (grouped by class when class-balanced).
        scores: float64 ``[budget]`` value per pick; meaning and direction per method (``metadata["score_meaning"]``).
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

        The same subset gives the same digest whatever the pick order, so two runs (other machines, a re-trained
        proxy) can be checked for having chosen the same items without shipping the indices.
        """
        return sha256_bytes(np.sort(self.indices).astype("<i8").tobytes())

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic ``.npz`` write (no pickle); metadata is stored as a JSON string."""
        arrays = {"indices": self.indices, "scores": self.scores, "metadata": np.array(json.dumps(self.metadata))}
        if self.weights is not None:
            arrays["weights"] = self.weights
        if self.item_scores is not None:
            arrays["item_scores"] = self.item_scores
        return atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Selection:
        """Read a file written by :meth:`save` (``allow_pickle=False``; files of datacomp 0.1.0 included)."""
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"no selection file at {path}")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = {"indices", "scores", "metadata"} - set(f.files)
                if missing:
                    raise FormatError(f"{path} is not a Selection file: missing {sorted(missing)}")
                return cls(
                    indices=f["indices"].astype(np.int64), scores=f["scores"].astype(np.float64),
                    weights=f["weights"] if "weights" in f.files else None,
                    item_scores=f["item_scores"] if "item_scores" in f.files else None,
                    metadata=json.loads(str(f["metadata"])),
                )
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            if isinstance(err, FormatError):
                raise
            raise FormatError(f"{path} is not a readable Selection file ({err}); re-create it") from err
