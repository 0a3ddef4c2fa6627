"""Reading a promotion plan (POST /forecast) and interval levels from a JSON body.

Well-formed plans go through a few vectorized checks; when something is
wrong, the rows are walked to name the first bad field by its path, e.g.
`series[2].weeks[5].discount_fraction must be <= 100 percent, got 130`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from pipeline.calibrate import DEFAULT_LEVELS, LEVELS, level_key
from pipeline.schema import (
    FEATURES,
    MAX_SERIES_NAME,
    describe_value,
    domain_problem,
    has_control_character,
    named_series_problem,
)
from pipeline.store import week_of

from .errors import ApiError
from .inputs import HIGH, LOW, NUMBER_TYPES

PLANNED = FEATURES[1:]  # known in advance for every week; prev_week_sales is the series' start
planned_of = itemgetter(*PLANNED)
MAX_ID_LENGTH = MAX_SERIES_NAME  # an id is the series' name
MAX_LEVELS = 10


@dataclass
class Plan:
    ids: list[str]
    prev_week_sales: np.ndarray  # [S]
    features: np.ndarray  # [S, H, 2]: discount_fraction, weeks_to_next_holidays
    weeks: np.ndarray  # [S] weeks of each series
    levels: list[float]
    dates: np.ndarray | None = None  # [S, H] datetime64[D] of each planned week, NaT where `start` was not given


# Intervals an answer may hold, as a multiple of DEMAND_MAX_ROWS: the default
# two levels for as many rows or weeks as the cap allows. A worker's memory
# follows the answer, and ten levels make each row's JSON five times longer.
INTERVALS_PER_ROW = len(DEFAULT_LEVELS)


def check_interval_count(rows: int, levels: Sequence[float] | None, max_rows: int) -> None:
    """413 when `rows` forecasts at `levels` (None: none asked for) are more intervals than an answer may hold."""
    if levels is not None and rows * len(levels) > INTERVALS_PER_ROW * max_rows:
        raise ApiError(
            413,
            f"{rows} forecasts at {len(levels)} levels are {rows * len(levels)} intervals, more than "
            f"the limit of {INTERVALS_PER_ROW * max_rows} per request ({INTERVALS_PER_ROW} x "
            "DEMAND_MAX_ROWS): ask for fewer levels, or send fewer rows",
        )


def read_levels(value: Any, where: str = "levels") -> list[float]:
    if value is None:
        return list(DEFAULT_LEVELS)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LEVELS:
        raise ApiError(400, f"{where} must be a list of 1 to {MAX_LEVELS} numbers between {LEVELS[0]} and {LEVELS[-1]}")
    for i, level in enumerate(value):
        if type(level) not in NUMBER_TYPES or not LEVELS[0] <= level <= LEVELS[-1]:
            shown = str(level)[:40] if type(level) in NUMBER_TYPES else describe_value(level)
            raise ApiError(400, f"{where}[{i}] must be a number between {LEVELS[0]} and {LEVELS[-1]}, got {shown}")
    keys = [level_key(float(level)) for level in value]
    if len(set(keys)) != len(keys):
        raise ApiError(400, f"{where} names a level twice")
    return [float(level) for level in value]


PLAN_KEYS = ("series", "levels")


def plan_series(body: Any, max_rows: int, fields: str) -> tuple[list[Any], list[float]]:
    """(the plan's list of series, its levels) from a /forecast body, a 400 or 413 for a body of the wrong
    shape; `fields`: what a series holds, for the message."""
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be a JSON object: {"series": [...], "levels": [...]}')
    unknown = next((key for key in body if key not in PLAN_KEYS), None)
    if unknown is not None:  # a misspelt option ("level") is an error, not ignored
        raise ApiError(400, f"{unknown[:40]!r} is not a key of a plan; it takes {', '.join(PLAN_KEYS)}")
    series = body.get("series")
    if not isinstance(series, list) or not series:
        raise ApiError(400, f"'series' must be a non-empty list of objects with {fields}")
    levels = read_levels(body.get("levels"))
    if len(series) > max_rows:
        raise ApiError(
            413,
            f"{len(series)} series is more than the limit of {max_rows} series x weeks per request (DEMAND_MAX_ROWS)",
        )
    return series, levels


def read_plan(body: Any, max_horizon: int, max_rows: int) -> Plan:
    """A validated Plan from the body of POST /forecast.

    Well-formed plans pass C-level checks over all series at once; anything
    odd sends the series through `_check_series`, which names the first bad field.
    """
    series, levels = plan_series(body, max_rows, "id, prev_week_sales and weeks")
    try:
        ids, prevs, week_lists = zip(*map(series_fields, series))
        lengths = list(map(len, week_lists))
        well_formed = (
            set(map(type, ids)) == {str}
            and set(map(type, week_lists)) == {list}
            and set(map(type, prevs)) <= NUMBER_TYPES
            and set().union(*series) <= set(SERIES_KEYS)
            and max(map(len, ids)) <= MAX_ID_LENGTH
            and min(lengths) > 0
            and max(lengths) <= max_horizon
        )
        if well_formed:  # names trimmed of spaces, as a file's are
            ids = tuple(map(str.strip, ids))
            well_formed = 0 < min(map(len, ids)) and len(set(ids)) == len(ids) and not has_control_character(ids)
        values = list(chain.from_iterable(map(planned_of, chain.from_iterable(week_lists)))) if well_formed else None
    except (KeyError, TypeError):
        well_formed = False
    if not well_formed:
        _check_series(series, max_horizon)  # raises, naming the field
        raise ApiError(400, "'series' could not be read")
    assert values is not None  # read with the checks above: the plan is well formed
    total = sum(lengths)
    if total > max_rows:
        raise ApiError(
            413, f"{total} series x weeks is more than the limit of {max_rows} per request (DEMAND_MAX_ROWS)"
        )
    check_interval_count(total, levels, max_rows)
    try:
        prev = np.fromiter(prevs, dtype=np.float64, count=len(prevs))
        if not set(map(type, values)) <= NUMBER_TYPES:  # bool is not a number here
            raise TypeError
        flat = np.fromiter(values, dtype=np.float64, count=len(values)).reshape(-1, len(PLANNED))
    except (OverflowError, TypeError):
        raise _first_bad_value(series) from None
    if not (np.isfinite(prev).all() and (prev >= LOW[0]).all() and (prev <= HIGH[0]).all()):
        raise _first_bad_value(series)
    if not (np.isfinite(flat).all() and (flat >= LOW[1:]).all() and (flat <= HIGH[1:]).all()):
        raise _first_bad_value(series)
    weeks = np.asarray(lengths)
    features = np.zeros((len(series), int(weeks.max()), len(PLANNED)), dtype=np.float32)
    features[np.arange(int(weeks.max())) < weeks[:, None]] = flat  # row-major: series by series, week by week
    return Plan(list(ids), prev, features, weeks, levels, plan_dates(series, int(weeks.max())))


def plan_dates(series: Sequence[Any], horizon: int) -> np.ndarray | None:
    """[S, horizon] the week of each planned week, from each series' optional `start` (its first planned week,
    YYYY-MM-DD); None when no series has one. A plan with weeks is logged (service/forecast_log.py)."""
    starts = [item.get("start") for item in series]
    if all(start is None for start in starts):
        return None
    first = np.full(len(series), np.datetime64("NaT"), dtype="datetime64[D]")
    for i, start in enumerate(starts):
        if start is None:
            continue
        day = week_of(start)
        if day is not None:
            first[i] = day
        if np.isnat(first[i]):
            raise ApiError(
                400, f"series[{i}].start must be the first planned week as YYYY-MM-DD, got {str(start)[:40]!r}"
            )
    return first[:, None] + 7 * np.arange(horizon)


SERIES_KEYS = ("id", FEATURES[0], "start", "weeks")  # what a series of a plan holds
series_fields = itemgetter("id", FEATURES[0], "weeks")


def _check_series(series: Sequence[Any], max_horizon: int) -> None:
    """Raise the 400 or 413 that names the first bad field of the first bad series."""
    seen: dict[str, int] = {}
    for i, item in enumerate(series):
        where = f"series[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where} must be an object with id, prev_week_sales and weeks")
        bad = next((key for key in item if key not in SERIES_KEYS), None)
        if bad is not None:  # a misspelt `start` would leave the plan undated, and unlogged, without a word
            raise ApiError(
                400, f"{where}.{bad[:40]} is not a key of a plan's series; it takes {', '.join(SERIES_KEYS)}"
            )
        ident = item.get("id")
        if not isinstance(ident, str) or not 0 < len(ident) <= MAX_ID_LENGTH:
            raise ApiError(400, f"{where}.id must be a string of 1 to {MAX_ID_LENGTH} characters")
        problem = named_series_problem(ident)
        if problem:
            raise ApiError(400, f"{where}.id {problem}")
        ident = ident.strip()
        if ident in seen:
            raise ApiError(400, f"{where}.id {ident!r} is the id of series[{seen[ident]}] too; ids must differ")
        seen[ident] = i
        if FEATURES[0] not in item:
            raise ApiError(400, f"{where}.{FEATURES[0]} is missing")
        problem = domain_problem(FEATURES[0], item[FEATURES[0]])
        if problem:
            raise ApiError(400, f"{where}.{FEATURES[0]} {problem}")
        weeks = item.get("weeks")
        if not isinstance(weeks, list) or not weeks:
            raise ApiError(400, f"{where}.weeks must be a non-empty list of objects with {', '.join(PLANNED)}")
        if len(weeks) > max_horizon:
            raise ApiError(
                413, f"{where}.weeks has {len(weeks)} weeks, more than the limit of {max_horizon} (DEMAND_MAX_HORIZON)"
            )
        try:
            list(map(planned_of, weeks))
        except (KeyError, TypeError):
            raise _first_problem(weeks, where) from None


def _first_problem(weeks: Sequence[Any], where: str) -> ApiError:
    for h, week in enumerate(weeks):
        if not isinstance(week, dict):
            return ApiError(400, f"{where}.weeks[{h}] must be an object with {', '.join(PLANNED)}")
        for name in PLANNED:
            if name not in week:
                return ApiError(400, f"{where}.weeks[{h}].{name} is missing")
    return ApiError(400, f"{where}.weeks could not be read")


def _first_bad_value(series: Sequence[Any]) -> ApiError:
    for i, item in enumerate(series):
        problem = domain_problem(FEATURES[0], item[FEATURES[0]])
        if problem:
            return ApiError(400, f"series[{i}].{FEATURES[0]} {problem}")
        for h, week in enumerate(item["weeks"]):
            for name in PLANNED:
                problem = domain_problem(name, week[name])
                if problem:
                    return ApiError(400, f"series[{i}].weeks[{h}].{name} {problem}")
    return ApiError(400, "the weeks could not be read as numbers")
