"""Plans and rows served from the store: a series with stored actuals needs no prev_week_sales or history.

Before a /forecast plan is read, each series that brings none of its own
history (`prev_week_sales`, `history`, a first week) is given the store's:
for a model of the chapter's three inputs its latest stored week's sales as
`prev_week_sales`, and the week after as `start`; for a model of history the
stored weeks after its training (joined to the weeks it stored then) as
`history`, and the week after the latest as its first week. The answer says
up to which week each such series' history ran (`history_through`). What a
request says itself always wins. Rows for a model of history continue from
the store's weeks the same way (tails_with_store).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import ChainMap
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from flask import current_app
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.bundle import Bundle
from pipeline.features import LAG_1, WINDOW_WEEKS
from pipeline.store import WEEK, latest_actuals, week_of

log = logging.getLogger("service.app")


def fill_from_store(body: Any, bundle: Bundle, engine: Engine | None) -> dict[str, str]:
    """Complete the plan's series from the store, in place; {series: the last week of history it was given}."""
    series = body.get("series") if isinstance(body, dict) else None
    if engine is None or not isinstance(series, list):
        return {}
    spec = bundle.spec
    own = {LAG_1, "history", "start", spec.week_column}
    # own.isdisjoint: a dict's keys, looked up in the set in C
    bare = [item for item in series if type(item) is dict and own.isdisjoint(item) and type(item.get("id")) is str]
    if not bare:
        return {}
    try:  # names as the store keeps them: trimmed of spaces
        stored = latest_actuals(
            engine, [item["id"].strip() for item in bare], 1 if bundle.reads_three_inputs else WINDOW_WEEKS
        )
    except SQLAlchemyError as err:  # serving goes on from what the request and the model hold
        log.error("cannot read the store for a plan's history: %s", str(err).splitlines()[0])
        return {}
    through: dict[str, str] = {}
    for item in bare if stored else ():
        name = item["id"].strip()
        weeks = stored.get(name)
        if not weeks:
            continue
        last_week, last_units = weeks[-1]
        if bundle.reads_three_inputs:
            item[LAG_1] = last_units
            item["start"] = (last_week + WEEK).isoformat()
        else:
            history = joined_history(bundle, name, weeks)
            if history is None:
                continue
            item["history"] = history
            item[spec.week_column] = (last_week + WEEK).isoformat()
        through[name] = last_week.isoformat()
    return through


def joined_history(bundle: Bundle, name: str, weeks: list[tuple[dt.date, float]]) -> list[float] | None:
    """The stored weeks, after the weeks the model stored of the series before them, oldest first; None when
    the store's weeks leave a gap after the model's, or run no further than the model's own (a store behind
    the model, filled while an older version served)."""
    recent = [units for _, units in weeks]
    if any(b[0] - a[0] != WEEK for a, b in zip(weeks, weeks[1:])):
        return None  # the store's weeks have a gap: served from the model's own weeks
    tail = bundle.tails.get(name)
    if tail is not None:
        next_week = tail[0].astype(dt.date)
        if weeks[0][0] > next_week or weeks[-1][0] < next_week:
            return None
        overlap = (next_week - weeks[0][0]).days // 7  # the model's last weeks the store holds too: the store's
        model_weeks = tail[1][: len(tail[1]) - overlap] if overlap else tail[1]
        recent = [float(v) for v in model_weeks if not np.isnan(v)] + recent
    return recent[-WINDOW_WEEKS:]


def tails_with_store(
    bundle: Bundle, series: Sequence[str] | np.ndarray, weeks: np.ndarray
) -> tuple[Mapping[str, tuple[np.datetime64, np.ndarray]], dict[str, str]]:
    """The weeks a model of history continues rows from: the tails it stored, except for each named series
    whose stored actuals run past them and whose rows here all come after the latest stored week (or name
    none): that series continues from the store's weeks (joined_history). ({series: (next week, window)},
    {series: the last stored week it continues from})."""
    from .forecast_log import SERVED

    served = SERVED.get()
    engine = served.store if served is not None else None
    names = sorted({name for name in series if name})
    if engine is None or not bundle.spec.history or not names:
        return bundle.tails, {}
    try:
        stored = latest_actuals(engine, names, WINDOW_WEEKS)
    except SQLAlchemyError as err:  # served from the model's own weeks
        log.error("cannot read the store for rows' history: %s", str(err).splitlines()[0])
        return bundle.tails, {}
    first_row: dict[str, dt.date] = {}  # each series' first dated row here
    for name, week in zip(series, weeks.tolist()):
        if week is not None and (name not in first_row or week < first_row[name]):
            first_row[name] = week
    continued: dict[str, tuple[np.datetime64, np.ndarray]] = {}
    through = {}
    for name, rows in stored.items():
        last_week = rows[-1][0]
        history = joined_history(bundle, name, rows)
        if history is None or first_row.get(name, last_week + WEEK) <= last_week:
            continue  # a gap, or rows among the stored weeks: the model's own weeks
        window = np.full(WINDOW_WEEKS, np.nan)
        window[WINDOW_WEEKS - len(history) :] = history
        continued[name] = (np.datetime64(last_week + WEEK, "D"), window)
        through[name] = last_week.isoformat()
    # Only read: ChainMap's type asks for mutable maps.
    stored_tails = cast("dict[str, tuple[np.datetime64, np.ndarray]]", bundle.tails)
    return (ChainMap(continued, stored_tails), through) if continued else (bundle.tails, {})


def rows_from_store(raw: bytes, bundle: Bundle) -> tuple[bytes, dict[str, str]]:
    """A three-input /predict body whose rows name a series but bring no prev_week_sales, completed from the
    store: the stored week before the row's `week`, or the latest stored week. (the body, {series: the week
    its prev_week_sales is from}); the body unchanged when nothing was filled."""
    import orjson

    engine = current_app.extensions.get("demand_store")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw, {}
    rows = body.get("instances") if isinstance(body, dict) else None
    if engine is None or not isinstance(rows, list):
        return raw, {}
    bare = [r for r in rows if isinstance(r, dict) and LAG_1 not in r and isinstance(r.get("series"), str)]
    if not bare:
        return raw, {}
    try:  # names as the store keeps them: trimmed of spaces
        stored = latest_actuals(engine, [r["series"].strip() for r in bare], WINDOW_WEEKS)
    except SQLAlchemyError as err:
        current_app.logger.error("cannot read the store for a row's last week: %s", str(err).splitlines()[0])
        return raw, {}
    through = {}
    for row in bare:
        name = row["series"].strip()
        weeks = dict(stored.get(name, []))
        if not weeks:
            continue
        named = week_of(row.get("week"))
        before = (named - WEEK) if named is not None else max(weeks)
        if before in weeks:
            row[LAG_1] = weeks[before]
            through[name] = before.isoformat()
    return (orjson.dumps(body), through) if through else (raw, {})
