"""The simple JSON protocol: POST /predict and POST /v1/models/demand:predict
(`instances` in, `predictions` out, as TF-Serving and KServe V1 do; or
TF-Serving's columnar `inputs` in, `outputs` out: service/columnar.py).

`forecast_json` does the work. The Flask view serves it with the usual request
handling; `PredictFastPath`, a WSGI layer in front of Flask, serves the common
case (a well-formed request) without Flask's request and response objects,
which cost more than the forecast itself for one row. Anything unusual, and
every error, goes through Flask, so there is one error path.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, current_app, request

from pipeline.calibrate import level_key

from . import metrics
from .auth import check_token, prediction_token_required
from .columnar import columnar_json, decode_columnar, is_columnar, read_columnar
from .csv_api import MEDIA_TYPE as CSV_MEDIA_TYPE
from .csv_api import forecast_csv, is_csv
from .errors import INTERNAL_ERROR, ApiError
from .forecast_api import BITS, OUTSIDE_NAMES
from .forecast_log import SERVED, ForecastLog, Served, dated_instances, log_instances
from .inputs import (
    check_token_count,
    instances_from_body,
    load_json,
    matrix_from_instances,
    require_identity_encoding,
    require_json,
)
from .plans import check_interval_count, read_levels
from .series import names_from_instances, unknown_series
from .serving import current_bundle, ready_bundle

if TYPE_CHECKING:
    import numpy as np
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from sqlalchemy.engine import Engine

    from pipeline.bundle import Bundle

    from .config import Settings
    from .model_holder import ModelHolder
    from .shadow import Shadow

bp = Blueprint("predict", __name__)
log = logging.getLogger("service.app")
ROUTES = ("/predict", "/v1/models/demand:predict")
NOTHING_OUTSIDE = OUTSIDE_NAMES[0]  # shared by every row inside the training range; never mutated
ROWS_PER_SLICE = 8192
BODY_KINDS = ("instance", "columnar")  # what a body of these routes may be (inputs.ROW_BUDGET)


def forecast_json(raw: bytes, bundle: Bundle, max_rows: int) -> bytes:
    """Request body bytes -> response body bytes; raises ApiError for bad input.

    With `levels` next to `instances`, each prediction also has `intervals`
    at those levels (the first step's calibration of pipeline.calibrate);
    without, the answer is what it always was. A body with `inputs` is
    columnar, and so is its answer.
    """
    check_token_count(raw, max_rows, BODY_KINDS)
    if not bundle.reads_three_inputs:  # rows by name, featured as files are (service/feature_rows.py)
        from .feature_rows import predict_json

        return predict_json(load_json(raw), bundle, max_rows)
    request = decode_columnar(raw, max_rows)  # None unless a well-formed columnar body
    body = None
    if request is None:
        body = load_json(raw)
        if is_columnar(body):
            request = read_columnar(body, max_rows)
            body = None  # garbage by now: memory for the answer
    if request is not None:
        check_interval_count(len(request.X), request.levels, max_rows)
        out, extrapolated = _forecast(bundle, request.X, request.ranges, request.series)
        return columnar_json(_head(bundle, request.series, out), bundle, out, extrapolated, request)
    instances, prefix = instances_from_body(body)
    levels = read_levels(body["levels"]) if isinstance(body, dict) and "levels" in body else None  # one instance too
    X, ranges = matrix_from_instances(instances, prefix, max_rows)
    series = names_from_instances(instances, prefix) if bundle.knows_series else None  # others ignore the key, as ever
    check_interval_count(len(X), levels, max_rows)
    dated = dated_instances(instances, prefix)  # rows that name their series and week are logged
    del body, instances  # garbage by now (a dict per row): memory for the answer
    out, extrapolated = _forecast(bundle, X, ranges, series)
    if dated:
        log_instances(bundle.version, dated, out, bundle.level)
    columns: list[Any] = [
        out["units_sold"].tolist(),
        out["units_sold_normalized"].tolist(),
        out["low"].tolist(),
        out["high"].tolist(),
        extrapolated,
    ]
    head = _head(bundle, series, out)
    encode = _predictions
    if levels is not None:
        columns.append(_intervals(bundle, out["units_sold"], levels))
        encode = _predictions_with_levels
        if not isinstance(columns[-1], IntervalRows):  # no calibration: [None] * rows
            head["notes"] = bundle.interval_notes(1)
    return b"".join(
        [orjson.dumps(head)[:-1], b',"predictions":[', b",".join(map(encode, _slices(columns, len(X)))), b"]}"]
    )


def _forecast(
    bundle: Bundle,
    X: np.ndarray,
    ranges: tuple[np.ndarray, np.ndarray] | None,
    series: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[list[str]]]:
    """Bundle.forecast's answer, counted, and each row's extrapolated feature names."""
    out = bundle.forecast(X, ranges, series)
    extrapolated = [NOTHING_OUTSIDE] * len(X)
    outside = out["extrapolated_rows"]
    if len(outside):
        # Shared lists by flag code: a new list per row (Bundle.extrapolated_names)
        # cost twice the forecast when every row is outside.
        for i, code in zip(outside.tolist(), (out["extrapolated_flags"] @ BITS).tolist()):
            extrapolated[i] = OUTSIDE_NAMES[code]
        metrics.EXTRAPOLATED.inc(len(outside))
    metrics.ROWS_JSON.inc(len(X))
    return out, extrapolated


def _head(bundle: Bundle, series: Sequence[str] | None, out: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_version": bundle.version,
        "interval_level": bundle.level,
        **unknown_series(series, out["unknown_series"]),
    }


def _intervals(bundle: Bundle, units: np.ndarray, levels: Sequence[float]) -> IntervalRows | list[None]:
    """Each row's {level: [low, high]} (IntervalRows), or [None] * rows without calibration."""
    bounds = bundle.plan_intervals(units.reshape(-1, 1), levels)["intervals"]
    if bounds is None:
        return [None] * len(units)
    return IntervalRows(
        [level_key(level) for level in levels],
        [bounds[level][0][:, 0] for level in levels],
        [bounds[level][1][:, 0] for level in levels],
    )


class IntervalRows:
    """Rows of {level: [low, high]}, made a slice at a time as the answer is
    encoded: a dict per row for all 200,000 rows of a request, at ten levels,
    cost half a gigabyte before a byte was written."""

    def __init__(self, keys: list[str], lows: list[np.ndarray], highs: list[np.ndarray]) -> None:
        self.keys, self.lows, self.highs = keys, lows, highs

    def __getitem__(self, rows: slice) -> list[dict[str, list[float]]]:
        lows = [low[rows].tolist() for low in self.lows]
        highs = [high[rows].tolist() for high in self.highs]
        return [{key: [low[i], high[i]] for key, low, high in zip(self.keys, lows, highs)} for i in range(len(lows[0]))]


def _slices(columns: list[Any], rows: int) -> Iterator[list[Any]]:
    for start in range(0, rows, ROWS_PER_SLICE):
        yield [column[start : start + ROWS_PER_SLICE] for column in columns]


def _predictions(columns: list[Any]) -> bytes:
    """One slice of rows as JSON objects, without the list's brackets.

    The answer is encoded a slice at a time: a row's dict costs more memory
    than its JSON, so 200,000 of them at once would double a worker's peak.
    """
    return orjson.dumps(
        [
            {"units_sold": units, "units_sold_normalized": normalized, "interval": [low, high], "extrapolated": outside}
            for units, normalized, low, high, outside in zip(*columns)
        ]
    )[1:-1]


def _predictions_with_levels(columns: list[Any]) -> bytes:
    return orjson.dumps(
        [
            {
                "units_sold": units,
                "units_sold_normalized": normalized,
                "interval": [low, high],
                "intervals": intervals,
                "extrapolated": outside,
            }
            for units, normalized, low, high, outside, intervals in zip(*columns)
        ]
    )[1:-1]


@bp.post(ROUTES[0])
@bp.post(ROUTES[1])
@prediction_token_required
def predict() -> Response:
    content_type = request.headers.get("Content-Type")
    if is_csv(content_type):  # a table of weeks in, the same table with forecasts out (service/csv_api.py)
        require_identity_encoding(request.headers.get("Content-Encoding"))
        bundle = current_bundle()
        body = forecast_csv(request.get_data(cache=False), bundle, current_app.config["SETTINGS"].max_rows)
        return Response(body, mimetype="text/csv")
    require_json(content_type, also=(CSV_MEDIA_TYPE,))
    bundle = current_bundle()
    raw, through = request.get_data(cache=False), dict[str, str]()
    if bundle.reads_three_inputs:  # rows of stored series without prev_week_sales (service/stored_history.py)
        from .stored_history import rows_from_store

        raw, through = rows_from_store(raw, bundle)
    max_rows = current_app.config["SETTINGS"].max_rows
    body = forecast_json(raw, bundle, max_rows)
    shadow = current_app.extensions.get("demand_shadow")
    if shadow is not None:
        shadow.submit(lambda challenger: forecast_json(raw, challenger, max_rows), len(raw))
    if through:  # the answer says which week each series' prev_week_sales is from
        body = b'{"history_through":' + orjson.dumps(through) + b"," + body[1:]
    return Response(body, mimetype="application/json")


class PredictFastPath:
    """WSGI middleware answering well-formed prediction requests directly."""

    def __init__(
        self,
        wsgi_app: WSGIApplication,
        holder: ModelHolder,
        settings: Settings,
        forecast_log: ForecastLog | None = None,
        store: Engine | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.shadow = shadow  # a challenger scoring the same rows, off the request path (service/shadow.py)
        self.store = store  # a history model's rows continue from its actuals (service/stored_history.py)
        self.forecast_log = forecast_log  # rows that name their series and week are logged (service/forecast_log.py)
        self.holder = holder
        self.settings = settings

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in ROUTES:
            return self.wsgi_app(environ, start_response)
        started = metrics.now()
        length = environ.get("CONTENT_LENGTH") or ""
        try:  # the Flask route's own checks
            bundle = ready_bundle(self.holder)
            check_token(environ.get("HTTP_AUTHORIZATION"), self.settings.api_token)
            require_json(environ.get("CONTENT_TYPE"))
            require_identity_encoding(environ.get("HTTP_CONTENT_ENCODING"))
        except ApiError:
            return self.wsgi_app(environ, start_response)  # Flask says what is wrong, with the same words
        if not length.isdigit() or int(length) > self.settings.max_body_bytes:
            return self.wsgi_app(environ, start_response)  # chunked, or too large: Flask's body handling
        raw = environ["wsgi.input"].read(int(length))
        served = Served(self.forecast_log, environ.get("HTTP_X_REQUEST_ID"), self.store)
        token = SERVED.set(served)
        try:
            body = forecast_json(raw, bundle, self.settings.max_rows)
            if self.shadow is not None:
                max_rows = self.settings.max_rows
                self.shadow.submit(lambda challenger: forecast_json(raw, challenger, max_rows), len(raw))
        except ApiError:
            environ["wsgi.input"] = io.BytesIO(raw)  # let Flask read it again and answer the error
            return self.wsgi_app(environ, start_response)
        except Exception:  # the same answer, log line and metric as a failure in a Flask view
            log.exception("unhandled error")
            body = orjson.dumps({"error": INTERNAL_ERROR})
            start_response(
                "500 INTERNAL SERVER ERROR", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            metrics.observe_request(environ["PATH_INFO"], "POST", 500, metrics.now() - started)
            return [body]
        finally:
            SERVED.reset(token)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if served.request_id is not None:
            headers.append(("X-Request-Id", served.request_id))
        start_response("200 OK", headers)
        metrics.observe_request(environ["PATH_INFO"], "POST", 200, metrics.now() - started)
        return [body]
