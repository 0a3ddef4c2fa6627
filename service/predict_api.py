"""The simple JSON protocol: POST /predict and POST /v1/models/demand:predict
(`instances` in, `predictions` out, as TF-Serving and KServe V1 do)."""
import orjson
from flask import Blueprint, Response, current_app, request

from . import metrics
from .auth import prediction_token_required
from .inputs import instances_from_body, matrix_from_instances, parse_json, require_json_content
from .serving import current_bundle

bp = Blueprint("predict", __name__)
NOTHING_OUTSIDE = []  # shared by every row inside the training range; never mutated


@bp.post("/predict")
@bp.post("/v1/models/demand:predict")
@prediction_token_required
def predict():
    require_json_content(request)
    bundle = current_bundle()
    settings = current_app.config["SETTINGS"]
    instances, prefix = instances_from_body(parse_json(request.get_data(cache=False)))
    X, ranges = matrix_from_instances(instances, prefix, settings.max_rows)
    out = bundle.forecast(X, ranges)
    extrapolated = [NOTHING_OUTSIDE] * len(X)
    for i, names in bundle.extrapolated_names(out).items():
        extrapolated[i] = names
    predictions = [
        {"units_sold": units, "units_sold_normalized": normalized, "interval": [low, high], "extrapolated": outside}
        for units, normalized, low, high, outside in zip(
            out["units_sold"].tolist(), out["units_sold_normalized"].tolist(),
            out["low"].tolist(), out["high"].tolist(), extrapolated)
    ]
    metrics.ROWS.labels("json").inc(len(X))
    if len(out["extrapolated_rows"]):
        metrics.EXTRAPOLATED.inc(len(out["extrapolated_rows"]))
    body = {"model_version": bundle.version, "interval_level": bundle.level, "predictions": predictions}
    return Response(orjson.dumps(body), mimetype="application/json")
