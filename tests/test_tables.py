"""CSV and Parquet, read by pyarrow: the same rows and the same messages
either way, and `demand predict` streaming a file through the model."""

import csv
import gc
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from pipeline import tables
from pipeline.bundle import Bundle
from pipeline.data import load_file
from pipeline.errors import DataError
from pipeline.registry import Registry
from pipeline.schema import FEATURES, FORECAST_COLUMNS
from pipeline.scoring import DECIMALS, csv_table, decimal_column, read_ahead, score_file
from pipeline.sources import load_sources

from .conftest import DEFAULT_CSV, invoke, write_rows

HEADER = ("prev_week_sales", "discount_fraction", "weeks_to_next_holidays", "units_sold", "week", "series")
GOOD = [76440, 63, 2, 94182, "2024-01-01", "a"]


def refusal(read):
    """The message of the DataError that `read()` raises."""
    with pytest.raises(DataError) as err:
        read()
    return str(err.value)


def to_parquet(csv_path, path, **types):
    """The CSV's cells as a Parquet file: numbers typed, unless `types` says text."""
    table = pa_csv.read_csv(
        csv_path,
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in types}, strings_can_be_null=False
        ),
    )
    pq.write_table(table, path)
    return path


def test_csv_and_parquet_give_the_same_dataset(tmp_path):
    from_csv = load_file(DEFAULT_CSV)
    from_parquet = load_file(to_parquet(DEFAULT_CSV, tmp_path / "demand.parquet"))
    assert np.array_equal(from_csv.X, from_parquet.X) and np.array_equal(from_csv.y, from_parquet.y)
    assert np.array_equal(from_csv.week, from_parquet.week)
    assert from_csv.series.tolist() == from_parquet.series.tolist()
    assert from_parquet.source["rows"] == len(from_csv) == 936


def test_every_bad_row_is_named_by_line_with_python_words(tmp_path):
    rows = [
        GOOD,
        [76440, "1_0", 2, 5, "2024-01-01", "a"],
        [" 12 ", 63, 2, 5, "2024-01-08", "a"],
        [-1, 63, 2, 5, "2024-01-15", "a"],
        [5, 63, 2, "", "2024-01-22", "a"],
        [5, 63, 2, "NaN", "2024-01-29", "a"],
        [5, 63, 2, 1, "2024-02-31", "a"],
        [5, "lots", 2, 1, "2024-02-05", "a"],
    ]
    path = write_rows(tmp_path / "bad.csv", rows, header=HEADER)
    message = refusal(lambda: load_file(path))
    # "1_0" and " 12 " are numbers to Python, and so here
    assert "5 bad row(s)" in message
    for line, column, problem in [
        (5, "prev_week_sales", "must be >= 0 units, got -1"),
        (6, "units_sold", "is empty"),
        (7, "units_sold", "must be a finite number, got NaN"),
        (8, "week", "must be an ISO date like 2024-01-01, got '2024-02-31'"),
        (9, "discount_fraction", "must be a number, got the text 'lots'"),
    ]:
        assert f"line {line}, column {column!r}: {problem}" in message
    data = load_file(path, skip_bad_rows=True)
    assert data.X[:, 0].tolist() == [76440, 76440, 12]
    assert data.source["skipped_reasons"]["units_sold: must be a finite number"] == 1


def test_parquet_names_rows_and_reads_text_columns_cell_by_cell(tmp_path):
    source = write_rows(
        tmp_path / "x.csv",
        [GOOD, [5, "130", 2, 1, "2024-01-08", "a"], [5, "x", 2, 1, "2024-01-15", "a"]],
        header=HEADER,
    )
    path = to_parquet(source, tmp_path / "x.parquet", discount_fraction=True)
    message = refusal(lambda: load_file(path))
    assert "row 2, column 'discount_fraction': must be <= 100 percent, got 130" in message
    assert "row 3, column 'discount_fraction': must be a number, got the text 'x'" in message


def test_a_row_with_the_wrong_number_of_cells_keeps_the_lines_of_the_rows_after_it(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text(
        ",".join(HEADER)
        + "\n"
        + "1,2,3,4,2024-01-01,a\n"
        + "1,2,3,4,2024-01-08,a,extra\n"
        + "1,2,3\n"
        + "1,-2,3,4,2024-01-22,a\n"
    )
    message = refusal(lambda: load_file(path))
    assert "line 3, column '(row)': has 7 cells, the header has 6" in message
    assert "line 4, column '(row)': has 3 cells, the header has 6" in message
    assert "line 5, column 'discount_fraction': must be >= 0 percent, got -2" in message


def test_a_missing_column_and_a_file_that_is_not_text_are_named(tmp_path):
    path = write_rows(tmp_path / "m.csv", [[1, 2, 3]], header=("prev_week_sales", "discount_fraction", "units_sold"))
    with pytest.raises(DataError, match="missing required column.*weeks_to_next_holidays"):
        load_file(path)
    parquet = tmp_path / "not.parquet"
    parquet.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot be read as Parquet"):
        load_file(parquet)


def test_a_folder_of_csv_and_parquet_files_loads_as_one(tmp_path):
    folder = tmp_path / "history"
    folder.mkdir()
    write_rows(folder / "old.csv", [GOOD], header=HEADER)
    newer = write_rows(tmp_path / "new.csv", [[1, 2, 3, 4, "2024-01-08", "a"]], header=HEADER)
    to_parquet(newer, folder / "new.parquet")
    data = load_sources([folder])
    assert len(data) == 2 and data.source["rows"] == 2


def test_files_read_together_must_agree_on_week_and_series(tmp_path):
    folder = tmp_path / "history"
    folder.mkdir()
    write_rows(folder / "a.csv", [GOOD], header=HEADER)
    os.utime(folder / "a.csv", (1, 1))  # the older file
    write_rows(folder / "b.csv", [GOOD[:4]], header=HEADER[:4])  # no week, no series: they would vanish from a.csv too
    assert refusal(lambda: load_sources([folder])) == (
        f"{folder / 'b.csv'}: has no 'week' column, but {folder / 'a.csv'} has one: files read together must all have "
        "it or all lack it"
    )


def test_files_without_series_that_share_weeks_are_kept_whole_with_a_warning(tmp_path):
    """A week may hold several unnamed stores' rows, so a later file cannot
    replace an earlier one's: both stay, and the user is told why."""
    old = write_rows(tmp_path / "old.csv", [GOOD[:5], [9, 9, 9, 9, "2024-01-08"]], header=HEADER[:5])
    os.utime(old, (1, 1))
    new = write_rows(tmp_path / "new.csv", [[1, 2, 3, 4, GOOD[4]]], header=HEADER[:5])
    warnings = []
    data = load_sources([old, new], warn=warnings.append)
    assert len(data) == 3 and data.source["replaced_duplicates"] == 0
    assert warnings == [
        "1 row(s) fall in weeks an earlier file has too; without a 'series' column they cannot "
        "replace that file's rows, so both are kept: add the column for corrections to replace what "
        "they correct"
    ]


def test_integer_weeks_are_read_as_their_text_whatever_their_width(tmp_path):
    for width in (pa.int32(), pa.int64()):
        table = pa.table(
            {
                **{name: [value] for name, value in zip(HEADER[:4], GOOD[:4])},
                "week": pa.array([20240101], width),
                "series": ["a"],
            }
        )
        pq.write_table(table, tmp_path / "weeks.parquet")
        assert str(load_file(tmp_path / "weeks.parquet").week[0]) == "2024-01-01"  # not 20240101 days after 1970


def test_rows_that_repeat_a_week_and_series_are_a_finding(runner, tmp_path):
    lines = DEFAULT_CSV.read_text().splitlines()
    cells = lines[-1].split(",")
    path = tmp_path / "twice.csv"  # the last week of a store exported twice, with other sales
    path.write_text("\n".join([*lines, ",".join([*cells[:3], "1", *cells[4:]])]) + "\n")
    result = invoke(runner, "data", "check", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["findings"]["repeated_week_series_rows"] == 1


def test_discounts_given_as_fractions_are_a_finding(runner, tmp_path):
    table = pa_csv.read_csv(DEFAULT_CSV)
    path = tmp_path / "fractions.csv"
    as_fractions = pc.divide(pc.cast(table["discount_fraction"], pa.float64()), 100.0)
    pa_csv.write_csv(
        table.set_column(table.column_names.index("discount_fraction"), "discount_fraction", as_fractions), path
    )
    found = json.loads(invoke(runner, "data", "check", str(path), "--json").stdout)["findings"]
    assert found["discounts_all_at_most_1_percent"] is True
    found = json.loads(invoke(runner, "data", "check", str(DEFAULT_CSV), "--json").stdout)["findings"]
    assert found["discounts_all_at_most_1_percent"] is False


@pytest.mark.parametrize("name, meant", [("Week", "week"), ("SERIES", "series"), ("Units_Sold", "units_sold")])
def test_a_column_named_in_another_case_is_refused_by_name(tmp_path, name, meant):
    lines = DEFAULT_CSV.read_text().splitlines()
    path = tmp_path / "cased.csv"
    header = ",".join(name if cell == meant else cell for cell in lines[0].split(","))
    path.write_text("\n".join([header, *lines[1:]]) + "\n")
    assert refusal(lambda: load_file(path)) == (
        f"{path}: column {name!r} is not read as {meant!r}: column names are case-sensitive; rename it {meant!r}"
    )
    to_parquet(path, tmp_path / "cased.parquet")
    if meant != "units_sold":  # a required column is named as missing by the Parquet reader first
        assert f"column {name!r} is not read as {meant!r}" in refusal(lambda: load_file(tmp_path / "cased.parquet"))


@pytest.fixture(scope="module")
def champion(published):
    return Bundle.load(Registry(published))


def plain_forecasts(bundle, X, series=None):
    return np.round(bundle.forecast(X, series=series)["units_sold"].astype(np.float64), 1)


def test_series_names_are_coded_once_each_trimmed_merged_and_named_when_they_join_lines():
    """Names that trim alike share a code, a null is the blank name, a coded column of any index width
    (int8 with 128 names, as a Parquet file may store it) is read, and a CSV name holding a line break is
    named on its row."""
    from pipeline.schema import SERIES_COLUMN

    names = [f"store-{i}" for i in range(128)]
    indices = pa.array([0, 127, 5, None, 127], pa.int8())
    coded = tables.coded_series_names(
        pa.table({SERIES_COLUMN: pa.DictionaryArray.from_arrays(indices, names)}), csv=False, problems=[]
    )
    assert coded.to_pylist() == ["store-0", "store-127", "store-5", "", "store-127"]
    problems = []
    text = pa.table({SERIES_COLUMN: pa.array([" a", "a ", "b", None, "c\nd", "b"])})
    coded = tables.coded_series_names(text, csv=True, problems=problems)
    assert coded.to_pylist() == ["a", "a", "b", "", "c\nd", "b"]
    assert coded.indices[0] == coded.indices[1] and len(coded.dictionary) == len(set(coded.dictionary.to_pylist()))
    assert [(row, column) for row, column, _ in problems] == [(4, SERIES_COLUMN)]
    assert "holds 1 line break(s)" in problems[0][2]


def test_a_csv_shows_forecasts_to_one_decimal_as_the_rounded_floats_read():
    """The decimal words are the rounded forecasts', to the last digit, negatives and far values included;
    a value the 64-bit decimal cannot hold (not finite, or from 1e17) is an empty cell; other float
    columns keep their own digits."""
    values = np.concatenate(
        [
            np.random.default_rng(0).uniform(-1e6, 1e9, 5000),
            [0.0, -0.0, 0.04, -0.04, 0.05, 12.25, 12.35, 5.0, 1e16, -1e16, np.nan, np.inf, -np.inf, 5e17, 1e18],
        ]
    )
    text = io.BytesIO()
    pa_csv.write_csv(
        csv_table(pa.table({"forecast_units_sold": values, "interval_high": values, "other": values})), text
    )
    rows = list(csv.reader(text.getvalue().decode().splitlines()[1:]))
    shown = np.round(values, DECIMALS)
    for row, value, rounded in zip(rows, values, shown):
        if np.isfinite(value) and abs(value) < 1e17:
            assert float(row[0]) == float(row[1]) == rounded, (row, value)
            assert len(row[0].partition(".")[2]) == DECIMALS
        else:
            assert row[0] == row[1] == "", (row, value)
        assert float(row[2]) == value or np.isnan(value)
    assert decimal_column(np.array([1.25, 2.0])).type == pa.decimal64(18, DECIMALS)


@pytest.mark.parametrize(
    "source_format, output_format", [("csv", "csv"), ("csv", "parquet"), ("parquet", "csv"), ("parquet", "parquet")]
)
def test_predict_streams_chunks_and_passes_every_column_through(
    tmp_path, champion, monkeypatch, source_format, output_format
):
    monkeypatch.setattr(tables, "STREAM_CHUNK_ROWS", 100)  # several chunks even from a small file
    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 4096)
    source = DEFAULT_CSV if source_format == "csv" else to_parquet(DEFAULT_CSV, tmp_path / "in.parquet")
    out = tmp_path / f"out.{output_format}"
    counts = score_file(source, out, champion)
    expected = load_file(DEFAULT_CSV)
    written = pq.read_table(out) if output_format == "parquet" else pa_csv.read_csv(out)
    assert counts["rows"] == written.num_rows == len(expected)
    assert written.column_names == [*HEADER, *FORECAST_COLUMNS]
    # actuals ride along (as the CSV's text, when the input is a CSV)
    assert np.allclose(written.column("units_sold").cast(pa.float64()).to_numpy(), expected.y)
    assert np.allclose(
        written.column("forecast_units_sold").to_numpy(), plain_forecasts(champion, expected.X, expected.series)
    )
    assert not any(name.startswith(".") for name in (p.name for p in tmp_path.iterdir()))


def test_predict_refuses_a_bad_file_whole_and_leaves_no_output(tmp_path, champion, monkeypatch):
    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 4096)
    lines = DEFAULT_CSV.read_text().splitlines()
    cells = lines[500].split(",")
    lines[500] = ",".join([cells[0], "130", *cells[2:]])
    lines[800] += ",surprise"
    cells = lines[900].split(",")
    lines[900] = ",".join(["lots", *cells[1:]])  # not a number: the file is read again as text
    source = tmp_path / "bad.csv"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    message = refusal(lambda: score_file(source, out, champion))
    assert "3 bad row(s)" in message
    assert "line 901, column 'prev_week_sales': must be a number, got the text 'lots'" in message
    assert "line 501, column 'discount_fraction': must be <= 100 percent, got 130" in message
    assert "line 801, column '(row)': has 7 cells, the header has 6" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # nothing half written
    counts = score_file(source, out, champion, skip_bad_rows=True)
    assert counts["rows"] == len(lines) - 4 and counts["skipped_rows"] == 3


def test_a_chunk_with_no_good_row_is_skipped_with_its_rows(tmp_path, champion, monkeypatch):
    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 4096)
    lines = DEFAULT_CSV.read_text().splitlines()
    for i in range(1, 301):  # the first chunks, every row of them bad
        cells = lines[i].split(",")
        lines[i] = ",".join([cells[0], "130", *cells[2:]])
    source = tmp_path / "bad_start.csv"
    source.write_text("\n".join(lines) + "\n")
    counts = score_file(source, tmp_path / "out.csv", champion, skip_bad_rows=True)
    assert counts["skipped_rows"] == 300 and counts["rows"] == len(lines) - 301


def test_a_file_whose_every_row_is_ragged_names_them(tmp_path, champion):
    lines = DEFAULT_CSV.read_text().splitlines()
    source = tmp_path / "ragged.csv"
    source.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")
    message = refusal(lambda: score_file(source, tmp_path / "out.csv", champion))
    assert (
        f"{len(lines) - 1} bad row(s)" in message and "line 2, column '(row)': has 7 cells, the header has 6" in message
    )


def test_a_file_that_is_not_text_says_what_it_seems_to_be(tmp_path, champion):
    zipped = tmp_path / "zipped.csv"
    zipped.write_bytes(gzip.compress(DEFAULT_CSV.read_bytes()))
    misnamed = tmp_path / "misnamed.csv"
    to_parquet(DEFAULT_CSV, misnamed)
    for path, hint in (
        (zipped, "it is gzip-compressed: decompress it first"),
        (misnamed, "it is a Parquet file: name it .parquet"),
    ):
        for read in (lambda: load_file(path), lambda: score_file(path, tmp_path / "out.csv", champion)):
            assert refusal(read) == f"{path}: not a UTF-8 text file; {hint}"


def test_a_parquet_column_a_csv_cannot_hold_is_named(tmp_path, champion):
    table = pa_csv.read_csv(DEFAULT_CSV)
    source = tmp_path / "tags.parquet"
    pq.write_table(table.append_column("tags", pa.array([["promo"]] * table.num_rows)), source)
    message = refusal(lambda: score_file(source, tmp_path / "out.csv", champion))
    assert message.startswith(f"{source}: column 'tags' holds list<")  # the input named, not the output
    assert message.endswith("which a CSV cannot hold: write the forecasts to a .parquet file, or leave the column out")
    assert score_file(source, tmp_path / "out.parquet", champion)["rows"] == table.num_rows


def test_bytes_that_are_not_text_are_named_in_the_input(tmp_path, champion):
    table = pa_csv.read_csv(DEFAULT_CSV)
    blobs = [b"ok"] * table.num_rows
    blobs[-1] = b"\xff\xfe"  # in the last row: the rows before it are fine
    source = tmp_path / "blobs.parquet"
    pq.write_table(table.append_column("blob", pa.array(blobs, pa.binary())), source)
    message = refusal(lambda: score_file(source, tmp_path / "out.csv", champion))
    assert message == (
        f"{source}: column 'blob' holds bytes that are not UTF-8 text, which a CSV cannot hold: "
        "write the forecasts to a .parquet file, or leave the column out"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.parquet"]
    assert score_file(source, tmp_path / "out.parquet", champion)["rows"] == table.num_rows


def test_a_header_alone_has_no_usable_rows(tmp_path, champion):
    for ending in ("", "\n", "\r\n"):  # with no line break after it, pyarrow would not even skip it
        source = tmp_path / "header.csv"
        source.write_text(FEATURE_HEADER + ending)
        assert refusal(lambda: score_file(source, tmp_path / "out.csv", champion)) == f"{source}: no usable rows"


def test_a_quote_never_closed_is_found_with_cr_line_endings_too(tmp_path, champion):
    lines = DEFAULT_CSV.read_text().splitlines()
    lines[500] = lines[500].replace("store-", '"store-')
    source = tmp_path / "old_mac.csv"
    source.write_text("\r".join(lines) + "\r")
    for read in (lambda: load_file(source), lambda: score_file(source, tmp_path / "out.csv", champion)):
        assert "line 501: a quote opens a cell that is never closed" in refusal(read)


def test_lines_joined_by_two_stray_quotes_are_refused(tmp_path):
    """A quote opens a series cell and another closes it nine lines later: the
    quotes are even, so only the cell's line breaks show the eight rows gone."""
    lines = DEFAULT_CSV.read_text().splitlines()
    lines[500] = lines[500].replace("store-", '"store-')
    lines[509] += '"'
    source = tmp_path / "joined.csv"
    source.write_text("\n".join(lines) + "\n")
    assert pa_csv.read_csv(source).num_rows == len(lines) - 1 - 9  # what a reader makes of it, without a word
    message = refusal(lambda: load_file(source))
    assert "line 501, column 'series': holds 9 line break(s): a quote opens this cell and another closes it" in message
    # In Parquet no quote can join lines: a name holding a line break is taken as it is.
    table = pa_csv.read_csv(DEFAULT_CSV)
    names = pc.replace_substring(table["series"], "store-01", "Store 01\nNorth")
    multiline = tmp_path / "multiline.parquet"
    pq.write_table(table.set_column(table.column_names.index("series"), "series", names), multiline)
    assert len(load_file(multiline)) == table.num_rows


def test_read_ahead_takes_one_item_ahead_in_order():
    taken = []

    def source():
        for i in range(5):
            taken.append(i)
            yield i

    items = read_ahead(source())
    assert next(items) == 0
    assert len(taken) <= 2  # the item in hand and at most the next one: memory stays at two chunks
    assert list(items) == [1, 2, 3, 4]


def test_read_ahead_raises_where_the_failing_item_would_have_come():
    def source():
        yield "first chunk"
        raise DataError("second chunk: cannot be read")

    items = read_ahead(source())
    assert next(items) == "first chunk"
    with pytest.raises(DataError, match="second chunk"):
        next(items)


def open_files_under(folder):
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return [path for path in paths if path.startswith(str(folder))]


def test_a_file_refused_midway_leaves_no_file_open(tmp_path, champion, monkeypatch):
    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 4096)  # the bad line is in a later chunk, read ahead
    lines = DEFAULT_CSV.read_bytes().splitlines()
    lines[700] = lines[700].replace(b"store", b"st\xffore")
    source = tmp_path / "bad.csv"
    source.write_bytes(b"\n".join(lines) + b"\n")
    gc.disable()  # what stays open must be closed by reference counting, not by a collection that may never come
    try:
        with pytest.raises(DataError, match="cannot be read as CSV"):
            score_file(source, tmp_path / "out.csv", champion)
        left_open = open_files_under(tmp_path)
    finally:
        gc.enable()
    assert left_open == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


@pytest.mark.slow
def test_predict_stopped_with_sigterm_leaves_nothing_half_written(tmp_path, published):
    weeks = pa_csv.read_csv(DEFAULT_CSV)
    source = tmp_path / "many.csv"
    pa_csv.write_csv(pa.concat_tables([weeks] * 3200), source)  # 3M rows: seconds of work to stop in the middle of
    out = tmp_path / "scored.csv"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "predict",
            "--input",
            str(source),
            "--output",
            str(out),
            "--model-dir",
            str(published),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    partial = tmp_path / f".scored.csv.{process.pid}.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert partial.exists(), "the output was never started"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert b"Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.csv"]


def test_predict_command_agrees_with_the_loader(runner, published, tmp_path):
    out = tmp_path / "scored.parquet"
    result = invoke(runner, "predict", "--input", str(DEFAULT_CSV), "--output", str(out), "--model-dir", str(published))
    assert result.exit_code == 0, result.output
    assert "wrote 936 forecasts from model v1" in result.stderr
    table = pq.read_table(out)
    assert table.column("model_version").unique().to_pylist() == ["v1"]
    with open(DEFAULT_CSV) as handle:
        first = next(csv.DictReader(handle))
    assert table.column("series")[0].as_py() == first["series"]
    assert [table.column(name)[0].as_py() for name in FEATURES] == [float(first[name]) for name in FEATURES]


# ---------------------------------------------------------------- files as users write them

FEATURE_HEADER = "prev_week_sales,discount_fraction,weeks_to_next_holidays"


def test_line_breaks_inside_quoted_cells_are_one_record(tmp_path, champion, monkeypatch):
    rows = "".join(f'{i},2,3,4,"first line\nsecond"\n' for i in range(40_000))  # 1.3 MB: several blocks
    path = tmp_path / "notes.csv"
    path.write_text(FEATURE_HEADER + ",units_sold,note\n" + rows)
    assert len(load_file(path)) == 40_000
    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 4099)  # a block boundary inside a quoted cell
    assert score_file(path, tmp_path / "out.csv", champion)["rows"] == 40_000


def test_a_quote_never_closed_refuses_the_file_naming_its_line(tmp_path, champion):
    lines = DEFAULT_CSV.read_text().splitlines()
    lines[500] = lines[500].replace("store-", '"store-')  # its cell would run on to the end of the file
    source = tmp_path / "unclosed.csv"
    source.write_text("\n".join(lines) + "\n")
    message = re.escape(
        f"line 501: a quote opens a cell that is never closed, so the {len(lines) - 501} line(s) after it"
    )
    with pytest.raises(DataError, match=message):
        load_file(source)
    with pytest.raises(DataError, match=message):
        score_file(source, tmp_path / "out.csv", champion)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unclosed.csv"]


def test_a_quote_inside_a_cell_is_a_character_of_it(tmp_path, champion):
    path = tmp_path / "inches.csv"
    # blank lines too, which have no row of their own either
    path.write_text(FEATURE_HEADER + ',units_sold,series\n1,2,3,4,65" TV\n\n5,6,7,8,radio\n\n')
    assert list(load_file(path).series) == ['65" TV', "radio"]
    assert score_file(path, tmp_path / "out.csv", champion)["rows"] == 2


def test_a_name_given_twice_is_refused_plainly(tmp_path, champion):
    path = tmp_path / "twice.csv"
    path.write_text(FEATURE_HEADER + ",units_sold, prev_week_sales\n1,2,3,4,7\n")
    for read in (lambda: load_file(path), lambda: score_file(path, tmp_path / "o.csv", champion)):
        with pytest.raises(DataError, match="the header names 'prev_week_sales' more than once"):
            read()


def test_a_header_field_past_the_csv_modules_limit_is_a_clear_error_everywhere(
    tmp_path, champion, runner, published, client
):
    path = tmp_path / "long_name.csv"
    path.write_text(FEATURE_HEADER + ",units_sold," + "x" * 140_000 + "\n1,2,3,4,5\n")
    for read in (lambda: load_file(path), lambda: score_file(path, tmp_path / "o.csv", champion)):
        with pytest.raises(DataError, match="the header cannot be read: field larger than field limit"):
            read()
    done = invoke(
        runner, "predict", "--input", str(path), "--output", str(tmp_path / "o.csv"), "--model-dir", str(published)
    )
    assert done.exit_code == 1 and done.output.startswith("Error:") and "Traceback" not in done.output
    answer = client.post("/predict", data=path.read_bytes(), content_type="text/csv")
    assert answer.status_code == 400 and "the header cannot be read" in answer.get_json()["error"]


def test_a_header_of_too_many_columns_is_refused_by_count_without_reading_on(tmp_path, champion, client):
    """100,000 columns: refused by their number, with the limit; the name check is linear, not quadratic."""
    path = tmp_path / "wide.csv"
    names = [f"c{i}" for i in range(100_000)]
    path.write_text(",".join([FEATURE_HEADER, *names]) + "\n" + ",".join(["1"] * 100_003) + "\n")
    with pytest.raises(DataError, match="the header has 100,003 columns, more than the limit of 10,000"):
        score_file(path, tmp_path / "o.csv", champion)
    with pytest.raises(DataError, match="the header names 'c7' more than once"):
        tables.require_columns([*names[:9000], "c7"], FEATURES, "body")
    answer = client.post("/predict", data=path.read_bytes(), content_type="text/csv")
    assert answer.status_code in (400, 413) and "error" in answer.get_json()


def test_a_long_header_and_a_character_across_the_first_64_kib_are_read(tmp_path):
    long = tmp_path / "long.csv"
    extra = [f"note_{i:05d}" for i in range(6000)]  # a header of about 66 KB
    long.write_text(
        ",".join([FEATURE_HEADER, "units_sold", *extra]) + "\n" + ",".join(["1", "2", "3", "4", *"x" * 6000]) + "\n"
    )
    assert len(load_file(long)) == 1
    straddling = tmp_path / "utf8.csv"
    body = FEATURE_HEADER + ",units_sold,note\n"
    filler = "a" * (65535 - len(body.encode()) - len("1,2,3,4,"))
    straddling.write_bytes((body + "1,2,3,4," + filler + "é\n").encode())
    assert len(load_file(straddling)) == 1


def test_parquet_nulls_and_booleans_are_named_as_in_a_csv(tmp_path):
    table = pa.table(
        {
            "prev_week_sales": [1.0, 2.0, None],
            "discount_fraction": pa.array([True, False, True]),
            "weeks_to_next_holidays": [1, 2, 3],
            "units_sold": [1.0, 2.0, 3.0],
            "week": pa.array([None, "2024-01-08", "2024-01-15"]),
            "series": pa.array([None, "a", "b"]),
        }
    )
    path = tmp_path / "nulls.parquet"
    pq.write_table(table, path)
    message = refusal(lambda: load_file(path))
    assert "row 1, column 'discount_fraction': must be a number, got a boolean" in message
    assert "row 1, column 'week': is empty" in message
    assert "row 3, column 'prev_week_sales': is empty" in message
    pq.write_table(table.set_column(1, "discount_fraction", pa.array([1, 2, 3])).drop_columns(["week"]), path)
    data = load_file(path, skip_bad_rows=True)
    assert data.series.tolist() == ["", "a"]  # a missing series is no series, not "None"


def test_parquet_output_keeps_numbers_even_when_the_file_is_read_as_text(tmp_path, champion):
    source = write_rows(
        tmp_path / "in.csv", [[1, 2, 3, 4, "2024-01-01", "a"], [" 12 ", 2, 3, 4, "2024-01-08", "a"]], header=HEADER
    )
    out = tmp_path / "out.parquet"
    score_file(source, out, champion)
    written = pq.read_table(out)
    assert all(pa.types.is_floating(written.schema.field(name).type) for name in FEATURES)
    assert written.column("prev_week_sales").to_pylist() == [1.0, 12.0]


def test_unreadable_inputs_and_unwritable_outputs_are_clear_errors(tmp_path, champion):
    corrupt = tmp_path / "corrupt.parquet"
    pq.write_table(pa.table({name: list(range(2000)) for name in (*FEATURES, "units_sold")}), corrupt)
    data = bytearray(corrupt.read_bytes())
    data[200:400] = b"\xff" * 200
    corrupt.write_bytes(bytes(data))
    for read in (lambda: load_file(corrupt), lambda: score_file(corrupt, tmp_path / "o.csv", champion)):
        with pytest.raises(DataError, match="cannot be read as Parquet"):
            read()
    with pytest.raises(DataError, match=r"no-such-folder/out.csv: cannot be written"):
        score_file(DEFAULT_CSV, tmp_path / "no-such-folder" / "out.csv", champion)


def test_parquet_output_writes_floats_plain_and_text_with_a_dictionary(tmp_path):
    from pipeline.scoring import Output

    def encodings(table):
        output = Output(tmp_path / "out.parquet")
        output.write(table)
        output.finish()
        group = pq.ParquetFile(tmp_path / "out.parquet").metadata.row_group(0)
        return {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}

    table = pa.table({"series": ["a", "b"] * 50, "forecast": np.arange(100, dtype=np.float32)})
    written = encodings(table)
    assert any("DICTIONARY" in e for e in written["series"])
    assert not any("DICTIONARY" in e for e in written["forecast"])
    nested = encodings(table.append_column("tags", pa.array([["x"]] * 100)))  # a leaf Parquet names its own way
    assert any("DICTIONARY" in e for e in nested["tags.list.element"])
    assert pq.read_table(tmp_path / "out.parquet").equals(table.append_column("tags", pa.array([["x"]] * 100)))
