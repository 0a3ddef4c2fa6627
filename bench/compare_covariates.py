"""Held-out comparison on data with history, calendar and declared covariates.

Each data set is cut so that its last 13 weeks are the "following weeks"; every
method is fitted on the history before them only, and scored as WAPE %
(sum |error| / sum |actual| * 100) two ways, every forecast held at zero units
or more (as the forecaster's own are):

* one step ahead: each following week is forecast from the real sales of the
  weeks before it, as a batch scorer would (features computed from actuals);
* recursive 8 weeks: from the end of the history, 8 weeks ahead with the known
  covariates of those weeks, each forecast fed back as the next week's sales.

Methods: naive (last week's sales; recursively, the last history week repeated),
seasonal naive (the same week a year earlier), linear regression and
scikit-learn's HistGradientBoostingRegressor on every column of the file except
the date (text columns one-hot for the linear model, category codes for the
boosted trees) plus the previous week's sales, and Nixtla mlforecast + LightGBM set
up as a data scientist would: lags 1-4 and 52, 4- and 13-week rolling means of lag
1, ISO week of year, the file's per-week columns as known-in-advance exogenous
features and the per-series columns declared as static_features, and
LGBMRegressor(verbosity=-1, random_state=0) otherwise at its defaults.

mlforecast one step ahead: fitted once on the history; the following weeks'
features are computed by `MLForecast.preprocess` on history + following weeks
(actuals only, dropna=False) and the fitted LightGBM model predicts those rows.
mlforecast recursive: `predict(h=8, X_df=<the following weeks' covariates>)`.

    pip install -e '.[train,test,bench]'        # scikit-learn comes with `test`
    python -m bench.compare_covariates          # markdown table on stdout, progress on stderr

Add a data set by appending a Spec to DATASETS (or passing a list to `compare`).
Every column of a file other than the date and the target is an input of the
linear and boosted baselines, so a file's own previous-week-sales column would hand
them the actual sales in the recursive scoring: leave such a column out first.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
FOLLOWING_WEEKS = 13  # a quarter
RECURSIVE_WEEKS = 8


@dataclass(frozen=True)
class Spec:
    """How to read one file: which column is which."""

    name: str
    path: Path
    time: str
    series: str
    target: str
    dynamic: tuple = ()  # per-week covariates, known in advance
    static: tuple = ()  # constant per series


DATASETS = [
    Spec(
        "retail: price, display, temperature, 16 stores",
        ROOT / "tests/fixtures/outsample/retail_covariates.csv",
        "date",
        "store",
        "sales",
        ("price", "display", "temperature"),
        ("store_size", "category"),
    ),
    Spec(
        "grocery: promotions, feature ads, 20 items",
        ROOT / "tests/fixtures/outsample/grocery_promos.csv",
        "week",
        "item",
        "units",
        ("discount_fraction", "weeks_to_next_holidays", "feature_ad", "shelf_price"),
    ),
]


def load(spec):
    """The file as a frame sorted by series then week; text columns as pandas categories."""
    df = pd.read_csv(spec.path, parse_dates=[spec.time])
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].astype("category")
    return df.sort_values([spec.series, spec.time], kind="stable").reset_index(drop=True)


def split(df, spec, following=FOLLOWING_WEEKS):
    cut = np.sort(df[spec.time].unique())[-following]
    return df[df[spec.time] < cut].reset_index(drop=True), df[df[spec.time] >= cut].reset_index(drop=True)


def wape(actual, forecast):
    actual, forecast = np.asarray(actual, float), np.asarray(forecast, float)
    return float(np.abs(forecast - actual).sum() / np.abs(actual).sum() * 100)


def with_lag(df, spec, lags=(1,)):
    """df plus sales `lag` weeks earlier of the same series (NaN before its first week)."""
    by_series = df.groupby(spec.series, observed=True)[spec.target]
    return df.assign(**{f"lag{k}": by_series.shift(k) for k in lags})


# ------------------------------------------------------------------ baselines
def following_with_lags(history, following, spec, lags=(1,)):
    """`following` (same index) plus lagged actual sales, reaching back into the history."""
    full = with_lag(pd.concat([history, following], ignore_index=True), spec, lags)
    return full.iloc[len(history) :].set_axis(following.index)


def naive(history, following, spec):
    one = following_with_lags(history, following, spec, (1, 52))
    last = history.groupby(spec.series, observed=True)[spec.target].last()
    head = first_weeks(following, spec)
    return {
        "naive": (one["lag1"].to_numpy(), head[spec.series].map(last).to_numpy(float)),
        "seasonal naive": (one["lag52"].to_numpy(), one.loc[head.index, "lag52"].to_numpy()),
    }


def first_weeks(following, spec, weeks=RECURSIVE_WEEKS):
    return following[following[spec.time] < np.sort(following[spec.time].unique())[weeks]]


def design(df, spec, one_hot):
    """Every column of the file except the date and the target, plus lag1."""
    x = df.drop(columns=[spec.time, spec.target])
    return pd.get_dummies(x, dtype=float) if one_hot else x.apply(lambda c: c.cat.codes if c.dtype == "category" else c)


def regressions(history, following, spec):
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    train = with_lag(history, spec).dropna(subset=["lag1"])
    one = following_with_lags(history, following, spec)
    head = first_weeks(following, spec)
    weeks = np.sort(head[spec.time].unique())
    last = history.groupby(spec.series, observed=True)[spec.target].last()
    codes = design(train, spec, False)
    trees = HistGradientBoostingRegressor(
        random_state=0, categorical_features=[train[c].dtype == "category" for c in codes.columns]
    )
    out = {}
    for label, model, one_hot in (("linear", LinearRegression(), True), ("gradient boosting", trees, False)):
        model.fit(design(train, spec, one_hot), train[spec.target])
        step = model.predict(design(one, spec, one_hot))
        rec = pd.Series(np.nan, index=head.index)
        prev = last
        for week in weeks:  # feed each forecast back as the next week's lag1
            rows = head[head[spec.time] == week]
            pred = np.maximum(
                model.predict(design(rows.assign(lag1=rows[spec.series].map(prev).astype(float)), spec, one_hot)), 0.0
            )
            rec[rows.index] = pred
            prev = pd.Series(pred, index=rows[spec.series].to_numpy())
        out[label] = (step, rec.to_numpy())
    return out


# ---------------------------------------------------------------- mlforecast
def mlforecast_lgbm(history, following, spec, lags=(1, 2, 3, 4, 52), exogenous=True, **lgbm):
    """{label: (one-step forecasts, recursive forecasts)}; lags/exogenous for ablations."""
    from lightgbm import LGBMRegressor
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean

    cols = {spec.series: "unique_id", spec.time: "ds", spec.target: "y"}
    keep = ["unique_id", "ds", "y", *(spec.dynamic if exogenous else ()), *spec.static]

    def nixtla(df):
        return df.rename(columns=cols)[keep]

    def make():
        return MLForecast(
            models={"lgbm": LGBMRegressor(verbosity=-1, random_state=0, **lgbm)},
            freq="W-MON",
            lags=list(lags),
            lag_transforms={1: [RollingMean(4), RollingMean(13)]},
            date_features=["week"],
        )

    fcst = make().fit(nixtla(history), static_features=list(spec.static))
    model = fcst.models_["lgbm"]
    feats = make().preprocess(
        nixtla(pd.concat([history, following], ignore_index=True)), static_features=list(spec.static), dropna=False
    )
    feats = feats[feats["ds"] >= following[spec.time].min()]
    feats = feats.assign(lgbm=model.predict(feats[fcst.ts.features_order_]))
    head = first_weeks(following, spec)
    x_df = nixtla(head)[["unique_id", "ds", *(spec.dynamic if exogenous else ())]]
    rec = fcst.predict(RECURSIVE_WEEKS, X_df=x_df if exogenous and spec.dynamic else None)

    def aligned(rows, pred):  # forecasts in the order of `rows`
        keys = rows.rename(columns=cols)[["unique_id", "ds"]]
        return keys.merge(pred[["unique_id", "ds", "lgbm"]], on=["unique_id", "ds"], how="left")["lgbm"].to_numpy()

    return {"mlforecast LightGBM": (aligned(following, feats), aligned(head, rec))}


# ---------------------------------------------------------- the forecaster
def ours(history, following, spec):
    """`demand train`'s default (`auto`) with history, calendar and the file's covariates,
    trained on the history; one step ahead on `following` from the tails it published, as
    `demand predict` scores a file of later weeks; recursively over the first weeks as a
    plan is forecast, each week's forecast feeding the next week's lags and means
    (pipeline.backtest.forecast_chains). A category column is a static covariate of one
    column per value."""
    import tempfile

    from pipeline.backtest import chains, recursive
    from pipeline.bundle import tails_from_document
    from pipeline.data import load_file
    from pipeline.features import FeatureSpec
    from pipeline.publish import tails_document
    from pipeline.workflow import train_model

    features = FeatureSpec(
        known=tuple(spec.dynamic),
        static=tuple(spec.static),
        history=True,
        calendar=True,
        series_column=spec.series,
        week_column=spec.time,
        target_column=spec.target,
    )
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / "history.csv", Path(folder) / "following.csv"]
        for frame, path in zip((history, following), paths):
            frame.assign(**{spec.time: frame[spec.time].dt.strftime("%Y-%m-%d")}).to_csv(path, index=False)
        data = load_file(paths[0], spec=features)
        trained = train_model(data, "auto", {"device": "cpu", "seed": 0})
        tails = tails_from_document(tails_document(data))
        later = load_file(paths[1], spec=features, tails=tails)
    head = later.take(np.flatnonzero(later.week < np.sort(np.unique(later.week))[RECURSIVE_WEEKS]))
    stepped = recursive(trained.predict, head, chains(head))
    return {"default": (np.maximum(trained.predict(later.X, later.series), 0.0), np.maximum(stepped, 0.0))}


OURS = ("default", "chapter preset")
METHODS = ("naive", "seasonal naive", "linear", "gradient boosting", "mlforecast LightGBM", *OURS)


def evaluate(spec, log=None):
    """{method: (one-step WAPE %, recursive WAPE %)}; None where a method is not available."""
    history, following = split(load(spec), spec)
    actual = following[spec.target].to_numpy(float)
    actual_rec = first_weeks(following, spec)[spec.target].to_numpy(float)
    forecasts = {}
    for method in (naive, regressions, mlforecast_lgbm, ours):
        start = time.perf_counter()
        try:
            forecasts.update(method(history, following, spec))
        except NotImplementedError:
            pass
        if log:
            log(f"{spec.name}: {method.__name__} {time.perf_counter() - start:.1f} s")

    def scored(actual, forecast):
        return None if forecast is None else wape(actual, np.maximum(forecast, 0))

    return {
        m: (scored(actual, forecasts[m][0]), scored(actual_rec, forecasts[m][1])) if m in forecasts else None
        for m in METHODS
    }


def compare(datasets=DATASETS, log=None):
    """The markdown table. One OpenMP thread: the sets are small, and a busy two-core
    machine made scikit-learn's and LightGBM's thread teams a hundred times slower."""
    import lightgbm  # noqa: F401  (loaded now, so that the thread limit reaches its OpenMP)
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _table(datasets, log)


def _table(datasets, log):
    lines = ["| data | scoring | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for spec in datasets:
        scores = evaluate(spec, log)
        for i, scoring in enumerate(("one step ahead, 13 weeks", f"recursive {RECURSIVE_WEEKS} weeks")):
            cells = ["n/a" if scores[m] is None or scores[m][i] is None else f"{scores[m][i]:.2f}" for m in METHODS]
            lines.append(f"| {spec.name} | {scoring} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.perf_counter()
    print(compare(log=lambda line: print(line, file=sys.stderr)))
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
