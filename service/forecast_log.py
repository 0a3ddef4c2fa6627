"""The forecast log: every forecast served for a named series and week, written
to the store by a background thread in batches, so that a request never waits
for the database. A request's weeks of one series are one run (a row of
pipeline.store.forecast_runs), read a week per row through the forecasts view.
When the store cannot be reached the service keeps serving: the forecasts are
dropped, counted in weeks (demand_forecast_log_dropped_total) and reported by
/healthz.
"""

from __future__ import annotations

import atexit
import contextvars
import datetime as dt
import threading
import time
import uuid
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from pipeline.calibrate import level_key
from pipeline.drift import served_columns
from pipeline.schema import describe_value, series_problem
from pipeline.store import FIRST_YEAR, LAST_YEAR, count_served_inputs, log_forecasts, week_of

from . import metrics
from .errors import ApiError
from .plan_json import WeekTexts, run_lists

if TYPE_CHECKING:
    from pipeline.bundle import Bundle

# A run of weeks forecast for one series (pipeline.store.forecast_runs): (series, first week, its step, how many
# weeks, [forecast of each week] or its JSON, {level: [[low, high] of each week]} or its JSON, or None).
Run = tuple[str, dt.date, int, int, Any, Any]

FLUSH_SECONDS = 0.5  # how stale the log may be
INPUTS_SECONDS = 5.0  # how stale the served inputs' counts may be: drift is over weeks


def serving_week() -> dt.date:
    """The Monday of today's week (UTC): the served inputs' counts are kept by week."""
    day = int(time.time() // 86400)
    return _MONDAYS.get(day) or _MONDAYS.setdefault(day, dt.date(1970, 1, 1) + dt.timedelta(days=day - (day + 3) % 7))


_MONDAYS: dict[int, dt.date] = {}
MAX_PENDING = 200_000  # forecast weeks held while the store is slow; past that, new ones are dropped


class InputBins:
    """Each served input's bin in the card's reference (pipeline.drift.served_columns), for one version."""

    def __init__(self, card: dict[str, Any]) -> None:
        self.columns = [
            (name, column, np.asarray(reference["edges"]), list(reference["edges"]))
            for name, column, reference in served_columns(card)
        ]

    def counts(self, X: np.ndarray) -> list[tuple[str, int, int]]:
        """(input, bin, rows) of the features X [n, k]."""
        if len(X) == 1:  # a single row: a bisect per input costs a fraction of numpy's calls
            row = X[0]
            return [(name, bisect_right(edges, float(row[column])), 1) for name, column, _, edges in self.columns]
        found: list[tuple[str, int, int]] = []
        for name, column, edges, _ in self.columns:
            counts = np.bincount(np.searchsorted(edges, X[:, column], side="right"), minlength=len(edges) + 1)
            found.extend((name, b, count) for b, count in enumerate(counts.tolist()) if count)
        return found


class ForecastLog:
    def __init__(self, engine: Engine, logger: Any) -> None:
        self.engine, self.logger = engine, logger
        self.pending: deque[tuple[Any, ...]] = deque()  # pipeline.store.LOGGED's columns
        self.pending_weeks = 0  # the forecast weeks of the pending runs
        # {(version, serving week, input, bin): rows} since the last flush (pipeline.store.served_inputs)
        self.inputs: defaultdict[tuple[str, dt.date, str, int], int] = defaultdict(int)
        self.bins: dict[str, InputBins] = {}
        self.inputs_written = time.monotonic()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.dropped = 0
        self.failure: str | None = None

    def record(self, request_id: str, version: str, runs: list[Run]) -> None:
        """Queue the runs of forecasts of one request (Run)."""
        if not runs:
            return
        weeks = sum(run[3] for run in runs)
        served = dt.datetime.now(dt.timezone.utc)
        with self.lock:
            held = self.pending_weeks + weeks <= MAX_PENDING
            if held:
                self.pending.extend((request_id, version, served, *run) for run in runs)
                self.pending_weeks += weeks
        if not held:
            self.drop(weeks)
            return
        self.start()

    def count_inputs(self, bundle: Bundle, X: np.ndarray) -> None:
        """Count the features a version is served into its reference bins (Bundle.observe)."""
        bins = self.bins.get(bundle.version)
        if bins is None:
            bins = self.bins[bundle.version] = InputBins(bundle.card)
        week = serving_week()
        found = bins.counts(X)
        with self.lock:
            for name, bin_, count in found:
                self.inputs[bundle.version, week, name, bin_] += count
        if self.thread is None:
            self.start()

    def start(self) -> None:
        """The writer thread, started in the process that serves (gunicorn forks the workers first)."""
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="forecast-log", daemon=True)
                self.thread.start()
                atexit.register(self.flush)

    def run(self) -> None:
        while True:
            self.wake.wait(FLUSH_SECONDS)
            self.flush(everything=False)

    def flush(self, everything: bool = True) -> None:
        """Write what is pending; the inputs' counts only every INPUTS_SECONDS unless `everything`."""
        if everything or time.monotonic() - self.inputs_written >= INPUTS_SECONDS:
            self.inputs_written = time.monotonic()
            with self.lock:
                counted, self.inputs = self.inputs, defaultdict(int)
            try:
                count_served_inputs(self.engine, counted)
            except Exception as err:  # as for the records below: serving goes on, /healthz says why
                if self.failure is None:
                    self.logger.error(
                        "cannot write the served inputs' counts, dropping them: %s", str(err).splitlines()[0]
                    )
                self.failure = str(err).splitlines()[0][:200]
        batch: list[tuple[Any, ...]] = []
        with self.lock:
            while self.pending and len(batch) < 10_000:
                batch.append(self.pending.popleft())
            self.pending_weeks -= sum(run[6] for run in batch)
        if not batch:
            return
        try:
            log_forecasts(self.engine, batch)
        except Exception as err:  # any failure of the database: serving goes on
            self.drop(sum(run[6] for run in batch))  # its weeks
            if self.failure is None:
                self.logger.error("cannot write the forecast log, dropping its records: %s", str(err).splitlines()[0])
            self.failure = str(err).splitlines()[0][:200]
            return
        if self.failure is not None:
            self.logger.info("the forecast log is written again")
        self.failure = None
        if self.pending:
            self.wake.set()
        else:
            self.wake.clear()

    def drop(self, count: int) -> None:
        """Count `count` forecast weeks not logged."""
        self.dropped += count
        metrics.FORECAST_LOG_DROPPED.inc(count)

    def health(self) -> dict[str, Any]:
        """What /healthz says about the log."""
        state: dict[str, Any] = {"status": "ok" if self.failure is None else "failing", "dropped": self.dropped}
        if self.failure is not None:
            state["error"] = self.failure
        return state


class Served:
    """What one request logs, under one request id (made when the first record is): the answer's X-Request-Id;
    and the store it may read history from, in the fast path as in Flask's views."""

    def __init__(self, forecast_log: ForecastLog | None, header: str | None, store: Engine | None = None) -> None:
        self.forecast_log, self.header, self.store = forecast_log, header, store
        self.request_id: str | None = None

    def record(self, version: str, runs: list[Run]) -> None:
        if self.forecast_log is None or not runs:
            return
        if self.request_id is None:
            self.request_id = request_id(self.header)
        self.forecast_log.record(self.request_id, version, runs)


# The request being served, in the thread serving it: set by the fast path and by the Flask app around each request.
SERVED: contextvars.ContextVar[Served | None] = contextvars.ContextVar("demand_served", default=None)


def logged_request() -> Served | None:
    """The request being served, when its forecasts are logged; None otherwise."""
    served = SERVED.get()
    return served if served is not None and served.forecast_log is not None else None


def log_rows(version: str, series: Sequence[str], weeks: np.ndarray, out: dict[str, Any], level: float) -> None:
    """Log the forecasts of rows that name their series and week (step 1, the interval served)."""
    served = SERVED.get()
    if served is None or served.forecast_log is None:
        return
    dated = np.flatnonzero(~np.isnat(weeks))
    if not len(dated):
        return
    key = level_key(level)
    days = weeks.astype(object).tolist()
    units, low, high = out["units_sold"].tolist(), out["low"].tolist(), out["high"].tolist()
    served.record(
        version,
        [(series[i], days[i], 1, 1, [units[i]], {key: [[low[i], high[i]]]}) for i in dated.tolist() if series[i]],
    )


def dated_instances(instances: Sequence[Any], prefix: str = "instances") -> list[tuple[int, str, dt.date]]:
    """(row, series, week) of the rows that name their series and week, to be logged. A week that is not a
    date (none: absent, null or ""), or the series of a row with a week that is not a name, is a 400 naming
    it, whether or not the log is on: a row's week is never dropped without a word."""

    def field(i: int, name: str) -> str:
        return f"{prefix}[{i}].{name}" if prefix == "instances" else name

    dated = []
    weeks: dict[str, dt.date] = {}  # each text read once: a body's rows share a few weeks and names
    names: dict[str, str] = {}
    for i, row in enumerate(instances):
        value = row.get("week") if type(row) is dict else None
        if value is None or value == "":
            continue
        week = weeks.get(value) if type(value) is str else None
        if week is None:
            week = week_of(value.strip()) if type(value) is str else None
            if week is None:
                shown = repr(value[:40]) if type(value) is str else describe_value(value)
                raise ApiError(
                    400,
                    f"{field(i, 'week')} must be an ISO date like 2024-01-01, in years {FIRST_YEAR} to {LAST_YEAR}, "
                    f"got {shown}",
                )
            if type(value) is str:
                weeks[value] = week
        name = row.get("series")
        if name is None:
            continue
        text = names.get(name) if type(name) is str else None
        if text is None:
            problem = series_problem(name)
            if problem:  # the week is logged under it
                raise ApiError(400, f"{field(i, 'series')} {problem}")
            text = str(name).strip()
            if type(name) is str:
                names[name] = text
        if text:
            dated.append((i, text, week))
    return dated


def log_instances(version: str, dated: list[tuple[int, str, dt.date]], out: dict[str, Any], level: float) -> None:
    """Log the forecasts of dated_instances() (step 1, the interval served)."""
    served = SERVED.get()
    if served is None or not dated:
        return
    key = level_key(level)
    units, low, high = out["units_sold"], out["low"], out["high"]
    served.record(
        version,
        [(name, week, 1, 1, [float(units[i])], {key: [[float(low[i]), float(high[i])]]}) for i, name, week in dated],
    )


def request_id(header: str | None) -> str:
    """The client's X-Request-Id when it is a plain token of at most 64 characters, else a new one."""
    if header and len(header) <= 64 and all(c.isalnum() or c in "-_.:" for c in header):
        return header
    return uuid.uuid4().hex


def plan_runs(
    ids: Sequence[str], dates: np.ndarray, lengths: np.ndarray, texts: WeekTexts, levels: Sequence[float]
) -> list[Run]:
    """A plan's run of dated weeks per series (Run): its weeks from the first, as far as they are dated and
    within the calendar (a date the store can hold). Each series' forecasts and each level's intervals are
    the answer's texts of its weeks (WeekTexts), joined: a run's lists may go on past its weeks, which the
    log does not read."""
    H = dates.shape[1]
    days = np.asarray(dates, dtype="datetime64[D]")
    dated = (np.arange(H)[None, :] < np.asarray(lengths)[:, None]) & ~np.isnat(days)
    dated &= days <= np.datetime64(dt.date.max)
    weeks = np.where(dated.all(axis=1), H, np.argmin(dated, axis=1))  # dated weeks from the first
    logged = np.flatnonzero(weeks)
    if not len(logged):
        return []
    units, intervals = run_lists(texts, np.asarray(lengths).tolist(), levels)
    names, first = list(ids), days[:, 0].astype(object).tolist()
    counts, chosen = weeks.tolist(), logged.tolist()
    if len(logged) < len(ids):
        names, first, counts = [names[s] for s in chosen], [first[s] for s in chosen], [counts[s] for s in chosen]
        units = [units[s] for s in chosen]
        intervals = None if intervals is None else [intervals[s] for s in chosen]
    return list(zip(names, first, repeat(1), counts, units, intervals or repeat(None)))
