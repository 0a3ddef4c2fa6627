"""The model a worker serves, and how a new champion replaces it.

Requests read `holder.bundle` once and use that object to the end, so a swap
is one reference assignment: in-flight requests finish on the old session,
the next ones get the new. A watcher thread (one per worker, started after
fork) polls the registry's champion pointer; a new version is loaded and
checked off the request path, and a version that fails is refused, logged,
counted and never swapped in.

What a worker does when the champion cannot be served:
- the pointer holds anything but a version name: refused; never followed
  outside the registry;
- the version's folder is missing (not there yet, or pruned): tried again at
  every check, so it is served once it appears;
- the version failed its checks: refused until the pointer is written again;
- meanwhile the worker keeps what it serves, and a worker that starts with
  nothing serves the latest earlier champion that loads (from the history)
  and says so in /healthz: it stays ready, like its siblings.

Answers to clients name versions only; paths and details go to the log.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.bundle import Bundle
from pipeline.errors import PipelineError, RegistryError
from pipeline.registry import Registry

from . import metrics

if TYPE_CHECKING:
    import numpy as np

    from .config import Settings

log = logging.getLogger("demand.service")
CUDA = "CUDAExecutionProvider"


class Unservable(Exception):
    """Why the champion cannot be served: `public` for clients, `detail` for the log."""

    def __init__(self, public: str, detail: str, retry: bool) -> None:
        super().__init__(detail)
        self.public, self.detail, self.retry = public, detail, retry


class ModelHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry(settings.model_dir)
        self.bundle: Bundle | None = None
        self.champion: str | None = None  # what the pointer names, when it names a version
        self.last_error = "no model loaded yet"  # for clients: version names, never paths
        self.refused: set[str] = set()  # versions that failed their checks since the pointer was last written
        self._pointer_written: tuple[int, int, int] | None = None
        self._reported: set[str] = set()  # problems already logged and counted, until the pointer changes
        self._swap_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.followers: list[Callable[[], None]] = []  # called after each check of the registry
        # Given each bundle served and the features of each of its runs (the forecast log counts them).
        self.observe: Callable[[Bundle, np.ndarray], None] | None = None

    @property
    def ready(self) -> bool:
        return self.bundle is not None

    @property
    def fallback(self) -> bool:
        """True while this worker serves something else than what the champion pointer names."""
        return self.bundle is not None and self.bundle.version != self.champion

    def refresh(self, force: bool = False) -> str | None:
        """Load the champion if it is not what we serve. Returns the version served."""
        with self._swap_lock:
            written = self.registry.champion_written()
            if written != self._pointer_written or force:
                self._pointer_written = written
                self.refused.clear()
                self._reported.clear()
            current = self.bundle.version if self.bundle else None
            try:
                self.champion = None
                self.champion = champion = self._read_champion()
                if champion == current:
                    self.last_error = ""
                    return current
                bundle = self._load(champion)
            except Unservable as err:
                self._report(err)
                if self.bundle is None:
                    self._fall_back()
                return self.bundle.version if self.bundle else None
            self._swap(bundle)
            self.last_error = ""
            return bundle.version

    def _read_champion(self) -> str:
        try:
            champion = self.registry.champion()
        except RegistryError as err:
            raise Unservable("the champion pointer does not name a version", str(err), retry=False) from None
        if champion is None:
            raise Unservable(
                "no champion in the registry yet; train one with `demand train`",
                f"no champion model in {self.registry.root}",
                retry=True,
            )
        return champion

    def _load(self, version: str) -> Bundle:
        if version in self.refused:
            raise Unservable(f"model {version} failed its checks", f"model {version} was refused", retry=False)
        if not self.registry.exists(version):
            raise Unservable(
                f"champion {version} is not in the registry (yet)",
                f"champion {version} has no folder {self.registry.path(version)}",
                retry=True,
            )
        try:
            bundle = Bundle.load(self.registry, version, self.settings.provider, self.settings.threads_per_session())
        except PipelineError as err:
            if not self.registry.exists(version):  # pruned while loading: not the model's fault
                raise Unservable(f"champion {version} is not in the registry (yet)", str(err), retry=True) from None
            self.refused.add(version)
            raise Unservable(f"model {version} failed its checks", str(err), retry=False) from None
        if self.settings.require_gpu and bundle.provider != CUDA:
            self.refused.add(version)
            reason = f"DEMAND_REQUIRE_GPU is set but model {version} runs on {bundle.provider}"
            raise Unservable(reason, reason, retry=False)
        return bundle

    def _report(self, err: Unservable) -> None:
        """Log and count each problem once per write of the pointer, not at every check."""
        self.last_error = err.public
        if err.public in self._reported:
            return
        self._reported.add(err.public)
        if err.public.startswith("no champion"):
            log.warning("%s", err.detail)
            return
        metrics.RELOAD_FAILURES.inc()
        served = f", still serving {self.bundle.version}" if self.bundle else ""
        log.error(
            "cannot serve champion %s%s: %s%s",
            self.champion or "(no version named)",
            served,
            err.detail,
            " (tried again at every check)" if err.retry else "",
        )

    def _fall_back(self) -> None:
        """Serve the latest earlier champion that loads; the worker then stays ready."""
        for version in reversed(self.registry.champion_chain()):
            if version == self.champion or version in self.refused or not self.registry.exists(version):
                continue
            try:
                bundle = self._load(version)
            except Unservable as err:
                log.error("earlier champion %s cannot be served either: %s", version, err.detail)
                continue
            self._swap(bundle)
            log.warning("serving earlier champion %s until champion %s can be served", version, self.champion)
            return

    def _swap(self, bundle: Bundle) -> None:
        if self.observe is not None:
            bundle.observe = functools.partial(self.observe, bundle)
        previous, self.bundle = self.bundle, bundle
        metrics.model_loaded(bundle.version, bundle.provider, previous)
        log.info(
            "serving model %s on %s%s",
            bundle.version,
            bundle.provider,
            f" (was {previous.version})" if previous else "",
        )

    def start_watching(self) -> None:
        if self._thread is None and self.settings.reload_interval > 0:
            self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.settings.reload_interval)
            try:
                self.refresh()
                for follow in self.followers:
                    follow()
            except Exception:  # keep watching whatever happens; the old model keeps serving
                log.exception("champion check failed")
