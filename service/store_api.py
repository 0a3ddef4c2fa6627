"""The store's routes: POST /actuals (what sold) and GET /accuracy (how the served forecasts did).

Actuals come as JSON rows (`{"instances": [{"series", "week", "units_sold",
<the champion's declared covariates>}]}`) or as a CSV body with those
columns, under the champion's names for them. One request is stored whole or
not at all; a week posted again replaces the stored one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from pipeline.accuracy import DEFAULT_WEEKS, live_accuracy
from pipeline.drift import input_drift, served_drift
from pipeline.errors import DataError
from pipeline.store import TooManyRows, actual_columns, actual_from_row, csv_actual_rows, put_actuals

from . import metrics
from .auth import prediction_token_required
from .csv_api import is_csv
from .errors import ApiError
from .inputs import parse_json, require_identity_encoding, require_json
from .serving import current_bundle, holder

bp = Blueprint("store", __name__)
T = TypeVar("T")
MAX_WEEKS = 520  # the longest trailing window /accuracy takes


def store() -> Any:
    """The app's store engine, or 503 when it has none."""
    engine = current_app.extensions.get("demand_store")
    if engine is None:
        raise ApiError(503, "no store is configured (DEMAND_STORE_URL)")
    return engine


def trailing_weeks() -> int:
    """The request's `weeks` (the trailing window), 13 by default; 400 for anything but 1 to MAX_WEEKS."""
    text = request.args.get("weeks", str(DEFAULT_WEEKS))
    if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= MAX_WEEKS:
        raise ApiError(400, f"weeks must be a whole number from 1 to {MAX_WEEKS}, got {text[:20]!r}")
    return int(text)


def read_store(read: Callable[[Any], T]) -> T:
    """`read(engine)`'s answer; 503 without a store, or when it cannot be reached."""
    engine = store()
    try:
        return read(engine)
    except SQLAlchemyError as err:
        current_app.logger.error("cannot read the store: %s", err)
        raise ApiError(503, "the store cannot be reached") from None


@bp.post("/actuals")
@prediction_token_required
def post_actuals() -> Response:
    require_identity_encoding(request.headers.get("Content-Encoding"))
    settings = current_app.config["SETTINGS"]
    bundle = current_bundle()
    columns = actual_columns(bundle.spec)
    raw = request.get_data(cache=False)
    if is_csv(request.headers.get("Content-Type")):
        try:
            rows, where = csv_actual_rows(raw, columns, settings.max_rows, "body")
        except DataError as err:
            raise ApiError(413 if isinstance(err, TooManyRows) else 400, str(err)) from None
    else:
        require_json(request.headers.get("Content-Type"), also=("text/csv",))
        body = parse_json(raw, settings.max_rows, row=("actual", "columnar"))
        rows, where = json_rows(body, columns, settings.max_rows)
    try:
        actuals = [actual_from_row(row, at, columns) for row, at in zip(rows, where)]
        rows_named = [
            at.replace(".{}", " row ").replace("[", "").replace("]", "") if "{}" in at else at for at in where
        ]
        counts = put_actuals(store(), actuals, rows_named, bundle.trained_until())
    except DataError as err:
        raise ApiError(400, str(err)) from None
    except SQLAlchemyError as err:
        current_app.logger.error("cannot store actuals: %s", err)
        raise ApiError(503, "the store did not take the request; nothing was stored, send it again") from None
    return jsonify(counts)


def json_rows(body: Any, columns: tuple[str, ...], max_rows: int) -> tuple[list[Any], list[str]]:
    """The rows of a JSON body, `{"instances": [rows]}` or columns as /predict takes them (`{"inputs":
    {column: [values]}}`), and where each row is."""
    if isinstance(body, dict) and set(body) == {"inputs"} and isinstance(body["inputs"], dict) and body["inputs"]:
        inputs = body["inputs"]
        bad = next((key for key, values in inputs.items() if not isinstance(values, list)), None)
        if bad is not None:
            raise ApiError(400, f"inputs.{str(bad)[:40]} must be a list")
        lengths = {len(values) for values in inputs.values()}
        if len(lengths) != 1 or not min(lengths):
            raise ApiError(400, "the columns of 'inputs' must be non-empty lists of the same length")
        count = lengths.pop()
        if count > max_rows:
            raise ApiError(413, f"{count} rows, more than DEMAND_MAX_ROWS ({max_rows})")
        rows = [dict(zip(inputs, values)) for values in zip(*inputs.values())]
        return rows, [f"inputs.{{}}[{i}]" for i in range(count)]
    instances = body.get("instances") if isinstance(body, dict) and set(body) == {"instances"} else None
    if not isinstance(instances, list) or not instances:
        raise ApiError(
            400,
            'the body must be {"instances": [rows]} or {"inputs": {column: [values]}}, with ' + ", ".join(columns),
        )
    if len(instances) > max_rows:
        raise ApiError(413, f"{len(instances)} rows, more than DEMAND_MAX_ROWS ({max_rows})")
    return instances, [f"instances[{i}]" for i in range(len(instances))]


@bp.get("/accuracy")
@prediction_token_required
def accuracy() -> Response:
    weeks = trailing_weeks()
    bundle = holder().bundle

    def figures(engine: Any) -> dict[str, Any]:
        answer = live_accuracy(engine, weeks)
        if bundle is not None:
            answer["champion"] = bundle.version  # the version served (the registry's champion, or its fallback)
            answer["drift"] = input_drift(engine, bundle.card, weeks)
            answer["drift"]["served"] = served_drift(engine, bundle.card, bundle.version, weeks)
        return answer

    answer = read_store(figures)
    if bundle is not None:
        publish_gauges(answer, bundle.version)
    shadow = current_app.extensions.get("demand_shadow")
    if shadow is not None and shadow.bundle is not None:  # its live figures are among the versions'
        answer["shadow"] = shadow.bundle.version
    return jsonify(answer)


def publish_gauges(answer: dict[str, Any], champion: str) -> None:
    """The champion's window figures and the inputs' drift, as Prometheus gauges."""
    for step in answer["versions"].get(champion, {}).get("window", []):
        if step["wape"] is not None:
            metrics.LIVE_WAPE.labels(str(step["step"])).set(step["wape"])
        for level, share in step["coverage"].items():
            metrics.LIVE_COVERAGE.labels(str(step["step"]), level).set(share)
    for name, figures in answer.get("drift", {}).get("inputs", {}).items():
        metrics.INPUT_PSI.labels(name).set(figures["psi"])
    for name, figures in answer.get("drift", {}).get("served", {}).get("inputs", {}).items():
        metrics.SERVED_INPUT_PSI.labels(name).set(figures["psi"])
