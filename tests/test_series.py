"""Networks that tell series apart: each series' own first-layer offsets, learned
beside the shared network, served by name in every request format.

The published fixture's history names three series, store-01 to store-03.
"""

import csv
import io
import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.backtest import gradient_boosting
from pipeline.bundle import Bundle
from pipeline.data import Dataset
from pipeline.model import DemandMLP, average_of
from pipeline.normalize import MinMaxStats
from pipeline.presets import CANDIDATES
from pipeline.registry import Registry
from pipeline.train import fit, predict_units
from service.series import names_from_values

from .conftest import INSTANCE, invoke

KNOWN = ["store-01", "store-02", "store-03"]
ROWS = [dict(INSTANCE, series=name) for name in KNOWN]


def forecasts(client, instances):
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def units(answer):
    return [p["units_sold"] for p in answer["predictions"]]


# ---------------------------------------------------------------- the model


def test_series_codes_give_each_known_name_its_index_and_any_other_the_unknown_one():
    # A blank name is no series: its rows train the unknown row, and a blank request row takes it.
    stats = MinMaxStats.fit(np.ones((5, 3)), np.ones(5), series=np.array(["b", "a", "", "b", "c"]))
    assert stats.series == ("a", "b", "c")
    names = ["c", "a", "zz", "", "b"]
    assert stats.series_codes(names).tolist() == [3, 1, 0, 0, 2]
    assert stats.series_codes(pa.array(names)).tolist() == [3, 1, 0, 0, 2]  # a file's column, looked up in C
    coded = pa.array(["b", "zz", "b", "", "a", "zz"]).dictionary_encode()  # each distinct name looked up once
    assert stats.series_codes(coded).tolist() == [2, 0, 2, 0, 1, 0]
    assert stats.series_codes(None) is None
    assert MinMaxStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats


def test_request_names_are_trimmed_text_and_a_whole_number_names_a_series():
    assert names_from_values([" store-01 ", 7, None], str) == ["store-01", "7", ""]


def test_gradient_boosting_given_the_series_takes_the_most_frequent_when_there_are_too_many():
    """scikit-learn takes at most 255 categories in one input: the rest count as missing, so a
    backtest of many series still has this baseline in every window."""
    rng = np.random.default_rng(0)
    names = np.array([f"s{i:03d}" for i in range(300)] + ["s000"] * 50)
    history = Dataset(rng.uniform(0, 100, (len(names), 3)), rng.uniform(0, 100, len(names)), series=names)
    predict = gradient_boosting(history, by_series=True)
    assert predict(history.X[:3], history.series[:3]).shape == (3,)


def test_an_average_of_networks_that_know_series_is_the_mean_of_their_forecasts():
    torch.manual_seed(0)
    members = [DemandMLP((6, 4), "tanh", n_series=3), DemandMLP((5, 4), "tanh", n_series=3)]
    with torch.no_grad():
        for member in members:
            member.series_rows.weight.normal_()  # zero at first: make the offsets matter
    merged = average_of(members)
    x, codes = torch.rand(8, 3), torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    with torch.no_grad():
        expected = sum(m(x, codes) for m in members) / len(members)
        torch.testing.assert_close(merged(x, codes), expected)
        torch.testing.assert_close(merged(x), sum(m(x) for m in members) / len(members))  # no series: the unknown row


def test_a_network_told_the_series_learns_that_one_sells_three_times_the_other():
    """The same weeks (last week's sales too), one series selling three times
    the other: only the series tells them apart, and the forecast follows it."""
    rng = np.random.default_rng(0)
    weeks = 80
    X = np.column_stack([rng.uniform(900, 1100, weeks), rng.choice([0, 20, 40], weeks), rng.integers(0, 10, weeks)])
    y = X[:, 0] * (1 + X[:, 1] / 100)
    data = Dataset(np.vstack([X, X]), np.concatenate([y, 3 * y]), series=np.array(["small"] * weeks + ["big"] * weeks))
    result = fit(data, None, CANDIDATES["log-small-full"].with_overrides(device="cpu", epochs=400))
    assert result.stats.series == ("big", "small")
    week = np.array([[1000.0, 20, 3]])
    small, big, unknown = (
        predict_units(result.mlp, result.stats, week, names)[0] for names in (["small"], ["big"], ["nobody"])
    )
    assert 2.5 * small < big < 3.5 * small
    assert small < unknown < big
    plain = fit(data, None, CANDIDATES["log-small-full"].with_overrides(device="cpu", epochs=400, by_series=False))
    assert plain.stats.series == () and plain.mlp.series_rows is None


def test_a_series_row_moves_only_in_the_steps_that_see_it():
    """Lazy Adam for the series' rows: with steps of sampled rows most series are absent from
    most steps, and plain Adam would keep moving their rows on momentum alone."""
    from pipeline.train import TorchEngine

    engine = TorchEngine(CANDIDATES["log-small-full"].with_overrides(device="cpu"), "cpu", n_series=3)
    rows = engine.model.series_rows.weight
    X, y = torch.rand(8, 3), torch.rand(8, 1)

    def step(series):
        before = rows.detach().clone()
        engine.step(X, y, torch.full((8,), series))
        return (rows.detach() != before).any(dim=1).tolist()

    moved = step(1)
    assert moved[1] and not moved[2] and not moved[3]  # (row 0 moves with the rows hidden as unknown)
    moved = step(2)
    assert moved[2] and not moved[1] and not moved[3]  # series 1, absent now, stays where its step left it


def test_lazy_adam_is_used_where_epochs_sample_the_rows(monkeypatch):
    from pipeline import train

    chosen, real = [], train.TorchEngine.__init__

    def recording(engine, config, device, n_series=0, lazy_series=True, **rest):
        chosen.append(lazy_series)
        real(engine, config, device, n_series, lazy_series, **rest)

    monkeypatch.setattr(train.TorchEngine, "__init__", recording)
    rng = np.random.default_rng(0)
    for rows in (900, 9000):  # below and above SAMPLE_ABOVE_ROWS (8,192)
        data = Dataset(
            rng.uniform(1, 100, (rows, 3)),
            rng.uniform(1, 100, rows),
            series=np.array([f"s{i % 50}" for i in range(rows)]),
        )
        fit(data, None, CANDIDATES["log-small-full"].with_overrides(device="cpu", epochs=1))
    assert chosen == [False, True]


def test_the_published_model_knows_the_series_of_its_history(published):
    registry = Registry(published)
    version = registry.champion()
    normalization = json.loads((registry.path(version) / "normalization.json").read_text())
    assert normalization["series"] == KNOWN
    card = registry.card(version)
    assert card["model"]["series_known"] == 3 and card["schema"]["series_input"]["name"] == "series_index"
    bundle = Bundle.load(registry)
    assert bundle.knows_series
    X = np.array([list(INSTANCE.values())] * 5, dtype=np.float32)
    out = bundle.forecast(X, series=np.array([*KNOWN, "store-99", ""]))["units_sold"]
    assert len(set(out[:3].tolist())) == 3  # each known series its own forecast
    assert out[3] == out[4] == bundle.forecast(X[:1])["units_sold"][0]  # unknown, unnamed, no series: the same
    # A file's column, as text or dictionary-coded (each distinct name once): the same unknown rows.
    names = ["store-99", "store-01", "", "store-99", "store-02", "x"]
    for column in (names, pa.array(names), pa.array(names).dictionary_encode()):
        assert bundle.unknown_series(column).tolist() == [0, 3, 5]


def test_no_series_trains_a_default_model_that_tells_none_apart(tmp_path, small_csv, runner):
    result = invoke(
        runner,
        "train",
        "--data",
        str(small_csv),
        "--model-dir",
        str(tmp_path),
        "--preset",
        "log-small-full",
        "--epochs",
        "20",
        "--no-series",
    )
    assert result.exit_code == 0, result.output
    registry = Registry(tmp_path)
    assert not Bundle.load(registry).knows_series
    assert registry.card(registry.champion())["model"]["series_known"] == 0


def test_a_chapter_model_has_no_series_input_and_ignores_names_as_it_always_did(tmp_path, small_csv, runner):
    result = invoke(
        runner, "train", "--data", str(small_csv), "--model-dir", str(tmp_path), "--preset", "chapter", "--epochs", "20"
    )
    assert result.exit_code == 0, result.output
    bundle = Bundle.load(Registry(tmp_path))
    assert not bundle.knows_series
    X = np.array([list(INSTANCE.values())] * 2, dtype=np.float32)
    out = bundle.forecast(X, series=KNOWN[:2])["units_sold"]
    assert out[0] == out[1]
    assert len(bundle.unknown_series(["store-77"])) == 0  # it knows no series: none is news
    from service.app import create_app

    client = create_app({"MODEL_DIR": str(tmp_path), "RELOAD_INTERVAL": 0}).test_client()
    answer = forecasts(client, [dict(INSTANCE, series=7.5), dict(INSTANCE, series="store-77")])
    assert "unknown_series" not in answer and len(set(units(answer))) == 1


def test_demand_predict_refuses_a_series_column_that_is_not_text_by_name(published, tmp_path, runner):
    weeks = tmp_path / "weeks.parquet"
    pq.write_table(
        pa.table(
            {
                "prev_week_sales": [76440.0],
                "discount_fraction": [63.0],
                "weeks_to_next_holidays": [2.0],
                "series": [["store-01"]],
            }
        ),
        weeks,
    )
    result = invoke(
        runner, "predict", "--input", str(weeks), "--output", str(tmp_path / "out.csv"), "--model-dir", str(published)
    )
    assert result.exit_code != 0
    assert (
        "weeks.parquet: column 'series' of type list<element: string> cannot be read as series names" in result.output
    )
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- the service, every format


def test_rows_named_by_series_get_their_series_forecast(client):
    named = units(forecasts(client, ROWS))
    assert len(set(named)) == 3
    for name, value in zip(KNOWN, named):  # the same row alone, in a one-instance body too
        response = client.post("/predict", json=dict(INSTANCE, series=name))
        assert response.get_json()["predictions"][0]["units_sold"] == value


def test_an_unknown_or_missing_series_is_forecast_as_a_typical_one_and_listed(client):
    answer = forecasts(
        client,
        [dict(INSTANCE, series="store-99"), INSTANCE, dict(INSTANCE, series=None), dict(INSTANCE, series="store-01")],
    )
    values = units(answer)
    assert values[0] == values[1] == values[2] != values[3]
    assert answer["unknown_series"] == ["store-99"] and answer["unknown_series_count"] == 1
    assert "unknown_series" not in forecasts(client, ROWS)


@pytest.mark.parametrize(
    "value, problem",
    [
        (7.5, "must be text, the series' name, got a number"),
        (True, "must be text, the series' name, got a boolean"),
        (["store-01"], "must be text, the series' name, got a list"),
        ("x" * 201, "must be at most 200 characters, got 201"),
    ],
)
def test_a_series_that_is_not_a_name_is_refused_by_field(client, value, problem):
    response = client.post("/predict", json={"instances": [ROWS[0], dict(INSTANCE, series=value)]})
    assert response.status_code == 400
    assert response.get_json()["error"] == f"instances[1].series {problem}"


def test_columns_take_a_series_column(client):
    expected = units(forecasts(client, ROWS + [INSTANCE]))
    inputs = {name: [value] * 4 for name, value in INSTANCE.items()}
    response = client.post("/predict", json={"inputs": {**inputs, "series": [*KNOWN, None]}})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["outputs"]["units_sold"] == expected
    with_unknown = client.post("/predict", json={"inputs": {**inputs, "series": [*KNOWN, "store-99"]}}).get_json()
    assert with_unknown["unknown_series"] == ["store-99"]
    short = client.post("/predict", json={"inputs": {**inputs, "series": KNOWN}})
    assert short.status_code == 400
    assert short.get_json()["error"].startswith("inputs.series has 3 names for 4 rows")
    bad = client.post("/predict", json={"inputs": {**inputs, "series": [*KNOWN, 5.5]}})
    assert bad.get_json()["error"] == "inputs.series[3] must be text, the series' name, got a number"


def test_a_csv_body_uses_its_series_column(client):
    expected = units(forecasts(client, ROWS))
    body = "series,prev_week_sales,discount_fraction,weeks_to_next_holidays\n" + "".join(
        f"{name},{INSTANCE['prev_week_sales']},{INSTANCE['discount_fraction']},{INSTANCE['weeks_to_next_holidays']}\n"
        for name in KNOWN
    )
    response = client.post("/predict", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.get_data(as_text=True)
    rows = csv.DictReader(io.StringIO(response.get_data(as_text=True)))
    assert [float(row["forecast_units_sold"]) for row in rows] == pytest.approx(expected, rel=1e-6)


def test_a_plans_series_ids_are_its_series_names(client):
    expected = units(forecasts(client, ROWS))
    plan = {
        "series": [
            {
                "id": name,
                "prev_week_sales": INSTANCE["prev_week_sales"],
                "weeks": [
                    {
                        "discount_fraction": INSTANCE["discount_fraction"],
                        "weeks_to_next_holidays": INSTANCE["weeks_to_next_holidays"],
                    }
                ],
            }
            for name in [*KNOWN, "store-99"]
        ]
    }
    answer = client.post("/forecast", json=plan).get_json()
    first_weeks = [s["weeks"][0]["units_sold"] for s in answer["series"]]
    assert first_weeks[:3] == pytest.approx(expected, rel=1e-6)
    assert answer["unknown_series"] == ["store-99"]


def test_v2_takes_an_optional_bytes_input_of_series_names(client):
    expected = units(forecasts(client, ROWS))
    metadata = client.get("/v2/models/demand").get_json()
    assert {"name": "series", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
    features = {"name": "features", "datatype": "FP32", "shape": [3, 3], "data": [list(INSTANCE.values())] * 3}
    answer = client.post(
        "/v2/models/demand/infer",
        json={"inputs": [features, {"name": "series", "datatype": "BYTES", "shape": [3], "data": KNOWN}]},
    ).get_json()
    assert answer["outputs"][0]["data"] == pytest.approx(expected, rel=1e-6)
    # Triton's binary form: each element's length (4 bytes, little-endian), then its bytes.
    names = b"".join(struct.pack("<I", len(n)) + n.encode() for n in [*KNOWN[:2], "store-99"])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "series",
                    "datatype": "BYTES",
                    "shape": [3, 1],
                    "parameters": {"binary_data_size": len(names)},
                },
                features,
            ]
        }
    ).encode()
    response = client.post(
        "/v2/models/demand/infer",
        data=header + names,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.get_data()
    answer = response.get_json()
    assert answer["outputs"][0]["data"][:2] == pytest.approx(expected[:2], rel=1e-6)
    assert answer["parameters"]["unknown_series"] == ["store-99"]
    cut = client.post(
        "/v2/models/demand/infer",
        data=header + names[:-2],
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert cut.status_code == 400 and "binary" in cut.get_json()["error"]


def test_demand_predict_reads_the_series_column(published, tmp_path, runner, client):
    expected = units(forecasts(client, ROWS))
    weeks = tmp_path / "weeks.csv"
    weeks.write_text(
        "series,prev_week_sales,discount_fraction,weeks_to_next_holidays\n"
        + "".join(f"{name},76440,63,2\n" for name in KNOWN)
        + "store-99,76440,63,2\n,76440,63,2\n"
    )
    out = tmp_path / "out.csv"
    result = invoke(runner, "predict", "--input", str(weeks), "--output", str(out), "--model-dir", str(published))
    assert result.exit_code == 0, result.output
    assert "1 row(s) of series the model does not know" in result.output
    rows = csv.DictReader(io.StringIO(out.read_text()))
    # the unknown store and the row that names none are both forecast as a typical series
    expected += units(forecasts(client, [INSTANCE, INSTANCE]))
    assert [float(row["forecast_units_sold"]) for row in rows] == pytest.approx(expected, rel=1e-6)


def test_the_api_description_has_the_series_in_every_format():
    from service.openapi import SCHEMAS

    assert "series" in SCHEMAS["Instance"]["properties"]
    assert "series" in SCHEMAS["ColumnarRequest"]["properties"]["inputs"]["properties"]
    assert SCHEMAS["SeriesInput"]["properties"]["datatype"]["enum"] == ["BYTES"]
    assert SCHEMAS["InferRequest"]["properties"]["inputs"]["maxItems"] == 2
    for answer in ("RowsResponse", "ColumnarResponse", "ForecastResponse"):
        assert "unknown_series" in SCHEMAS[answer]["properties"]
    assert "unknown_series" in SCHEMAS["InferResponse"]["properties"]["parameters"]["properties"]
