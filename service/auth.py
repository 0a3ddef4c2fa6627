"""Optional bearer tokens: DEMAND_API_TOKEN for predictions, DEMAND_ADMIN_TOKEN for admin."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import current_app, request

from .errors import ApiError

P = ParamSpec("P")
R = TypeVar("R")


TOKEN_COOKIE = "demand_token"  # set by the page's sign-in (service/ui.py)


def page_credential(token: str) -> str:
    """What the page's cookie holds for the token `token`: a keyed digest, so the browser never keeps the
    token itself, and a new token signs every page out."""
    return hmac.new(token.encode(), b"demand page sign-in", hashlib.sha256).hexdigest()


def check_bearer(expected: str, cookie: bool = False) -> None:
    """check_token of this request's Authorization header; with `cookie`, a request without one may carry
    the page's cookie (page_credential) instead."""
    header = request.headers.get("Authorization")
    held = request.cookies.get(TOKEN_COOKIE) if cookie and header is None and expected else None
    if held:
        if not hmac.compare_digest(held.encode("utf-8", "replace"), page_credential(expected).encode()):
            raise ApiError(403, "sign-in not accepted: sign in to the page again")
        return
    check_token(header, expected)


def check_token(header: str | None, expected: str) -> None:
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


def prediction_token_required(view: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        check_bearer(current_app.config["SETTINGS"].api_token, cookie=True)
        return view(*args, **kwargs)

    return wrapper
