"""Optional bearer tokens: DEMAND_API_TOKEN for predictions, DEMAND_ADMIN_TOKEN for admin."""

import functools
import hmac

from flask import current_app, request

from .errors import ApiError


def check_bearer(expected):
    check_token(request.headers.get("Authorization"), expected)


def check_token(header, expected):
    """401 or 403 unless the Authorization header `header` carries the token `expected` (if any)."""
    if not expected:
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": 'Bearer realm="demand"'},
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(403, "bearer token not accepted")


def prediction_token_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        check_bearer(current_app.config["SETTINGS"].api_token)
        return view(*args, **kwargs)

    return wrapper
