"""The errors datacomp anticipates: each names what is wrong and how to fix it.

Every anticipated failure raises a :class:`DatacompError`; the command line prints its one-line message and exits
with status 2 (no traceback). The subclasses also derive from the built-in exception a caller would expect
(``ValueError`` for bad values, ``FileNotFoundError`` for missing inputs), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, NoReturn

__all__ = [
    "DatacompError", "ConfigError", "DataError", "FormatError", "MissingInputError", "RunDirError", "DeviceError",
    "RunAborted", "TrainingDiverged", "is_int", "check_int_at_least", "run_script",
]


class DatacompError(Exception):
    """Base class of every anticipated datacomp error (the CLI exits 2 with the message)."""

    exit_code = 2


class ConfigError(DatacompError, ValueError):
    """An argument, setting or combination of them is invalid (the message names the argument and the fix)."""


class DeviceError(ConfigError):
    """The requested device is not available on this machine."""


class DataError(DatacompError, ValueError):
    """Input data (a dataset, a text file, labels, features) cannot be used as given."""


class FormatError(DataError):
    """A file datacomp reads (small training set, selection, checkpoint, run record) is malformed."""


class MissingInputError(DatacompError, FileNotFoundError):
    """An input file or folder does not exist."""


class RunDirError(DatacompError):
    """An output folder holds another run, or another process is writing into it."""


class RunAborted(DatacompError):
    """A long run stopped early (non-finite values, an interrupt); what was saved and how to resume is in the
    message."""


class TrainingDiverged(DatacompError, FloatingPointError):
    """A training loop's loss became NaN or infinite (the message names the learning rate to lower)."""


def is_int(value: object) -> bool:
    """True for a Python or numpy integer; False for bool, numpy bool, floats and anything else."""
    if isinstance(value, int):
        return not isinstance(value, bool)
    numpy = sys.modules.get("numpy")  # a numpy integer exists only once numpy is imported; this module stays light
    return numpy is not None and isinstance(value, numpy.integer)


def check_int_at_least(value: object, name: str, minimum: int, fix: str = "") -> None:
    """Raise :class:`ConfigError` (``name``, ``minimum`` and the ``fix`` hint in the message) unless ``value`` is an
    integer >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}{fix}, got {value!r}")


def run_script(main: Callable[[], int | None], prog: str | None = None) -> NoReturn:
    """Run a script's ``main()`` and exit with the status it returns (None = 0). A :class:`DatacompError` prints one
    line, ``<prog>: error: <message>``, on stderr and exits 2 with no traceback, as the command line does; ``prog``
    defaults to the script's file name. For ``if __name__ == "__main__": run_script(main)``."""
    try:
        status = main()
    except DatacompError as err:
        print(f"{prog or Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
