"""Holdout metrics, the baselines a forecast must beat, and a conformal interval."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from .data import Dataset, Split

# A forecaster: raw features [n, k] and each row's series name (None: not
# known) -> units sold [n]. The baselines, the trained models and backtest's
# gradient boosting all have this shape.
Predict = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def metrics(actual: ArrayLike, predicted: ArrayLike, naive_scale: float) -> dict[str, Any]:
    """Point-forecast errors in units (WAPE and MAPE in percent).

    MASE divides the MAE by `naive_scale`: the MAE of naive persistence
    (forecast = prev_week_sales) on the training window, so a MASE below 1
    beats last week's sales as a forecast.
    """
    actual = np.asarray(actual, dtype=float)
    error = np.asarray(predicted, dtype=float) - actual
    mae = float(np.mean(np.abs(error)))
    positive = actual > 0
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "wape": float(100 * np.sum(np.abs(error)) / np.sum(np.abs(actual))) if np.any(actual) else math.nan,
        "mape": float(100 * np.mean(np.abs(error[positive]) / actual[positive])) if positive.any() else math.nan,
        "bias": float(np.mean(error)),
        "mase": mae / naive_scale if naive_scale > 0 else math.nan,
        "rows": int(len(actual)),
    }


def naive_forecast(X: ArrayLike, series: np.ndarray | None = None) -> np.ndarray:
    """Persistence: next week sells what last week sold."""
    return np.asarray(X)[:, 0].astype(float)


class LinearBaseline:
    """Least-squares linear regression with an intercept on the same features."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        design = np.column_stack([np.ones(len(X)), X])
        self.coef, *_ = np.linalg.lstsq(design, y, rcond=None)

    def predict(self, X: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
        return np.column_stack([np.ones(len(X)), X]) @ self.coef


def on_model_scale(values: ArrayLike, scale: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.log1p(np.maximum(values, 0.0)) if scale == "log1p" else values


def conformal_half_width(actual: ArrayLike, predicted: ArrayLike, level: float = 0.9, scale: str = "none") -> float:
    """Split-conformal half-width: the ceil((n+1)*level)-th smallest |residual|.

    Residuals are taken on the model's own scale: in units, or in log(1 + units)
    for a log1p model, whose interval then widens in proportion to the forecast.
    """
    residuals = np.sort(np.abs(on_model_scale(actual, scale) - on_model_scale(predicted, scale)))
    n = len(residuals)
    rank = min(n, math.ceil((n + 1) * level))
    return float(residuals[rank - 1])


def interval_bounds(
    predicted: ArrayLike, half_width: float | np.ndarray, scale: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) around forecasts in units; never below zero sales."""
    center = on_model_scale(predicted, scale)
    low, high = center - half_width, center + half_width
    if scale == "log1p":
        low, high = np.expm1(low), np.expm1(high)
    return np.maximum(low, 0.0), high


def coverage(actual: ArrayLike, predicted: ArrayLike, half_width: float, scale: str = "none") -> float:
    low, high = interval_bounds(predicted, half_width, scale)
    actual = np.asarray(actual, dtype=float)
    return float(np.mean((actual >= low) & (actual <= high)))


def naive_scale(train: Dataset) -> float:
    """MAE of naive persistence on the training window: the MASE denominator."""
    return float(np.mean(np.abs(train.y - naive_forecast(train.X))))


def evaluate(split: Split, predict: Predict, level: float = 0.9, scale: str = "none") -> dict[str, Any]:
    """Score `predict` (raw features -> units) and the baselines on the holdout.

    The interval half-width comes from validation residuals; its coverage is
    measured on the holdout, which the interval never saw.
    """
    train, validation, holdout = split.train, split.validation, split.holdout
    scale_mae = naive_scale(train)
    linear = LinearBaseline(train.X, train.y)
    predicted = predict(holdout.X, holdout.series)
    half_width = conformal_half_width(validation.y, predict(validation.X, validation.series), level, scale)
    low, high = interval_bounds(predicted, half_width, scale)
    return {
        "holdout": {
            "model": metrics(holdout.y, predicted, scale_mae),
            "naive": metrics(holdout.y, naive_forecast(holdout.X), scale_mae),
            "linear": metrics(holdout.y, linear.predict(holdout.X), scale_mae),
        },
        "validation": {"model": metrics(validation.y, predict(validation.X, validation.series), scale_mae)},
        "interval": {
            "level": level,
            "method": "split conformal on validation residuals",
            "scale": scale,
            "half_width": half_width,
            "holdout_coverage": coverage(holdout.y, predicted, half_width, scale),
            "holdout_mean_width_units": float(np.mean(high - low)),
        },
    }


def beats_baselines(holdout_metrics: dict[str, dict[str, Any]], metric: str = "wape") -> bool:
    model = holdout_metrics["model"][metric]
    return all(model < holdout_metrics[name][metric] for name in ("naive", "linear"))
