"""Files written beside their final path and renamed into place, so a failed or
interrupted write never leaves a half-written output (and never replaces a
good one with it)."""
import contextlib
import os
from pathlib import Path

from .errors import DataError


def partial_path(path):
    """Where an output is written before it is renamed into place: beside it,
    hidden, and named by process, so two runs writing the same output never share one."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def write_atomically(path, write):
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
