"""Shadow scoring: a challenger forecasts the requests the champion serves, off the request path.

With DEMAND_SHADOW set (a version, or `latest`: the newest published version
that is not the champion), every request whose forecasts go to the forecast
log is scored again by that version on a background thread, from the same
request body, and its forecasts are logged under its own version and the
same request id. Nothing of it reaches the client: the answer is the
champion's, sent before the shadow starts. /accuracy then shows the
challenger's live figures beside the champion's, on the same weeks.

A request the challenger cannot read (it declares other covariates) is not
scored by it, and counted. When the shadow falls behind, requests are not
queued past MAX_QUEUED, nor bodies larger than MAX_BODY kept: they are
skipped, and counted.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.bundle import Bundle
from pipeline.errors import PipelineError

from . import metrics
from .errors import ApiError
from .forecast_log import SERVED, Served

if TYPE_CHECKING:
    from .model_holder import ModelHolder

log = logging.getLogger("demand.service")
LATEST = "latest"
MAX_QUEUED = 64  # requests waiting for the shadow; past that they are not shadow-scored
MAX_BODY = 1 << 20  # bytes of a request body the shadow keeps: 64 of them at most 64 MiB a worker


class Shadow:
    def __init__(self, holder: ModelHolder, wanted: str) -> None:
        self.holder, self.wanted = holder, wanted
        self.bundle: Bundle | None = None
        self.jobs: queue.Queue[tuple[Callable[[Bundle], Any], Served, Bundle]] = queue.Queue(MAX_QUEUED)
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.problem: str | None = None

    def version(self) -> str | None:
        """The version to shadow now: none while it would be the champion."""
        champion = self.holder.bundle.version if self.holder.bundle is not None else None
        if self.wanted == LATEST:
            others = [v for v in self.holder.registry.versions() if v != champion]
            return others[-1] if others else None
        return self.wanted if self.wanted != champion else None

    def refresh(self) -> None:
        """Load the version to shadow when it changed (the champion's watcher calls this too)."""
        version = self.version()
        with self.lock:
            if version == (self.bundle.version if self.bundle else None):
                return
            if version is None:
                self.bundle = None
                return
            try:
                self.bundle = Bundle.load(self.holder.registry, version, self.holder.settings.provider, 1)
                self.problem = None
                log.info("shadow-scoring model %s beside the champion", version)
            except PipelineError as err:
                self.bundle = None
                if self.problem != str(err):
                    log.error("cannot shadow-score model %s: %s", version, err)
                self.problem = str(err)

    def submit(self, score: Callable[[Bundle], Any], size: int) -> None:
        """Score this request again with the shadow, later: `score(bundle)` runs the request's own
        computation, which logs its forecasts. Only for a request whose forecasts were logged, and whose
        body (`size` bytes, held until then) is at most MAX_BODY."""
        served, bundle = SERVED.get(), self.bundle
        if bundle is None or served is None or served.request_id is None:
            return
        if size > MAX_BODY:
            metrics.SHADOW_SKIPPED.labels("large").inc()
            return
        try:
            self.jobs.put_nowait((score, served, bundle))
        except queue.Full:
            metrics.SHADOW_SKIPPED.labels("behind").inc()
            return
        self.start()

    def start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="shadow", daemon=True)
                self.thread.start()

    def run(self) -> None:
        while True:
            score, served, bundle = self.jobs.get()
            try:
                contextvars.Context().run(self.score, score, served, bundle)
            finally:
                self.jobs.task_done()

    @staticmethod
    def score(score: Callable[[Bundle], Any], served: Served, bundle: Bundle) -> None:
        SERVED.set(served)
        metrics.SHADOW_SCORING.set(True)
        try:
            score(bundle)
        except ApiError:  # the challenger reads what this request does not hold
            metrics.SHADOW_SKIPPED.labels("unreadable").inc()
        except Exception:
            log.exception("shadow-scoring with model %s failed", bundle.version)
            metrics.SHADOW_SKIPPED.labels("failed").inc()

    def health(self) -> dict[str, Any]:
        """What /healthz says of the shadow."""
        state: dict[str, Any] = {"version": self.bundle.version if self.bundle else None, "queued": self.jobs.qsize()}
        if self.problem:
            state["error"] = self.problem
        return state
