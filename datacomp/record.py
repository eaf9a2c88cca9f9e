"""``RunRecord``: the ``run.json`` every command with ``--out`` writes (what ran, on what, what it cost, what it gave).

One schema for every kind of run (``docs/run-directory.md``). ``RunRecord.from_dict`` also reads the records of
datacomp 0.1.0 (no ``schema`` field).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import FormatError, is_int
from .io import RUN_FILE, package_versions, read_json, write_json

__all__ = ["RunRecord", "RUN_KINDS", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
RUN_KINDS = ("subset", "distill", "select", "eval", "train", "compress", "finetune")


@dataclass
class RunRecord:
    """One run's record.

    Attributes:
        kind: What ran (:data:`RUN_KINDS`).
        method: The method's registered name (``ncfm``, ``herding``, ...).
        dataset: Dataset name.
        seed: The run seed.
        config: The full, resolved configuration (JSON-safe).
        cost: ``CostLedger.to_dict()`` of producing the output.
        num_items: Size of the output (images or records); None when the run produces no set.
        ipc: Items per class, when the size was given that way.
        fraction: Fraction of the training split, when the size was given that way.
        full_train_size: N of the full training split (the cost ratio's reference).
        eval: ``EvalResult.to_dict()`` of models trained on the output.
        baseline: ``EvalResult.to_dict()`` of the random real subset of the same size (same protocol).
        output_sha256: Content digest of the main output (e.g. ``SyntheticSet.content_digest()``), so two runs can be
            checked for bit-identical results.
        versions: Package versions (filled in when absent).
        created: UTC time stamp (filled in when absent).
        host: Platform and CPU count (filled in when absent).
        extra: Kind-specific fields, written at the top level of ``run.json``.
    """

    kind: str
    method: str | None
    dataset: str | None
    seed: int | None
    config: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    num_items: int | None = None
    ipc: int | None = None
    fraction: float | None = None
    full_train_size: int | None = None
    eval: dict | None = None
    baseline: dict | None = None
    output_sha256: str | None = None
    versions: dict = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    host: dict = field(default_factory=lambda: {"platform": platform.platform(), "cpu_count": os.cpu_count()})
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~datacomp.errors.FormatError` naming the first invalid field."""
        if self.kind not in RUN_KINDS:
            raise FormatError(f"run record kind must be one of {', '.join(RUN_KINDS)}, got {self.kind!r}")
        if self.seed is not None and not is_int(self.seed):
            raise FormatError(f"run record seed must be an int, got {self.seed!r}")
        for name in ("config", "cost", "versions", "host", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise FormatError(f"run record {name} must be a JSON object, got {type(getattr(self, name)).__name__}")
        for name in ("num_items", "ipc", "full_train_size"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 0):
                raise FormatError(f"run record {name} must be a non-negative int, got {v!r}")
        if self.fraction is not None and not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise FormatError(f"run record fraction must lie in (0, 1], got {self.fraction!r}")
        for name in ("eval", "baseline"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, dict):
                raise FormatError(f"run record {name} must be a JSON object or null, got {type(v).__name__}")
        clash = set(self.extra) & {f.name for f in fields(self)} | set(self.extra) & {"schema"}
        if clash:
            raise FormatError(f"run record extra fields {sorted(clash)} clash with the schema's own fields")

    # ------------------------------------------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        doc = {"schema": SCHEMA_VERSION}
        doc.update({k: v for k, v in asdict(self).items() if k != "extra"})
        doc.update(self.extra)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RunRecord":
        """Read a record (this schema or datacomp 0.1.0's); unknown top-level fields go to ``extra``."""
        if not isinstance(doc, dict):
            raise FormatError(f"a run record must be a JSON object, got {type(doc).__name__}")
        schema = doc.get("schema", 0)
        if not is_int(schema):
            raise FormatError(f"run record schema must be an int, got {schema!r}")
        if schema > SCHEMA_VERSION:
            raise FormatError(f"run record schema {schema} is newer than this datacomp reads ({SCHEMA_VERSION}); "
                              "upgrade datacomp")
        if "kind" not in doc:
            raise FormatError("run record lacks 'kind'")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: doc[k] for k in names if k in doc}
        for k in ("config", "cost", "versions", "host", "created"):
            if known.get(k) is None:
                known.pop(k, None)  # 0.1.0 records may lack them or hold null: take the defaults
        for k in ("method", "dataset", "seed"):
            known.setdefault(k, None)
        extra = {k: v for k, v in doc.items() if k not in names and k != "schema"}
        return cls(**known, extra=extra)

    def write(self, run_dir: str | os.PathLike) -> Path:
        """Write ``RUN_DIR/run.json`` atomically."""
        self.validate()
        return write_json(Path(run_dir) / RUN_FILE, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunRecord":
        """Read ``path`` (a ``run.json`` or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / RUN_FILE
        return cls.from_dict(read_json(path, what="run record"))
