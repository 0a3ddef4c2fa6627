"""POST /forecast: a promotion plan forecast several weeks ahead, with
intervals at several levels that widen with the step.

    {"series": [{"id": "store-7", "prev_week_sales": 41512,
                 "weeks": [{"discount_fraction": 50, "weeks_to_next_holidays": 3}, ...]}],
     "levels": [0.8, 0.95]}

Week h of a series takes the forecast of week h-1 as prev_week_sales; every
series moves forward together, one ONNX Runtime call per step
(pipeline.bundle.Bundle.forecast_plan).
"""
import numpy as np
import orjson
from flask import Blueprint, Response, current_app, request

from pipeline.calibrate import level_key
from pipeline.schema import FEATURES

from . import metrics
from .auth import prediction_token_required
from .inputs import parse_json, require_json
from .plans import read_plan
from .serving import current_bundle

bp = Blueprint("forecast", __name__)
# The extrapolated features of a week, one shared list per combination of flags (never mutated).
OUTSIDE_NAMES = {flags: [name for name, flag in zip(FEATURES, flags) if flag]
                 for flags in np.ndindex(*(2,) * len(FEATURES))}


@bp.post("/forecast")
@prediction_token_required
def forecast():
    require_json(request.headers.get("Content-Type"))
    bundle = current_bundle()
    settings = current_app.config["SETTINGS"]
    body = parse_json(request.get_data(cache=False), settings.max_rows, row="plan")
    plan = read_plan(body, settings.max_horizon, settings.max_rows)
    del body  # memory for the answer
    out = bundle.forecast_plan(plan.prev_week_sales, plan.features, plan.weeks, plan.levels)
    metrics.FORECAST_WEEKS.inc(int(plan.weeks.sum()))
    return Response(answer(bundle, plan, out), mimetype="application/json")


def interval_notes(bundle, steps_used, horizon):
    """What the answer must say about its intervals: none, or reused from the last calibrated step."""
    if steps_used is None:
        return [f"model {bundle.version} has no per-step interval calibration (its training data had no weeks to "
                "chain); intervals are null: retrain it to get them"]
    last = bundle.calibrated_steps()
    if horizon > last:
        return [f"weeks {last + 1} to {horizon} use the interval of week {last}, the last step calibrated on "
                "held-out weeks"]
    return []


SERIES_PER_SLICE = 2048


def answer(bundle, plan, out):
    """The JSON answer, encoded a slice of series at a time: their dicts cost far more memory than their JSON."""
    head = {"model_version": bundle.version, "levels": plan.levels}
    notes = interval_notes(bundle, out["interval_steps"], int(plan.weeks.max()))
    if notes:
        head["notes"] = notes
    slices = (_series_json(plan, out, start, start + SERIES_PER_SLICE)
              for start in range(0, len(plan.ids), SERIES_PER_SLICE))
    return b"".join([orjson.dumps(head)[:-1], b',"series":[', b",".join(slices), b"]}"])


def _series_json(plan, out, start, stop):
    keys = [level_key(level) for level in plan.levels]
    units = out["units_sold"][start:stop].tolist()
    flags = [[OUTSIDE_NAMES[tuple(row)] for row in series] for series in out["outside"][start:stop].astype(int).tolist()]
    if out["intervals"] is not None:
        lows = [out["intervals"][level][0][start:stop].tolist() for level in plan.levels]
        highs = [out["intervals"][level][1][start:stop].tolist() for level in plan.levels]
    series = []
    for s, (ident, n) in enumerate(zip(plan.ids[start:stop], plan.weeks[start:stop].tolist())):
        series.append({"id": ident, "weeks": [
            {"step": h + 1, "units_sold": units[s][h],
             "intervals": ({key: [low[s][h], high[s][h]] for key, low, high in zip(keys, lows, highs)}
                           if out["intervals"] is not None else None),
             "extrapolated": flags[s][h]}
            for h in range(n)]})
    return orjson.dumps(series)[1:-1]
