"""A model of history, calendar and declared covariates, served: every path features the same rows the same way.

One model is trained (in-process, as `demand train` runs) on a retailer's file
that names its columns its own way, without its last weeks; the weeks after
are then scored by `demand predict`, by POST /predict as rows, columns and CSV,
by V2 and by plans, and every answer must agree.
"""

import csv
import json

import numpy as np
import pytest

from pipeline.data import load_file
from pipeline.errors import DataError
from pipeline.features import HISTORY

from .conftest import DEFAULT_CSV, invoke
from .test_outsample import OUTSAMPLE

NEW_WEEKS = 6
STORES = 4
KNOWN = ("price", "display", "temperature")
FEATURE_OPTIONS = (
    "--history",
    "--calendar",
    "--known",
    ",".join(KNOWN),
    "--static",
    "store_size,category",
    "--series-column",
    "store",
    "--week-column",
    "date",
    "--target-column",
    "sales",
)


@pytest.fixture(scope="module")
def retailer(tmp_path_factory):
    """(models folder, the later weeks' file, its rows) with a champion trained on the weeks before."""
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("retailer")
    rows = list(csv.DictReader((OUTSAMPLE / "retail_covariates.csv").open()))
    stores = sorted({r["store"] for r in rows})[:STORES]
    rows = [r for r in rows if r["store"] in stores]
    later = sorted({r["date"] for r in rows})[-NEW_WEEKS:]
    header = list(rows[0])
    history, new = folder / "history.csv", folder / "new.csv"
    for path, part in (
        (history, [r for r in rows if r["date"] not in later]),
        (new, [r for r in rows if r["date"] in later]),
    ):
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, header, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(part)
    models = folder / "models"
    done = invoke(
        CliRunner(),
        "train",
        "--data",
        str(history),
        "--preset",
        "log-large-batch",
        "--epochs",
        "30",
        "--patience",
        "0",
        *FEATURE_OPTIONS,
        "--model-dir",
        str(models),
        "--device",
        "cpu",
    )
    assert done.exit_code == 0, done.output
    return models, new, list(csv.DictReader(new.open()))


@pytest.fixture(scope="module")
def served(retailer):
    from service.app import create_app

    return create_app({"MODEL_DIR": str(retailer[0]), "RELOAD_INTERVAL": 0}).test_client()


@pytest.fixture(scope="module")
def bundle(retailer):
    from pipeline.bundle import Bundle
    from pipeline.registry import Registry

    return Bundle.load(Registry(retailer[0]))


@pytest.fixture(scope="module")
def predicted(retailer, tmp_path_factory):
    """`demand predict` on the later weeks: {(store, date): forecast}."""
    from click.testing import CliRunner

    models, new, _ = retailer
    output = tmp_path_factory.mktemp("predicted") / "forecasts.csv"
    done = invoke(CliRunner(), "predict", "--input", str(new), "--output", str(output), "--model-dir", str(models))
    assert done.exit_code == 0, done.output
    return {(r["store"], r["date"]): float(r["forecast_units_sold"]) for r in csv.DictReader(output.open())}


def row_of(record, *, actual=True):
    """A file's row as a request's row: numbers as numbers; the actual sales only when `actual`."""
    row = {
        "store": record["store"],
        "date": record["date"],
        "category": record["category"],
        **{name: float(record[name]) for name in (*KNOWN, "store_size")},
    }
    if actual:
        row["sales"] = float(record["sales"])
    return row


def test_the_rows_of_a_request_get_exactly_the_features_of_the_file(retailer, bundle):
    """The service's reading of rows and `demand predict`'s reading of the file: the same matrix."""
    from service.feature_rows import columns_from_rows, forecast_columns

    _, new, rows = retailer
    from_file = load_file(new, spec=bundle.spec, tails=bundle.tails)
    where = lambda i, key: f"row {i}"  # noqa: E731
    out = forecast_columns(bundle, columns_from_rows([row_of(r) for r in rows], bundle, where), where)
    np.testing.assert_array_equal(out["X"], from_file.X)
    assert not from_file.filled.any() and not any(out["filled"])  # the stored weeks reach back far enough


def scored_whole_and_streamed(bundle, source, folder, warnings):
    """The answer of `source` streamed a few rows at a time, checked against the file read whole: the same rows
    and flags, and the same forecasts (ONNX Runtime may round the last bit otherwise for a batch of a few rows)."""
    import pyarrow.csv as pa_csv

    from pipeline.history_scoring import score_history_file, score_history_whole

    whole, streamed = folder / "whole.csv", folder / "streamed.csv"
    counts = score_history_whole(source, whole, bundle)
    assert score_history_file(source, streamed, bundle, warn=warnings.append) == counts
    whole, streamed = pa_csv.read_csv(whole), pa_csv.read_csv(streamed)
    assert whole.column_names == streamed.column_names
    for name in whole.column_names:
        expected, got = whole.column(name).to_pylist(), streamed.column(name).to_pylist()
        assert got == (pytest.approx(expected, rel=1e-6) if name.startswith(("forecast", "interval")) else expected)
    return streamed


def test_demand_predict_streams_a_file_in_chunks_with_the_features_of_the_file_read_whole(
    retailer, bundle, tmp_path, monkeypatch
):
    """Each chunk continues from the weeks the chunks before it left: the same forecasts as the whole file
    featured at once, for a file of many weeks (in week order, and series by series), CSV and Parquet."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from pipeline import tables

    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 1024)  # a few rows a chunk
    monkeypatch.setattr(tables, "STREAM_CHUNK_ROWS", 9)
    rows = list(csv.DictReader((OUTSAMPLE / "retail_covariates.csv").open()))
    stores = sorted({r["store"] for r in rows})[:STORES]
    rows = [r for r in rows if r["store"] in stores]
    for order, key in (("weeks", lambda r: (r["date"], r["store"])), ("series", lambda r: (r["store"], r["date"]))):
        source = tmp_path / f"by-{order}.csv"
        with source.open("w", newline="") as out:
            writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(sorted(rows, key=key))
        pq.write_table(pa_csv.read_csv(source), tmp_path / f"by-{order}.parquet")
        for path in (source, tmp_path / f"by-{order}.parquet"):
            warnings = []
            streamed = scored_whole_and_streamed(bundle, path, tmp_path, warnings)
            assert streamed.num_rows == len(rows) - STORES  # each series' first week has none before it
            assert not [w for w in warnings if "go back" in w]


def test_a_file_whose_series_go_back_in_time_is_read_whole_and_says_so(retailer, bundle, tmp_path, monkeypatch):
    from pipeline import tables

    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 1024)
    _, new, rows = retailer
    source = tmp_path / "backwards.csv"
    with source.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["date"], reverse=True))
    warnings = []
    scored_whole_and_streamed(bundle, source, tmp_path, warnings)
    assert any("go back in time" in w and "reading it whole" in w for w in warnings)


def test_a_static_value_that_changes_in_a_later_chunk_is_refused_naming_it(retailer, bundle, tmp_path, monkeypatch):
    from pipeline import tables
    from pipeline.history_scoring import score_history_file

    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 1024)
    _, new, rows = retailer
    changed = [dict(r) for r in rows]
    changed[-1]["store_size"] = str(float(changed[-1]["store_size"]) + 100)
    source = tmp_path / "changed.csv"
    with source.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(changed)
    output = tmp_path / "out.csv"
    with pytest.raises(DataError, match=f"'store_size' is declared static.*{changed[-1]['store']}"):
        score_history_file(source, output, bundle)
    assert not output.exists()  # nothing written


def as_a_file_shows(values):
    """Forecasts as `demand predict` and CSV answers write them: rounded to DECIMALS places."""
    from pipeline.scoring import DECIMALS

    return np.round(np.asarray(values, dtype=np.float64), DECIMALS).tolist()


def test_rows_columns_csv_and_v2_answer_what_demand_predict_writes(retailer, served, predicted):
    _, new, rows = retailer
    expected = [predicted[r["store"], r["date"]] for r in rows]
    instances = served.post("/predict", json={"instances": [row_of(r) for r in rows]})
    assert instances.status_code == 200, instances.get_json()
    assert as_a_file_shows([p["units_sold"] for p in instances.get_json()["predictions"]]) == expected
    assert instances.get_json()["features"][-4:] == [
        "category=cold_drinks",
        "category=fresh_bread",
        "category=snacks",
        "category=soup",
    ]
    columns = {key: [row_of(r)[key] for r in rows] for key in row_of(rows[0])}
    columnar = served.post("/predict", json={"inputs": columns})
    assert as_a_file_shows(columnar.get_json()["outputs"]["units_sold"]) == expected
    as_csv = served.post("/predict", data=new.read_bytes(), content_type="text/csv")
    assert as_csv.status_code == 200, as_csv.get_data(as_text=True)
    answered = list(csv.DictReader(as_csv.get_data(as_text=True).splitlines()))
    assert [float(r["forecast_units_sold"]) for r in answered] == expected
    v2 = served.post(
        "/v2/models/demand/infer",
        json={
            "inputs": [
                {
                    "name": key,
                    "datatype": "BYTES" if key in ("store", "date", "category") else "FP32",
                    "shape": [len(rows)],
                    "data": values,
                }
                for key, values in columns.items()
            ]
        },
    )
    assert v2.status_code == 200, v2.get_json()
    assert as_a_file_shows(v2.get_json()["outputs"][0]["data"]) == expected


def test_a_plan_feeds_each_weeks_forecast_into_the_next_weeks_history(retailer, served):
    """Week 1 of a plan is the one-step forecast of the week after training; week 2 is what a row of
    week 2 gets when week 1 sold what was forecast: the lags and the means read the forecast."""
    _, _, rows = retailer
    store = rows[0]["store"]
    weeks = [r for r in rows if r["store"] == store][:3]
    plan = {"series": [{"id": store, "weeks": [{name: float(w[name]) for name in KNOWN} for w in weeks]}]}
    answer = served.post("/forecast", json=plan)
    assert answer.status_code == 200, answer.get_json()
    planned = answer.get_json()["series"][0]["weeks"]
    assert [w["week"] for w in planned] == [w["date"] for w in weeks]
    first = served.post(
        "/predict",
        json={
            name: value
            for name, value in row_of(weeks[0], actual=False).items()
            if name not in ("date", "store_size", "category")
        },
    )
    assert planned[0]["units_sold"] == pytest.approx(first.get_json()["predictions"][0]["units_sold"], rel=1e-6)
    fed = [
        {**row_of(weeks[0], actual=False), "sales": max(planned[0]["units_sold"], 0.0)},
        row_of(weeks[1], actual=False),
    ]
    second = served.post("/predict", json={"instances": fed})
    assert planned[1]["units_sold"] == pytest.approx(second.get_json()["predictions"][1]["units_sold"], rel=1e-6)


def test_a_covariate_changed_in_week_3_moves_week_3_and_not_weeks_1_and_2(retailer, served, tmp_path, runner):
    _, _, rows = retailer
    store = rows[0]["store"]
    weeks = [{name: float(r[name]) for name in KNOWN} for r in rows if r["store"] == store][:5]
    changed = [dict(w) for w in weeks]
    changed[2]["display"] = 1.0 - weeks[2]["display"]
    changed[2]["price"] = weeks[2]["price"] * 0.6

    def plan(of):
        answer = served.post("/forecast", json={"series": [{"id": store, "weeks": of}], "levels": [0.8]})
        assert answer.status_code == 200, answer.get_json()
        return [w["units_sold"] for w in answer.get_json()["series"][0]["weeks"]]

    before, after = plan(weeks), plan(changed)
    assert after[:2] == before[:2]
    assert abs(after[2] - before[2]) > 1e-3 * before[2]
    # `demand forecast` reads the same plan from a CSV, named as the file names its columns
    plan_csv = tmp_path / "plan.csv"
    first = np.datetime64(rows[0]["date"], "D")
    with plan_csv.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["store", "date", *KNOWN])
        for h, week in enumerate(changed):
            writer.writerow([store, str(first + 7 * h), *(week[name] for name in KNOWN)])
    output = tmp_path / "out.csv"
    done = invoke(runner, "forecast", "--plan", str(plan_csv), "--output", str(output), "--model-dir", str(retailer[0]))
    assert done.exit_code == 0, done.output
    offline = [float(r["units_sold"]) for r in csv.DictReader(output.open())]
    assert offline == pytest.approx(after, rel=1e-6)


def test_a_plans_history_replaces_the_stored_weeks(bundle, served):
    store, (next_week, tail) = next(iter(bundle.tails.items()))
    week = {name: 1.0 for name in KNOWN}

    def first_week(**series):
        answer = served.post("/forecast", json={"series": [{"id": store, "weeks": [week], **series}]})
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()["series"][0]["weeks"][0]

    stored = first_week()["units_sold"]
    assert first_week(history=tail.tolist(), date=str(next_week))["units_sold"] == pytest.approx(stored, rel=1e-6)
    halved = first_week(history=(tail / 2).tolist(), date=str(next_week))
    assert halved["units_sold"] < stored and halved["filled"] == []
    undated = first_week(history=tail.tolist())  # after a history of its own, the week is the plan's to say
    assert undated["week"] is None and undated["filled"] == ["year_cycle_sin", "year_cycle_cos"]


def test_a_files_unknown_series_are_the_same_as_text_or_dictionary_coded(bundle):
    import pyarrow as pa

    known = next(iter(bundle.tails))
    names = ["nowhere-99", known, "", "nowhere-99", known]
    for column in (names, pa.array(names), pa.array(names).dictionary_encode()):
        assert bundle.unknown_series(column).tolist() == [0, 3]


def test_a_series_never_seen_is_served_filled_and_flagged(served):
    row = {
        "store": "nowhere-99",
        "prev_week_sales": 300,
        "store_size": 1000,
        "category": "soup",
        "price": 2.0,
        "display": 0,
        "temperature": 10,
    }
    answer = served.post("/predict", json=row)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["unknown_series"] == ["nowhere-99"]
    assert body["predictions"][0]["filled"] == [*HISTORY, "year_cycle_sin", "year_cycle_cos"]
    dated = served.post("/predict", json={**row, "date": "2024-03-04"}).get_json()
    assert dated["predictions"][0]["filled"] == list(HISTORY)  # the calendar is known from the week
    toys = served.post("/predict", json={**row, "date": "2024-03-04", "category": "toys"}).get_json()
    assert toys["predictions"][0]["filled"] == [*HISTORY, "category"]  # a category never seen: served, and said so
    assert toys["predictions"][0]["units_sold"] != dated["predictions"][0]["units_sold"]


@pytest.mark.parametrize(
    "body, named",
    [
        ({"store": "aalborg-01", "price": 1.0, "display": 0}, "temperature is missing"),
        ({"store": "aalborg-01", "price": 1.0, "display": 0, "temperature": "warm"}, "temperature must be a number"),
        ({"store": "aalborg-01", "price": 1.0, "display": 0, "temperature": 1, "colour": 2}, "colour is not a column"),
        (
            {"store": "new-1", "price": 1.0, "display": 0, "temperature": 1, "prev_week_sales": 3, "category": "soup"},
            "store_size is missing",
        ),
        (
            {"store": "new-1", "price": 1.0, "display": 0, "temperature": 1, "prev_week_sales": 3, "store_size": 9},
            "category is missing",
        ),
        (
            {"store": "new-1", "price": 1.0, "display": 0, "temperature": 1, "store_size": 9, "category": "soup"},
            "prev_week_sales is missing",
        ),
        (
            {
                "store": "new-1",
                "price": 1.0,
                "display": 0,
                "temperature": 1,
                "store_size": 9,
                "category": True,
                "prev_week_sales": 3,
            },
            "category must be text",
        ),
        (
            {"store": "aalborg-01", "price": 1.0, "display": 0, "temperature": 1, "date": "soon"},
            "date must be an ISO date",
        ),
        (
            {"store": "aalborg\n01", "price": 1.0, "display": 0, "temperature": 1, "date": "2026-01-05"},
            "store must be a name without control characters",
        ),
    ],
)
def test_a_request_without_what_the_model_reads_is_a_400_naming_it(served, body, named):
    answer = served.post("/predict", json={"instances": [body]})
    assert answer.status_code == 400 and named in answer.get_json()["error"], answer.get_json()
    assert answer.get_json()["error"].startswith("instances[0].")


@pytest.mark.parametrize(
    "ident, named",
    [
        ("aalborg\t01", "series[0].id must be a name without control characters"),
        ("  ", "series[0].id must not be empty"),
    ],
)
def test_a_plan_whose_id_is_not_a_name_is_a_400_naming_it(served, ident, named):
    weeks = [{name: 1.0 for name in KNOWN}]
    answer = served.post("/forecast", json={"series": [{"id": ident, "weeks": weeks}]})
    assert answer.status_code == 400 and answer.get_json()["error"].startswith(named), answer.get_json()


def test_a_plan_without_a_covariate_in_week_3_is_a_400_naming_it(served):
    weeks = [{name: 1.0 for name in KNOWN} for _ in range(4)]
    del weeks[2]["display"]
    answer = served.post("/forecast", json={"series": [{"id": "aalborg-01", "weeks": weeks}]})
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("series[0].weeks[2].display is missing"), answer.get_json()


def test_openapi_and_v2_metadata_follow_the_spec(served):
    schemas = served.get("/openapi.json").get_json()["components"]["schemas"]
    assert schemas["Instance"]["required"] == list(KNOWN)
    assert {"store", "date", "store_size", "prev_week_sales"} <= set(schemas["Instance"]["properties"])
    assert schemas["PlannedWeek"]["required"] == list(KNOWN)
    assert schemas["Instance"]["properties"]["category"]["type"] == "string"
    metadata = served.get("/v2/models/demand").get_json()
    assert metadata["parameters"]["feature_order"][:4] == ["prev_week_sales", *KNOWN]
    assert {t["name"] for t in metadata["inputs"]} >= {"store", "date", *KNOWN}


@pytest.mark.slow
def test_a_history_model_of_the_three_inputs_answers_the_quick_starts_one_row(tmp_path, runner):
    """The quick start's curl: three inputs, no series, no week. The history and the calendar are filled, and said so."""
    from service.app import create_app

    models = str(tmp_path / "models")
    done = invoke(
        runner,
        "train",
        "--data",
        str(DEFAULT_CSV),
        "--preset",
        "log-large-batch",
        "--epochs",
        "20",
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
    client = create_app({"MODEL_DIR": models, "RELOAD_INTERVAL": 0}).test_client()
    assert client.get("/readyz").status_code == 200
    answer = client.post(
        "/predict", json={"prev_week_sales": 76440, "discount_fraction": 63, "weeks_to_next_holidays": 2}
    )
    assert answer.status_code == 200, answer.get_json()
    prediction = answer.get_json()["predictions"][0]
    assert prediction["units_sold"] > 0 and prediction["filled"] == [*HISTORY, "year_cycle_sin", "year_cycle_cos"]
    card = json.loads(next((tmp_path / "models" / "versions").iterdir()).joinpath("card.json").read_text())
    assert card["features"]["history"] and card["features"]["calendar"]


def test_a_backtests_recursive_forecasts_are_the_plans_forecasts(retailer, bundle, served):
    """The backtest and the calibration chain forecasts through the features (pipeline.backtest.forecast_chains);
    plans do it in the bundle (Bundle.forecast_plan): the same weeks from the same start give the same forecasts."""
    from pipeline.backtest import chains, forecast_chains

    _, new, rows = retailer
    later = load_file(new, spec=bundle.spec, tails=bundle.tails)
    grid = chains(later)
    stepped = forecast_chains(lambda X, series: bundle.forecast(X, series=series)["units_sold"], later, grid)
    for s, store in enumerate(sorted({r["store"] for r in rows})):
        weeks = [{name: float(r[name]) for name in KNOWN} for r in rows if r["store"] == store]
        answer = served.post("/forecast", json={"series": [{"id": store, "weeks": weeks}]})
        planned = [w["units_sold"] for w in answer.get_json()["series"][0]["weeks"]]
        assert later.series[grid[0, s]] == store
        assert planned == pytest.approx(stepped[:, s].tolist(), rel=1e-5)


def test_a_streamed_file_reads_a_padded_name_as_its_series_and_refuses_lines_joined_by_quotes(
    retailer, bundle, tmp_path, monkeypatch
):
    """Names are trimmed and checked once per distinct name: a name with spaces around it is its series
    (the same forecasts as the file without them), and a cell whose quotes took in the next lines is
    refused naming its line, in whichever chunk it falls."""
    from pipeline import tables
    from pipeline.history_scoring import score_history_file

    monkeypatch.setattr(tables, "STREAM_BLOCK_BYTES", 1024)
    _, new, rows = retailer
    header = ",".join(rows[0])
    lines = new.read_text().splitlines()
    padded = [
        line.replace(f"{rows[i]['store']},", f"  {rows[i]['store']} ,", 1) if i % 2 else line
        for i, line in enumerate(lines[1:])
    ]
    source = tmp_path / "padded.csv"
    source.write_text("\n".join([header, *padded]) + "\n")
    score_history_file(new, tmp_path / "plain.csv", bundle)
    score_history_file(source, tmp_path / "padded-out.csv", bundle)
    assert (tmp_path / "padded-out.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()

    joined = list(lines)
    joined[-6] = joined[-6].replace(rows[-6]["store"], '"' + rows[-6]["store"], 1)
    joined[-4] = joined[-4].replace(rows[-4]["store"], rows[-4]["store"] + '"', 1)
    source.write_text("\n".join(joined) + "\n")
    with pytest.raises(DataError, match=rf"line {len(lines) - 5}, column 'store': holds 2 line break\(s\)"):
        score_history_file(source, tmp_path / "joined-out.csv", bundle)
    assert not (tmp_path / "joined-out.csv").exists()
