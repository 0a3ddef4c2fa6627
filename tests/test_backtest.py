"""Rolling-origin backtest: windows, recursion, baselines, output."""

import json

import numpy as np
import pytest

from pipeline.backtest import backtest, chains, recursive, windows_of
from pipeline.cli import main
from pipeline.data import Dataset, load_file
from pipeline.registry import Registry

from .conftest import FAST

pytestmark = pytest.mark.slow  # trains a model before each origin

QUICK = dict(device="cpu", **FAST)


@pytest.fixture(scope="module")
def report(small_csv):
    return backtest(load_file(small_csv), windows=3, horizon=4, preset="log-large-batch", overrides=QUICK)


def test_no_window_model_saw_its_own_window(report, small_csv):
    data = load_file(small_csv)
    weeks = np.unique(data.week)
    assert len(report["folds"]) == 3
    for fold, later in zip(report["folds"], report["folds"][1:] + [None]):
        first, last = fold["forecast"]["weeks"]
        assert fold["trained_on"]["weeks"][1] < first  # asserted by dates
        assert np.datetime64(fold["trained_on"]["weeks"][1]) == weeks[np.searchsorted(weeks, np.datetime64(first)) - 1]
        assert fold["forecast"]["rows"] == 4 * 3  # 4 weeks of 3 series
        if later:
            assert later["forecast"]["weeks"][0] > last  # windows follow each other without overlap
    assert report["folds"][-1]["forecast"]["weeks"][1] == data.date_range()[1]


def test_every_method_is_scored_one_step_and_recursively(report):
    for fold in report["folds"]:
        for kind in ("one_step", "recursive"):
            # Gradient boosting also with the series as an input, as the model has them.
            assert set(fold[kind]) == {"model", "naive", "linear", "gradient_boosting", "gradient_boosting_by_series"}
            for scores in fold[kind].values():
                assert {"wape", "mase", "bias"} <= set(scores)
            assert 0 <= fold[kind]["model"]["coverage"] <= 1
        recursive_steps, one_steps = (
            fold["recursive"]["model"]["wape_by_step"],
            fold["one_step"]["model"]["wape_by_step"],
        )
        assert len(recursive_steps) == len(one_steps) == 4
        # Step 1 of the recursion is a one-step forecast; later steps feed forecasts back.
        assert recursive_steps[0] == pytest.approx(one_steps[0], rel=1e-4)  # float32, other batch shapes
        assert recursive_steps[1:] != pytest.approx(one_steps[1:], rel=1e-4)
    average = report["average"]["one_step"]["model"]["wape"]
    assert average == pytest.approx(np.mean([f["one_step"]["model"]["wape"] for f in report["folds"]]))


def test_recursion_feeds_each_series_its_own_forecast():
    # Two series, three weeks; the "model" adds 10 to prev_week_sales.
    week = np.array(
        ["2024-01-01", "2024-01-01", "2024-01-08", "2024-01-08", "2024-01-15", "2024-01-15"], dtype="datetime64[D]"
    )
    series = np.array(["a", "b", "a", "b", "a", "b"])
    X = np.array([[100, 0, 3], [500, 0, 3], [999, 0, 2], [999, 0, 2], [999, 0, 1], [999, 0, 1]], dtype=float)
    future = Dataset(X, np.zeros(6), week, series)
    grid = chains(future)
    named = []
    forecast = recursive(lambda rows, names: named.append(names.tolist()) or rows[:, 0] + 10, future, grid)
    np.testing.assert_array_equal(forecast, [110, 510, 120, 520, 130, 530])
    assert named == [["a", "b"]] * 3  # each row forecast as its own series
    naive = recursive(lambda rows, names: rows[:, 0], future, grid)
    np.testing.assert_array_equal(naive, [100, 500, 100, 500, 100, 500])  # persistence stays flat


def test_a_backtest_needs_enough_weeks_before_the_first_origin(small_csv):
    data = load_file(small_csv)  # 60 weeks
    assert len(windows_of(data, 4, 12)) == 4
    with pytest.raises(Exception, match="at least 72 weeks"):
        windows_of(data, 5, 12)


def test_backtest_command_prints_a_table_json_and_a_plot(runner, small_csv, tmp_path):
    plot = tmp_path / "bt.png"
    args = [
        "backtest",
        "--data",
        str(small_csv),
        "--windows",
        "2",
        "--horizon",
        "3",
        "--preset",
        "log-small-full",
        "--epochs",
        "40",
        "--plot",
        str(plot),
    ]
    table = runner.invoke(main, args)
    assert table.exit_code == 0, table.output
    assert "average" in table.stdout and "gradient_boosting" in table.stdout and "coverage" in table.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads(runner.invoke(main, [*args, "--json"]).stdout)
    assert document["windows"] == 2 and document["horizon"] == 3 and len(document["folds"]) == 2
    # Each method's name stands apart in the header, and a window reads first..last week.
    header = table.stdout.splitlines()[1].split()
    assert header == ["window", *document["folds"][0]["one_step"], "coverage", "chosen"]
    first, last = document["folds"][0]["forecast"]["weeks"]
    assert table.stdout.splitlines()[2].split()[0] == f"{first}..{last}"


def test_train_can_store_a_backtest_in_the_card(runner, small_csv, model_dir):
    result = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(small_csv),
            "--model-dir",
            str(model_dir),
            "--preset",
            "log-small-full",
            "--epochs",
            "40",
            "--backtest",
            "2",
            "--horizon",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    registry = Registry(model_dir)
    card = registry.card("v1")
    assert len(card["backtest"]["folds"]) == 2
    assert (registry.path("v1") / "backtest.png").stat().st_size > 0


@pytest.mark.parametrize("plot, message", [("nodir/bt.png", "no folder nodir"), ("bt.txt", "the figure is written as")])
def test_a_plot_path_that_cannot_be_written_is_refused_before_the_trainings(
    runner, small_csv, tmp_path, monkeypatch, plot, message
):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["backtest", "--data", str(small_csv), "--plot", plot])
    assert result.exit_code == 2 and message in result.stderr and "window 1" not in result.stderr


def test_train_no_refit_backtests_models_that_are_not_refit(small_csv, monkeypatch):
    """The card's backtest measures what train publishes, refit or not."""
    from pipeline import workflow
    from pipeline.backtest import backtest

    refits = []
    real = workflow.train_model
    monkeypatch.setattr(workflow, "train_model", lambda *a, **k: refits.append(k.get("refit", True)) or real(*a, **k))
    backtest(load_file(small_csv), 2, 3, "log-small-full", {"epochs": 5}, refit=False)
    backtest(load_file(small_csv), 1, 3, "log-small-full", {"epochs": 5})
    assert refits == [False, False, True]
