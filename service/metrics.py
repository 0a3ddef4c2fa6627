"""Prometheus metrics, shared by all gunicorn workers through multiprocess mode.

gunicorn_conf sets PROMETHEUS_MULTIPROC_DIR before any worker imports this
module; without it (Flask's test client, one process) the default registry
is used.
"""

from __future__ import annotations

import contextvars
import os
from time import perf_counter as now  # noqa: F401  (the clock request durations are measured with)
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from pipeline.bundle import Bundle

REQUESTS = Counter(
    "demand_http_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "demand_http_request_duration_seconds",
    "Time to answer a request, by route and status",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# Set while a challenger scores a request again (service/shadow.py): what it forecasts was not served.
SHADOW_SCORING: contextvars.ContextVar[bool] = contextvars.ContextVar("demand_shadow_scoring", default=False)


class ServedCount:
    """A counter of what was served: a shadow's scoring of the same request adds nothing to it."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def inc(self, amount: float = 1) -> None:
        if not SHADOW_SCORING.get():
            self.counter.inc(amount)


ROWS = Counter("demand_rows_predicted_total", "Rows forecast, by protocol", ["protocol"])
ROWS_JSON, ROWS_V2, ROWS_CSV = (ServedCount(ROWS.labels(protocol)) for protocol in ("json", "v2", "csv"))
FORECAST_WEEKS = ServedCount(ROWS.labels("forecast"))  # series x weeks of /forecast plans
EXTRAPOLATED = ServedCount(Counter("demand_extrapolated_rows_total", "Rows with a feature outside the training range"))
SHADOW_SKIPPED = Counter(
    "demand_shadow_skipped_total",
    "Logged requests the shadow version did not score: behind (its queue full), unreadable (it reads other "
    "inputs), large (a body over 1 MiB), failed",
    ["reason"],
)
RELOADS = Counter("demand_model_reloads_total", "Models loaded and swapped in (the first load included)")
RELOAD_FAILURES = Counter(
    "demand_model_reload_failures_total",
    "Champions that could not be served (a pointer that is not a version name, a missing folder, "
    "failed checks), counted once per write of the pointer",
)
FORECAST_LOG_DROPPED = Counter(
    "demand_forecast_log_dropped_total",
    "Served forecasts not written to the forecast log because the store could not be reached",
)
# Set each time /accuracy is computed (a scrape alone computes nothing): the champion's figures over the window.
LIVE_WAPE = Gauge(
    "demand_live_wape", "The champion's live WAPE by step ahead", ["step"], multiprocess_mode="mostrecent"
)
LIVE_COVERAGE = Gauge(
    "demand_live_coverage",
    "Share of actuals inside the champion's served intervals, by step and level",
    ["step", "level"],
    multiprocess_mode="mostrecent",
)
INPUT_PSI = Gauge(
    "demand_input_psi",
    "Population stability index of each input's recent actuals against the champion's training distribution",
    ["input"],
    multiprocess_mode="mostrecent",
)
SERVED_INPUT_PSI = Gauge(
    "demand_served_input_psi",
    "Population stability index of each input the champion was served over the trailing weeks, against its training",
    ["input"],
    multiprocess_mode="mostrecent",
)
MODEL_INFO = Gauge(
    "demand_model_info",
    "1 for the version and execution provider a worker serves",
    ["version", "provider"],
    multiprocess_mode="liveall",
)
READY = Gauge("demand_worker_ready", "1 while a worker has a checked model loaded", multiprocess_mode="liveall")


_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count and time one request; the labelled children are looked up once."""
    key = (route, method, status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, str(status)))
    pair[0].inc()
    pair[1].observe(seconds)


# The route and method of a request answered before it could be routed: a
# body too large by its Content-Length, framing or a head gunicorn refuses.
UNROUTED = "(none)"


def observe_refused(status: int) -> None:
    """Count a request the worker answered itself, before the app saw it."""
    REQUESTS.labels(UNROUTED, UNROUTED, str(status)).inc()


def model_loaded(version: str, provider: str, previous: Bundle | None = None) -> None:
    if previous is not None:
        MODEL_INFO.labels(previous.version, previous.provider).set(0)
    MODEL_INFO.labels(version, provider).set(1)
    READY.set(1)
    RELOADS.inc()


def exposition() -> tuple[bytes, str]:
    """The text format of every worker's metrics, merged when running under gunicorn."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
