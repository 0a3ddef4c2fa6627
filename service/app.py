"""The Flask application factory."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

from . import errors, metrics
from .config import Settings
from .forecast_log import SERVED, Served
from .inputs import require_identity_encoding
from .model_holder import ModelHolder
from .predict_api import PredictFastPath


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app for one worker: settings read once from DEMAND_*, with
    `test_config` (Settings fields, e.g. {"MODEL_DIR": ..., "RELOAD_INTERVAL": 0})
    on top; the champion loaded into ONNX Runtime, and the champion watcher started.

    Under gunicorn this runs in each worker after fork, so every worker owns
    its ONNX Runtime session and the master never loads a model.
    """
    settings = Settings.from_env(**Settings.fields_from(test_config or {}))
    app = Flask(__name__)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

    _open_store(app, settings)
    holder = ModelHolder(settings)
    app.config["MODEL_HOLDER"] = holder
    if "demand_forecast_log" in app.extensions:  # the inputs served, counted for drift
        holder.observe = app.extensions["demand_forecast_log"].count_inputs
    holder.refresh()  # load and warm up before the first request
    holder.start_watching()
    if holder.ready:
        app.logger.info("worker ready %.3f s after its process started", seconds_since_process_start())

    _start_shadow(app, settings, holder)

    from .forecast_api import bp as forecast
    from .ops_api import admin
    from .ops_api import bp as ops
    from .predict_api import bp as predict
    from .v2_api import bp as v2

    app.register_blueprint(ops)
    app.register_blueprint(predict)
    app.register_blueprint(forecast)
    app.register_blueprint(v2)
    from .store_api import bp as store
    from .ui import bp as ui

    app.register_blueprint(store)
    app.register_blueprint(ui)
    if settings.admin_token:
        app.register_blueprint(admin)  # without a token the admin routes do not exist
    errors.register(app)
    _instrument(app)
    app.wsgi_app = PredictFastPath(  # type: ignore[method-assign]  # Flask's middleware idiom
        app.wsgi_app,
        holder,
        settings,
        app.extensions.get("demand_forecast_log"),
        app.extensions.get("demand_store"),
        app.extensions.get("demand_shadow"),
    )
    # Everything made so far lives as long as the worker: out of the garbage
    # collector's sight, a full collection no longer walks it. Large answers
    # make thousands of objects and trigger collections; each walked these
    # 40,000 too, a third of a 1,000-series /forecast.
    gc.freeze()
    return app


def _open_store(app: Flask, settings: Settings) -> None:
    """The store's engine and the forecast log; the schema is brought up to date at the service's start
    (service/gunicorn_conf.py) or by `demand store upgrade`."""
    from pipeline.store import open_engine, store_url

    from .forecast_log import ForecastLog

    engine = open_engine(store_url(settings.model_dir, settings.store_url or None))
    app.extensions["demand_store"] = engine
    if settings.forecast_log:
        app.extensions["demand_forecast_log"] = ForecastLog(engine, app.logger)


def _start_shadow(app: Flask, settings: Settings, holder: ModelHolder) -> None:
    """A challenger scored beside the champion (DEMAND_SHADOW), when forecasts are logged to compare it on."""
    from pipeline.registry import is_version_name

    from .shadow import LATEST, Shadow

    if not settings.shadow:
        return
    if settings.shadow != LATEST and not is_version_name(settings.shadow):
        raise ValueError(f"DEMAND_SHADOW must be a version (v1, v2, ...) or {LATEST!r}, got {settings.shadow[:40]!r}")
    if "demand_forecast_log" not in app.extensions:
        app.logger.warning("DEMAND_SHADOW is set but the forecast log is off: nothing is shadow-scored")
        return
    shadow = app.extensions["demand_shadow"] = Shadow(holder, settings.shadow)
    shadow.refresh()
    holder.followers.append(shadow.refresh)  # a new champion or version changes what is shadowed


def seconds_since_process_start() -> float:
    """Wall time since this process was created (its fork, under gunicorn)."""
    import os

    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _instrument(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.before_request
    def refuse_encoded_bodies() -> None:
        require_identity_encoding(request.headers.get("Content-Encoding"))

    @app.before_request
    def log_what_is_served() -> None:
        g.served = Served(
            app.extensions.get("demand_forecast_log"),
            request.headers.get("X-Request-Id"),
            app.extensions.get("demand_store"),
        )
        g.served_token = SERVED.set(g.served)

    @app.teardown_request
    def stop_logging(_error: BaseException | None) -> None:
        token = g.pop("served_token", None)
        if token is not None:
            SERVED.reset(token)

    @app.after_request
    def record(response: Response) -> Response:
        served = g.get("served")
        if served is not None and served.request_id is not None:
            response.headers["X-Request-Id"] = served.request_id
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.observe_request(
            route, request.method, response.status_code, time.perf_counter() - g.get("started", time.perf_counter())
        )
        return response
