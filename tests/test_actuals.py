"""The weekly loop through the service and the command line: actuals in, forecasts logged, live accuracy out."""

import csv
import datetime as dt
import json
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.registry import Registry
from pipeline.store import actuals, open_engine, upgrade

from .conftest import ROOT, invoke, plain_sales, trained

SERIES, WEEKS = 3, 60


@pytest.fixture(scope="module")
def history_model(tmp_path_factory):
    """(registry, the plain sales file it was trained on): series, week, units sold and the two covariates."""
    folder = tmp_path_factory.mktemp("loop")
    plain, rows = plain_sales(folder, seed=5, series=SERIES, weeks=WEEKS)
    models = trained(folder / "models", plain)
    return models, rows


@pytest.fixture
def client(history_model, tmp_path):
    from service.app import create_app

    models, _ = history_model
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    app = create_app({"MODEL_DIR": str(models), "RELOAD_INTERVAL": 0, "STORE_URL": url})
    return app.test_client()


def next_weeks(history_model):
    """Each series' first week after its training data, and the covariates every posted row carries."""
    models, rows = history_model
    tails = json.loads((Registry(models).path(Registry(models).champion()) / "history.json").read_text())
    return {series: dt.date.fromisoformat(week) for series, week in tails["next_week"].items()}


def row(series, week, units):
    return {"series": series, "week": week.isoformat(), "units_sold": units, "discount_fraction": 10,
            "weeks_to_next_holidays": 3}  # fmt: skip


def stored(client):
    engine = client.application.extensions["demand_store"]
    with engine.connect() as connection:
        return sorted(tuple(r) for r in connection.execute(actuals.select().with_only_columns(*actuals.c[:3])))


def test_posting_actuals_stores_them_once_and_counts_what_it_replaced(client, history_model):
    first = next_weeks(history_model)
    week = dt.timedelta(days=7)
    body = {
        "instances": [row(s, w, 100.0) for s, w in first.items()] + [row("store-01", first["store-01"] + week, 120.0)]
    }
    answer = client.post("/actuals", json=body)
    assert answer.status_code == 200 and answer.get_json() == {"stored": SERIES + 1, "replaced": 0}
    again = client.post("/actuals", json={"instances": [row("store-01", first["store-01"] + week, 130.0)]})
    assert again.get_json() == {"stored": 0, "replaced": 1}
    assert ("store-01", first["store-01"] + week, 130.0) in stored(client)
    as_csv = (
        "series,week,units_sold,discount_fraction,weeks_to_next_holidays\n"
        + f"store-02,{first['store-02'] + week},5,0,2\n"
    )
    answer = client.post("/actuals", data=as_csv, content_type="text/csv")
    assert answer.get_json() == {"stored": 1, "replaced": 0}


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda r: {**r, "units_sold": -1}, "instances[1].units_sold must be >= 0"),
        (lambda r: {**r, "units_sold": "many"}, "instances[1].units_sold must be a number"),
        (lambda r: {**r, "price": 3}, "instances[1].price is not a column of the champion"),
        (
            lambda r: {k: v for k, v in r.items() if k != "discount_fraction"},
            "instances[1].discount_fraction is missing",
        ),
        (lambda r: {**r, "week": "2026-13-01"}, "instances[1].week must be a date as YYYY-MM-DD"),
        (lambda r: {**r, "week": "2031-01-06"}, "is not 7 days after its last week"),
        (lambda r: {**r, "series": "store-01"}, "instances[1]: series 'store-01' week"),  # the same week twice
    ],
)
def test_a_bad_row_is_a_400_naming_it_and_nothing_is_stored(client, history_model, change, named):
    first = next_weeks(history_model)
    good = row("store-01", first["store-01"], 1.0)
    answer = client.post("/actuals", json={"instances": [good, change(row("store-02", first["store-01"], 2.0))]})
    assert answer.status_code == 400 and named in answer.get_json()["error"], answer.get_json()
    assert stored(client) == []


def test_served_forecasts_meet_what_sold_in_the_accuracy_report(client, history_model):
    """The plan's forecasts are logged with their request id; once the weeks have sold, /accuracy's WAPE is
    the one computed here from the same forecasts and actuals."""
    first = next_weeks(history_model)
    plan = {"series": [{"id": s, "weeks": [{"discount_fraction": 10, "weeks_to_next_holidays": 3}] * 3} for s in first]}
    answer = client.post("/forecast", json=plan, headers={"X-Request-Id": "plan-1"})
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == "plan-1"
    client.application.extensions["demand_forecast_log"].flush()
    served = {(s["id"], w["week"], w["step"]): w["units_sold"] for s in answer.get_json()["series"] for w in s["weeks"]}
    sold = {(s, w, step): 900.0 + 10 * step + len(s) for (s, w, step) in served}
    body = [row(s, dt.date.fromisoformat(w), units) for (s, w, _), units in sorted(sold.items(), key=lambda i: i[0][1])]
    assert client.post("/actuals", json={"instances": body}).status_code == 200
    report = client.get("/accuracy?weeks=13").get_json()
    steps = {s["step"]: s for s in report["versions"]["v1"]["all"]}
    for step in (1, 2, 3):
        pairs = [(served[k], sold[k]) for k in served if k[2] == step]
        assert steps[step]["count"] == SERIES
        assert steps[step]["wape"] == pytest.approx(sum(abs(f - a) for f, a in pairs) / sum(a for _, a in pairs))
    assert set(steps[1]["coverage"]) == {str(level) for level in answer.get_json()["levels"]}  # the levels served
    # The command line reads the same store and says the same.
    cli = invoke(
        CliRunner(),
        "models",
        "accuracy",
        "--json",
        "--model-dir",
        str(history_model[0]),
        "--store-url",
        str(client.application.extensions["demand_store"].url),
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == report


def test_the_log_holds_at_most_its_limit_of_weeks_and_counts_the_weeks_it_drops(monkeypatch):
    """A plan's run holds many weeks: the log's limit, and what it drops, are counted in weeks."""
    import logging

    from service import forecast_log

    monkeypatch.setattr(forecast_log, "MAX_PENDING", 10)
    log = forecast_log.ForecastLog(None, logging.getLogger("test"))
    monkeypatch.setattr(log, "start", lambda: None)  # no writer: what is recorded stays pending
    run = ("a", dt.date(2026, 1, 5), 1, 4, [1.0] * 4, None)
    log.record("r1", "v1", [run, run])
    log.record("r2", "v1", [run])  # 12 weeks would be past the limit: dropped
    assert (log.pending_weeks, len(log.pending), log.dropped) == (8, 2, 4)


def test_without_a_reachable_store_forecasts_are_served_and_the_dropped_records_counted(history_model):
    from service.app import create_app
    from service.testing import free_port

    models, _ = history_model
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    app = create_app({"MODEL_DIR": str(models), "RELOAD_INTERVAL": 0, "STORE_URL": url})
    client = app.test_client()
    first = next_weeks(history_model)
    plan = {"series": [{"id": "store-01", "weeks": [{"discount_fraction": 10, "weeks_to_next_holidays": 3}] * 2}]}
    assert client.post("/forecast", json=plan).status_code == 200
    app.extensions["demand_forecast_log"].flush()
    health = client.get("/healthz").get_json()["forecast_log"]
    assert health["status"] == "failing" and health["dropped"] == 2
    refused = client.post("/actuals", json={"instances": [row("store-01", first["store-01"], 1.0)]})
    assert refused.status_code == 503 and "nothing was stored" in refused.get_json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize("point, kept", [("actuals-before-commit", False), ("after-commit", None)])
def test_demand_actuals_load_killed_mid_write_stores_all_or_nothing(history_model, tmp_path, point, kept):
    models, _ = history_model
    first = next_weeks(history_model)
    path = tmp_path / "actuals.csv"
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, list(row("store-01", first["store-01"], 1.0)))
        writer.writeheader()
        for s, w in first.items():
            writer.writerows(row(s, w + dt.timedelta(days=7 * i), 50.0 + i) for i in range(4))
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "actuals",
        "load",
        str(path),
        "--model-dir",
        str(models),
        "--store-url",
        url,
    ]
    killed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "DEMAND_CRASH_AT": point}
    )
    if kept is False:
        assert killed.returncode == -signal.SIGKILL
        engine = open_engine(url)
        with engine.connect() as connection:
            assert connection.execute(actuals.select()).all() == []
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    engine = open_engine(url)
    with engine.connect() as connection:
        assert len(connection.execute(actuals.select()).all()) == 4 * SERIES


def test_a_three_input_plan_with_a_start_week_is_logged_and_scored(published, tmp_path):
    """The quick start's model reads no weeks; a plan that says when it starts is logged all the same."""
    from service.app import create_app

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    client = create_app({"MODEL_DIR": str(published), "RELOAD_INTERVAL": 0, "STORE_URL": url}).test_client()
    week = {"discount_fraction": 20, "weeks_to_next_holidays": 4}
    plan = {"series": [{"id": "store-9", "prev_week_sales": 40000, "start": "2027-01-04", "weeks": [week, week]}]}
    answer = client.post("/forecast", json=plan)
    assert answer.status_code == 200 and answer.headers["X-Request-Id"]
    client.application.extensions["demand_forecast_log"].flush()
    forecasts = [w["units_sold"] for w in answer.get_json()["series"][0]["weeks"]]
    sold = [{**week, "series": "store-9", "week": w, "units_sold": 41000.0} for w in ("2027-01-04", "2027-01-11")]
    assert client.post("/actuals", json={"instances": sold}).status_code == 200
    report = client.get("/accuracy").get_json()["versions"]
    (version,) = report
    assert [s["count"] for s in report[version]["all"]] == [1, 1]
    assert [s["wape"] for s in report[version]["all"]] == pytest.approx([abs(f - 41000) / 41000 for f in forecasts])
    for start in ("next monday", "2027-W01-1", "9999-12-27"):  # the last: its second week is past the calendar
        bad = client.post("/forecast", json={"series": [{**plan["series"][0], "start": start}]})
        assert bad.status_code == 400 and "series[0].start must be the first planned week" in bad.get_json()["error"]


def test_names_are_trimmed_alike_in_plans_and_actuals_so_their_weeks_meet(published, tmp_path):
    """A series named with spaces around it is the same series in a plan, in its actuals and in /accuracy."""
    from service.app import create_app

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    client = create_app({"MODEL_DIR": str(published), "RELOAD_INTERVAL": 0, "STORE_URL": url}).test_client()
    week = {"discount_fraction": 20, "weeks_to_next_holidays": 4}
    plan = {"series": [{"id": "  store-9 ", "prev_week_sales": 40000, "start": "2027-01-04", "weeks": [week]}]}
    answer = client.post("/forecast", json=plan)
    assert answer.status_code == 200 and answer.get_json()["series"][0]["id"] == "store-9"
    sold = {"instances": [{**week, "series": " store-9", "week": "2027-01-04", "units_sold": 41000.0}]}
    assert client.post("/actuals", json=sold).status_code == 200
    client.application.extensions["demand_forecast_log"].flush()
    with open_engine(url).connect() as connection:
        assert [row.series for row in connection.execute(actuals.select())] == ["store-9"]
    report = client.get("/accuracy").get_json()["versions"]
    assert [s["count"] for s in next(iter(report.values()))["all"]] == [1]
    # The next plan and row, named with spaces again, continue from the stored week.
    planned = client.post("/forecast", json={"series": [{"id": " store-9  ", "weeks": [week]}]})
    assert planned.status_code == 200 and planned.get_json()["history_through"] == {"store-9": "2027-01-04"}
    row = client.post("/predict", json={"instances": [{**week, "series": "store-9 ", "week": "2027-01-11"}]})
    assert row.status_code == 200 and row.get_json()["history_through"] == {"store-9": "2027-01-04"}


@pytest.mark.parametrize("log", [True, False], ids=["log on", "log off"])
@pytest.mark.parametrize(
    "first, row, message",
    [
        ({"week": "2027-01-04"}, {"week": "next monday"}, "instances[1].week must be an ISO date like 2024-01-01"),
        ({}, {"week": "next monday"}, "instances[1].week must be an ISO date like 2024-01-01"),  # whatever row 0 holds
        (
            {"week": ""},
            {"week": 12},
            "instances[1].week must be an ISO date like 2024-01-01, in years 1900 to 9000, got a number",
        ),
        (
            {"week": None},
            {"week": "2027-01-04", "series": "store\n9"},
            "instances[1].series must be a name without control characters",
        ),
        ({}, {"week": "2027-01-04", "series": [1]}, "instances[1].series must be text"),  # it is logged under it
    ],
)
def test_a_rows_week_or_name_that_cannot_be_logged_is_refused(published, tmp_path, log, first, row, message):
    """A JSON row's week is read whether or not the log is on: a bad one is a 400 naming it, never a forecast
    whose week was silently dropped; a week that is absent, null or empty is none."""
    from service.app import create_app

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    config = {"MODEL_DIR": str(published), "RELOAD_INTERVAL": 0, "STORE_URL": url, "FORECAST_LOG": log}
    client = create_app(config).test_client()
    good = {"prev_week_sales": 40000, "discount_fraction": 20, "weeks_to_next_holidays": 4, "series": "store-9"}
    answer = client.post("/predict", json={"instances": [{**good, **first}, {**good, **row}]})
    assert answer.status_code == 400 and message in answer.get_json()["error"], answer.get_data(as_text=True)
    assert client.post("/predict", json={"instances": [{**good, **first}, good]}).status_code == 200
    one = client.post("/predict", json={**good, "week": "soon"})  # a body of one instance names the bare field
    assert one.status_code == 400 and one.get_json()["error"].startswith("week must be an ISO date")


def test_a_plan_encoded_in_slices_is_logged_once_all_of_it(published, tmp_path, monkeypatch):
    """A large three-input plan's answer is encoded a slice of series at a time; its runs are recorded once the
    whole answer is: one request, one time served, every series, in the plan's order."""
    from sqlalchemy import select

    from pipeline.store import forecast_runs
    from service import forecast_api
    from service.app import create_app

    monkeypatch.setattr(forecast_api, "SERIES_PER_SLICE", 2)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    client = create_app({"MODEL_DIR": str(published), "RELOAD_INTERVAL": 0, "STORE_URL": url}).test_client()
    week = {"discount_fraction": 20, "weeks_to_next_holidays": 4}
    names = [f"store-{i}" for i in range(5)]
    plan = {
        "series": [{"id": name, "prev_week_sales": 40000, "start": "2027-01-04", "weeks": [week] * 2} for name in names]
    }
    answer = client.post("/forecast", json=plan, headers={"X-Request-Id": "sliced"})
    assert answer.status_code == 200
    client.application.extensions["demand_forecast_log"].flush()
    with open_engine(url).connect() as connection:
        runs = connection.execute(
            select(
                forecast_runs.c.request_id, forecast_runs.c.served_at, forecast_runs.c.series, forecast_runs.c.weeks
            ).order_by(forecast_runs.c.id)
        ).all()
    assert [(r.request_id, r.series, r.weeks) for r in runs] == [("sliced", name, 2) for name in names]
    assert len({r.served_at for r in runs}) == 1


def test_a_plan_without_history_of_its_own_starts_after_the_stored_weeks(client, history_model):
    """A history model: the weeks posted after its training join the weeks it stored; the plan starts after
    them, as the same plan with that history written out does, and the answer says where history ended."""
    first = next_weeks(history_model)
    models, _ = history_model
    week = dt.timedelta(days=7)
    sold = [row("store-01", first["store-01"], 1000.0), row("store-01", first["store-01"] + week, 1100.0)]
    assert client.post("/actuals", json={"instances": sold}).status_code == 200
    planned = [{"discount_fraction": 10, "weeks_to_next_holidays": 3}] * 2
    served = client.post("/forecast", json={"series": [{"id": "store-01", "weeks": planned}]}).get_json()
    assert served["history_through"] == {"store-01": (first["store-01"] + week).isoformat()}
    tails = json.loads((Registry(models).path("v1") / "history.json").read_text())
    history = [v for v in tails["sales"]["store-01"] if v is not None] + [1000.0, 1100.0]
    explicit = {"id": "store-01", "history": history[-52:], "week": (first["store-01"] + 2 * week).isoformat()}
    written = client.post("/forecast", json={"series": [{**explicit, "weeks": planned}]}).get_json()
    assert "history_through" not in written  # what a request says itself wins, and is not the store's
    assert [w["units_sold"] for w in served["series"][0]["weeks"]] == [
        w["units_sold"] for w in written["series"][0]["weeks"]
    ]
    assert served["series"][0]["weeks"][0]["week"] == explicit["week"]


def test_a_history_models_row_continues_from_the_stored_weeks_as_a_plan_does(client, history_model):
    """/predict rows for a model of history: a series whose posted weeks run past the model's own continues
    from them, exactly as the plan that starts after them; a row among the stored weeks keeps the model's."""
    first = next_weeks(history_model)
    week = dt.timedelta(days=7)
    sold = [row("store-02", first["store-02"], 900.0), row("store-02", first["store-02"] + week, 2500.0)]
    assert client.post("/actuals", json={"instances": sold}).status_code == 200
    covariates = {"discount_fraction": 10, "weeks_to_next_holidays": 3}
    after = {"series": "store-02", "week": (first["store-02"] + 2 * week).isoformat(), **covariates}
    answer = client.post("/predict", json={"instances": [after]}).get_json()
    assert answer["history_through"] == {"store-02": (first["store-02"] + week).isoformat()}
    plan = client.post("/forecast", json={"series": [{"id": "store-02", "weeks": [covariates]}]}).get_json()
    assert answer["predictions"][0]["units_sold"] == plan["series"][0]["weeks"][0]["units_sold"]
    among = {**after, "week": (first["store-02"] + week).isoformat()}  # a week the store already holds
    kept = client.post("/predict", json={"instances": [among]}).get_json()
    assert "history_through" not in kept
    before = client.post("/predict", json={"instances": [after]}, headers={}).get_json()
    assert before["predictions"] == answer["predictions"]


def stored_store_9(published, tmp_path):
    """(A client of the three-input model with a store holding two weeks of store-9, the covariates posted)."""
    from service.app import create_app

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    client = create_app({"MODEL_DIR": str(published), "RELOAD_INTERVAL": 0, "STORE_URL": url}).test_client()
    week = {"discount_fraction": 20, "weeks_to_next_holidays": 4}
    sold = [
        {**week, "series": "store-9", "week": w, "units_sold": u}
        for w, u in (("2027-01-04", 41000.0), ("2027-01-11", 43500.0))
    ]
    assert client.post("/actuals", json={"instances": sold}).status_code == 200
    return client, week


def test_a_three_input_plan_without_prev_week_sales_takes_the_latest_stored_week(published, tmp_path):
    client, week = stored_store_9(published, tmp_path)
    served = client.post("/forecast", json={"series": [{"id": "store-9", "weeks": [week, week]}]})
    assert served.status_code == 200 and served.get_json()["history_through"] == {"store-9": "2027-01-11"}
    explicit = {"id": "store-9", "prev_week_sales": 43500.0, "start": "2027-01-18", "weeks": [week, week]}
    written = client.post("/forecast", json={"series": [explicit]}).get_json()
    assert served.get_json()["series"] == written["series"]
    unknown = client.post("/forecast", json={"series": [{"id": "store-10", "weeks": [week]}]})
    assert unknown.status_code == 400 and "prev_week_sales is missing" in unknown.get_json()["error"]


def test_drift_flags_an_input_whose_recent_weeks_left_the_training_distribution(client, history_model):
    """The card keeps each input's training deciles; weeks that sell like the training weeks score a small
    index, weeks that sell a hundred times more are flagged, in /accuracy and as gauges."""
    from pipeline.drift import psi, reference_of  # noqa: F401  (the card's reference is written by publish)

    models, rows = history_model
    card = Registry(models).card("v1")
    assert set(card["reference"]) == {"units_sold", "discount_fraction", "weeks_to_next_holidays"}
    first = next_weeks(history_model)
    typical = sorted(float(r["units_sold"]) for r in rows)
    week = dt.timedelta(days=7)
    posted = []
    for i in range(8):
        for j, (series, start) in enumerate(first.items()):
            units = typical[(37 * i + 11 * j) % len(typical)]
            posted.append(
                {
                    **row(series, start + i * week, units),
                    "discount_fraction": float(rows[(i + j) % len(rows)]["discount_fraction"]),
                }
            )
    assert client.post("/actuals", json={"instances": posted}).status_code == 200
    steady = client.get("/accuracy?weeks=8").get_json()["drift"]["inputs"]
    assert steady["units_sold"]["count"] == 8 * SERIES and not steady["units_sold"]["flagged"]
    shifted = [{**row(s, start + (8 + i) * week, 100 * typical[-1])} for i in range(8) for s, start in first.items()]
    assert client.post("/actuals", json={"instances": shifted}).status_code == 200
    drifted = client.get("/accuracy?weeks=8").get_json()["drift"]["inputs"]
    assert drifted["units_sold"]["flagged"] and drifted["units_sold"]["psi"] > 1
    text = client.get("/metrics").get_data(as_text=True)
    assert 'demand_input_psi{input="units_sold"}' in text


@pytest.mark.parametrize(
    "request_args, status, named",
    [
        (dict(path="/accuracy?weeks=%C2%B2", method="get"), 400, "weeks must be a whole number"),
        (dict(json={"instances": [row(" ", dt.date(2026, 1, 5), 1.0)]}), 400, "instances[0].series must be a name"),
        (dict(json={"instances": [row("a\u0000b", dt.date(2026, 1, 5), 1.0)]}), 400, "instances[0].series must be a name"),
        (
            dict(data="series,week,units_sold\n" + "x" * 140_000 + ",2026-01-05,1\n", content_type="text/csv"),
            400,
            "body: line 2",
        ),
    ],
)  # fmt: skip
def test_what_a_stranger_sent_is_a_400_naming_it(client, request_args, status, named):
    args = dict(request_args)
    path, method = args.pop("path", "/actuals"), args.pop("method", "post")
    answer = getattr(client, method)(path, **args)
    assert answer.status_code == status and named in answer.get_json()["error"], answer.get_json()
    assert stored(client) == []


def test_predict_rows_that_name_their_series_and_week_are_logged(client, history_model):
    """Rows of /predict (and their columnar form) that say which series and week they forecast are logged
    at step 1, under the X-Request-Id the answer carries; rows that do not are not."""
    first = next_weeks(history_model)
    covariates = {"discount_fraction": 10, "weeks_to_next_holidays": 3}
    named = [{"series": s, "week": w.isoformat(), **covariates} for s, w in first.items()]
    answer = client.post("/predict", json={"instances": named}, headers={"X-Request-Id": "rows-1"})
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == "rows-1"
    anonymous = client.post("/predict", json={"instances": [{"series": "store-01", **covariates}]})
    assert anonymous.status_code == 200 and "X-Request-Id" not in anonymous.headers
    client.application.extensions["demand_forecast_log"].flush()
    sold = [row(s, w, 500.0) for s, w in first.items()]
    assert client.post("/actuals", json={"instances": sold}).status_code == 200
    (step,) = client.get("/accuracy").get_json()["versions"]["v1"]["all"]
    forecasts = [p["units_sold"] for p in answer.get_json()["predictions"]]
    assert step["step"] == 1 and step["count"] == SERIES
    assert step["wape"] == pytest.approx(sum(abs(f - 500.0) for f in forecasts) / (500.0 * SERIES))


@pytest.mark.slow
def test_an_acknowledged_actual_survives_kill_9_and_one_killed_mid_write_leaves_nothing(history_model, tmp_path):
    """The real service under gunicorn: a week answered 200 is there after the whole service is killed with
    SIGKILL and started again; a request whose worker dies before its commit stores none of its rows."""
    import os

    import requests

    from service.testing import running_service

    models, _ = history_model
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    first = next_weeks(history_model)
    acknowledged = {"instances": [row(s, w, 700.0) for s, w in first.items()]}
    with running_service(models, tmp_path, workers=1, store_url=url) as server:
        assert server.post("/actuals", json=acknowledged).json() == {"stored": SERIES, "replaced": 0}
        os.killpg(server.process.pid, signal.SIGKILL)
    later = {"instances": [row(s, w + dt.timedelta(days=7), 710.0) for s, w in first.items()]}
    with running_service(models, tmp_path, workers=1, store_url=url, crash_at="actuals-before-commit") as server:
        with pytest.raises(requests.ConnectionError):
            server.post("/actuals", json=later)  # the worker died mid-write
        os.killpg(server.process.pid, signal.SIGKILL)
    engine = open_engine(url)
    with engine.connect() as connection:
        kept = sorted((r.series, r.week, r.units_sold) for r in connection.execute(actuals.select()))
    assert kept == sorted((s, w, 700.0) for s, w in first.items())


def test_actuals_may_come_as_columns_as_predict_takes_them(client, history_model):
    first = next_weeks(history_model)
    names = list(first)
    inputs = {
        "series": names,
        "week": [first[s].isoformat() for s in names],
        "units_sold": [100.0] * len(names),
        "discount_fraction": [10] * len(names),
        "weeks_to_next_holidays": [3] * len(names),
    }
    assert client.post("/actuals", json={"inputs": inputs}).get_json() == {"stored": SERIES, "replaced": 0}
    bad = client.post("/actuals", json={"inputs": {**inputs, "units_sold": [1.0, -1.0, 2.0]}})
    assert bad.status_code == 400 and "inputs.units_sold[1] must be >= 0" in bad.get_json()["error"]
    gap = {**inputs, "week": [(first[s] + dt.timedelta(days=21)).isoformat() for s in names]}
    refused = client.post("/actuals", json={"inputs": gap})
    assert refused.status_code == 400 and "inputs row 0: week" in refused.get_json()["error"], refused.get_json()


def test_three_input_rows_that_name_series_and_week_are_logged_and_need_no_prev_week_sales(published, tmp_path):
    """A row naming its series and week is logged; a row of a stored series without prev_week_sales takes the
    stored week before its own (or the latest), and the answer says which."""
    client, week = stored_store_9(published, tmp_path)
    named = {"series": "store-9", "week": "2027-01-18", **week}
    filled = client.post("/predict", json={"instances": [named]})
    assert filled.status_code == 200 and filled.get_json()["history_through"] == {"store-9": "2027-01-11"}
    explicit = client.post("/predict", json={"instances": [{**named, "prev_week_sales": 43500.0}]})
    assert explicit.get_json()["predictions"] == filled.get_json()["predictions"]
    assert "history_through" not in explicit.get_json() and explicit.headers["X-Request-Id"]
    client.application.extensions["demand_forecast_log"].flush()
    later = [{**week, "series": "store-9", "week": "2027-01-18", "units_sold": 44000.0}]
    assert client.post("/actuals", json={"instances": later}).status_code == 200
    (version,) = client.get("/accuracy").get_json()["versions"].values()
    (step,) = version["all"]  # both rows forecast store-9's week of 2027-01-18: the latest counts
    latest = explicit.get_json()["predictions"][0]["units_sold"]
    assert step["count"] == 1 and step["wape"] == pytest.approx(abs(latest - 44000.0) / 44000.0)
    unknown = client.post("/predict", json={"instances": [{"series": "store-10", **week}]})
    assert unknown.status_code == 400 and "prev_week_sales is missing" in unknown.get_json()["error"]


@pytest.fixture(scope="module")
def challenger(history_model, tmp_path_factory):
    """A copy of the history model's registry with a second version, published without being champion."""
    import shutil

    models, _ = history_model
    root = tmp_path_factory.mktemp("shadow") / "models"
    shutil.copytree(models, root)
    trained(root, models.parent / "sales.csv", preset="log-small-batch", epochs=8)  # the file v1 was trained on
    assert Registry(root).champion() == "v1" and Registry(root).versions() == ["v1", "v2"]
    return root


def test_a_shadow_version_scores_the_same_requests_and_its_live_figures_stand_beside_the_champions(
    challenger, history_model, tmp_path
):
    from prometheus_client import REGISTRY

    from pipeline.bundle import Bundle
    from service.app import create_app
    from service.forecast_api import forecast_answer

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(open_engine(url))
    app = create_app({"MODEL_DIR": str(challenger), "RELOAD_INTERVAL": 0, "STORE_URL": url, "SHADOW": "latest"})
    client = app.test_client()
    assert client.get("/healthz").get_json()["shadow"]["version"] == "v2"
    first = next_weeks(history_model)
    covariates = {"discount_fraction": 10, "weeks_to_next_holidays": 3}
    plan = {"series": [{"id": name, "weeks": [covariates] * 3} for name in sorted(first)]}
    counted = lambda: REGISTRY.get_sample_value("demand_rows_predicted_total", {"protocol": "forecast"}) or 0  # noqa: E731
    before = counted()
    served = client.post("/forecast", json=plan)
    assert served.status_code == 200 and served.get_json()["model_version"] == "v1"
    rows = [{"series": "store-01", "week": first["store-01"].isoformat(), **covariates}]
    assert client.post("/predict", json={"instances": rows}).status_code == 200
    app.extensions["demand_shadow"].jobs.join()
    app.extensions["demand_forecast_log"].flush()
    assert counted() - before == 3 * len(first)  # what the shadow forecast was not served
    engine = app.extensions["demand_store"]
    with engine.connect() as connection:
        logged = connection.exec_driver_sql(
            "SELECT version, request_id, series, week, step, units_sold FROM forecasts"
        ).all()
    by_version = {v: sorted(r[1:5] for r in logged if r[0] == v) for v in ("v1", "v2")}
    assert by_version["v1"] == by_version["v2"] and len(by_version["v1"]) == 3 * len(first) + 1
    v2 = Bundle.load(Registry(challenger), "v2")
    with app.app_context():
        own = json.loads(forecast_answer(json.dumps(plan).encode(), v2, app.config["SETTINGS"], engine))
    expected = {(s["id"], w["step"]): w["units_sold"] for s in own["series"] for w in s["weeks"]}
    shadowed = {(r[2], r[4]): r[5] for r in logged if r[0] == "v2" and r[1] == served.headers["X-Request-Id"]}
    assert shadowed == pytest.approx(expected, rel=1e-6)
    sold = [row(name, first[name] + dt.timedelta(days=7 * k), 1000.0 + k) for name in first for k in range(3)]
    assert client.post("/actuals", json={"instances": sold}).status_code == 200
    accuracy = client.get("/accuracy").get_json()
    assert accuracy["champion"] == "v1" and accuracy["shadow"] == "v2"
    for version in ("v1", "v2"):  # the row's week is the plan's first: counted once (the latest forecast)
        assert [step["count"] for step in accuracy["versions"][version]["all"]] == [len(first)] * 3


def test_the_pages_week_by_week_accuracy_is_each_weeks_error_over_what_sold(client, history_model):
    first = next_weeks(history_model)
    covariates = {"discount_fraction": 10, "weeks_to_next_holidays": 3}
    names = sorted(first)[:2]
    plan = client.post("/forecast", json={"series": [{"id": n, "weeks": [covariates]} for n in names]}).get_json()
    client.application.extensions["demand_forecast_log"].flush()
    served = {s["id"]: s["weeks"][0] for s in plan["series"]}
    sold = {names[0]: 1000.0, names[1]: 3000.0}
    assert client.post("/actuals", json={"instances": [row(n, first[n], sold[n]) for n in names]}).status_code == 200
    weekly = client.get("/ui/data/weekly?weeks=4").get_json()
    week = first[names[0]].isoformat()
    assert first[names[1]] == first[names[0]] and weekly["weeks"][-1] == week
    figures = weekly["versions"]["v1"]
    error = sum(abs(served[n]["units_sold"] - sold[n]) for n in names)
    assert figures["wape"][-1] == pytest.approx(error / sum(sold.values()))
    assert figures["wape"][:-1] == [None] * 3
    for level, shares in figures["coverage"].items():
        inside = [served[n]["intervals"][level][0] <= sold[n] <= served[n]["intervals"][level][1] for n in names]
        assert shares[-1] == sum(inside) / 2
    assert client.get("/ui/data/weekly?weeks=0").status_code == 400


def test_the_inputs_served_are_counted_and_one_that_left_the_training_distribution_is_flagged(client, history_model):
    """Drift of what is served: every row's inputs in the card's bins, compared as the actuals are."""
    import numpy as np

    from pipeline.drift import psi

    models, _ = history_model
    card = Registry(models).card("v1")
    first = next_weeks(history_model)["store-03"]
    served = [
        {"series": "store-03", "week": (first + dt.timedelta(days=7 * k)).isoformat(), "discount_fraction": 95,
         "weeks_to_next_holidays": k % 5}
        for k in range(40)
    ]  # fmt: skip
    assert client.post("/predict", json={"instances": served}).status_code == 200
    client.application.extensions["demand_forecast_log"].flush()
    assert client.post("/actuals", json={"instances": [row("store-03", first, 500.0)]}).status_code == 200
    drift = client.get("/accuracy").get_json()["drift"]["served"]
    discount = drift["inputs"]["discount_fraction"]
    assert discount["count"] == 40 and discount["flagged"]
    assert discount["psi"] == pytest.approx(psi(card["reference"]["discount_fraction"], np.full(40, 95.0)))
    holidays = drift["inputs"]["weeks_to_next_holidays"]
    assert holidays["psi"] == pytest.approx(psi(card["reference"]["weeks_to_next_holidays"], np.arange(40.0) % 5))
    assert drift["inputs"]["prev_week_sales"]["count"] == 40
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'demand_served_input_psi{input="discount_fraction"}' in metrics


def test_a_plans_weeks_are_counted_once_each_in_the_inputs_served(client, history_model):
    """A plan's features go to the drift counts once, its planned weeks only (not a series' weeks past its
    own, though the steps run for the longest series)."""
    first = next_weeks(history_model)
    week = {"discount_fraction": 95, "weeks_to_next_holidays": 2}
    plan = {"series": [{"id": "store-01", "weeks": [week] * 3}, {"id": "store-02", "weeks": [week]}]}
    assert client.post("/forecast", json=plan).status_code == 200
    client.application.extensions["demand_forecast_log"].flush()
    assert client.post("/actuals", json={"instances": [row("store-01", first["store-01"], 500.0)]}).status_code == 200
    inputs = client.get("/accuracy").get_json()["drift"]["served"]["inputs"]
    assert inputs["discount_fraction"]["count"] == 4 and inputs["prev_week_sales"]["count"] == 4


def test_the_store_joins_the_models_weeks_only_where_it_runs_past_them():
    """A store behind the model (filled while an older version served) is not used; one that overlaps the
    model's last weeks keeps the model's weeks before its own."""
    from types import SimpleNamespace

    import numpy as np

    from service.stored_history import joined_history

    week = dt.timedelta(days=7)
    next_week = dt.date(2024, 3, 4)  # the model's weeks end the week before
    window = np.full(52, np.nan)
    window[-4:] = [10.0, 20.0, 30.0, 40.0]  # its last four weeks, the last on 2024-02-26
    bundle = SimpleNamespace(tails={"a": (np.datetime64(next_week), window)})
    behind = [(next_week - 3 * week, 1.0), (next_week - 2 * week, 2.0)]
    assert joined_history(bundle, "a", behind) is None
    level = [(next_week - 2 * week, 21.0), (next_week - week, 31.0), (next_week, 50.0)]
    assert joined_history(bundle, "a", level) == [10.0, 20.0, 21.0, 31.0, 50.0]
    after = [(next_week, 50.0), (next_week + week, 60.0)]
    assert joined_history(bundle, "a", after) == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert joined_history(bundle, "a", [(next_week + 2 * week, 5.0)]) is None  # a gap after the model's weeks
