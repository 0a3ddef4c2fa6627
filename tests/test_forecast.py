"""Forecasts several weeks ahead: the calibration, POST /forecast against a
real gunicorn, `levels` on /predict, and the offline `demand forecast`."""

import csv
import json

import numpy as np
import pytest
import requests

from pipeline.calibrate import LEVELS, calibrate, half_width, recursive_residuals
from pipeline.data import Dataset
from pipeline.registry import Registry
from service.testing import running_service

from .conftest import INSTANCE, invoke

PLAN = {
    "series": [
        {
            "id": "store-7",
            "prev_week_sales": 41512,
            "weeks": [
                {"discount_fraction": 50, "weeks_to_next_holidays": 3},
                {"discount_fraction": 0, "weeks_to_next_holidays": 2},
                {"discount_fraction": 10, "weeks_to_next_holidays": 1},
            ],
        },
        {"id": "store-9", "prev_week_sales": 76440, "weeks": [{"discount_fraction": 63, "weeks_to_next_holidays": 2}]},
    ],
    "levels": [0.8, 0.95],
}


# ---------------------------------------------------------------- calibration


def test_recursive_residuals_feed_each_forecast_forward():
    """Two series, five weeks: from every origin, step h's prev_week_sales is step h-1's forecast."""
    X = np.array([[10.0, 0, 0]] * 10)
    y = np.arange(10, dtype=float)
    grid = np.arange(10).reshape(5, 2)  # week w of series s is row 2w + s
    seen = []

    def predict(rows, series):
        assert series is None  # the data names no series
        seen.append(rows[:, 0].copy())
        return rows[:, 0] + 1  # next week sells one more than this one

    residuals = recursive_residuals(predict, Dataset(X, y, None, None, {}), grid, max_steps=3)
    assert [len(r) for r in residuals] == [10, 8, 6]  # origins with a week at that step
    np.testing.assert_array_equal(seen[1], 11.0)  # step 2 got step 1's forecast (10 + 1), not the actual 10
    np.testing.assert_array_equal(seen[2], 12.0)


def test_calibrated_intervals_nest_and_never_narrow_with_the_step():
    rng = np.random.default_rng(0)
    residuals = [np.abs(rng.normal(0, scale, 200)) for scale in (1.0, 2.0, 1.5, 3.0)]  # step 3 noisier than 2
    calibration = calibrate(residuals)
    assert [s["step"] for s in calibration["steps"]] == [1, 2, 3, 4]
    for step in range(1, 7):
        w80, _ = half_width(calibration, step, 0.8)
        w95, used = half_width(calibration, step, 0.95)
        assert w80 < w95 and used == min(step, 4)
        if step > 1:
            assert w80 >= half_width(calibration, step - 1, 0.8)[0]
    # any level between two of the grid is interpolated; the grid's own are exact
    assert half_width(calibration, 1, 0.805)[0] == pytest.approx(
        np.mean([half_width(calibration, 1, 0.80)[0], half_width(calibration, 1, 0.81)[0]])
    )
    assert len(calibration["levels"]) == len(LEVELS) == 50


def test_steps_with_too_few_residuals_are_not_calibrated():
    calibration = calibrate([np.ones(50), np.ones(19)])
    assert len(calibration["steps"]) == 1


# ---------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    with running_service(published, tmp_path_factory.mktemp("forecast"), api_token="s3cret", max_rows=3000) as s:
        yield s


AUTH = {"Authorization": "Bearer s3cret"}


def ask(server, body, **kwargs):
    return requests.post(server.url + "/forecast", json=body, headers=kwargs.pop("headers", AUTH), timeout=10)


def test_step_two_is_predict_fed_step_one(server):
    answer = ask(server, PLAN).json()
    weeks = answer["series"][0]["weeks"]
    assert [w["step"] for w in weeks] == [1, 2, 3] and answer["model_version"] == "v1"
    first = {"prev_week_sales": 41512, **PLAN["series"][0]["weeks"][0]}
    predict = lambda instance: requests.post(  # noqa: E731
        server.url + "/predict", json={"instances": [instance]}, headers=AUTH, timeout=10
    ).json()["predictions"][0]["units_sold"]
    assert weeks[0]["units_sold"] == pytest.approx(predict(first), rel=1e-6)
    second = {"prev_week_sales": weeks[0]["units_sold"], **PLAN["series"][0]["weeks"][1]}
    assert weeks[1]["units_sold"] == pytest.approx(predict(second), rel=1e-5)
    # the other series, forecast in the same calls, is what it would be alone
    alone = ask(server, {"series": [PLAN["series"][1]]}).json()
    assert alone["series"][0]["weeks"][0]["units_sold"] == pytest.approx(answer["series"][1]["weeks"][0]["units_sold"])


def test_intervals_nest_and_widen_or_stay_level_with_the_step(server):
    weeks = ask(
        server,
        {
            "series": [
                {
                    "id": "a",
                    "prev_week_sales": 40000,
                    "weeks": [{"discount_fraction": 10, "weeks_to_next_holidays": 4}] * 20,
                }
            ],
            "levels": [0.8, 0.95],
        },
    ).json()["series"][0]["weeks"]
    previous = None
    for week in weeks:
        (low80, high80), (low95, high95) = week["intervals"]["0.8"], week["intervals"]["0.95"]
        assert low95 <= low80 <= week["units_sold"] <= high80 <= high95
        width = high95 - low95
        if previous is not None:  # same forecast level each week here, so the width alone must not shrink
            assert width >= previous * (1 - 1e-6) or abs(week["units_sold"] - weeks[0]["units_sold"]) > 1
        previous = width


def test_weeks_outside_the_training_range_are_counted_as_for_predict(server):
    before = server.metric("demand_extrapolated_rows_total")
    plan = {
        "series": [
            {
                "id": "far",
                "prev_week_sales": 40000,
                "weeks": [{"discount_fraction": 10, "weeks_to_next_holidays": 500}] * 3,
            },
            {"id": "near", "prev_week_sales": 40000, "weeks": [{"discount_fraction": 10, "weeks_to_next_holidays": 2}]},
        ]
    }
    weeks = [week for series in ask(server, plan).json()["series"] for week in series["weeks"]]
    flagged = sum(bool(week["extrapolated"]) for week in weeks)
    assert flagged >= 3 and server.metric("demand_extrapolated_rows_total") == before + flagged


def test_weeks_past_the_calibration_say_so(server, published):
    card = Registry(published).card("v1")
    calibrated = len(card["calibration"]["steps"])
    answer = ask(
        server,
        {
            "series": [
                {
                    "id": "a",
                    "prev_week_sales": 40000,
                    "weeks": [{"discount_fraction": 0, "weeks_to_next_holidays": 4}] * (calibrated + 2),
                }
            ]
        },
    ).json()
    assert answer["levels"] == [0.8, 0.95]  # the default
    assert f"use the interval of week {calibrated}" in answer["notes"][0]
    weeks = answer["series"][0]["weeks"]
    assert weeks[-1]["intervals"]["0.95"] != weeks[0]["intervals"]["0.95"]


@pytest.mark.parametrize(
    "change, status, message",
    [
        (
            lambda b: b["series"][1]["weeks"].__setitem__(0, {"discount_fraction": 130, "weeks_to_next_holidays": 2}),
            400,
            "series[1].weeks[0].discount_fraction must be <= 100 percent, got 130",
        ),
        (
            lambda b: b["series"][0]["weeks"][2].pop("weeks_to_next_holidays"),
            400,
            "series[0].weeks[2].weeks_to_next_holidays is missing",
        ),
        (lambda b: b["series"][0].__setitem__("prev_week_sales", -1), 400, "series[0].prev_week_sales must be >= 0"),
        (
            lambda b: b["series"][0]["weeks"][1].__setitem__("discount_fraction", True),
            400,
            "series[0].weeks[1].discount_fraction must be a number",
        ),
        (lambda b: b["series"][1].__setitem__("id", "store-7"), 400, "ids must differ"),
        (lambda b: b["series"][1].__setitem__("id", "x" * 201), 400, "series[1].id must be a string of 1 to 200"),
        (lambda b: b["series"][1].__setitem__("id", 7), 400, "series[1].id must be a string"),
        (lambda b: b["series"][1].__setitem__("id", " store-7 "), 400, "ids must differ"),  # names are trimmed
        (lambda b: b["series"][1].__setitem__("id", "   "), 400, "series[1].id must be a name, not blank"),
        (
            lambda b: b["series"][1].__setitem__("id", "store\n8"),
            400,
            "series[1].id must be a name without control characters",
        ),
        (
            lambda b: b["series"][0].__setitem__("strat", "2026-01-05"),
            400,
            "series[0].strat is not a key of a plan's series; it takes id, prev_week_sales, start, weeks",
        ),
        (lambda b: b.__setitem__("levels", [0.3]), 400, "levels[0] must be a number between 0.5 and 0.99"),
        (lambda b: b.__setitem__("levels", [0.8, 0.8]), 400, "levels names a level twice"),
        (lambda b: b.__setitem__("level", [0.5]), 400, "'level' is not a key of a plan; it takes series, levels"),
        (lambda b: b.__setitem__("series", []), 400, "'series' must be a non-empty list"),
        (lambda b: b["series"][0].__setitem__("weeks", b["series"][0]["weeks"] * 18), 413, "DEMAND_MAX_HORIZON"),
        (
            lambda b: b.__setitem__("series", [{**b["series"][1], "id": str(i)} for i in range(3001)]),
            413,
            "DEMAND_MAX_ROWS",
        ),
        (
            lambda b: b.__setitem__("series", [{**b["series"][0], "id": str(i)} for i in range(1001)]),
            413,
            "3003 series x weeks is more than the limit of 3000 per request (DEMAND_MAX_ROWS)",
        ),
        (
            lambda b: b.update(
                series=[{**b["series"][0], "id": str(i)} for i in range(201)],
                levels=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.55, 0.65, 0.75],
            ),
            413,
            "603 forecasts at 10 levels are 6030 intervals, more than the limit of 6000 per request",
        ),
    ],
)
def test_every_bad_plan_gets_its_status_and_names_the_field(server, change, status, message):
    body = json.loads(json.dumps(PLAN))
    change(body)
    response = ask(server, body)
    assert response.status_code == status and message in response.json()["error"], response.text[:300]


def test_forecast_follows_the_token_rules(server):
    assert ask(server, PLAN, headers={}).status_code == 401
    assert ask(server, PLAN, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert ask(server, PLAN).status_code == 200


def test_predict_levels_and_an_unchanged_answer_without_them(server):
    plain = requests.post(server.url + "/predict", json={"instances": [INSTANCE]}, headers=AUTH, timeout=10)
    with_levels = requests.post(
        server.url + "/predict", json={"instances": [INSTANCE], "levels": [0.5, 0.9]}, headers=AUTH, timeout=10
    ).json()
    assert set(plain.json()["predictions"][0]) == {"units_sold", "units_sold_normalized", "interval", "extrapolated"}
    prediction = with_levels["predictions"][0]
    (low50, high50), (low90, high90) = prediction["intervals"]["0.5"], prediction["intervals"]["0.9"]
    assert low90 <= low50 <= prediction["units_sold"] <= high50 <= high90
    assert {k: v for k, v in prediction.items() if k != "intervals"} == plain.json()["predictions"][0]


# ---------------------------------------------------------------- offline


def test_the_offline_cli_agrees_with_the_http_answer(server, published, tmp_path, runner):
    plan = tmp_path / "plan.csv"
    with open(plan, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series", "week", "prev_week_sales", "discount_fraction", "weeks_to_next_holidays"])
        for item in PLAN["series"]:
            for h, week in enumerate(item["weeks"]):
                writer.writerow(
                    [
                        item["id"],
                        f"2026-01-{5 + 7 * h:02d}",
                        item["prev_week_sales"] if h == 0 else "",
                        week["discount_fraction"],
                        week["weeks_to_next_holidays"],
                    ]
                )
    out = tmp_path / "out.csv"
    result = invoke(
        runner,
        "forecast",
        "--plan",
        str(plan),
        "--output",
        str(out),
        "--levels",
        "0.8,0.95",
        "--model-dir",
        str(published),
    )
    assert result.exit_code == 0, result.output
    assert b"\r" not in out.read_bytes()  # lines end as demand predict's do
    rows = list(csv.DictReader(out.open()))
    answer = ask(server, PLAN).json()
    # The model knows store-01 to store-03: both say so of these two.
    assert answer["unknown_series"] == ["store-7", "store-9"]
    assert "2 of the plan's series are not known to model" in result.output
    expected = [(s["id"], w) for s in answer["series"] for w in s["weeks"]]
    assert len(rows) == len(expected) == 4
    for row, (ident, week) in zip(rows, expected):
        assert row["series"] == ident and int(row["step"]) == week["step"]
        assert float(row["units_sold"]) == pytest.approx(week["units_sold"], rel=1e-6)
        for key in ("0.8", "0.95"):
            assert float(row[f"low_{key}"]) == pytest.approx(week["intervals"][key][0], rel=1e-6)
            assert float(row[f"high_{key}"]) == pytest.approx(week["intervals"][key][1], rel=1e-6)


def test_a_bad_plan_file_names_line_and_column(runner, tmp_path, published):
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "series,week,prev_week_sales,discount_fraction,weeks_to_next_holidays\n"
        "a,2026-01-05,100,130,2\nb,2026-01-05,,10,2\n"
    )
    result = invoke(
        runner, "forecast", "--plan", str(plan), "--output", str(tmp_path / "o.csv"), "--model-dir", str(published)
    )
    assert result.exit_code == 1
    assert "line 2, column 'discount_fraction': must be <= 100 percent, got 130" in result.output
    assert "line 3, column 'prev_week_sales': series 'b' starts in week 2026-01-05" in result.output


def test_a_plan_whose_weeks_skip_or_that_gives_sales_later_is_refused(runner, tmp_path, published):
    """Each week's forecast is the next week's prev_week_sales: a gap would be
    forecast as the next week, and sales given later would be ignored."""
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "series,week,prev_week_sales,discount_fraction,weeks_to_next_holidays\n"
        "a,2024-01-01,100,10,2\na,2024-01-08,,10,1\na,2024-03-04,,10,0\n"
        "b,2024-01-01,100,10,2\nb,2024-01-08,,10,1\nb,2024-01-15,999999,10,0\n"
    )
    result = invoke(
        runner, "forecast", "--plan", str(plan), "--output", str(tmp_path / "o.csv"), "--model-dir", str(published)
    )
    assert result.exit_code == 1 and not (tmp_path / "o.csv").exists()
    assert (
        "line 4: series 'a' goes from week 2024-01-08 to 2024-03-04; its weeks must follow one another" in result.output
    )
    assert (
        "line 7, column 'prev_week_sales': series 'b' gives it in week 2024-01-15, after its first; only the "
        "first week takes it"
    ) in result.output


def test_an_output_that_cannot_be_written_is_a_clear_error(runner, tmp_path, published):
    plan = tmp_path / "plan.csv"
    plan.write_text("series,week,prev_week_sales,discount_fraction,weeks_to_next_holidays\na,2026-01-05,100,10,2\n")
    out = tmp_path / "missing" / "o.csv"
    result = invoke(runner, "forecast", "--plan", str(plan), "--output", str(out), "--model-dir", str(published))
    assert result.exit_code == 1
    assert f"{out}: cannot be written: No such file or directory" in result.output
    assert "Traceback" not in result.output
    written = tmp_path / "o.csv"
    assert (
        invoke(
            runner, "forecast", "--plan", str(plan), "--output", str(written), "--model-dir", str(published)
        ).exit_code
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "plan.csv"]  # written by renaming: no temporary left
