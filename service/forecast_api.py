"""POST /forecast: a promotion plan forecast several weeks ahead, with
intervals at several levels that widen with the step.

    {"series": [{"id": "store-7", "prev_week_sales": 41512,
                 "weeks": [{"discount_fraction": 50, "weeks_to_next_holidays": 3}, ...]}],
     "levels": [0.8, 0.95]}

Week h of a series takes the forecast of week h-1 as prev_week_sales; every
series moves forward together, one ONNX Runtime call per step
(pipeline.bundle.Bundle.forecast_plan). A series' id is its name: a model
that tells series apart forecasts the ones it knows with what it learned of
them, and lists the others in `unknown_series`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, request

from pipeline.schema import FEATURES, OUTSIDE_NAMES

from . import metrics
from .auth import prediction_token_required
from .forecast_log import Run, logged_request, plan_runs
from .inputs import parse_json, require_json
from .plan_json import chosen_field, encoded_series, interval_field, text_field, week_texts, weeks_planned
from .plans import read_plan
from .series import unknown_series
from .serving import current_bundle

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.bundle import Bundle

    from .config import Settings
    from .plans import Plan

bp = Blueprint("forecast", __name__)
BITS = 1 << np.arange(len(FEATURES))


@bp.post("/forecast")
@prediction_token_required
def forecast() -> Response:
    require_json(request.headers.get("Content-Type"))
    bundle = current_bundle()
    settings = current_app.config["SETTINGS"]
    raw = request.get_data(cache=False)
    store = current_app.extensions.get("demand_store")
    answer = forecast_answer(raw, bundle, settings, store)
    shadow = current_app.extensions.get("demand_shadow")
    if shadow is not None:  # the same plan again, by the challenger, after this answer (service/shadow.py)
        shadow.submit(lambda challenger: forecast_answer(raw, challenger, settings, store), len(raw))
    return Response(answer, mimetype="application/json")


def forecast_answer(raw: bytes, bundle: Bundle, settings: Settings, store: Engine | None) -> bytes:
    """The answer to a /forecast body from `bundle`; its dated weeks are logged once it is written, from the
    texts of its numbers (the answer carries the request id: service/app.py)."""
    from .stored_history import fill_from_store

    served = logged_request()
    body = parse_json(raw, settings.max_rows, row="plan")
    through = fill_from_store(body, bundle, store)
    if not bundle.reads_three_inputs:  # history, calendar and covariates (service/feature_rows.py)
        from .feature_rows import plan_answer, read_feature_plan

        ids, start, dates, known, static, lengths, levels = read_feature_plan(
            body, bundle, settings.max_horizon, settings.max_rows
        )
        out = bundle.forecast_plan(start, known, lengths, levels, ids, dates, static)
        metrics.FORECAST_WEEKS.inc(int(lengths.sum()))
        texts = week_texts(out["units_sold"], out["intervals"], levels, weeks_planned(lengths, dates.shape[1]))
        encoded = plan_answer(bundle, ids, dates, lengths, levels, out, texts, through)
        if served is not None:
            served.record(bundle.version, plan_runs(ids, dates, lengths, texts, levels))
        return encoded
    plan = read_plan(body, settings.max_horizon, settings.max_rows)
    del body  # memory for the answer
    out = bundle.forecast_plan(plan.prev_week_sales, plan.features, plan.weeks, plan.levels, plan.ids)
    metrics.FORECAST_WEEKS.inc(int(plan.weeks.sum()))
    outside = int(out["outside"].any(axis=2).sum())  # weeks past a series' own are all False
    if outside:
        metrics.EXTRAPOLATED.inc(outside)
    runs: list[Run] | None = [] if served is not None and plan.dates is not None else None
    encoded = answer(bundle, plan, out, through, runs)
    if served is not None and runs:
        served.record(bundle.version, runs)
    return encoded


SERIES_PER_SLICE = 2048


def answer(
    bundle: Bundle,
    plan: Plan,
    out: dict[str, Any],
    through: dict[str, str] | None = None,
    runs: list[Run] | None = None,
) -> bytes:
    """The JSON answer, encoded a slice of series at a time (service/plan_json.py) so that a large plan's
    texts are never all held at once. `through`: the last week of stored history each series filled from
    the store was given. `runs`: where each slice's runs of dated weeks are added, for the forecast log."""
    head = {"model_version": bundle.version, "levels": plan.levels, **unknown_series(plan.ids, out["unknown_series"])}
    if through:
        head["history_through"] = through
    notes = bundle.interval_notes(int(plan.weeks.max()))
    if notes:
        head["notes"] = notes
    slices = (
        _series_json(plan, out, start, start + SERIES_PER_SLICE, runs)
        for start in range(0, len(plan.ids), SERIES_PER_SLICE)
    )
    return b"".join([orjson.dumps(head)[:-1], b',"series":[', b",".join(slices), b"]}"])


def _series_json(plan: Plan, out: dict[str, Any], start: int, stop: int, runs: list[Run] | None) -> bytes:
    """Series start..stop as JSON, without the list's brackets; their runs of dated weeks added to `runs`."""
    lengths = plan.weeks[start:stop]
    H = out["units_sold"].shape[1]
    planned = weeks_planned(lengths, H)
    at = planned + start * H  # the slice's weeks, as flat indices of the whole plan's arrays
    texts = week_texts(out["units_sold"], out["intervals"], plan.levels, at)
    if runs is not None and plan.dates is not None:
        runs.extend(plan_runs(plan.ids[start:stop], plan.dates[start:stop], lengths, texts, plan.levels))
    fields = [
        chosen_field(("step",), (range(1, H + 1),), (at % H,)),
        text_field("units_sold", texts.units),
        interval_field(plan.levels, texts.intervals),
        chosen_field(("extrapolated",), (OUTSIDE_NAMES,), ((out["outside"][start:stop] @ BITS).ravel()[planned],)),
    ]
    return encoded_series(plan.ids[start:stop], lengths.tolist(), fields)
