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
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from .store import WEEK, actuals, forecasts, reading

DEFAULT_WEEKS = 13
LOGGED_WEEK = ("version", "series", "week", "step", "units_sold", "intervals")


def live_accuracy(engine: Engine, weeks: int = DEFAULT_WEEKS) -> dict[str, Any]:
    """{"weeks", "through", "versions": {version: {"window": [per step], "all": [per step]}}}.

    The database sums errors per version, step and series (the latest forecast of each week only); MASE's
    scale, each series' mean weekly change, comes from its stored weeks."""
    with reading(engine) as connection:
        through = connection.execute(select(func.max(actuals.c.week))).scalar()
        answer: dict[str, Any] = {"weeks": weeks, "through": through.isoformat() if through else None, "versions": {}}
        if through is None:
            return answer
        levels = served_levels(connection)
        scale = naive_scale(connection)
        sums = summed(connection, levels, through - (weeks - 1) * WEEK)
    for (version, step), groups in sorted(sums.items()):
        entry = answer["versions"].setdefault(version, {"window": [], "all": []})
        entry["all"].append(figures(step, merged(groups), scale, levels))
        recent = [g[1:] for g in groups if g[0]]
        if recent:
            entry["window"].append(figures(step, recent, scale, levels))
    return answer


def merged(groups: list[Any]) -> list[Any]:
    """A series' sums inside and outside the window, added up: [(series, sums...)]."""
    by_series: dict[str, list[float]] = {}
    for _, series, *sums in groups:
        known = by_series.get(series)
        by_series[series] = [a + (b or 0) for a, b in zip(known, sums)] if known else [v or 0 for v in sums]
    return [(series, *sums) for series, sums in by_series.items()]


def served_levels(connection: Any) -> list[str]:
    """The interval levels any logged forecast holds (read from the runs: their intervals have the same
    levels as each of their weeks', and there are fewer of them)."""
    if connection.dialect.name == "postgresql":
        query = "SELECT DISTINCT json_object_keys(intervals) FROM forecast_runs WHERE intervals IS NOT NULL"
    else:
        query = "SELECT DISTINCT key FROM forecast_runs, json_each(forecast_runs.intervals) WHERE intervals IS NOT NULL"
    return sorted(str(level) for (level,) in connection.exec_driver_sql(query))


def summed(connection: Any, levels: list[str], since: dt.date) -> dict[tuple[str, int], list[Any]]:
    """{(version, step): rows of (whether in the window, series, count, sum |error|, sum error, sum actual,
    per level: intervals served, actuals inside them)} over the forecasts of weeks that have sold, the window
    being the weeks from `since`: one pass over the log for both spans."""
    # Each logged week numbered from the latest forecast of it (by version, series, week and step): one pass
    # over the log, no join of the log to itself (its weeks are a view, which no index serves).
    newest = func.row_number().over(
        partition_by=(forecasts.c.version, forecasts.c.series, forecasts.c.week, forecasts.c.step),
        order_by=forecasts.c.id.desc(),
    )
    ranked = select(*[forecasts.c[name] for name in LOGGED_WEEK], newest.label("newest")).subquery()
    logged = ranked.c
    error = logged.units_sold - actuals.c.units_sold
    recent = case((logged.week >= since, 1), else_=0)
    columns = [
        logged.version,
        logged.step,
        recent,
        logged.series,
        func.count(),
        func.sum(func.abs(error)),
        func.sum(error),
        func.sum(actuals.c.units_sold),
    ]
    for level in levels:
        low = logged.intervals[(level, 0)].as_float()
        high = logged.intervals[(level, 1)].as_float()
        columns.append(func.count(low))
        inside = case((and_(low <= actuals.c.units_sold, actuals.c.units_sold <= high), 1), else_=0)
        columns.append(func.sum(case((low.is_not(None), inside), else_=0)))
    query = (
        select(*columns)
        .select_from(ranked)
        .join(actuals, (actuals.c.series == logged.series) & (actuals.c.week == logged.week))
        .where(logged.newest == 1)
        .group_by(logged.version, logged.step, recent, logged.series)
    )
    grouped: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for row in connection.execute(query):
        grouped[(str(row[0]), int(row[1]))].append((bool(row[2]), *row[3:]))
    return grouped


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


def figures(step: int, groups: list[Any], scale: dict[str, float], levels: list[str]) -> dict[str, Any]:
    """One step's figures from its per-series sums (summed())."""
    count = sum(int(g[1]) for g in groups)
    absolute = sum(float(g[2]) for g in groups)
    signed = sum(float(g[3]) for g in groups)
    sold = sum(abs(float(g[4])) for g in groups)
    scaled = [(float(g[2]) / scale[g[0]], int(g[1])) for g in groups if g[0] in scale]
    coverage = {}
    for i, level in enumerate(levels):
        served = sum(int(g[5 + 2 * i]) for g in groups)
        if served:
            coverage[level] = sum(int(g[6 + 2 * i]) for g in groups) / served
    return {
        "step": step,
        "count": count,
        "wape": absolute / sold if sold else None,
        "bias": signed / sold if sold else None,
        "mase": sum(e for e, _ in scaled) / sum(n for _, n in scaled) if scaled else None,
        "coverage": coverage,
    }


def served_against_actual(engine: Engine, series: str) -> dict[str, Any]:
    """{"versions": {version: {"weeks": [...], "forecast": [...], "intervals": {level: [[low, high], ...]}}}, "actual":
    {"weeks": [...], "units_sold": [...]}}: each version's latest one-step-ahead forecast of each week of
    `series`, and what sold."""
    with reading(engine) as connection:
        sold: Sequence[Any] = connection.execute(
            select(actuals.c.week, actuals.c.units_sold).where(actuals.c.series == series).order_by(actuals.c.week)
        ).all()
        logged: Sequence[Any] = connection.execute(
            select(forecasts.c.version, forecasts.c.week, forecasts.c.units_sold, forecasts.c.intervals)
            .where(forecasts.c.series == series, forecasts.c.step == 1)
            .order_by(forecasts.c.served_at)
        ).all()
    latest: dict[str, dict[dt.date, tuple[float, Any]]] = defaultdict(dict)
    for version, week, units, intervals in logged:
        latest[version][week] = (units, intervals)  # a later forecast of the week replaces an earlier one
    versions = {}
    for version, weeks in latest.items():
        ordered = sorted(weeks.items())
        levels = sorted({level for _, (_, intervals) in ordered for level in (intervals or {})})
        versions[version] = {
            "weeks": [week.isoformat() for week, _ in ordered],
            "forecast": [units for _, (units, _) in ordered],
            "intervals": {level: [(intervals or {}).get(level) for _, (_, intervals) in ordered] for level in levels},
        }
    return {
        "versions": versions,
        "actual": {"weeks": [week.isoformat() for week, _ in sold], "units_sold": [units for _, units in sold]},
    }


def weekly_accuracy(engine: Engine, weeks: int = DEFAULT_WEEKS) -> dict[str, Any]:
    """Each version's one-week-ahead accuracy week by week over the last `weeks` weeks of actuals: {"weeks":
    [...], "versions": {version: {"wape": [per week, None without forecasts], "coverage": {level: [...]}}}}.
    The latest forecast of a series' week counts, as in live_accuracy."""
    with reading(engine) as connection:
        through = connection.execute(select(func.max(actuals.c.week))).scalar()
        if through is None:
            return {"weeks": [], "versions": {}}
        since = through - (weeks - 1) * WEEK
        rows: Sequence[Any] = connection.execute(
            select(
                forecasts.c.version,
                forecasts.c.series,
                forecasts.c.week,
                forecasts.c.units_sold,
                forecasts.c.intervals,
                actuals.c.units_sold.label("sold"),
            )  # fmt: skip
            .join(actuals, and_(actuals.c.series == forecasts.c.series, actuals.c.week == forecasts.c.week))
            .where(forecasts.c.step == 1, forecasts.c.week >= since)
            .order_by(forecasts.c.served_at)
        ).all()
    latest = {(r.version, r.series, r.week): r for r in rows}  # a later forecast of the week replaces an earlier one
    days = [since + k * WEEK for k in range(weeks)]
    sums: dict[str, list[list[float]]] = defaultdict(lambda: [[0.0, 0.0] for _ in days])  # |error|, sold
    inside: dict[str, dict[str, list[list[int]]]] = defaultdict(lambda: defaultdict(lambda: [[0, 0] for _ in days]))
    for (version, _, week), row in latest.items():
        k = (week - since).days // 7  # the 7 days from since + k weeks: a series may keep its weeks on another day
        if not 0 <= k < weeks:
            continue
        sums[version][k][0] += abs(row.units_sold - row.sold)
        sums[version][k][1] += abs(row.sold)
        for level, (low, high) in (row.intervals or {}).items():
            inside[version][level][k][0] += int(low <= row.sold <= high)
            inside[version][level][k][1] += 1
    return {
        "weeks": [day.isoformat() for day in days],
        "versions": {
            version: {
                "wape": [error / sold if sold else None for error, sold in per_week],
                "coverage": {
                    level: [hit / served if served else None for hit, served in counts]
                    for level, counts in sorted(inside[version].items())
                },
            }
            for version, per_week in sorted(sums.items())
        },
    }
