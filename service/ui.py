"""GET /ui: the planners' page, served by the service itself from files in the package (service/page/).

The page is static HTML, JavaScript and uPlot (vendored: no CDN, no build
step); it calls the service's own routes as any client does (/forecast,
/accuracy) and the read-only routes below for what only a page needs: the
series a model knows, a series' recent weeks, what was served against what
sold, and the registry with its plots. Nothing here is on /predict's path.

Tokens: with DEMAND_API_TOKEN set, the page and its data answer a request
that carries the token, as a bearer header or as the cookie the page's
sign-in sets (HttpOnly, SameSite=Strict: another site's page cannot send it).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, make_response, redirect, request, send_from_directory
from sqlalchemy.exc import SQLAlchemyError

from pipeline.calibrate import DEFAULT_LEVELS
from pipeline.errors import RegistryError
from pipeline.registry import is_version_name

from .auth import TOKEN_COOKIE, check_bearer, page_credential, prediction_token_required
from .errors import ApiError
from .serving import current_bundle, holder
from .store_api import read_store, trailing_weeks

bp = Blueprint("ui", __name__)
PAGE = Path(__file__).with_name("page")
MAX_SERIES_LISTED = 20_000  # names sent to the page's search box


def sign_in_form(message: str, status: int) -> Response:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Demand forecaster: sign in</title>"
        '<link rel=stylesheet href="/ui/static/page.css"></head><body class=signin>'
        f"<h1>Demand forecaster</h1><p id=refused>{message}</p>"
        '<form method=post action="/ui/sign-in"><label>Token <input type=password name=token id=token '
        "autocomplete=current-password required></label> <button type=submit>Sign in</button></form></body></html>"
    )
    return Response(html, status=status, mimetype="text/html")


@bp.get("/ui")
def page() -> Response:
    try:
        check_bearer(current_app.config["SETTINGS"].api_token, cookie=True)
    except ApiError as err:
        return sign_in_form("This service needs its token." if err.status == 401 else "Token not accepted.", 401)
    response = send_from_directory(PAGE, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/ui/sign-in")
def sign_in() -> Response:
    expected = current_app.config["SETTINGS"].api_token
    response = make_response(redirect("/ui", code=303))
    if not expected:  # no token to keep
        return response
    token = request.form.get("token", "").strip()  # as the bearer check reads it
    if not hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode()):
        return sign_in_form("Token not accepted.", 403)
    # Secure whenever the page came over TLS, behind a proxy that ends it too (it says so in X-Forwarded-Proto).
    secure = request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    credential = page_credential(expected)
    response.set_cookie(TOKEN_COOKIE, credential, httponly=True, samesite="Strict", secure=secure, path="/")
    return response


@bp.get("/ui/static/<path:name>")
def static_file(name: str) -> Response:
    """The page's script, style and uPlot: code, no data, so no token."""
    return send_from_directory(PAGE, name, max_age=3600)


@bp.get("/ui/data/overview")
@prediction_token_required
def overview() -> Response:
    bundle = current_bundle()
    spec = bundle.spec
    names = sorted(set(bundle.tails) | set(bundle.stats.series) | set(bundle.statics))
    return jsonify(
        version=bundle.version,
        known=list(spec.known),
        static={name: list(spec.vocabulary(name) or ()) for name in spec.static},
        history=spec.history,
        week_column=spec.week_column,
        series_column=spec.series_column,
        three_inputs=bundle.reads_three_inputs,
        levels=list(DEFAULT_LEVELS),
        series=names[:MAX_SERIES_LISTED],
        store=current_app.extensions.get("demand_store") is not None,
    )


@bp.get("/ui/data/history")
@prediction_token_required
def history() -> Response:
    """A series' recent weeks: those the model stored at training, then the store's actuals."""
    import numpy as np

    from pipeline.store import latest_actuals

    from .plans import MAX_ID_LENGTH

    name = request.args.get("series", "").strip()
    if not name or len(name) > MAX_ID_LENGTH:
        raise ApiError(400, f"series must be a series name of 1 to {MAX_ID_LENGTH} characters")
    bundle = current_bundle()
    weeks: dict[str, float] = {}
    tail = bundle.tails.get(name)
    if tail is not None:
        next_week, sales = tail
        for back, value in enumerate(sales[::-1], start=1):
            if not np.isnan(value):
                weeks[str(next_week - np.timedelta64(7 * back, "D"))] = float(value)
    engine = current_app.extensions.get("demand_store")
    if engine is not None:
        try:
            for week, units in latest_actuals(engine, [name], 52).get(name, []):
                weeks[week.isoformat()] = units
        except SQLAlchemyError as err:
            current_app.logger.error("cannot read the store for the page: %s", str(err).splitlines()[0])
    ordered = sorted(weeks.items())[-52:]
    return jsonify(series=name, weeks=[w for w, _ in ordered], units_sold=[u for _, u in ordered])


@bp.get("/ui/data/served")
@prediction_token_required
def served() -> Response:
    """What each version forecast one step ahead for a series, against what sold (the forecast log and the store)."""
    from pipeline.accuracy import served_against_actual

    name = request.args.get("series", "").strip()
    if not name:
        raise ApiError(400, "series must be a series name")
    return jsonify(series=name, **read_store(lambda engine: served_against_actual(engine, name)))


@bp.get("/ui/data/weekly")
@prediction_token_required
def weekly() -> Response:
    """Each version's one-week-ahead WAPE and coverage, week by week over the trailing weeks."""
    from pipeline.accuracy import weekly_accuracy

    weeks = trailing_weeks()
    return jsonify(read_store(lambda engine: weekly_accuracy(engine, weeks)))


@bp.get("/ui/data/registry")
@prediction_token_required
def registry() -> Response:
    """The versions with their cards' key figures, the champion, the rollback target, and what happened."""
    found = holder().registry
    versions = []
    for version in reversed(found.versions()):
        try:
            card = found.card(version)
        except RegistryError as err:
            versions.append({"version": version, "error": str(err).rsplit(": ", 1)[-1]})
            continue
        versions.append(key_figures(version, card, sorted(p.name for p in found.path(version).glob("*.png"))))
    return jsonify(
        champion=found.champion(),
        rollback_target=found.rollback_target(),
        versions=versions,
        history=found.history()[-200:][::-1],
    )


def key_figures(version: str, card: dict[str, Any], plots: list[str]) -> dict[str, Any]:
    holdout = card.get("metrics", {}).get("holdout", {})
    return {
        "version": version,
        "created_at": card.get("created_at"),
        "model": (card.get("selection") or {}).get("chosen"),
        "architecture": (card.get("model") or {}).get("architecture"),
        "features": card.get("features", {}).get("names"),
        "rows": card.get("data", {}).get("rows"),
        "weeks": card.get("data", {}).get("date_range"),
        "holdout_wape": {name: figures.get("wape") for name, figures in holdout.items() if isinstance(figures, dict)},
        "plots": plots,
    }


@bp.get("/ui/data/versions/<version>/<name>")
@prediction_token_required
def plot(version: str, name: str) -> Response:
    """A version's plot (its backtest, its training report)."""
    found = holder().registry
    if not is_version_name(version) or not found.exists(version):
        raise ApiError(404, f"no version {version[:40]!r}")
    if not name.endswith(".png") or "/" in name or name.startswith("."):
        raise ApiError(404, f"no plot {name[:40]!r}")
    try:
        path = found.file(version, name)
    except RegistryError:
        raise ApiError(404, f"no plot {name[:40]!r}") from None
    if not path.is_file():
        raise ApiError(404, f"no plot {name[:40]!r}")
    return send_from_directory(path.parent, path.name, mimetype="image/png", max_age=3600)
