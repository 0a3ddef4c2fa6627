"""Intervals for forecasts several weeks ahead, calibrated step by step.

A plan's week h is forecast recursively: each week's forecast becomes the next
week's `prev_week_sales`, so errors compound and the interval must widen with
h. At training time the evaluated model (which never trained on the
validation and holdout weeks) forecasts those weeks recursively from every
origin in them, and the absolute residuals of each step, on the model's own
scale, give split-conformal half-widths at every level of LEVELS. Serving
reads them for any level from 0.5 to 0.99 (between two levels of the grid, it
interpolates) and any step (past the last calibrated step, it uses that step's
and says so).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .chains import chains, forecast_chains
from .evaluate import on_model_scale
from .presets import DEFAULT_LEVELS  # noqa: F401  (re-exported: levels live with the calibration that serves them)

LEVELS = tuple(round(0.50 + 0.01 * i, 2) for i in range(50))  # 0.50, 0.51, ..., 0.99
MAX_STEPS = 13  # a quarter of weeks
MIN_RESIDUALS = 20  # fewer residuals than this make a step's quantiles too rough to use

if TYPE_CHECKING:
    from .data import Dataset
    from .evaluate import Predict


def level_key(level: float) -> str:
    """How a level names its interval in answers and files: 0.8 -> "0.8"."""
    return f"{level:g}"


def recursive_residuals(
    predict: Predict, heldout: Dataset, grid: np.ndarray, max_steps: int = MAX_STEPS, scale: str = "none"
) -> list[np.ndarray]:
    """[per step h = 1.., absolute residuals] of recursive forecasts from every origin.

    `grid` is [weeks, series] of row indices of `heldout` (-1 where missing),
    as pipeline.backtest.chains makes it. All origins move forward together,
    so each step is one call of `predict`.
    """
    weeks, series = grid.shape
    horizon = min(max_steps, weeks)
    steps = np.full((horizon, weeks, series), -1)  # [step, origin, series]
    for h in range(horizon):
        steps[h, : weeks - h] = grid[h:]
    steps = steps.reshape(horizon, -1)
    forecasts = forecast_chains(predict, heldout, steps)
    actual = on_model_scale(heldout.y, scale)
    return [
        np.abs(actual[step[step >= 0]] - on_model_scale(forecast[step >= 0], scale))
        for step, forecast in zip(steps, forecasts)
    ]


def calibrate(
    residuals_by_step: Iterable[np.ndarray], scale: str = "none", min_residuals: int = MIN_RESIDUALS
) -> dict[str, Any]:
    """The card's `calibration`: half-widths by step and level, never narrower at a later step."""
    steps, floor = [], np.zeros(len(LEVELS))
    for h, residuals in enumerate(residuals_by_step, start=1):
        if len(residuals) < min_residuals:
            break
        ordered = np.sort(residuals)
        n = len(ordered)
        widths = np.array([ordered[min(n, math.ceil((n + 1) * level)) - 1] for level in LEVELS])
        floor = np.maximum(floor, widths)  # uncertainty does not shrink further ahead
        steps.append({"step": h, "residuals": n, "half_widths": [float(w) for w in floor]})
    return {
        "method": "split conformal on absolute residuals of recursive forecasts from every origin in the "
        "validation and holdout weeks, by the evaluated model; on the model's scale",
        "scale": scale,
        "levels": list(LEVELS),
        "steps": steps,
    }


def per_step_calibration(
    predict: Predict, heldout: Dataset, scale: str = "none", max_steps: int = MAX_STEPS
) -> dict[str, Any] | None:
    """Calibration from held-out weeks, or None when their steps cannot be told apart."""
    grid = chains(heldout)
    if grid is None or len(heldout) == 0:
        return None
    calibration = calibrate(recursive_residuals(predict, heldout, grid, max_steps, scale), scale)
    return calibration if calibration["steps"] else None


def half_width(calibration: dict[str, Any], step: int, level: float) -> tuple[float, int]:
    """(half-width on the model's scale, the calibrated step it comes from) for 1-based `step`."""
    steps = calibration["steps"]
    used = steps[min(step, len(steps)) - 1]
    widths = used["half_widths"]
    position = (level - LEVELS[0]) / 0.01
    low = int(math.floor(position + 1e-9))
    if low >= len(LEVELS) - 1:
        return widths[-1], used["step"]
    fraction = position - low
    return widths[low] + fraction * (widths[low + 1] - widths[low]), used["step"]
