"""The model registry on disk (see models/README.md for the layout).

Crash safety comes from the file system, not from care at run time:
- a version is built in `staging/` and appears in `versions/` by one rename;
- `champion` is replaced by `os.replace` of a fully written temp file;
- `history.jsonl` only ever gets whole lines appended.
Every change goes through a `RegistryWriter`, which only `Registry.writer()`
hands out, while it holds an exclusive `flock` on `.lock`; readers never lock.
Every decision is recorded by one function, `RegistryWriter.record`, with one
set of keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .documents import dumps
from .errors import RegistryBusy, RegistryError

DEFAULT_MODEL_DIR = "models"


def crashpoint(name: str) -> None:
    """Die here, as kill -9 would, when DEMAND_CRASH_AT names this point.

    Lets the crash-safety tests stop a real process at an exact step of a
    training run or a publish (training, while-staging, before-commit,
    after-commit, before-champion); without the variable it does nothing.
    """
    if os.environ.get("DEMAND_CRASH_AT") == name:
        os.kill(os.getpid(), 9)


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A version is named v1, v2, ...: the only thing `champion` may hold, and
# the only thing a version argument may be (never a path out of the registry).
VERSION_NAME = re.compile(r"v[0-9]{1,9}")
TAILS_FILE = "history.json"  # a version's stored weeks and static values per series (pipeline.publish.tails_document)
MAX_POINTER_BYTES = 64  # the champion pointer holds a version name and a line break


def is_version_name(name: object) -> bool:
    return isinstance(name, str) and VERSION_NAME.fullmatch(name) is not None


def version_number(name: str) -> int:
    try:
        return int(name.removeprefix("v"))
    except ValueError:
        return -1


class Registry:
    def __init__(self, root: str | os.PathLike[str] = DEFAULT_MODEL_DIR) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.champion_file = self.root / "champion"
        self.history_file = self.root / "history.jsonl"
        self.lock_file = self.root / ".lock"

    # ---- reading (no lock needed) ----

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if (p / "card.json").is_file()]
        return sorted(names, key=version_number)

    def path(self, version: str) -> Path:
        """A version's folder; a RegistryError for a name that is not a version's, or a folder that is a link
        or resolves outside the registry's versions (it would serve files from anywhere)."""
        if not is_version_name(version):
            raise RegistryError(f"{str(version)[:64]!r} is not a version name (v1, v2, ...)")
        folder = self.versions_dir / version
        if folder.is_symlink() or (folder.exists() and folder.resolve() != self.versions_dir.resolve() / version):
            raise RegistryError(f"{folder} is a link out of the registry; a version is a folder of its own")
        return folder

    def exists(self, version: str) -> bool:
        """Whether a version's card is there (a folder that is a link is, and is refused when read)."""
        return is_version_name(version) and (self.versions_dir / version / "card.json").is_file()

    def file(self, version: str, name: str) -> Path:
        """A file of a version, refused when it is a link out of the version's folder."""
        folder = self.path(version)
        path = folder / name
        if path.is_symlink() and path.resolve().parent != folder.resolve():
            raise RegistryError(f"{path} is a link out of its version's folder")
        return path

    def card(self, version: str) -> dict[str, Any]:
        if not self.exists(version):
            self.path(version)  # a name that is not a version's says so
            raise RegistryError(f"no version {version!r} in {self.versions_dir}")
        path = self.file(version, "card.json")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:  # a version damaged by hand: say which and why, no traceback
            raise RegistryError(f"{path}: cannot be read: {getattr(err, 'strerror', None) or err}") from None

    def champion(self) -> str | None:
        """The version the service must serve, or None before the first publish.

        Raises RegistryError when the pointer holds anything but a version name.
        """
        try:
            mode = os.lstat(self.champion_file).st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(mode):  # a pipe would hang the read, a link point anywhere
            raise RegistryError(f"the champion pointer {self.champion_file} is not a regular file")
        try:
            with open(self.champion_file, "rb") as pointer:
                version = pointer.read(MAX_POINTER_BYTES + 1).decode("utf-8", errors="replace").strip()
        except FileNotFoundError:
            return None
        if not version:
            return None
        if not is_version_name(version):
            raise RegistryError(
                f"the champion pointer {self.champion_file} holds {version[:64]!r}, not a version name (v1, v2, ...)"
            )
        return version

    def champion_written(self) -> tuple[int, int, int] | None:
        """Changes whenever the champion pointer is written again (it is replaced, never edited)."""
        try:
            st = os.stat(self.champion_file)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def history(self) -> list[dict[str, Any]]:
        if not self.history_file.exists():
            return []
        events = []
        for line in self.history_file.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash mid-append
        return events

    def champion_chain(self) -> list[str]:
        """Champions in promotion order, with rolled-back ones removed.

        The last entry is the current champion; the one before it is where
        `rollback` goes.
        """
        chain: list[str] = []
        for event in self.history():
            kind, version = event.get("event"), event.get("version")
            if kind == "promote" and version:
                if chain and chain[-1] == version:
                    continue
                chain.append(version)
            elif kind == "rollback" and version:
                while chain and chain[-1] != version:
                    chain.pop()
                if not chain:
                    chain.append(version)
        return chain

    def rollback_target(self) -> str | None:
        """The previous champion still on disk, or None."""
        chain = self.champion_chain()
        current = self.champion()
        for version in reversed(chain[:-1] if chain and chain[-1] == current else chain):
            if version != current and self.exists(version):
                return version
        return None

    def open_lock(self) -> int:
        """The lock file's descriptor, the folder made first; a folder that cannot be is a RegistryError."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RegistryError(f"{self.root}: cannot hold a model registry: {err.strerror or err}") from None

    def check_writable(self) -> None:
        """Fail now, not after a training, when the registry folder cannot be written."""
        os.close(self.open_lock())

    @contextlib.contextmanager
    def writer(self, wait: float = 0.0, log: Callable[[str], None] | None = None) -> Iterator[RegistryWriter]:
        """The registry's writer, for as long as this holds the exclusive lock.

        Waits up to `wait` seconds for another writer (saying so once through `log`), then RegistryBusy.
        """
        fd = self.open_lock()
        deadline = time.monotonic() + wait
        writer = None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RegistryBusy(
                            f"another writer holds the registry lock {self.lock_file}; "
                            "try again later or pass --wait SECONDS"
                        ) from None
                    if log is not None:
                        log(f"another writer holds the registry lock; waiting up to {wait:g} s for it")
                        log = None
                    time.sleep(0.05)
            self._remove_stale_staging()
            writer = RegistryWriter(self, _LockHeld())
            yield writer
        finally:
            if writer is not None:
                writer._lock.released = True  # a writer kept past its block can no longer write
            os.close(fd)  # closing releases the flock

    def _remove_stale_staging(self) -> None:
        # Left behind only by a writer that died; we hold the lock, so none is in use.
        if self.staging_dir.is_dir():
            for leftover in self.staging_dir.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)


class _LockHeld:
    released = False


class RegistryWriter:
    """Changes a registry; only `Registry.writer()` makes one, holding the lock."""

    def __init__(self, registry: Registry, lock: _LockHeld) -> None:
        self.registry = registry
        self._lock = lock

    def __getattr__(self, name: str) -> Any:  # reads go to the registry
        return getattr(self.registry, name)

    def _check(self) -> None:
        if not isinstance(self._lock, _LockHeld) or self._lock.released:
            raise RegistryError("the registry can only be changed inside `with registry.writer():`")

    def promote(self, version: str, reason: str, by: str, **details: Any) -> str | None:
        """Make `version` champion and record it. Returns the previous champion."""
        previous = self.registry.champion()
        self.set_champion(version)
        self.record("promote", version, reason, by, champion_before=previous, **details)
        return previous

    def rollback(self, by: str) -> tuple[str | None, str]:
        """Make the previous champion current again. Returns (previous, now)."""
        self._check()
        target = self.registry.rollback_target()
        current = self.registry.champion()
        if target is None:
            raise RegistryError(f"no earlier champion to roll back to (the champion is {current})")
        self.set_champion(target)
        self.record("rollback", target, f"rolled back from {current}", by, champion_before=current)
        return current, target

    def prune(self, keep: int, by: str) -> list[str]:
        """Delete all but the `keep` newest versions, never the champion or the rollback target."""
        self._check()
        if keep < 1:
            raise RegistryError("--keep must be at least 1")
        versions = self.registry.versions()
        protected = {self.registry.champion(), self.registry.rollback_target(), *versions[-keep:]}
        removed = [v for v in versions if v not in protected]
        for version in removed:
            # Rename first: the version disappears from versions/ in one step.
            doomed = self.staging_dir / f"pruned-{version}"
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            os.rename(self.registry.path(version), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        if removed:
            _fsync_dir(self.versions_dir)
            self.record(
                "prune",
                None,
                f"kept the {keep} newest, the champion and the rollback target",
                by,
                removed=removed,
                kept=sorted(protected - {None}, key=version_number),
            )
        return removed

    def next_version(self) -> str:
        self._check()
        taken = [version_number(p.name) for p in self.versions_dir.iterdir()] if self.versions_dir.is_dir() else []
        return f"v{max(taken, default=0) + 1}"

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder to build a version in; removed if the build fails."""
        self._check()
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=self.staging_dir))
        folder.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # gone already if it was committed

    def commit(self, staged: Path, version: str) -> None:
        """Make a fully built staging folder visible as `version`, in one rename."""
        self._check()
        for f in staged.iterdir():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(staged)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(version)
        if target.exists():
            raise RegistryError(f"version {version} already exists")
        crashpoint("before-commit")
        os.rename(staged, target)
        _fsync_dir(self.versions_dir)
        crashpoint("after-commit")

    def set_champion(self, version: str) -> None:
        self._check()
        if not self.exists(version):
            raise RegistryError(f"cannot make {version!r} champion: no such version")
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".champion.")
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o644)
                out.write(version + "\n")
                out.flush()
                os.fsync(out.fileno())
            crashpoint("before-champion")
            os.replace(tmp, self.champion_file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)

    def record(
        self,
        event: str,
        version: str | None,
        reason: str,
        by: str,
        champion_before: str | None = None,
        **details: Any,
    ) -> None:
        """Append one decision to history.jsonl: always these keys, then the event's own details."""
        self._check()
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": event,
            "version": version,
            "champion_before": champion_before,
            "reason": reason,
            "by": by,
            **details,
        }
        line = dumps(entry) + "\n"
        fd = os.open(self.history_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # end a line cut short by a crash, keep ours whole
            os.write(fd, line.encode())  # one write of one line: never interleaved
            os.fsync(fd)
        finally:
            os.close(fd)
