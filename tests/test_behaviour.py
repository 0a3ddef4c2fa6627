"""Behaviour of the trained default model: what a demand planner expects of it."""

import numpy as np
import pytest

from pipeline.train import predict_units

pytestmark = pytest.mark.slow  # trains the default model (`auto` on the embedded data)


@pytest.fixture(scope="module")
def forecast(default_model):
    return lambda X: predict_units(default_model.mlp, default_model.stats, np.asarray(X, dtype=float))


@pytest.fixture(scope="module")
def typical_rows(default_split):
    """Training rows of ordinary weeks: no discount, no holiday next."""
    train = default_split.train
    ordinary = (train.X[:, 1] == 0) & (train.X[:, 2] >= 3)
    return train.X[ordinary][:60]


def test_a_deeper_discount_does_not_lower_the_forecast(forecast, typical_rows):
    previous = forecast(typical_rows)
    for discount in range(10, 81, 10):
        rows = typical_rows.copy()
        rows[:, 1] = discount
        current = forecast(rows)
        assert np.all(current >= previous * 0.995), f"a {discount}% discount lowered some forecasts"
        previous = current


def test_discount_lift_saturates(forecast, typical_rows):
    lift = {}
    for discount in (0, 20, 40, 60):
        rows = typical_rows.copy()
        rows[:, 1] = discount
        lift[discount] = np.median(forecast(rows))
    assert lift[20] - lift[0] > lift[60] - lift[40] > 0


def test_an_approaching_holiday_does_not_lower_the_forecast(forecast, typical_rows):
    far, near = typical_rows.copy(), typical_rows.copy()
    far[:, 2], near[:, 2] = 8, 0
    assert np.all(forecast(near) >= forecast(far) * 0.995)
    assert np.median(forecast(near) / forecast(far)) > 1.05


def test_more_sales_last_week_means_more_forecast(forecast, typical_rows):
    more = typical_rows.copy()
    more[:, 0] *= 1.5
    assert np.all(forecast(more) > forecast(typical_rows))


def test_forecasts_are_never_negative(forecast, default_split):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.uniform(0, 500_000, 2000), rng.uniform(0, 100, 2000), rng.uniform(0, 52, 2000)])
    assert np.all(forecast(rows) >= 0)


def test_the_absolute_loss_aims_at_the_typical_week_not_the_mean_pulled_by_bulk_orders():
    """One week in ten a bulk order sells ten times as much. Trained on the
    squared error, a network forecasts near the mean of all weeks; on the
    absolute error (the -mae candidates), near the typical week."""
    from pipeline.data import Dataset
    from pipeline.presets import CANDIDATES
    from pipeline.train import fit

    rng = np.random.default_rng(0)
    n = 600
    X = np.column_stack([rng.uniform(90, 110, n), rng.integers(0, 30, n), rng.integers(0, 20, n)]).astype(float)
    y = 100 + rng.normal(0, 2, n)
    y[rng.random(n) < 0.1] *= 10
    data = Dataset(X, y)
    typical = {}
    for name in ("raw-small-full", "raw-small-full-mae"):
        config = CANDIDATES[name].with_overrides(epochs=400, patience=0, device="cpu")
        result = fit(data, None, config)
        typical[name] = float(np.median(predict_units(result.mlp, result.stats, X)))
    assert abs(typical["raw-small-full-mae"] - 100) < 10, typical
    assert typical["raw-small-full"] > 150, typical  # the mean of the weeks is about 190
