"""Access to the worker's model from request handlers."""

from flask import current_app

from .errors import ApiError


def holder():
    return current_app.config["MODEL_HOLDER"]


def current_bundle():
    """The checked model to use for this whole request, or 503 while there is none."""
    return ready_bundle(holder())


def ready_bundle(model_holder):
    bundle = model_holder.bundle
    if bundle is None:
        raise ApiError(503, f"not ready: {model_holder.last_error}", {"Retry-After": "1"})
    return bundle
