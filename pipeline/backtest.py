"""Rolling-origin backtest: the figures a user can trust most.

For each of K origins at the end of the history, the whole of `demand train`
(selection, evaluation, refit) runs on the weeks before the origin only; its
model then forecasts the H weeks from the origin on, twice:
- one step ahead: each week from its real `prev_week_sales`;
- recursively: week h of the window takes the forecast of week h-1 of the same
  series as `prev_week_sales`, as a plan several weeks ahead must.
The baselines get the same history and the same two forecasts: naive
persistence, least-squares linear regression, and gradient boosting when
scikit-learn is installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .calibrate import DEFAULT_LEVELS, half_width, level_key
from .chains import chains, forecast_chains
from .data import min_periods, periods, rows_and_weeks, unit_name
from .errors import DataError
from .evaluate import LinearBaseline, interval_bounds, metrics, naive_forecast, naive_scale
from .presets import BACKTEST_HORIZON, BACKTEST_WINDOWS

MAX_CATEGORIES = 255  # HistGradientBoostingRegressor's limit on one categorical input (its bins, less one)
SUMMARY = ("wape", "mase", "bias")

if TYPE_CHECKING:
    from .data import Dataset
    from .evaluate import Predict


def gradient_boosting(history: Dataset, by_series: bool = False) -> Predict | None:
    """A fitted scikit-learn gradient boosting model's forecast, `predict(X, series)`,
    or None without scikit-learn.

    `by_series`: the series is a fourth, categorical input (None when the
    history names no series), so the comparison with a model that tells the
    series apart stays fair. A series it never saw counts as missing.
    """
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError:
        return None
    if not by_series:
        model = HistGradientBoostingRegressor(random_state=0).fit(history.X, history.y)
        return cast("Predict", lambda X, series=None: model.predict(X))  # mypy infers no lambda for an optional
    if history.series is None:
        return None
    names, rows = np.unique(history.series, return_counts=True)
    if len(names) > MAX_CATEGORIES:  # more than scikit-learn takes as one input: the rest count as missing
        names = np.sort(names[np.argsort(-rows, kind="stable")[:MAX_CATEGORIES]])

    def with_series(X: np.ndarray, series: np.ndarray) -> np.ndarray:
        at = np.searchsorted(names, series)
        known = names[np.minimum(at, len(names) - 1)] == series
        return np.column_stack([X, np.where(known, at, np.nan)])

    model = HistGradientBoostingRegressor(random_state=0, categorical_features=[history.X.shape[1]])  # the series, last
    model.fit(with_series(history.X, history.series), history.y)
    return cast(
        "Predict",
        lambda X, series=None: model.predict(
            with_series(X, np.full(len(X), "") if series is None else np.asarray(series, dtype=str))
        ),
    )


def windows_of(data: Dataset, windows: int, horizon: int) -> list[tuple[Dataset, Dataset]]:
    """[(history, future)] for each origin, oldest first; refuses a history too short."""
    order, distinct, period_of_row = periods(data)
    needed = min_periods() + windows * horizon
    if len(distinct) < needed:
        unit = unit_name(data)
        raise DataError(
            f"{data.source.get('path', 'data')}: {len(distinct)} {unit} are too few for a backtest of {windows} "
            f"window(s) of {horizon} {unit}: at least {needed} {unit} are needed ({min_periods()} before the "
            f"first origin to train and evaluate on)"
        )
    out = []
    for k in range(windows, 0, -1):
        start = len(distinct) - k * horizon
        history = data.take(order[period_of_row < start])
        future = data.take(order[(period_of_row >= start) & (period_of_row < start + horizon)])
        out.append((history, future))
    return out


def recursive(predict: Predict, future: Dataset, grid: np.ndarray) -> np.ndarray:
    """Forecasts where each week's sales history is the same series' forecasts of the weeks before (forecast_chains)."""
    forecast = np.full(len(future), np.nan)
    stepped = forecast_chains(predict, future, grid)
    forecast[grid[grid >= 0]] = stepped[grid >= 0]
    return forecast


def level_coverage(
    actual: np.ndarray,
    forecast: np.ndarray,
    grid: np.ndarray,
    calibration: dict[str, Any],
    levels: Iterable[float] = DEFAULT_LEVELS,
) -> dict[str, float]:
    """{level: share of actual weeks inside the per-step interval} of recursive forecasts, over all steps."""
    out = {}
    for level in levels:
        inside = total = 0
        for h, step in enumerate(grid):
            rows = step[step >= 0]
            width, _ = half_width(calibration, h + 1, level)
            low, high = interval_bounds(forecast[rows], width, calibration["scale"])
            inside += int(np.sum((actual[rows] >= low) & (actual[rows] <= high)))
            total += len(rows)
        out[level_key(level)] = inside / total if total else float("nan")
    return out


def score(
    actual: np.ndarray,
    forecasts: dict[str, np.ndarray],
    scale: float,
    grid: np.ndarray | None = None,
    interval: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of every method; the model's also with interval coverage, and per step when `grid` is given."""
    out = {}
    for name, predicted in forecasts.items():
        m = metrics(actual, predicted, scale)
        if grid is not None:
            m["wape_by_step"] = [metrics(actual[s[s >= 0]], predicted[s[s >= 0]], scale)["wape"] for s in grid]
        out[name] = m
    if interval is not None:
        low, high = interval_bounds(forecasts["model"], interval["half_width"], interval["scale"])
        out["model"]["coverage"] = float(np.mean((actual >= low) & (actual <= high)))
    return out


def window_fold(
    number: int, history: Dataset, future: Dataset, preset: str, overrides: dict[str, Any] | None, refit: bool
) -> tuple[dict[str, Any], float]:
    """(one window's fold of the report, its model's interval level): trained on `history`, scored on `future`."""
    from .workflow import train_model

    trained = train_model(history, preset, overrides, refit=refit)
    trained_on = rows_and_weeks(history)
    forecast_weeks = future.date_range()
    # A history with weeks comes from data with weeks, and windows_of gives every future rows: it has weeks too.
    if trained_on["weeks"] and trained_on["weeks"][1] >= cast("list[str]", forecast_weeks)[0]:
        raise AssertionError("a backtest model trained on its own window")  # guarded by windows_of
    linear = LinearBaseline(history.X, history.y)
    predictors: dict[str, Predict] = {"model": trained.predict, "naive": naive_forecast, "linear": linear.predict}
    for name, by_series in (("gradient_boosting", False), ("gradient_boosting_by_series", True)):
        boosting = gradient_boosting(history, by_series)
        if boosting is not None:
            predictors[name] = boosting
    scale = naive_scale(history)
    interval = trained.evaluation["interval"]
    one_step = {name: predict(future.X, future.series) for name, predict in predictors.items()}
    grid = chains(future)
    fold: dict[str, Any] = {
        "window": number,
        "origin": forecast_weeks[0] if forecast_weeks else None,
        "trained_on": trained_on,
        "forecast": rows_and_weeks(future),
        "chosen": trained.chosen,
        "validation_wape": {c.name: c.validation["wape"] for c in trained.candidates},
        "one_step": score(future.y, one_step, scale, grid, interval),
        "recursive": None,
    }
    if grid is not None:
        stepped = {name: recursive(predict, future, grid) for name, predict in predictors.items()}
        fold["recursive"] = score(future.y, stepped, scale, grid, interval)
        calibration = trained.evaluation.get("calibration")
        if calibration:
            fold["recursive"]["model"]["coverage_by_level"] = level_coverage(
                future.y, stepped["model"], grid, calibration
            )
    return fold, interval["level"]


def fold_line(fold: dict[str, Any]) -> str:
    one = fold["one_step"]
    return (
        f"window {fold['window']}: one-step WAPE model {one['model']['wape']:.2f}%, naive {one['naive']['wape']:.2f}%, "
        f"linear {one['linear']['wape']:.2f}% ({fold['chosen']})"
    )


def backtest(
    data: Dataset,
    windows: int = BACKTEST_WINDOWS,
    horizon: int = BACKTEST_HORIZON,
    preset: str = "auto",
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    refit: bool = True,
    map_windows: Callable[..., Iterable[tuple[dict[str, Any], float]]] | None = None,
) -> dict[str, Any]:
    """Run the backtest; returns one JSON-ready document. `refit` as for
    train_model: each window's model is made as `demand train` would publish it. `map_windows(window_fold,
    [(history, future), ...], preset, overrides, refit)`: the windows' (fold, interval level) in order, each
    computed elsewhere (a cluster's task); by default one after another here."""
    pairs = windows_of(data, windows, horizon)
    results: list[tuple[dict[str, Any], float]] = []
    if map_windows is None:
        for number, (history, future) in enumerate(pairs, start=1):
            if log:
                log(f"window {number}/{windows}: training on {history.date_range() or f'{len(history)} rows'}")
            results.append(window_fold(number, history, future, preset, overrides, refit))
            if log:
                log(fold_line(results[-1][0]))
    else:  # each window a task of its own (pipeline.cluster)
        for result in map_windows(window_fold, pairs, preset, overrides, refit):
            results.append(result)
            if log:
                log(fold_line(result[0]))
    folds = [fold for fold, _ in results]
    level = results[-1][1]
    return {
        "windows": windows,
        "horizon": horizon,
        "unit": unit_name(data),
        "preset": preset,
        "interval_level": level,
        "folds": folds,
        "average": average(folds),
    }


def average(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over windows of each method's WAPE, MASE, bias (and the model's coverage)."""
    out: dict[str, Any] = {}
    for kind in ("one_step", "recursive"):
        scored = [f[kind] for f in folds if f[kind] is not None]
        if not scored:
            out[kind] = None
            continue
        out[kind] = {}
        for name in scored[0]:
            keys = SUMMARY + (("coverage",) if "coverage" in scored[0][name] else ())
            out[kind][name] = {k: float(np.mean([s[name][k] for s in scored])) for k in keys}
            if "wape_by_step" in scored[0][name]:
                steps = [s[name]["wape_by_step"] for s in scored]
                out[kind][name]["wape_by_step"] = [float(np.mean(v)) for v in zip(*steps)]
            if all("coverage_by_level" in s[name] for s in scored):
                out[kind][name]["coverage_by_level"] = {
                    key: float(np.mean([s[name]["coverage_by_level"][key] for s in scored]))
                    for key in scored[0][name]["coverage_by_level"]
                }
    return out


def format_table(report: dict[str, Any]) -> str:
    """The readable table `demand backtest` prints."""
    methods = list(report["folds"][0]["one_step"])
    lines = [
        f"rolling-origin backtest: {report['windows']} window(s) of {report['horizon']} {report['unit']}, "
        f"preset {report['preset']}, WAPE % (one step ahead / recursive over the window)"
    ]
    widths = [max(20, len(m) + 2) for m in methods]  # a method's name never runs into the next
    lines.append(
        f"  {'window':<26}" + "".join(f"{m:>{w}}" for m, w in zip(methods, widths)) + f"{'coverage':>12}  chosen"
    )
    rows = [(window_label(f["forecast"]), f["one_step"], f["recursive"], f["chosen"]) for f in report["folds"]]
    rows.append(("average", report["average"]["one_step"], report["average"]["recursive"], ""))
    for label, one, rec, chosen in rows:
        pairs = [f"{one[m]['wape']:.2f} / {rec[m]['wape'] if rec else float('nan'):>6.2f}" for m in methods]
        cells = "".join(f"{pair:>{w}}" for pair, w in zip(pairs, widths))
        lines.append(f"  {label[:26]:<26}{cells}{one['model']['coverage']:>11.0%}  {chosen}")
    avg = report["average"]["one_step"]
    lines.append("  average MASE (one step): " + ", ".join(f"{m} {avg[m]['mase']:.3f}" for m in methods))
    lines.append("  average bias (one step, units): " + ", ".join(f"{m} {avg[m]['bias']:.0f}" for m in methods))
    level = report["interval_level"]
    lines.append(f"  coverage: share of actuals inside the model's {level:.0%} interval, one step ahead")
    by_level = (report["average"]["recursive"] or {}).get("model", {}).get("coverage_by_level")
    if by_level:
        lines.append(
            "  recursive coverage over every step, per-step intervals: "
            + ", ".join(f"{float(key):.0%} interval {share:.0%}" for key, share in by_level.items())
        )
    return "\n".join(lines)


def window_label(forecast: dict[str, Any]) -> str:
    """A window's first..last week (Dataset.date_range), or its rows for data without weeks."""
    weeks = forecast["weeks"]
    return f"{weeks[0]}..{weeks[1]}" if weeks else f"{forecast['rows']} rows"


def write_plot(path: str | os.PathLike[str], report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(report["folds"][0]["one_step"])
    fig, (per_window, per_step) = plt.subplots(1, 2, figsize=(14, 5))
    fig.suptitle(f"Rolling-origin backtest: {report['windows']} windows of {report['horizon']} {report['unit']}")
    x = np.arange(len(report["folds"]))
    width = 0.8 / len(methods)
    for i, name in enumerate(methods):
        per_window.bar(x + i * width, [f["one_step"][name]["wape"] for f in report["folds"]], width, label=name)
    per_window.set_xticks(x + 0.4 - width / 2, [str(f["origin"] or f["window"]) for f in report["folds"]], rotation=20)
    per_window.set_title("One step ahead, by window (origin)")
    per_window.set_ylabel("WAPE %")
    per_window.legend()
    recursive_avg = report["average"]["recursive"]
    if recursive_avg:
        steps = np.arange(1, report["horizon"] + 1)
        for name in methods:
            per_step.plot(steps, recursive_avg[name]["wape_by_step"], marker="o", label=name)
        per_step.set_xticks(steps)
    per_step.set_title("Recursive: WAPE by step, mean over windows")
    per_step.set_xlabel("steps ahead (forecast fed back as prev_week_sales)")
    per_step.set_ylabel("WAPE %")
    per_step.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
