"""How much the series' identity is worth: linear regression fitted per series
against the models that see only the three features.

Every series gets its own least-squares fit of units on the three features;
the served model cannot do this, since a request names no series. Same cut
as bench/compare_models.py: the history, then the 13 weeks that follow.

    .venv/bin/python -m bench.tuning.per_series
"""
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression

from bench.compare_models import FOLLOWING_WEEKS
from pipeline.data import load_file

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "bench" / "tuning").glob("*.csv")) + [ROOT / "data" / "demand.csv"]


def wape(y, forecast):
    return 100 * np.abs(y - forecast).sum() / np.abs(y).sum()


def scores(data):
    cut = np.unique(data.week)[-FOLLOWING_WEEKS]
    history, following = data.take(data.week < cut), data.take(data.week >= cut)
    per_series = np.empty(len(following))
    for name in np.unique(following.series):
        fit = LinearRegression().fit(history.X[history.series == name], history.y[history.series == name])
        here = following.series == name
        per_series[here] = fit.predict(following.X[here])
    return {
        "linear": wape(following.y, LinearRegression().fit(history.X, history.y).predict(following.X)),
        "gradient boosting": wape(following.y, HistGradientBoostingRegressor(random_state=0)
                                  .fit(history.X, history.y).predict(following.X)),
        "linear per series": wape(following.y, per_series),
    }


if __name__ == "__main__":
    print("| file | linear | gradient boosting | linear per series |")
    print("|---|---|---|---|")
    for path in FILES:
        s = scores(load_file(path))
        print(f"| {path.name} | {s['linear']:.2f} | {s['gradient boosting']:.2f} | {s['linear per series']:.2f} |")
