"""The store's costs, in process (Flask's test client) on this machine:

- POST /actuals, rows a second, as JSON rows and as a CSV body (10,000 rows a request);
- GET /accuracy over 1M logged forecast weeks (10,000 series x 10 plans of 10 weeks, written straight to the
  store);
- /forecast of 1,000 dated series x 8 weeks with the forecast log on and off, alternated (the log's
  cost on the request path: building the records; the writes are a background thread's).

    python -m bench.store --model-dir models     # a registry with a champion (demand train)
"""

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.accuracy import live_accuracy  # noqa: E402
from pipeline.store import (  # noqa: E402
    Actual,  # noqa: E402
    log_forecasts,
    open_engine,
    put_actuals,
    upgrade,
)

ROWS, SERIES, STEPS = 10_000, 1000, 8
MONDAY = dt.date(2027, 1, 4)


def client_for(model_dir, url, forecast_log=True):
    from service.app import create_app

    return create_app(
        {"MODEL_DIR": str(model_dir), "RELOAD_INTERVAL": 0, "STORE_URL": url, "FORECAST_LOG": forecast_log}
    ).test_client()


def actuals_rate(model_dir, folder):
    """Rows a second through POST /actuals, each format into a fresh store."""
    out = {}
    covariates = {"discount_fraction": 10, "weeks_to_next_holidays": 2}
    for kind in ("json", "csv"):
        url = f"sqlite:///{folder / f'actuals-{kind}.sqlite'}"
        upgrade(open_engine(url))
        client = client_for(model_dir, url)
        rates = []
        for batch in range(3):
            week = MONDAY + dt.timedelta(days=7 * batch)
            rows = [
                {"series": f"s{i}", "week": week.isoformat(), "units_sold": 100.0 + i, **covariates}
                for i in range(ROWS)
            ]
            if kind == "json":
                body, content_type = json.dumps({"instances": rows}).encode(), "application/json"
            else:
                lines = ["series,week,units_sold,discount_fraction,weeks_to_next_holidays"]
                lines += [f"{r['series']},{r['week']},{r['units_sold']},10,2" for r in rows]
                body, content_type = ("\n".join(lines) + "\n").encode(), "text/csv"
            started = time.perf_counter()
            answer = client.post("/actuals", data=body, content_type=content_type)
            rates.append(ROWS / (time.perf_counter() - started))
            assert answer.status_code == 200, answer.get_json()
        out[kind] = statistics.median(rates)
    return out


def accuracy_time(folder, count=1_000_000):
    """Seconds for live_accuracy over `count` logged forecast weeks, each week with its actual: plans of 10
    weeks (steps 1 to 10) from each of 10 weeks in turn, per series."""
    url = f"sqlite:///{folder / 'accuracy.sqlite'}"
    engine = open_engine(url)
    upgrade(engine)
    series, weeks = count // 10 // 10, 10  # series x 10 plans x 10 weeks
    for week in range(2 * weeks - 1):
        day = MONDAY + dt.timedelta(days=7 * week)
        put_actuals(engine, [Actual(f"s{i}", day, 100.0 + i % 7, {}) for i in range(series)])
    served = dt.datetime.now(dt.timezone.utc)
    intervals = {"0.8": [[90.0, 110.0]] * weeks}
    for origin in range(weeks):
        day = MONDAY + dt.timedelta(days=7 * origin)
        log_forecasts(
            engine, [("bench", "v1", served, f"s{i}", day, 1, weeks, [101.0] * weeks, intervals) for i in range(series)]
        )
    started = time.perf_counter()
    answer = live_accuracy(engine, 13)
    seconds = time.perf_counter() - started
    assert sum(s["count"] for s in answer["versions"]["v1"]["all"]) == count
    return {"forecasts": count, "seconds": seconds}


def forecast_log_cost(model_dir, folder, seconds=4.0, pairs=3):
    """/forecast requests a second with the log on and off, alternated."""
    url = f"sqlite:///{folder / 'log.sqlite'}"
    upgrade(open_engine(url))
    week = {"discount_fraction": 10, "weeks_to_next_holidays": 3}
    plan = {
        "series": [
            {"id": f"s{i}", "prev_week_sales": 30000 + i, "start": MONDAY.isoformat(), "weeks": [week] * STEPS}
            for i in range(SERIES)
        ]
    }
    raw = json.dumps(plan).encode()
    return log_on_and_off(model_dir, url, "/forecast", raw, seconds, pairs)


def single_row_cost(model_dir, folder, seconds=3.0, pairs=3):
    """Single-row /predict requests a second with the log on and off, alternated (the row names no week:
    what the log costs a request it does not log)."""
    url = f"sqlite:///{folder / 'single.sqlite'}"
    upgrade(open_engine(url))
    raw = json.dumps({"instances": [{"prev_week_sales": 40000, "discount_fraction": 30, "weeks_to_next_holidays": 2}]})
    return log_on_and_off(model_dir, url, "/predict", raw, seconds, pairs)


def log_on_and_off(model_dir, url, path, raw, seconds, pairs):
    """{"on", "off"}: median requests a second of `raw` to `path` with the forecast log on and off, alternated."""
    clients = {"on": client_for(model_dir, url, True), "off": client_for(model_dir, url, False)}
    rates = {"on": [], "off": []}
    for _ in range(pairs):
        for name, client in clients.items():
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                assert client.post(path, data=raw, content_type="application/json").status_code == 200
                count += 1
            rates[name].append(count / (time.perf_counter() - started))
    return {name: statistics.median(r) for name, r in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demand-store-") as tmp:
        folder = Path(tmp)
        results = {
            "actuals_rows_s": actuals_rate(args.model_dir, folder),
            "forecast_req_s": forecast_log_cost(args.model_dir, folder),
            "single_row_req_s": single_row_cost(args.model_dir, folder),
            "accuracy": accuracy_time(folder),
        }
    a, f, c = results["actuals_rows_s"], results["forecast_req_s"], results["accuracy"]
    r = results["single_row_req_s"]
    print(f"| POST /actuals, {ROWS:,} rows a request | JSON {a['json']:,.0f} rows/s, CSV {a['csv']:,.0f} rows/s |")
    print(
        f"| /forecast, {SERIES:,} dated series x {STEPS} weeks, in process | log on {f['on']:.1f} req/s, "
        f"off {f['off']:.1f} req/s ({f['on'] / f['off'] - 1:+.1%}) |"
    )
    print(
        f"| /predict, one row, in process | log on {r['on']:,.0f} req/s, off {r['off']:,.0f} req/s ({r['on'] / r['off'] - 1:+.1%}) |"
    )
    print(f"| GET /accuracy over {c['forecasts']:,} logged forecasts | {c['seconds']:.1f} s |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
