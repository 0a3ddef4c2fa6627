"""What operators and orchestrators call: liveness, readiness, metrics, the
OpenAPI description, and (only when DEMAND_ADMIN_TOKEN is set) a reload."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from . import metrics
from .auth import check_bearer
from .errors import ApiError
from .openapi import spec
from .serving import holder

bp = Blueprint("ops", __name__)
admin = Blueprint("admin", __name__, url_prefix="/admin")


def model_status() -> dict[str, Any]:
    """What this worker serves, for anyone: version names, never paths."""
    serving = holder()
    bundle = serving.bundle
    if bundle is None:
        return {"ready": False, "reason": serving.last_error}
    status: dict[str, Any] = {
        "ready": True,
        "model_version": bundle.version,
        "execution_provider": bundle.provider,
        "interval_level": bundle.level,
        "created_at": bundle.card.get("created_at"),
    }
    if serving.fallback:  # serving an earlier champion: say which, and why
        status.update(champion=serving.champion, fallback=True, reason=serving.last_error)
    return status


@bp.get("/healthz")
def healthz() -> Response:
    """Live: the process answers. Says what it serves, or why it cannot yet."""
    forecast_log = current_app.extensions.get("demand_forecast_log")
    extra = {"forecast_log": forecast_log.health()} if forecast_log is not None else {}
    shadow = current_app.extensions.get("demand_shadow")
    if shadow is not None:
        extra["shadow"] = shadow.health()
    return jsonify(status="ok", **model_status(), **extra)


@bp.get("/readyz")
def readyz() -> Response:
    status = model_status()
    if not status["ready"]:
        raise ApiError(503, f"not ready: {status['reason']}", {"Retry-After": "1"})
    return jsonify(status="ready", **status)


@bp.get("/metrics")
def prometheus() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi() -> Response:
    served = holder().bundle
    return jsonify(
        spec(
            admin_enabled=bool(current_app.config["SETTINGS"].admin_token),
            features=served.spec if served is not None else None,
        )
    )


@admin.post("/reload")
def reload() -> Response:
    """Check the champion pointer now, and retry a version refused before."""
    check_bearer(current_app.config["SETTINGS"].admin_token)
    served = holder().refresh(force=True)
    status = model_status()
    if served is None:
        raise ApiError(503, f"no model loaded: {status['reason']}")
    return jsonify(**status)
