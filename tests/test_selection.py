"""Model selection, refit and what the card says about them."""

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.data import load_file
from pipeline.evaluate import conformal_half_width
from pipeline.presets import CANDIDATES, ENSEMBLE_SIZE
from pipeline.registry import Registry
from pipeline.train import predict_units
from pipeline.workflow import train_model

from .conftest import FAST, write_rows

pytestmark = pytest.mark.slow  # trains and selects candidates


@pytest.fixture(scope="module")
def small_data(small_csv):
    return load_file(small_csv)


@pytest.fixture(scope="module")
def trained(small_data):
    return train_model(small_data, "auto", dict(device="cpu", **FAST))


def wape(actual, forecast):
    return 100 * np.abs(forecast - actual).sum() / actual.sum()


def test_auto_tries_every_candidate_and_averages_the_best_on_the_winners_scale(trained, small_data):
    assert [c.name for c in trained.candidates] == list(CANDIDATES)
    by_name = {c.name: c for c in trained.candidates}
    scores = {name: c.validation["wape"] for name, c in by_name.items()}
    # Candidates really differ: the scale, the size and the schedule each change the score.
    assert len(set(scores.values())) == len(scores)
    best = min(scores, key=scores.get)
    scale = by_name[best].result.config.transform
    same_scale = sorted((n for n in scores if by_name[n].result.config.transform == scale), key=scores.get)
    assert trained.members == same_scale[:ENSEMBLE_SIZE] and trained.members[0] == best
    # Each score is that candidate's own WAPE on the validation window, in units.
    split = trained.split
    forecasts = {
        n: predict_units(by_name[n].result.mlp, by_name[n].result.stats, split.validation.X, split.validation.series)
        for n in trained.members
    }
    for name, forecast in forecasts.items():
        assert scores[name] == pytest.approx(wape(split.validation.y, forecast))
    # The evaluated model is exactly the mean of its members on the scale they learn on
    # (for log-scale members, the geometric mean of their forecasts in units).
    stats = trained.evaluated.stats
    assert all(by_name[n].result.stats == stats for n in trained.members)
    mean = stats.denormalize_y(np.mean([stats.normalize_y(f) for f in forecasts.values()], axis=0))
    evaluated = predict_units(trained.evaluated.mlp, stats, split.validation.X, split.validation.series)
    np.testing.assert_allclose(evaluated, mean, rtol=1e-4)
    assert trained.evaluation["validation"]["model"]["wape"] == pytest.approx(wape(split.validation.y, mean), rel=1e-4)


def test_the_published_model_is_refit_on_every_row_holdout_included(trained, small_data):
    split = trained.split
    assert trained.refit
    by_name = {c.name: c for c in trained.candidates}
    # Each member again for the epochs chosen on validation, with nothing to stop early on.
    assert [c.epochs for c in trained.published.member_configs] == [
        by_name[n].result.kept_epoch for n in trained.members
    ]
    assert not trained.published.validation_loss
    # Its normalization was fitted on every row, so its training range includes the holdout's.
    assert trained.published.stats.raw_x_max == tuple(small_data.X.max(axis=0))
    described = trained.describe()
    assert described["trained_on"]["epochs"] == {n: by_name[n].result.kept_epoch for n in trained.members}
    assert described["trained_on"]["rows"] == len(small_data)
    assert described["trained_on"]["weeks"][1] == split.holdout.date_range()[1] == small_data.date_range()[1]
    # The figures come from the other model, which never saw the holdout.
    evaluated = described["evaluated_model"]
    assert evaluated["trained_on"]["weeks"][1] < evaluated["scored_on"]["weeks"][0]
    assert evaluated["scored_on"] == {"rows": len(split.holdout), "weeks": split.holdout.date_range()}
    refit_forecast = trained.predict(split.holdout.X)
    evaluated_forecast = predict_units(trained.evaluated.mlp, trained.evaluated.stats, split.holdout.X)
    assert not np.allclose(refit_forecast, evaluated_forecast)


def test_the_interval_is_calibrated_on_validation_residuals_of_the_evaluated_model(trained):
    split = trained.split
    forecast = predict_units(
        trained.evaluated.mlp, trained.evaluated.stats, split.validation.X, split.validation.series
    )
    interval = trained.evaluation["interval"]
    assert interval["half_width"] == conformal_half_width(split.validation.y, forecast, 0.9, interval["scale"])


def test_no_refit_publishes_the_evaluated_model(small_data):
    trained = train_model(small_data, "log-small-full", dict(device="cpu", **FAST), refit=False)
    assert trained.published is trained.evaluated and not trained.refit
    assert trained.describe()["trained_on"]["weeks"] == trained.split.train.date_range()
    assert [c.name for c in trained.candidates] == trained.members == ["log-small-full"]


def test_train_publishes_the_refit_and_checks_its_export(runner, small_csv, model_dir):
    from pipeline.bundle import Bundle

    result = runner.invoke(main, ["train", "--data", str(small_csv), "--model-dir", str(model_dir), "--epochs", "40"])
    assert result.exit_code == 0, result.output
    # The candidates' table is printed, the chosen one marked.
    assert all(name in result.stdout for name in CANDIDATES) and "refit on every row" in result.stdout
    registry = Registry(model_dir)
    card = registry.card("v1")
    assert card["selection"]["preset"] == "auto" and len(card["selection"]["candidates"]) == len(CANDIDATES)
    best = min(card["selection"]["candidates"], key=lambda c: c["validation_wape"])
    assert card["selection"]["members"][0] == best["name"] and len(card["selection"]["members"]) == ENSEMBLE_SIZE
    assert card["model"]["hidden"] == [
        sum(s) for s in zip(*(CANDIDATES[n].hidden for n in card["selection"]["members"]))
    ]
    assert card["trained_on"]["refit"] is True
    assert card["trained_on"]["weeks"][1] == card["data"]["splits"]["holdout"]["weeks"][1]
    assert card["evaluated_model"]["trained_on"]["weeks"] == card["data"]["splits"]["train"]["weeks"]
    # The ONNX file is the published model: the saved torch weights give the same forecasts.
    import torch

    from pipeline.model import DemandMLP
    from pipeline.normalize import MinMaxStats

    saved = torch.load(registry.path("v1") / "model.pt")
    mlp = DemandMLP(**saved["model_args"])  # the checkpoint says what network it holds
    mlp.load_state_dict(saved["state_dict"])
    stats = MinMaxStats.from_json(saved["normalization"])
    data = load_file(small_csv)
    X = data.X
    assert mlp.n_series == len(stats.series) == len(np.unique(data.series))
    onnx_forecast = Bundle.load(registry, "v1", provider="cpu").forecast(X, series=data.series)["units_sold"]
    np.testing.assert_allclose(onnx_forecast, predict_units(mlp.eval(), stats, X, data.series), rtol=1e-4)
    assert stats.raw_x_max == tuple(X.max(axis=0))  # trained on every row
    assert card["export"]["parity_max_relative_error"] <= 1e-5


def test_chapter_preset_is_one_candidate_and_still_the_chapter(runner, small_csv, model_dir):
    result = runner.invoke(
        main, ["train", "--data", str(small_csv), "--model-dir", str(model_dir), "--preset", "chapter", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [c["name"] for c in document["selection"]["candidates"]] == ["chapter"]
    params = Registry(model_dir).card("v1")["params"]
    assert (params["hidden"], params["activation"], params["optimizer"], params["lr"], params["momentum"]) == (
        [10, 5],
        "sigmoid",
        "sgd",
        0.2,
        0.9,
    )
    assert document["trained_on"]["refit"] is True


def test_a_history_too_short_names_the_minimum_number_of_weeks(runner, tmp_path, model_dir):
    rows = [(100 + i, 0, 3, 110 + i, f"2024-01-{1 + i:02d}") for i in range(9)]
    path = write_rows(tmp_path / "short.csv", rows)
    result = runner.invoke(main, ["train", "--data", str(path), "--model-dir", str(model_dir)])
    assert result.exit_code == 1
    assert "9 weeks are too few" in result.stderr and "at least 12 weeks" in result.stderr
    assert "Traceback" not in result.output
    backtest = runner.invoke(main, ["backtest", "--data", str(path), "--windows", "3", "--horizon", "2"])
    assert backtest.exit_code == 1 and "at least 18 weeks" in backtest.stderr


def test_constant_columns_and_series_that_never_sell_are_reported_not_fatal(runner, tmp_path, model_dir):
    rows = []
    for week in range(40):
        day = f"{2023 + week // 52}-{1 + (week % 52) // 5:02d}-{1 + (week % 5) * 5:02d}"
        for series, size in (("big", 500), ("small", 40), ("dead", 0)):
            prev = size + (week * 7) % 23 if size else 0
            rows.append((prev, 0, 2, prev + (week * 5) % 11 if size else 0, day, series))
    path = write_rows(
        tmp_path / "odd.csv",
        rows,
        header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays", "units_sold", "week", "series"),
    )
    result = runner.invoke(
        main, ["train", "--data", str(path), "--model-dir", str(model_dir), "--epochs", "30", "--json"]
    )
    assert result.exit_code == 0, result.output
    findings = json.loads(result.stdout)["data_findings"]
    assert findings["constant_columns"] == ["discount_fraction", "weeks_to_next_holidays"]
    assert findings["all_zero_series"] == ["dead"]
    assert Registry(model_dir).card("v1")["data_findings"] == findings
