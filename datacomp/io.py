"""Files: atomic writes, JSON, content digests, the cache folder and the run folder's lock and guard.

Every file datacomp writes goes through :func:`atomic_write` (a temp file in the same folder, ``fsync``, then
``os.replace``): a reader never sees a half-written file, and the final file gets the mode the user's umask gives a
new file (``mkstemp`` alone would leave it 0600).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np

from .errors import ConfigError, FormatError, MissingInputError, RunDirError

__all__ = [
    "atomic_write", "write_json", "read_json", "json_default", "cache_dir", "package_versions", "sha256_bytes",
    "sha256_arrays", "sha256_file", "clean_stale_temp", "RunDir", "RUN_FILE", "TEMP_SUFFIX",
]

RUN_FILE = "run.json"
TEMP_SUFFIX = ".tmp"
_LOCK_FILE = ".datacomp.lock"


def _file_mode() -> int:
    """The mode a new regular file gets under the current umask (``0o666 & ~umask``)."""
    current = os.umask(0)
    os.umask(current)
    return 0o666 & ~current


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace`` (never half-written).

    ``data`` may be bytes, text (UTF-8) or a callable that writes into the open binary file (for large outputs such
    as ``np.savez``). The file's mode honours the umask. Temp files are named ``.NAME.*.tmp``; a process killed
    mid-write leaves one behind, which :func:`clean_stale_temp` removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_default(obj: Any) -> Any:
    """JSON encoding of NumPy scalars and arrays, paths, one-element tensors and objects with ``to_dict``."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "numel") and hasattr(obj, "item") and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (trailing newline), atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON document; a missing or malformed file raises a :class:`~datacomp.errors.DatacompError`."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no {what} at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(f"{path} is not valid JSON ({err}); re-create it or remove it") from err


def cache_dir(kind: str) -> Path:
    """``$DATACOMP_CACHE/KIND``, or ``~/.cache/datacomp/KIND`` (not created here)."""
    root = os.environ.get("DATACOMP_CACHE") or Path.home() / ".cache" / "datacomp"
    return Path(root).expanduser() / kind


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that determine results."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("datacomp", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "safetensors", "faiss-cpu",
                "transformers", "peft", "datasets", "torch-pruning"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def sha256_bytes(*chunks: bytes | bytearray | memoryview) -> str:
    """SHA-256 hex digest of the concatenated chunks."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_arrays(arrays: Iterable[Any]) -> str:
    """SHA-256 of the full content of NumPy arrays / tensors (dtype, shape and every byte; no sampling).

    Tensors are read through NumPy without a copy when already contiguous on the CPU. Hashing runs at memory speed
    (about 1-2 GB/s), so hashing CIFAR-10's training split costs well under a second.
    """
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):  # torch tensor
            a = a.detach().cpu()
            if str(a.dtype) == "torch.bfloat16":
                a = a.float()
            a = a.contiguous().numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def clean_stale_temp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files :func:`atomic_write` leaves in ``folder`` when a process is killed mid-write.

    Call it only while holding the folder's :class:`RunDir` lock (no other writer is active). Returns what was
    removed.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.rglob(f".*{TEMP_SUFFIX}"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


class RunDir:
    """An output folder that one run owns: a lock against concurrent runs and a guard against mixing runs.

    ``with RunDir(out, overwrite=False, resume=False) as run_dir:`` takes an exclusive, non-blocking lock on
    ``out/.datacomp.lock`` (a second process on the same folder fails at once with :class:`RunDirError`), refuses a
    folder that already holds a run (a ``run.json``, or any files for ``strict=True``) unless ``overwrite`` or
    ``resume`` is given, and removes stale temp files. The lock goes with the process, so a killed run never leaves
    the folder locked.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, resume: bool = False,
                 strict: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.resume = resume
        self.strict = strict
        self._fh: BinaryIO | None = None
        self.removed_temp: list[Path] = []

    def check(self) -> None:
        """Refuse a file in the folder's place, or a folder holding another run (no lock taken)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file; give a folder path")
        if self.overwrite or self.resume or not self.path.is_dir():
            return
        held = (self.path / RUN_FILE).exists()
        if self.strict:
            held = held or any(p.name != _LOCK_FILE for p in self.path.iterdir())
        if held:
            raise RunDirError(f"--out {self.path} already holds a run; choose another folder or pass --overwrite"
                              + (" (or --resume to continue it)" if not self.strict else ""))

    def __enter__(self) -> "RunDir":
        import fcntl

        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {self.path} cannot be created ({err.strerror}); choose a writable folder") \
                from err
        fh = open(self.path / _LOCK_FILE, "ab")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            fh.close()
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"--out {self.path} is in use by another datacomp run; wait for it or choose "
                                  "another folder") from None
            raise
        self._fh = fh
        self.removed_temp = clean_stale_temp(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()  # releases the flock; the empty lock file stays (removing it would race a new locker)
            self._fh = None
