"""Weeks in a row: each series' rows step by step, and forecasts chained along them.

A backtest's recursive scoring and the per-step calibration of intervals
(pipeline.calibrate) both forecast a series' weeks one after another, each
week reading the forecasts of the weeks before as its sales history.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .data import Dataset, periods
from .features import WINDOW_WEEKS, with_history


def chains(future: Dataset) -> np.ndarray | None:
    """[H, S] row indices of `future`: row of step h of series s, or -1 where that week is missing.

    None when steps cannot be told apart (several rows a week and no series column).
    """
    order, distinct, period_of_row = periods(future)
    keys = future.series if future.series is not None else np.zeros(len(future), dtype=int)
    names, series_of = np.unique(keys, return_inverse=True)
    grid = np.full((len(distinct), len(names)), -1)
    if future.week is not None:
        grid[period_of_row, series_of[order]] = order
        if np.count_nonzero(grid >= 0) != len(future):
            return None  # two rows of the same series in one week
    else:  # rows in file order are the weeks of one series
        grid[:, 0] = order
    return grid


def forecast_chains(predict: Callable[..., np.ndarray], data: Dataset, steps: np.ndarray) -> np.ndarray:
    """[H, M] forecasts of M chains of rows of `data`, `steps` [H, M] their row indices (-1: no row that week).

    Step h of a chain reads the chain's own forecasts of the steps before as
    its sales history (pipeline.features.with_history): last week's sales,
    and for a history model the lags and rolling means too, over the actual
    weeks before the chain's first row and the forecasts after. A chain with
    no row at a step carries its last week on, as a skipped week does in
    training; a chapter model's chain takes such a row's own prev_week_sales.
    """
    H, M = steps.shape
    spec = data.spec
    out = np.full((H, M), np.nan)
    window = np.full((M, WINDOW_WEEKS), np.nan)
    started = np.zeros(M, dtype=bool)
    for h, step in enumerate(steps):
        present = step >= 0
        fresh = present & ~started
        window[fresh] = data.windows(step[fresh])
        rows = step[present]
        X = with_history(spec, data.X[rows], window[present])
        out[h, present] = predict(X, None if data.series is None else data.series[rows])
        started |= present
        carried = window[:, -1] if spec.history else np.full(M, np.nan)
        window = np.column_stack([window[:, 1:], np.where(present, np.maximum(out[h], 0.0), carried)])
    return out
