"""A plan's answer encoded from texts (service/plan_json.py) is the JSON of the dicts it stands for."""

import datetime as dt

import numpy as np
import orjson
import pytest

from service import plan_json
from service.forecast_log import plan_runs
from service.plan_json import (
    chosen_field,
    encoded_series,
    interval_field,
    number_texts,
    text_field,
    week_texts,
    weeks_planned,
)

IDS = ['store "7"', "café-2", "x"]  # text that JSON must escape
LENGTHS = np.array([3, 1, 2])
H = 3


def plan_out(seed=0):
    rng = np.random.default_rng(seed)
    units = (rng.random((len(IDS), H)) * 1000).astype(np.float32)
    units[np.arange(H)[None, :] >= LENGTHS[:, None]] = np.nan  # past a series' weeks
    units[2, 0] = np.nan  # a forecast that is not a number is null
    low, high = units.astype(np.float64) * 0.9, units.astype(np.float64) * 1.1
    return units, {0.8: (low, high), 0.95: (low * 0.9, high * 1.1)}


def test_weeks_encoded_from_texts_are_the_json_of_their_dicts():
    units, bounds = plan_out()
    planned = weeks_planned(LENGTHS, H)
    names = [[], ["prev_week_sales"], ["discount_fraction", "prev_week_sales"]]
    codes = np.array([0, 2, 1, 0, 0, 1])
    texts = week_texts(units, bounds, [0.8, 0.95], planned)
    fields = [
        chosen_field(("step",), (range(1, H + 1),), (planned % H,)),
        text_field("units_sold", texts.units),
        interval_field([0.8, 0.95], texts.intervals),
        chosen_field(("extrapolated",), (names,), (codes,)),
    ]
    encoded = orjson.loads(b"[" + encoded_series(IDS, LENGTHS.tolist(), fields) + b"]")
    expected, at = [], 0
    for s, (ident, n) in enumerate(zip(IDS, LENGTHS)):
        weeks = []
        for h in range(n):
            value = float(units[s, h])
            weeks.append(
                {
                    "step": h + 1,
                    "units_sold": None if np.isnan(value) else value,
                    "intervals": {
                        key: [None if np.isnan(side[s, h]) else float(side[s, h]) for side in pair]
                        for key, pair in zip(["0.8", "0.95"], bounds.values())
                    },
                    "extrapolated": names[codes[at]],
                }
            )
            at += 1
        expected.append({"id": ident, "weeks": weeks})
    assert encoded == expected
    without = [fields[0], interval_field([0.8], week_texts(units, None, [0.8], planned).intervals)]
    assert [
        week["intervals"]
        for s in orjson.loads(b"[" + encoded_series(IDS, LENGTHS.tolist(), without) + b"]")
        for week in s["weeks"]
    ] == [None] * int(LENGTHS.sum())


@pytest.mark.parametrize("dense", [True, False], ids=["numbered", "sorted"])
def test_fields_chosen_together_are_the_json_of_their_dicts(monkeypatch, dense):
    if not dense:
        monkeypatch.setattr(plan_json, "DENSE_COMBINATIONS", 0)
    weeks = ["2026-01-05", None, "2026-01-12"]
    flags = [[], ["sales_lag_52"], ["a", "b"], ["c"]]
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, 50), rng.integers(0, 4, 50)
    lengths = [20, 1, 29]
    fields = [
        chosen_field(("week", "filled"), (weeks, flags), codes),
        text_field("units_sold", number_texts(np.arange(50.0))),
    ]
    encoded = orjson.loads(b"[" + encoded_series(["a", "b", "c"], lengths, fields) + b"]")
    assert [s["id"] for s in encoded] == ["a", "b", "c"]
    assert [len(s["weeks"]) for s in encoded] == lengths
    assert [week for s in encoded for week in s["weeks"]] == [
        {"week": weeks[w], "filled": flags[f], "units_sold": float(i)} for i, (w, f) in enumerate(zip(*codes))
    ]


def test_a_series_without_weeks_is_not_encoded_silently():
    with pytest.raises(ValueError):
        encoded_series(["a", "b"], [1, 0], [text_field("units_sold", [b"1"])])


def test_a_plans_logged_runs_are_the_json_of_their_forecasts():
    units, bounds = plan_out(1)
    dates = np.datetime64("2026-01-05") + (7 * np.arange(H)).astype("timedelta64[D]")[None, :].repeat(len(IDS), 0)
    dates[1] = np.datetime64("NaT")  # a series whose weeks are not dated is not logged
    runs = plan_runs(IDS, dates, LENGTHS, texts_of(units, bounds, [0.8, 0.95]), [0.8, 0.95])
    assert [(name, day, step, weeks) for name, day, step, weeks, _, _ in runs] == [
        ('store "7"', dt.date(2026, 1, 5), 1, 3),
        ("x", dt.date(2026, 1, 5), 1, 2),
    ]
    for (_, _, _, weeks, logged_units, logged_intervals), s in zip(runs, [0, 2]):
        values = orjson.loads(logged_units)[:weeks]
        assert values == [None if np.isnan(u) else float(u) for u in units[s, :weeks]]
        intervals = orjson.loads(logged_intervals)
        assert list(intervals) == ["0.8", "0.95"]
        for key, level in (("0.8", 0.8), ("0.95", 0.95)):
            low, high = bounds[level]
            assert intervals[key][:weeks] == [
                [None if np.isnan(low[s, h]) else low[s, h], None if np.isnan(high[s, h]) else high[s, h]]
                for h in range(weeks)
            ]
    assert [r[5] for r in plan_runs(IDS, dates, LENGTHS, texts_of(units, None, [0.8]), [0.8])] == [
        None,
        None,
    ]
    dates[2, 1] = np.datetime64(dt.date.max) + np.timedelta64(7, "D")  # past the calendar's end: not logged
    assert [
        (name, weeks)
        for name, _, _, weeks, _, _ in plan_runs(IDS, dates, LENGTHS, texts_of(units, bounds, [0.8]), [0.8])
    ] == [
        ('store "7"', 3),
        ("x", 1),
    ]
    one = plan_runs(IDS[:1], dates[:1], LENGTHS[:1], texts_of(units[:1], None, [0.8], LENGTHS[:1]), [0.8])
    assert orjson.loads(one[0][4]) == [float(u) for u in units[0]]  # one series: nothing to cut


def texts_of(units, bounds, levels, lengths=LENGTHS):
    return week_texts(units, bounds, levels, weeks_planned(lengths, units.shape[1]))
