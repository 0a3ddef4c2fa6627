"""The Flask application factory."""
import logging
import time

from flask import Flask, g, request

from . import errors, metrics
from .config import Settings
from .model_holder import ModelHolder
from .predict_api import PredictFastPath


def create_app(test_config=None):
    """Build the app for one worker: settings from DEMAND_* and `test_config`,
    the champion loaded into ONNX Runtime, and the champion watcher started.

    Under gunicorn this runs in each worker after fork, so every worker owns
    its ONNX Runtime session and the master never loads a model.
    """
    test_config = dict(test_config or {})
    watch = test_config.pop("WATCH", True)
    settings = Settings.from_env(**{k.lower(): v for k, v in test_config.items() if k.lower() in Settings.__dataclass_fields__})
    app = Flask(__name__)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False)
    app.config.update({k: v for k, v in test_config.items() if k.isupper()})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")

    holder = ModelHolder(settings)
    app.config["MODEL_HOLDER"] = holder
    holder.refresh()  # load and warm up before the first request
    if watch:
        holder.start_watching()
    if holder.ready:
        app.logger.info("worker ready %.3f s after its process started", seconds_since_process_start())

    from .ops_api import admin, bp as ops
    from .predict_api import bp as predict
    from .v2_api import bp as v2

    app.register_blueprint(ops)
    app.register_blueprint(predict)
    app.register_blueprint(v2)
    if settings.admin_token:
        app.register_blueprint(admin)  # without a token the admin routes do not exist
    errors.register(app)
    _instrument(app)
    app.wsgi_app = PredictFastPath(app.wsgi_app, holder, settings)
    return app


def seconds_since_process_start():
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


def _instrument(app):
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.before_request
    def refuse_encoded_bodies():
        # No route decompresses; an encoded body would be read as garbage.
        if request.content_encoding not in (None, "", "identity"):
            raise errors.ApiError(415, f"Content-Encoding {request.content_encoding[:64]!r} is not supported; "
                                       "send the body uncompressed")

    @app.after_request
    def record(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.observe_request(route, request.method, response.status_code,
                                time.perf_counter() - g.get("started", time.perf_counter()))
        return response
