"""Files written beside their final path and renamed into place, so a failed or
interrupted write never leaves a half-written output (and never replaces a
good one with it)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import DataError

T = TypeVar("T")


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an output is written before it is renamed into place: beside it,
    hidden, and named by process, so two runs writing the same output never share one.
    Refuses an output that is there and is not a regular file (check_output)."""
    path = Path(path)
    check_output(path)
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def check_output(path: str | os.PathLike[str]) -> None:
    """A DataError unless `path` is a regular file or nothing yet: renaming into place would replace a device
    (/dev/full), a pipe or a link with a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise DataError(f"{path}: cannot be written: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in KINDS if test(mode)), "not a regular file")
        raise DataError(f"{path}: is {kind}; name a regular file or a new path for the output")


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], T]) -> T:
    """Call `write(partial)`, then rename the partial file to `path`; returns what `write` returned.

    A failure to write (OSError) becomes a DataError naming `path`; on any
    failure, Ctrl-C included, the partial file is removed.
    """
    path = Path(path)
    partial = partial_path(path)
    try:
        result = write(partial)
        os.replace(partial, path)
        return result
    except OSError as err:
        raise DataError(f"{path}: cannot be written: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(OSError):  # none was made where no file can be
            partial.unlink(missing_ok=True)
