import numpy as np
import pytest

from pipeline.data import load_file, time_split
from pipeline.errors import DataError
from pipeline.normalize import MinMaxStats
from pipeline.schema import domain_problem

from .conftest import write_rows

GOOD = [76440, 63, 2, 94182, "2024-01-01"]


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("prev_week_sales", "-5", "must be >= 0"),
        ("prev_week_sales", "lots", "must be a number, got the text 'lots'"),
        ("discount_fraction", "130", "must be <= 100"),
        ("discount_fraction", "-1", "must be >= 0"),
        ("weeks_to_next_holidays", "-2", "must be >= 0"),
        ("units_sold", "nan", "must be a finite number, got NaN"),
        ("units_sold", "inf", "must be a finite number, got infinity"),
        ("units_sold", "", "is empty"),
        ("week", "last tuesday", "must be an ISO date"),
    ],
)
def test_each_bad_value_is_refused_naming_file_line_and_column(tmp_path, column, value, expected):
    header = ["prev_week_sales", "discount_fraction", "weeks_to_next_holidays", "units_sold", "week"]
    bad = list(GOOD)
    bad[header.index(column)] = value
    path = write_rows(tmp_path / "bad.csv", [GOOD, bad, GOOD])
    with pytest.raises(DataError) as err:
        load_file(path)
    message = str(err.value)
    assert str(path) in message
    assert "line 3" in message  # header is line 1
    assert f"column {column!r}" in message
    assert expected in message


def test_missing_column_is_named(tmp_path):
    path = write_rows(tmp_path / "x.csv", [[1, 2, 3]], header=("prev_week_sales", "discount_fraction", "units_sold"))
    with pytest.raises(DataError, match="missing required column.*weeks_to_next_holidays"):
        load_file(path)


def test_row_with_extra_cells_is_refused(tmp_path):
    path = write_rows(tmp_path / "x.csv", [GOOD, [*GOOD, "surprise"]])
    with pytest.raises(DataError, match="line 3.*has 6 cells, the header has 5"):
        load_file(path)


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_file(tmp_path / "absent.csv")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not a UTF-8"):
        load_file(binary)


def test_bad_rows_refuse_the_whole_file_unless_skipped(tmp_path):
    rows = [GOOD, [1, 150, 2, 5, "2024-01-08"], GOOD, [-3, 10, 2, 5, "2024-01-15"], [4, 10, 2, "x", "2024-01-22"]]
    path = write_rows(tmp_path / "mixed.csv", rows)
    with pytest.raises(DataError, match="3 bad row"):
        load_file(path)
    warnings = []
    data = load_file(path, skip_bad_rows=True, warn=warnings.append)
    assert len(data) == 2
    assert data.source["skipped_rows"] == 3
    assert data.source["skipped_reasons"] == {
        "discount_fraction: must be <= 100 percent": 1,
        "prev_week_sales: must be >= 0 units": 1,
        "units_sold: must be a number": 1,
    }
    assert "skipped 3 bad row(s)" in warnings[0]


def test_domain_refuses_booleans_and_null_as_numbers():
    assert "boolean" in domain_problem("discount_fraction", True)
    assert "null" in domain_problem("discount_fraction", None)
    assert domain_problem("discount_fraction", 100) is None
    assert domain_problem("weeks_to_next_holidays", 0.0) is None


def test_split_is_by_week_and_holds_out_the_latest_weeks(small_split):
    train, validation, holdout = small_split.train, small_split.validation, small_split.holdout
    assert train.week.max() < validation.week.min()
    assert validation.week.max() < holdout.week.min()
    # Whole weeks: every series of a held-out week is held out together.
    assert len(holdout) % 3 == 0 and len(set(holdout.week.tolist())) == len(holdout) // 3
    assert len(holdout) == pytest.approx(0.2 * (len(train) + len(validation) + len(holdout)), abs=3)


def test_split_without_week_column_keeps_row_order(tmp_path):
    rows = [[i, 10, 2, i + 1] for i in range(20)]
    path = write_rows(
        tmp_path / "noweek.csv",
        rows,
        header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays", "units_sold"),
    )
    split = time_split(load_file(path))
    assert split.train.X[:, 0].tolist() == list(range(13))
    assert split.holdout.X[:, 0].tolist() == list(range(16, 20))


def test_split_refuses_too_little_data(tmp_path):
    path = write_rows(tmp_path / "tiny.csv", [GOOD, GOOD])
    with pytest.raises(DataError, match="too few"):
        time_split(load_file(path))


def test_normalization_uses_training_window_only(small_split):
    stats = MinMaxStats.fit(small_split.train.X, small_split.train.y)
    assert stats.y_max == small_split.train.y.max()
    everything = np.concatenate([small_split.train.y, small_split.validation.y, small_split.holdout.y])
    assert everything.max() >= stats.y_max
    roundtrip = MinMaxStats.from_json(stats.to_json())
    assert roundtrip == stats


@pytest.mark.parametrize("rows", [1, 5, 256, 1000, 64 * 40 + 7])
def test_column_ranges_are_each_columns_min_and_max_and_show_a_nan(rows):
    from pipeline.normalize import column_ranges

    X = np.random.default_rng(rows).normal(size=(rows, 11)).astype(np.float32)
    low, high = column_ranges(X)
    assert low.tolist() == X.min(axis=0).tolist() and high.tolist() == X.max(axis=0).tolist()
    X[rows - 1, 4] = np.nan  # the last row: past the blocks reduced side by side
    low, high = column_ranges(X)
    assert np.isnan(low[4]) and np.isnan(high[4]) and not np.isnan(np.delete(low, 4)).any()
    strided = X[:, ::2]
    assert np.array_equal(column_ranges(strided)[0], strided.min(axis=0), equal_nan=True)
