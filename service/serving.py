"""Access to the worker's model from request handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

from .errors import ApiError

if TYPE_CHECKING:
    from pipeline.bundle import Bundle

    from .model_holder import ModelHolder


def holder() -> ModelHolder:
    return current_app.config["MODEL_HOLDER"]


def current_bundle() -> Bundle:
    """The checked model to use for this whole request, or 503 while there is none."""
    return ready_bundle(holder())


def ready_bundle(model_holder: ModelHolder) -> Bundle:
    bundle = model_holder.bundle
    if bundle is None:
        raise ApiError(503, f"not ready: {model_holder.last_error}", {"Retry-After": "1"})
    return bundle
