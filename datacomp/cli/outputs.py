"""Checks on output FILE paths (``--json``, ``subset --out``), made before any expensive work."""

from __future__ import annotations

import os
from pathlib import Path

from datacomp.errors import ConfigError, RunDirError

__all__ = ["check_output_file"]


def check_output_file(path: str | os.PathLike, option: str, overwrite: bool | None = None) -> Path:
    """Refuse an output file path that cannot be written: a folder, a path under a file, a folder without write
    permission, or (``overwrite=False``) an existing file. ``overwrite=None`` replaces existing files silently.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file path")
    if path.exists() and overwrite is False:
        raise RunDirError(f"{option} {path} already exists; choose another path or pass --overwrite")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder; give a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: the folder {parent} is not writable; choose a writable location")
    return path
