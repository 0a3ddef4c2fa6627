"""Access to the worker's model from request handlers."""
from flask import current_app

from .errors import ApiError


def holder():
    return current_app.config["MODEL_HOLDER"]


def current_bundle():
    """The checked model to use for this whole request, or 503 while there is none."""
    bundle = holder().bundle
    if bundle is None:
        raise ApiError(503, f"not ready: {holder().last_error}", {"Retry-After": "1"})
    return bundle
