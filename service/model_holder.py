"""The model a worker serves, and how a new champion replaces it.

Requests read `holder.bundle` once and use that object to the end, so a swap
is one reference assignment: in-flight requests finish on the old session,
the next ones get the new. A watcher thread (one per worker, started after
fork) polls the registry's champion pointer; a new version is loaded and
checked off the request path, and a version that fails is refused, logged,
counted and never swapped in.
"""
import logging
import threading

from pipeline.bundle import Bundle
from pipeline.errors import BundleError, PipelineError
from pipeline.registry import Registry

from . import metrics

log = logging.getLogger("demand.service")
CUDA = "CUDAExecutionProvider"


class ModelHolder:
    def __init__(self, settings):
        self.settings = settings
        self.registry = Registry(settings.model_dir)
        self.bundle = None
        self.last_error = "no model loaded yet"
        self.refused = set()  # versions that failed their checks: immutable, so never retried
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    @property
    def ready(self):
        return self.bundle is not None

    def refresh(self, force=False):
        """Load the champion if it is not what we serve. Returns the version served."""
        with self._swap_lock:
            champion = self.registry.champion()
            current = self.bundle.version if self.bundle else None
            if champion is None:
                if current is None:
                    self.last_error = f"no champion model in {self.registry.root}"
                return current
            if champion == current or (champion in self.refused and not force):
                return current
            try:
                bundle = Bundle.load(self.registry, champion, self.settings.provider, self.settings.threads_per_session())
                if self.settings.require_gpu and bundle.provider != CUDA:
                    raise BundleError(f"DEMAND_REQUIRE_GPU is set but model {champion} runs on {bundle.provider}")
            except PipelineError as err:
                self.refused.add(champion)
                metrics.RELOAD_FAILURES.inc()
                self.last_error = str(err)
                if current:
                    log.error("refused new champion %s, still serving %s: %s", champion, current, err)
                else:
                    log.error("cannot serve champion %s: %s", champion, err)
                return current
            previous, self.bundle = self.bundle, bundle
            self.refused.discard(champion)
            metrics.model_loaded(bundle.version, bundle.provider, previous)
            log.info("serving model %s on %s%s", bundle.version, bundle.provider,
                     f" (was {previous.version})" if previous else "")
            return bundle.version

    def start_watching(self):
        if self._thread is None and self.settings.reload_interval > 0:
            self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
            self._thread.start()

    def stop_watching(self):
        self._stop.set()

    def _watch(self):
        while not self._stop.wait(self.settings.reload_interval):
            try:
                self.refresh()
            except Exception:  # keep watching whatever happens; the old model keeps serving
                log.exception("champion check failed")
