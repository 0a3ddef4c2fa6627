"""Live accuracy: the forecast log joined to the actuals, per version and step ahead.

For each version and step: how many forecast weeks have sold since, WAPE,
bias (how much the forecasts over- or under-shoot, as a share of what sold),
MASE against the naive forecast (this week sells what last week sold, its
mean absolute error over each series' stored weeks), and the share of actuals
inside each interval level served. Over a trailing window of weeks and over
everything logged. A week forecast more than once by one version at one step
counts once: the latest forecast served.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .store import WEEK, actuals, forecasts

DEFAULT_WEEKS = 13


def live_accuracy(engine: Engine, weeks: int = DEFAULT_WEEKS) -> dict[str, Any]:
    """{"weeks", "through", "versions": {version: {"window": [per step], "all": [per step]}}}."""
    latest = (
        select(func.max(forecasts.c.id).label("id"))
        .group_by(forecasts.c.version, forecasts.c.series, forecasts.c.week, forecasts.c.step)
        .subquery()
    )
    query = (
        select(
            forecasts.c.version,
            forecasts.c.series,
            forecasts.c.week,
            forecasts.c.step,
            forecasts.c.units_sold,
            forecasts.c.intervals,
            actuals.c.units_sold,
        )
        .join(latest, latest.c.id == forecasts.c.id)
        .join(actuals, (actuals.c.series == forecasts.c.series) & (actuals.c.week == forecasts.c.week))
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
        through = connection.execute(select(func.max(actuals.c.week))).scalar()
        scale = naive_scale(connection)
    answer: dict[str, Any] = {"weeks": weeks, "through": through.isoformat() if through else None, "versions": {}}
    if not rows:
        return answer
    start = through - (weeks - 1) * WEEK if through else None
    grouped: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for row in rows:
        grouped[(row[0], row[3])].append(row)
    for (version, step), group in sorted(grouped.items()):
        entry = answer["versions"].setdefault(version, {"window": [], "all": []})
        entry["all"].append(figures(step, group, scale))
        recent = [row for row in group if start is not None and row[2] >= start]
        if recent:
            entry["window"].append(figures(step, recent, scale))
    return answer


def naive_scale(connection: Any) -> dict[str, float]:
    """Each series' mean absolute change from one stored week to the next (consecutive weeks only)."""
    by_series: dict[str, list[tuple[dt.date, float]]] = defaultdict(list)
    for series, week, units in connection.execute(
        select(actuals.c.series, actuals.c.week, actuals.c.units_sold).order_by(actuals.c.series, actuals.c.week)
    ):
        by_series[series].append((week, units))
    scale = {}
    for series, history in by_series.items():
        changes = [abs(b[1] - a[1]) for a, b in zip(history, history[1:]) if b[0] - a[0] == WEEK]
        if changes and sum(changes) > 0:
            scale[series] = float(np.mean(changes))
    return scale


def figures(step: int, rows: list[Any], scale: dict[str, float]) -> dict[str, Any]:
    """One step's figures over `rows` (version, series, week, step, forecast, intervals, actual)."""
    forecast = np.array([row[4] for row in rows], dtype=np.float64)
    actual = np.array([row[6] for row in rows], dtype=np.float64)
    error = forecast - actual
    sold = np.abs(actual).sum()
    scaled = [abs(e) / scale[row[1]] for e, row in zip(error, rows) if row[1] in scale]
    coverage: dict[str, list[bool]] = defaultdict(list)
    for row, value in zip(rows, actual):
        for level, (low, high) in (row[5] or {}).items():
            coverage[level].append(low <= value <= high)
    return {
        "step": step,
        "count": len(rows),
        "wape": float(np.abs(error).sum() / sold) if sold else None,
        "bias": float(error.sum() / sold) if sold else None,
        "mase": float(np.mean(scaled)) if scaled else None,
        "coverage": {level: float(np.mean(inside)) for level, inside in sorted(coverage.items())},
    }
