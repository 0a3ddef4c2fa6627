"""How much the series' identity is worth: linear regression fitted per series
against the baselines that see only the three features.

Every series gets its own least-squares fit of units on the three features.
This is what first showed that the series were worth naming in a request
(the default now learns them: README, "Series"). Same cut as
bench/compare_models.py: the history, then the 13 weeks that follow.

    .venv/bin/python -m bench.tuning.per_series
"""
from pathlib import Path

import numpy as np

from bench.compare_models import FOLLOWING_WEEKS
from pipeline.backtest import gradient_boosting, windows_of
from pipeline.data import load_file
from pipeline.evaluate import LinearBaseline, metrics

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "bench" / "tuning").glob("*.csv")) + [ROOT / "data" / "demand.csv"]


def scores(data):
    [(history, following)] = windows_of(data, 1, FOLLOWING_WEEKS)
    per_series = np.empty(len(following))
    for name in np.unique(following.series):
        own = history.series == name
        here = following.series == name
        per_series[here] = LinearBaseline(history.X[own], history.y[own]).predict(following.X[here])
    forecasts = {
        "linear": LinearBaseline(history.X, history.y).predict(following.X),
        "gradient boosting": gradient_boosting(history)(following.X),
        "linear per series": per_series,
    }
    return {name: metrics(following.y, forecast, naive_scale=1.0)["wape"] for name, forecast in forecasts.items()}


if __name__ == "__main__":
    print("| file | linear | gradient boosting | linear per series |")
    print("|---|---|---|---|")
    for path in FILES:
        s = scores(load_file(path))
        print(f"| {path.name} | {s['linear']:.2f} | {s['gradient boosting']:.2f} | {s['linear per series']:.2f} |")
