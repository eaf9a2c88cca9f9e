"""The run folder of ``compress`` and ``train_teacher``: checked before any work, held (locked) while the run writes.

Both take ``out`` / ``overwrite`` / ``device``: :func:`open_run` resolves the device and refuses an ``out`` holding
another run before anything is loaded or trained; :func:`run_folder` holds the folder while the run writes into it
(or, without ``out``, gives a temporary folder that is removed afterwards, or None).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from datacomp.errors import ConfigError
from datacomp.io import RunDir
from datacomp.runtime import resolve_device

__all__ = ["check_config", "open_run", "run_folder"]


def check_config(config: object, cls: type) -> None:
    """``config`` must be a ``cls`` (the library entry's settings dataclass)."""
    if not isinstance(config, cls):
        raise ConfigError(f"config must be a {cls.__name__}, got {type(config).__name__}")


def open_run(out: str | os.PathLike | None, overwrite: bool, device: str) -> tuple[str, RunDir | None]:
    """``(device, run_dir)``: the resolved device and the checked run folder (None without ``out``).

    Raises:
        DeviceError: the device is not available.
        RunDirError: ``out`` holds another run (without ``overwrite``) or is in use.
    """
    device = resolve_device(device)
    run_dir = RunDir(out, overwrite=overwrite) if out is not None else None
    if run_dir is not None:
        run_dir.check()
    return device, run_dir


@contextmanager
def run_folder(run_dir: RunDir | None, scratch: bool = False) -> Iterator[Path | None]:
    """Hold ``run_dir`` and yield its path; without one, a temporary folder (``scratch``) or None."""
    if run_dir is not None:
        with run_dir:
            yield run_dir.path
    elif scratch:
        with tempfile.TemporaryDirectory(prefix="datacomp-compress-") as folder:
            yield Path(folder)
    else:
        yield None
