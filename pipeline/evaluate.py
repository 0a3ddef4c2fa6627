"""Holdout metrics, the baselines a forecast must beat, and a conformal interval."""
import math

import numpy as np


def metrics(actual, predicted, naive_scale):
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


def naive_forecast(X):
    """Persistence: next week sells what last week sold."""
    return np.asarray(X)[:, 0].astype(float)


class LinearBaseline:
    """Least-squares linear regression with an intercept on the same features."""

    def __init__(self, X, y):
        design = np.column_stack([np.ones(len(X)), X])
        self.coef, *_ = np.linalg.lstsq(design, y, rcond=None)

    def predict(self, X):
        return np.column_stack([np.ones(len(X)), X]) @ self.coef


def conformal_half_width(actual, predicted, level=0.9):
    """Split-conformal half-width: the ceil((n+1)*level)-th smallest |residual|."""
    residuals = np.sort(np.abs(np.asarray(actual, dtype=float) - np.asarray(predicted, dtype=float)))
    n = len(residuals)
    rank = min(n, math.ceil((n + 1) * level))
    return float(residuals[rank - 1])


def coverage(actual, predicted, half_width):
    inside = np.abs(np.asarray(actual, dtype=float) - np.asarray(predicted, dtype=float)) <= half_width
    return float(np.mean(inside))


def evaluate(split, predict, level=0.9):
    """Score `predict` (raw features -> units) and the baselines on the holdout.

    The interval half-width comes from validation residuals; its coverage is
    measured on the holdout, which the interval never saw.
    """
    train, validation, holdout = split.train, split.validation, split.holdout
    naive_scale = float(np.mean(np.abs(train.y - naive_forecast(train.X))))
    linear = LinearBaseline(train.X, train.y)
    predicted = predict(holdout.X)
    half_width = conformal_half_width(validation.y, predict(validation.X), level)
    return {
        "holdout": {
            "model": metrics(holdout.y, predicted, naive_scale),
            "naive": metrics(holdout.y, naive_forecast(holdout.X), naive_scale),
            "linear": metrics(holdout.y, linear.predict(holdout.X), naive_scale),
        },
        "validation": {"model": metrics(validation.y, predict(validation.X), naive_scale)},
        "interval": {
            "level": level,
            "method": "split conformal on validation residuals",
            "half_width": half_width,
            "holdout_coverage": coverage(holdout.y, predicted, half_width),
        },
        "linear_coefficients": [float(c) for c in linear.coef],
    }


def beats_baselines(holdout_metrics, metric="wape"):
    model = holdout_metrics["model"][metric]
    return all(model < holdout_metrics[name][metric] for name in ("naive", "linear"))
