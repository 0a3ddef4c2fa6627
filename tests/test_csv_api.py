"""POST /predict with a CSV body: the table back with the forecast columns,
the same bytes `demand predict` writes, and every bad row named by line."""

import io

import pyarrow.csv as pa_csv
import pytest
import requests

from pipeline.schema import FORECAST_COLUMNS
from service.testing import running_service

from .conftest import DEFAULT_CSV, invoke

CSV = {"Content-Type": "text/csv"}
HEADER = "series,week,prev_week_sales,discount_fraction,weeks_to_next_holidays"
WEEKS = HEADER + "\nstore-01,2026-01-05,40000,30,2\nstore-02,2026-01-05,9000000,10,0\n"


def post_csv(client, body, **headers):
    return client.post("/predict", data=body.encode() if isinstance(body, str) else body, headers={**CSV, **headers})


def test_the_table_comes_back_with_forecast_columns(client):
    response = post_csv(client, WEEKS)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    table = pa_csv.read_csv(io.BytesIO(response.get_data()))
    assert table.column_names == [*HEADER.split(","), *FORECAST_COLUMNS]
    assert table.column("series").to_pylist() == ["store-01", "store-02"]
    units, low, high = (table.column(name).to_pylist() for name in FORECAST_COLUMNS[:3])
    assert all(lo < u < hi for lo, u, hi in zip(low, units, high))
    assert table.column("extrapolated").to_pylist() == ["", "prev_week_sales"]
    assert table.column("model_version").to_pylist() == ["v1", "v1"]


def test_answers_agree_with_the_json_rows(client):
    csv_units = pa_csv.read_csv(io.BytesIO(post_csv(client, WEEKS).get_data())).column("forecast_units_sold")
    rows = [
        {"prev_week_sales": 40000, "discount_fraction": 30, "weeks_to_next_holidays": 2, "series": "store-01"},
        {"prev_week_sales": 9000000, "discount_fraction": 10, "weeks_to_next_holidays": 0, "series": "store-02"},
    ]
    json_units = [p["units_sold"] for p in client.post("/predict", json={"instances": rows}).get_json()["predictions"]]
    assert csv_units.to_pylist() == [round(u, 1) for u in json_units]


def test_the_command_line_writes_the_same_bytes(client, runner, published, tmp_path):
    out = tmp_path / "scored.csv"
    result = invoke(runner, "predict", "--input", str(DEFAULT_CSV), "--output", str(out), "--model-dir", str(published))
    assert result.exit_code == 0, result.output
    response = post_csv(client, DEFAULT_CSV.read_bytes())
    assert response.status_code == 200
    assert response.get_data() == out.read_bytes()
    # Sent a slice of rows at a time past ROWS_PER_PIECE: still the same bytes, one header.
    lines = DEFAULT_CSV.read_text().splitlines()
    many = tmp_path / "many.csv"
    many.write_text("\n".join([lines[0], *lines[1:] * 40]) + "\n")  # 37,440 rows: three pieces
    result = invoke(runner, "predict", "--input", str(many), "--output", str(out), "--model-dir", str(published))
    assert result.exit_code == 0, result.output
    assert post_csv(client, many.read_bytes()).get_data() == out.read_bytes()


@pytest.mark.parametrize(
    "body, status, message",
    [
        (
            HEADER + "\nstore-01,2026-01-05,40000,130,2\n",
            400,
            "1 bad row(s) in the CSV body: line 2, column 'discount_fraction': must be <= 100 percent, got 130",
        ),
        (
            HEADER + "\na,2026-01-05,40000,30,2\nb,2026-01-05,lots,30,2\nc,2026-01-05,1,,2\n",
            400,
            "2 bad row(s) in the CSV body: line 3, column 'prev_week_sales': must be a number, got the text 'lots'; "
            "line 4, column 'discount_fraction': is empty",
        ),
        (
            HEADER + "\na,2026-01-05,40000,30,2,extra\nb,2026-01-05,1,-1,2\n",
            400,
            "line 2, column '(row)': has 6 cells, the header has 5; line 3, column 'discount_fraction': must be >= 0",
        ),
        (
            "series,prev_week_sales\na,1\n",
            400,
            "body: missing required column(s) discount_fraction, weeks_to_next_holidays; the header has series, prev_week_sales",
        ),
        ("", 400, "the CSV body is empty"),
        (HEADER + "\n", 400, "the CSV body has a header but no rows"),
        (
            b"prev_week_sales,discount_fraction,weeks_to_next_holidays\n1,2,3\n\xff\xfe,1,1\n",
            400,
            "not a UTF-8 text file",
        ),
        (
            HEADER + '\na,2026-01-05,1,2,3\n"b,2026-01-12,1,2,3\nc,2026-01-19,1,2,3\n',
            400,
            "body: line 3: a quote opens a cell that is never closed, so the 1 line(s) after it would be read into that one cell",
        ),
    ],
)
def test_bad_bodies_get_json_errors_naming_line_and_column(client, body, status, message):
    response = post_csv(client, body)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert message in response.get_json()["error"]


def test_row_and_body_caps_apply(make_app):
    client = make_app(MAX_ROWS=2, MAX_BODY_BYTES=2000).test_client()
    three = HEADER + "\n" + "a,2026-01-05,1,2,3\n" * 3
    assert post_csv(client, three).status_code == 413
    assert "DEMAND_MAX_ROWS" in post_csv(client, three).get_json()["error"]
    assert post_csv(client, HEADER + "\n" + "a,2026-01-05,1,2,3\n" * 2).status_code == 200
    huge = HEADER + "\n" + "a" * 3000 + ",2026-01-05,1,2,3\n"
    assert post_csv(client, huge).status_code == 413


def test_cells_count_against_the_row_cap(make_app):
    """Sixteen cells per row of DEMAND_MAX_ROWS: a thousand narrow columns cost a worker as much as long rows."""
    client = make_app(MAX_ROWS=4).test_client()  # 64 cells
    narrow = HEADER + "".join(f",c{i}" for i in range(11)) + "\n" + ("a,2026-01-05,1,2,3" + ",x" * 11 + "\n") * 4
    assert post_csv(client, narrow).status_code == 200
    wide = HEADER + "".join(f",c{i}" for i in range(12)) + "\n" + ("a,2026-01-05,1,2,3" + ",x" * 12 + "\n") * 4
    response = post_csv(client, wide)
    assert post_csv(client, wide.replace("\n", "\r")).status_code == 413  # a bare CR ends a row too
    assert response.status_code == 413
    assert response.get_json()["error"] == (
        "the CSV body has 17 columns and about 4 rows, more than 64 cells "
        "(16 x DEMAND_MAX_ROWS): send fewer rows or leave out columns the "
        "forecast does not need"
    )


def test_a_charset_parameter_is_accepted_and_rows_are_counted(client):
    def csv_rows():
        text = client.get("/metrics").get_data(as_text=True)
        line = next((l for l in text.splitlines() if l.startswith('demand_rows_predicted_total{protocol="csv"}')), None)
        return float(line.split()[-1]) if line else 0.0

    before = csv_rows()
    assert post_csv(client, WEEKS, **{"Content-Type": "text/csv; charset=utf-8"}).status_code == 200
    assert csv_rows() == before + 2


@pytest.mark.slow
def test_csv_over_a_real_gunicorn(published, tmp_path):
    with running_service(published, tmp_path, workers=1) as server:
        answer = requests.post(f"{server.url}/predict", data=DEFAULT_CSV.read_bytes(), headers=CSV, timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
        assert pa_csv.read_csv(io.BytesIO(answer.content)).num_rows == 936
        bad = requests.post(f"{server.url}/predict", data=HEADER + "\na,b,1,2\n", headers=CSV, timeout=10)
        assert bad.status_code == 400 and "line 2" in bad.json()["error"]


def test_rows_are_counted_as_parsed_not_as_line_breaks(make_app):
    client = make_app(MAX_ROWS=10).test_client()
    cr_only = (HEADER + "\r" + "a,2026-01-05,1,2,3\r" * 11).encode()
    refused = post_csv(client, cr_only)
    assert refused.status_code == 413 and "11 rows in the CSV body" in refused.get_json()["error"]
    quoted = HEADER + ",note\n" + 'a,2026-01-05,1,2,3,"two\nlines"\n' * 10 + "\n\n\n"
    assert post_csv(client, quoted).status_code == 200


def test_a_column_named_twice_is_a_400(client):
    response = post_csv(client, HEADER + ",series\na,2026-01-05,1,2,3,b\n")
    assert response.status_code == 400
    assert "the header names 'series' more than once" in response.get_json()["error"]
