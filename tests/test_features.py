"""The feature spec: history, calendar and declared covariates, computed alike in every path."""

import json

import numpy as np
import pyarrow.csv as pa_csv
import pytest

from pipeline.data import load_file
from pipeline.errors import DataError
from pipeline.features import (
    CHAPTER,
    HISTORY,
    HISTORY_LAGS,
    ROLLING_MEANS,
    WINDOW_WEEKS,
    FeatureSpec,
    SeriesWeeks,
    calendar_columns,
    feature_matrix,
    history_columns,
)
from pipeline.schema import FEATURES, SERIES_COLUMN, TIME_COLUMN

from .conftest import DEFAULT_CSV, FAST, invoke

HISTORY_SPEC = FeatureSpec(history=True, calendar=True)


def weekly_rows(series=("a", "b"), weeks=70, seed=0, start="2023-01-02"):
    """{column: array} of consecutive weeks per series, with sales and a price."""
    rng = np.random.default_rng(seed)
    week = np.repeat(np.datetime64(start) + 7 * np.arange(weeks), len(series)).astype("datetime64[D]")
    names = np.tile(np.array(series), weeks)
    return {
        TIME_COLUMN: week,
        SERIES_COLUMN: names,
        "discount_fraction": rng.integers(0, 60, len(week)).astype(float),
        "weeks_to_next_holidays": rng.integers(0, 10, len(week)).astype(float),
        "units_sold": rng.integers(100, 1000, len(week)).astype(float),
    }


def test_the_chapter_spec_is_the_three_inputs():
    assert CHAPTER.names == FEATURES and CHAPTER.is_chapter
    assert HISTORY_SPEC.names[: len(FEATURES)] == FEATURES
    assert not HISTORY_SPEC.is_chapter
    assert FeatureSpec.from_json(json.loads(json.dumps(HISTORY_SPEC.to_json()))) == HISTORY_SPEC


def test_no_feature_of_a_row_reads_its_own_week_or_later():
    """Changing one week's sales moves only the features of that series' later weeks."""
    columns = weekly_rows(weeks=100)
    sales = columns["units_sold"]
    before = feature_matrix(HISTORY_SPEC, columns, sales).X
    changed = sales.copy()
    row = 40 * 2  # series "a", week 40
    changed[row] *= 10
    after = feature_matrix(HISTORY_SPEC, columns, changed).X
    same = (before == after) | (np.isnan(before) & np.isnan(after))
    moved = np.flatnonzero(~same.all(axis=1))
    assert len(moved) and all(columns[SERIES_COLUMN][moved] == "a")
    assert columns[TIME_COLUMN][moved].min() > columns[TIME_COLUMN][row]
    # ... and exactly those the lags and means reach: weeks 41..40 + 52
    assert columns[TIME_COLUMN][moved].max() == columns[TIME_COLUMN][row] + 7 * max(HISTORY_LAGS)


def test_lags_and_means_are_the_weeks_before():
    columns = weekly_rows(series=("a",), weeks=60)
    sales = columns["units_sold"]
    X = feature_matrix(HISTORY_SPEC, columns, sales).X
    names = HISTORY_SPEC.names
    t = 55
    assert X[t, names.index("prev_week_sales")] == sales[t - 1]
    for lag in HISTORY_LAGS:
        assert X[t, names.index(f"sales_lag_{lag}")] == sales[t - lag]
    for weeks in ROLLING_MEANS:
        assert X[t, names.index(f"sales_mean_{weeks}")] == pytest.approx(sales[t - weeks : t].mean())


def test_a_short_history_is_filled_from_what_it_has_and_says_so():
    window = np.full((3, WINDOW_WEEKS), np.nan)
    window[1, -3:] = [10.0, 20.0, 30.0]  # three weeks
    window[2, :] = np.arange(WINDOW_WEEKS)  # a full window
    history, filled = history_columns(window, last_week=np.array([7.0, np.nan, np.nan]))
    # No week at all but last week's sales given: every history feature is last week's sales.
    assert (history[0] == 7.0).all() and filled[0].all()
    lag = {k: HISTORY.index(f"sales_lag_{k}") for k in HISTORY_LAGS}
    mean = {w: HISTORY.index(f"sales_mean_{w}") for w in ROLLING_MEANS}
    assert history[1, lag[2]] == 20 and history[1, lag[3]] == 10 and history[1, lag[4]] == 10  # the oldest week
    assert history[1, mean[4]] == pytest.approx(20.0) and filled[1, mean[4]] and not filled[1, lag[2]]
    assert not filled[2].any()


def test_a_window_built_week_by_week_gives_the_training_rows_features():
    """The plan path (a window the forecasts are appended to) and the training
    path (every row's window from one matrix) agree feature by feature."""
    columns = weekly_rows(series=("a", "b", "c"), weeks=80, seed=2)
    sales = columns["units_sold"]
    X = feature_matrix(HISTORY_SPEC, columns, sales).X
    history_at = slice(len(FEATURES), len(FEATURES) + len(HISTORY))
    for s in ("a", "c"):
        own = np.flatnonzero(columns[SERIES_COLUMN] == s)
        for t in (1, 5, 30, 79):
            window = np.full(WINDOW_WEEKS, np.nan)
            past = sales[own[:t]][-WINDOW_WEEKS:]
            window[WINDOW_WEEKS - len(past) :] = past
            history, _ = history_columns(window[None, :])
            np.testing.assert_array_equal(history[0], X[own[t], history_at])


def test_a_window_read_in_place_gives_the_flat_reading_to_the_last_bit():
    """history_columns (a plan's windows, read as a view) and history_at (a file's windows, read at flat
    positions) are two readings of one definition: every feature and flag the same, every depth of history."""
    from pipeline.features import history_at

    rng = np.random.default_rng(5)
    n, extra = 400, 9
    weekly = rng.gamma(2.0, 300.0, (n, WINDOW_WEEKS + extra)) * 10.0 ** rng.integers(-3, 6, (n, 1))
    depth = rng.integers(0, WINDOW_WEEKS + extra + 1, n)  # weeks each series has, the latest ones
    weekly[np.arange(WINDOW_WEEKS + extra)[None, :] < (WINDOW_WEEKS + extra - depth)[:, None]] = np.nan
    last_week = np.where(rng.random(n) < 0.5, rng.gamma(2.0, 300.0, n), np.nan)
    for h in (0, 4, extra):
        view = weekly[:, h : WINDOW_WEEKS + h]
        at = np.arange(n) * weekly.shape[1] + WINDOW_WEEKS + h
        flat, flat_filled = history_at(weekly.ravel(), at, last_week)
        read, read_filled = history_columns(view, last_week)
        np.testing.assert_array_equal(read, flat)
        np.testing.assert_array_equal(read_filled, flat_filled)
        assert read_filled.any() and not read_filled.all()


def test_skipped_weeks_carry_the_last_known_sales():
    weeks = np.array(["2024-01-01", "2024-01-08", "2024-01-29"], dtype="datetime64[D]")
    layout = SeriesWeeks.of(weeks, np.array(["a", "a", "a"]))
    assert layout.position.tolist() == [0, 1, 4] and layout.span.tolist() == [5]
    grid = layout.matrix(np.array([1.0, 2.0, 3.0]))
    assert grid[0, WINDOW_WEEKS:].tolist() == [1.0, 2.0, 2.0, 2.0, 3.0]


@pytest.mark.parametrize("gaps", [False, True])
def test_a_grid_is_carried_forward_as_a_week_by_week_walk_would(gaps):
    """Series without skipped weeks come back as they are; with some, every one is carried (a reference walk)."""
    from pipeline.features import carried_forward

    rng = np.random.default_rng(3)
    S, T = 40, 30
    span = rng.integers(1, T + 1, S)
    grid = np.full((S, WINDOW_WEEKS + T), np.nan)
    for s in range(S):
        start = rng.integers(0, WINDOW_WEEKS + span[s])  # weeks before it unknown (no stored tail)
        grid[s, start : WINDOW_WEEKS + span[s]] = rng.uniform(1, 100, WINDOW_WEEKS + span[s] - start)
        if gaps and s % 3 == 0:
            grid[s, rng.integers(start, WINDOW_WEEKS + span[s], 3)] = np.nan
    layout = SeriesWeeks(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.arange(S).astype(str), np.zeros(S, "datetime64[D]"), span
    )
    expected = grid.copy()
    for s in range(S):
        for c in range(1, WINDOW_WEEKS + span[s]):
            if np.isnan(expected[s, c]) and not np.isnan(expected[s, c - 1]):
                expected[s, c] = expected[s, c - 1]
    np.testing.assert_array_equal(carried_forward(grid.copy(), layout), expected)


def test_the_calendar_is_a_smooth_yearly_circle():
    weeks = np.array(["2023-01-02", "2023-07-03", "2024-01-01", "2023-12-25"], dtype="datetime64[D]")
    sin_cos = calendar_columns(weeks)
    np.testing.assert_allclose(np.hypot(sin_cos[:, 0], sin_cos[:, 1]), 1.0)
    assert np.abs(sin_cos[0] - sin_cos[2]).max() < 0.05  # a year apart: the same place
    assert sin_cos[1, 1] < -0.99  # midsummer: the far side
    assert np.abs(sin_cos[3] - sin_cos[2]).max() < 0.15  # a week apart across new year: neighbours


def write_table(path, columns):
    names = list(columns)
    with open(path, "w") as out:
        out.write(",".join(names) + "\n")
        for row in zip(*(columns[n] for n in names)):
            out.write(",".join(str(v) for v in row) + "\n")
    return path


def retailer_file(tmp_path, **changes):
    rng = np.random.default_rng(1)
    columns = weekly_rows(series=("s1", "s2", "s3"), weeks=60)
    n = len(columns[TIME_COLUMN])
    table = {
        "date": columns[TIME_COLUMN],
        "store": columns[SERIES_COLUMN],
        "sales": columns["units_sold"],
        "price": np.round(rng.uniform(1, 3, n), 2),
        "temperature": np.round(rng.normal(10, 8, n), 1),
        "store_size": np.repeat([[100.0, 250.0, 400.0]], 60, axis=0).ravel(),
        "colour": ["red"] * n,
    }
    table.update(changes)
    return write_table(tmp_path / "retailer.csv", table)


RETAILER = FeatureSpec(
    known=("price", "temperature"),
    static=("store_size",),
    history=True,
    calendar=True,
    series_column="store",
    week_column="date",
    target_column="sales",
)


def test_a_retailers_file_is_read_by_its_own_names_and_unread_columns_are_named(tmp_path):
    warnings = []
    data = load_file(retailer_file(tmp_path), warn=warnings.append, spec=RETAILER)
    assert data.X.shape[1] == len(RETAILER.names) and np.isfinite(data.X).all()
    assert any("colour" in w and "--known" in w for w in warnings), warnings
    # The first week of each series has no week before it and no prev_week_sales: not trained on, and counted.
    assert data.source["rows_without_an_earlier_week"] == 3 and len(data) == 3 * 59
    assert sorted(data.tails) == ["s1", "s2", "s3"]


def test_a_missing_or_bad_declared_column_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="missing required column.*humidity"):
        load_file(
            retailer_file(tmp_path),
            spec=FeatureSpec(
                known=("humidity",), history=True, series_column="store", week_column="date", target_column="sales"
            ),
        )
    path = retailer_file(tmp_path, price=["cheap"] + [1.5] * 179)
    with pytest.raises(DataError, match=r"line 2.*price.*must be a number"):
        load_file(path, spec=RETAILER)
    # A column read under another name is named as the file names it: its sales, its week.
    path = retailer_file(tmp_path, sales=["many"] + [10.0] * 179)
    with pytest.raises(DataError, match=r"line 2, column 'sales': must be a number, got the text 'many'"):
        load_file(path, spec=RETAILER)
    path = retailer_file(
        tmp_path, date=["2023-13-01"] + [str(d) for d in weekly_rows(("s1", "s2", "s3"), 60)[TIME_COLUMN][1:]]
    )
    with pytest.raises(DataError, match=r"line 2, column 'date': must be an ISO date"):
        load_file(path, spec=RETAILER)
    table = pa_csv.read_csv(retailer_file(tmp_path))
    pa_csv.write_csv(table.drop_columns(["sales"]), tmp_path / "no-sales.csv")
    with pytest.raises(DataError, match=r"missing required column\(s\) sales; the header has date, store, price"):
        load_file(tmp_path / "no-sales.csv", spec=RETAILER)
    # The header is shown as the file has it, a column with our own name in it too.
    ours = table.drop_columns(["price"]).rename_columns(
        ["units_sold" if c == "sales" else c for c in table.column_names if c != "price"]
    )
    pa_csv.write_csv(ours, tmp_path / "ours.csv")
    with pytest.raises(
        DataError, match=r"missing required column\(s\) price; the header has date, store, units_sold, temp"
    ):
        load_file(tmp_path / "ours.csv", spec=RETAILER)


def test_a_static_covariate_that_changes_within_a_series_is_refused(tmp_path):
    sizes = np.repeat([[100.0, 250.0, 400.0]], 60, axis=0).ravel()
    sizes[30] = 999.0
    with pytest.raises(DataError, match="store_size.*static.*changes within series"):
        load_file(retailer_file(tmp_path, store_size=sizes), spec=RETAILER)


def test_a_static_column_of_text_is_a_category_of_one_column_per_value(tmp_path):
    """A category becomes one column per value training saw; scoring keeps those values, and a value
    never seen is all zeros and flagged; a category that changes within a series is refused."""
    kinds = np.repeat([["bread", "soup", "bread"]], 60, axis=0).ravel()
    spec = FeatureSpec(
        known=("price",),
        static=("store_size", "kind"),
        history=True,
        series_column="store",
        week_column="date",
        target_column="sales",
    )
    warnings = []
    data = load_file(retailer_file(tmp_path, kind=kinds), warn=warnings.append, spec=spec)
    assert data.spec.vocabulary("kind") == ("bread", "soup") and any("kind" in w and "categor" in w for w in warnings)
    assert data.spec.names[-2:] == ("kind=bread", "kind=soup")
    assert FeatureSpec.from_json(json.loads(json.dumps(data.spec.to_json()))) == data.spec
    hot = data.X[:, -2:]
    assert set(map(tuple, hot)) == {(1.0, 0.0), (0.0, 1.0)}
    later = load_file(retailer_file(tmp_path, kind=np.where(kinds == "soup", "toys", kinds)), spec=data.spec)
    assert later.spec == data.spec
    toys = later.filled[:, later.spec.fillable.index("kind")]
    assert toys.sum() == 59 and (later.X[toys, -2:] == 0).all()
    kinds[42] = "soup"  # a row of s1, whose own is bread: it changes in week 14
    with pytest.raises(DataError, match="kind.*static.*changes within series 's1'"):
        load_file(retailer_file(tmp_path, kind=kinds), spec=spec)


def test_every_candidate_of_auto_reads_the_specs_features(tmp_path):
    """The candidates train in worker processes: each must still know the spec (the names of its columns,
    and which are on the log scale: a temperature below -1 is no log1p)."""
    from pipeline.workflow import train_model

    data = load_file(retailer_file(tmp_path, temperature=np.linspace(-20, 30, 180)), spec=RETAILER)
    trained = train_model(data, "auto", {"device": "cpu", "epochs": 2, "patience": 0}, refit=False)
    assert len(trained.candidates) > 1
    for candidate in trained.candidates:
        assert candidate.result.stats.names == RETAILER.names
        assert np.isfinite(candidate.result.stats.x_min).all()
    assert trained.evaluated.stats.names == RETAILER.names


def test_a_three_input_file_reads_as_before():
    data = load_file(DEFAULT_CSV)
    assert data.spec == CHAPTER and data.X.shape[1] == 3 and not data.tails


@pytest.mark.slow
def test_train_with_history_calendar_and_covariates_publishes_the_spec_and_the_tails(tmp_path, runner):
    path = retailer_file(tmp_path)
    done = invoke(
        runner,
        "train",
        "--data",
        str(path),
        "--preset",
        "raw-small-full",
        "--epochs",
        str(FAST["epochs"]),
        "--patience",
        "0",
        "--history",
        "--calendar",
        "--known",
        "price,temperature",
        "--static",
        "store_size",
        "--series-column",
        "store",
        "--week-column",
        "date",
        "--target-column",
        "sales",
        "--model-dir",
        str(tmp_path / "models"),
        "--device",
        "cpu",
    )
    assert done.exit_code == 0, done.output
    assert "colour" in done.output  # the unread column, named
    version = (tmp_path / "models" / "champion").read_text().strip()
    folder = tmp_path / "models" / "versions" / version
    card = json.loads((folder / "card.json").read_text())
    assert card["features"]["names"] == list(RETAILER.names)
    assert card["features"]["columns"] == {"series": "store", "week": "date", "target": "sales"}
    assert card["schema"]["input"]["shape"] == ["batch", len(RETAILER.names)]
    tails = json.loads((folder / "history.json").read_text())
    assert tails["next_week"]["s1"] == str(np.datetime64("2023-01-02") + 7 * 60)
    assert len(tails["sales"]["s2"]) == WINDOW_WEEKS and tails["sales"]["s2"][-1] is not None


def test_the_chapter_preset_refuses_other_features(tmp_path, runner):
    done = invoke(runner, "train", "--preset", "chapter", "--history", "--model-dir", str(tmp_path / "m"))
    assert done.exit_code != 0 and "three inputs" in done.output


def split_file(tmp_path, new_weeks=13):
    """The embedded data as a history and the weeks that follow it, in two files."""
    lines = DEFAULT_CSV.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    week_at = header.split(",").index("week")
    last = sorted({r.split(",")[week_at] for r in rows})[-new_weeks:]
    history, new = tmp_path / "history.csv", tmp_path / "new.csv"
    history.write_text("\n".join([header] + [r for r in rows if r.split(",")[week_at] not in last]) + "\n")
    new.write_text("\n".join([header] + [r for r in rows if r.split(",")[week_at] in last]) + "\n")
    return history, new


def test_the_stored_tails_continue_exactly_where_training_stopped(tmp_path):
    """The weeks after a history, read with the tails published from it, get
    the features they have in the whole file: one step ahead as the backtest scores them."""
    from pipeline.bundle import tails_from_document
    from pipeline.publish import tails_document

    history, new = split_file(tmp_path)
    tails = tails_from_document(json.loads(json.dumps(tails_document(load_file(history, spec=HISTORY_SPEC)))))
    later = load_file(new, spec=HISTORY_SPEC, tails=tails)
    whole = load_file(DEFAULT_CSV, spec=HISTORY_SPEC)
    same_weeks = whole.week >= later.week.min()
    order = np.lexsort((whole.series[same_weeks], whole.week[same_weeks]))
    np.testing.assert_array_equal(later.X, whole.X[same_weeks][order])
    assert not later.filled.any()  # nothing filled: the tails reach back far enough
    without = load_file(new, spec=HISTORY_SPEC)  # and without them, the first weeks are filled and say so
    assert without.filled.any()


@pytest.mark.slow
def test_demand_predict_scores_the_weeks_after_training_from_the_stored_tails(tmp_path, runner):
    import csv

    from pipeline.bundle import Bundle
    from pipeline.registry import Registry

    history, new = split_file(tmp_path)
    models = str(tmp_path / "models")
    done = invoke(
        runner,
        "train",
        "--data",
        str(history),
        "--preset",
        "log-large-batch",
        "--epochs",
        "40",
        "--patience",
        "0",
        "--history",
        "--calendar",
        "--model-dir",
        models,
        "--device",
        "cpu",
    )
    assert done.exit_code == 0, done.output
    output = tmp_path / "forecasts.csv"
    done = invoke(runner, "predict", "--input", str(new), "--output", str(output), "--model-dir", models)
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == len(new.read_text().splitlines()) - 1 and all(r["filled_features"] == "" for r in rows)
    bundle = Bundle.load(Registry(models))
    whole = load_file(DEFAULT_CSV, spec=bundle.spec)
    expected = dict(
        zip(zip(whole.series, whole.week.astype(str)), bundle.forecast(whole.X, series=whole.series)["units_sold"])
    )
    for row in rows:
        assert float(row["forecast_units_sold"]) == pytest.approx(float(expected[row["series"], row["week"]]), rel=1e-5)


def test_a_folder_of_weekly_files_is_featured_as_one_history(tmp_path):
    """Files read together (a folder of weekly exports) are featured after they are put together:
    a week's lags reach into the files before it, exactly as in one file."""
    from pipeline.sources import load_sources

    lines = DEFAULT_CSV.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    week_at = header.split(",").index("week")
    folder = tmp_path / "weeks"
    folder.mkdir()
    for week in sorted({r.split(",")[week_at] for r in rows}):
        (folder / f"{week}.csv").write_text(
            "\n".join([header] + [r for r in rows if r.split(",")[week_at] == week]) + "\n"
        )
    together = load_sources([folder], spec=HISTORY_SPEC)
    whole = load_file(DEFAULT_CSV, spec=HISTORY_SPEC)
    order = np.lexsort((together.series, together.week))
    expected = np.lexsort((whole.series, whole.week))
    np.testing.assert_array_equal(together.X[order], whole.X[expected])
    assert len(together.source["files"]) == len(list(folder.iterdir()))


@pytest.mark.slow
@pytest.mark.parametrize("with_last_week", [True, False])
def test_a_plain_sales_history_reads_history_and_calendar_by_default(tmp_path, runner, with_last_week):
    """A file of series, week and sales only (no prev_week_sales of its own) gets its last week, lags and
    means from its own weeks; a file in the chapter's form keeps the chapter's three inputs."""
    import csv

    rows = list(csv.DictReader(DEFAULT_CSV.open()))
    path = tmp_path / "sales.csv"
    columns = [c for c in rows[0] if with_last_week or c != "prev_week_sales"]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    models = tmp_path / "models"
    done = invoke(
        runner,
        "train",
        "--data",
        str(path),
        "--preset",
        "log-large-batch",
        "--epochs",
        "3",
        "--patience",
        "0",
        "--model-dir",
        str(models),
        "--device",
        "cpu",
    )
    assert done.exit_code == 0, done.output
    card = json.loads(next((models / "versions").iterdir()).joinpath("card.json").read_text())
    reads_history = not with_last_week
    assert bool(card["features"]["history"]) is reads_history and bool(card["features"]["calendar"]) is reads_history


def test_rows_with_a_nan_are_found_and_huge_features_of_both_signs_are_not_one():
    from pipeline.history_scoring import without_nan

    top = np.finfo(np.float32).max
    # (+, +, -, -): summed in float32, two partial sums overflow to +inf and -inf, and their sum is NaN
    X = np.array([[top, top, -top, -top], [1.0, np.nan, 2.0, 3.0], [top, top, top, top]], dtype=np.float32)
    assert without_nan(X).tolist() == [True, False, True]


@pytest.mark.parametrize("count", [1, 6, 8, 9, 16, 17, 70])
def test_flag_patterns_name_each_rows_flags_whatever_their_count(count):
    from pipeline.features import flag_patterns

    flags = np.random.default_rng(count).random((500, count)) < 0.2
    names = [f"feature_{i}" for i in range(count)]
    patterns, codes = flag_patterns(names, flags)
    assert [patterns[code] for code in codes] == [[n for n, flag in zip(names, row) if flag] for row in flags]
    assert len(patterns) == len({tuple(row) for row in flags.tolist()})
