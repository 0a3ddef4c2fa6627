"""Every error leaves the service as JSON {"error": "..."} with a 4xx/5xx status."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


INTERNAL_ERROR = "internal error; the details are in the server log"
MESSAGES: dict[int | None, str] = {  # by HTTPException.code, which may be None
    404: "not found: no such route",
    405: "method not allowed",
    413: "request body too large",
}


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(err: ApiError) -> Response:
        return error_response(err.status, err.message, err.headers)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        headers: dict[str, str] = {}
        if err.code == 405:
            allowed = err.get_response().headers.get("Allow")
            if allowed:
                headers["Allow"] = allowed
        message = MESSAGES.get(err.code) or err.description or err.name
        if err.code == 413:
            message = f"request body larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes (DEMAND_MAX_BODY_BYTES)"
        elif err.code == 405:
            message = f"method not allowed; this route accepts {headers.get('Allow', 'other methods')}"
        return error_response(err.code or 500, message, headers)

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, INTERNAL_ERROR)
