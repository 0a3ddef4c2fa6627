"""The simple JSON protocol: POST /predict and POST /v1/models/demand:predict
(`instances` in, `predictions` out, as TF-Serving and KServe V1 do)."""
from flask import Blueprint, Response, current_app, request

import orjson

from pipeline.schema import FEATURES

from . import metrics
from .auth import prediction_token_required
from .inputs import instances_from_body, matrix_from_instances, parse_json, require_json_content
from .serving import current_bundle

bp = Blueprint("predict", __name__)


@bp.post("/predict")
@bp.post("/v1/models/demand:predict")
@prediction_token_required
def predict():
    require_json_content(request)
    bundle = current_bundle()
    settings = current_app.config["SETTINGS"]
    instances, prefix = instances_from_body(parse_json(request.get_data(cache=False)))
    X = matrix_from_instances(instances, prefix, settings.max_rows)
    out = bundle.forecast(X)
    flags = out["extrapolated"]
    outside = flags.any(axis=1)
    extrapolated = [[]] * len(X)  # the same empty list, read-only, for every ordinary row
    for i in outside.nonzero()[0].tolist():
        extrapolated[i] = [name for name, flag in zip(FEATURES, flags[i]) if flag]
    predictions = [
        {"units_sold": units, "units_sold_normalized": normalized, "interval": [low, high], "extrapolated": ext}
        for units, normalized, low, high, ext in zip(
            out["units_sold"].tolist(), out["units_sold_normalized"].tolist(),
            out["low"].tolist(), out["high"].tolist(), extrapolated)
    ]
    metrics.ROWS.labels("json").inc(len(X))
    if outside.any():
        metrics.EXTRAPOLATED.inc(int(outside.sum()))
    body = {"model_version": bundle.version, "interval_level": bundle.level, "predictions": predictions}
    return Response(orjson.dumps(body), mimetype="application/json")
