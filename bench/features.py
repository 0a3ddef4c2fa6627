"""Models of history, calendar and declared covariates: what they cost and what they gain.

- `demand train` on a plain sales history (series, week, units sold, the two
  covariates; no prev_week_sales, so history and the calendar come on by
  default), the embedded data's 936 rows and 1M generated rows;
- `demand predict` of such a model on 10M rows, streamed (each chunk continues
  from the weeks the chunks before it left of each series);
- POST /forecast of such a model, 1,000 series x 8 weeks, in process, with the
  store and its forecast log as the service runs them, and without the log;
  then the same through gunicorn and wrk;
- the four three-input held-out sets backtested with the chapter's inputs and
  with history and the calendar (one window of 13 weeks, seed 0).

    python -m bench.features          # prints the markdown section
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.scale import DEMAND, measured

ROOT = Path(__file__).resolve().parent.parent
OUTSAMPLE = ROOT / "tests" / "fixtures" / "outsample"
TRAIN_TARGETS = {"embedded data": 15, "1M rows": 180}
PLAN_SERIES, PLAN_WEEKS = 1000, 8
FORECAST_TARGET = 500_000
PREDICT_COPIES = 10  # the 1M-row file this many times: 10M rows
PREDICT_TARGET = 2_000_000  # rows/s
PREDICT_MEMORY_MB = 1024


def plain_sales(source, target):
    """`source` without its prev_week_sales column: what a retailer exports."""
    import pyarrow.csv as pa_csv

    pa_csv.write_csv(pa_csv.read_csv(source).drop_columns(["prev_week_sales"]), target)
    return target


def training(folder):
    out = {}
    generated = folder / "generated.csv"
    import subprocess

    subprocess.run(
        [*DEMAND, "data", "generate", "--series", "6410", "--output", str(generated)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    for label, source in (("embedded data", ROOT / "data" / "demand.csv"), ("1M rows", generated)):
        data = plain_sales(source, folder / f"plain-{source.stem}.csv")
        print(f"timing demand train on {label} (history, calendar)...", file=sys.stderr)
        seconds, peak, stdout = measured(
            [
                *DEMAND,
                "train",
                "--data",
                str(data),
                "--device",
                "cpu",
                "--json",
                "--model-dir",
                str(folder / f"models-{source.stem}"),
            ]
        )
        card = json.loads(stdout)
        assert card["features"]["history"], "a plain sales history reads history by default"
        out[label] = {
            "rows": card["data"]["rows"],
            "seconds": seconds,
            "peak_mb": peak,
            "holdout_wape": card["metrics"]["holdout"]["model"]["wape"],
        }
    return out


def ten_million(folder):
    """10M rows: the 1M-row file ten times over, each copy under other series names, one after the other (each
    series' weeks in order, as an export by week or by series has them); CSV and Parquet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    plain = pa_csv.read_csv(folder / "plain-generated.csv")
    index = plain.column_names.index("series")
    big = pa.concat_tables(
        plain.set_column(index, "series", pc.binary_join_element_wise(plain.column("series"), pa.scalar(str(k)), "-"))
        for k in range(PREDICT_COPIES)
    )
    pa_csv.write_csv(big, folder / "big.csv")
    pq.write_table(big, folder / "big.parquet")
    return big.num_rows


def predicting(folder):
    rows = ten_million(folder)
    out = {}
    for source, target in (("big.csv", "scored.csv"), ("big.parquet", "scored.parquet")):
        label = f"{source.split('.')[1]} -> {target.split('.')[1]}"
        print(f"timing demand predict of a history model on {rows:,} rows, {label}...", file=sys.stderr)
        seconds, peak, _ = measured(
            [
                *DEMAND,
                "predict",
                "--input",
                str(folder / source),
                "--output",
                str(folder / target),
                "--model-dir",
                str(folder / "models-generated"),
            ]
        )
        out[label] = {"rows": rows, "seconds": seconds, "peak_mb": peak, "rows_s": rows / seconds}
    return out


def forecasting(folder, seconds=5.0):
    """Forecast weeks a second through POST /forecast in process (Flask's test client), known series, with the
    store and the forecast log as the service runs them, and without the log."""
    from pipeline.bundle import Bundle
    from pipeline.registry import Registry
    from pipeline.store import open_engine, store_url, upgrade
    from service.app import create_app

    models = folder / "models-generated"
    upgrade(open_engine(store_url(models)))
    bundle = Bundle.load(Registry(models))
    ids = sorted(bundle.tails)[:PLAN_SERIES]
    week = {name: 1.0 for name in bundle.spec.known}
    body = {"series": [{"id": name, "weeks": [week] * PLAN_WEEKS} for name in ids]}
    raw = json.dumps(body).encode()  # encoded once: the client's work is not the service's
    out = {}
    for label, log in (("log on", True), ("log off", False)):
        config = {"MODEL_DIR": str(models), "RELOAD_INTERVAL": 0, "MAX_ROWS": 200_000, "FORECAST_LOG": log}
        client = create_app(config).test_client()
        assert client.post("/forecast", data=raw, content_type="application/json").status_code == 200
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            client.post("/forecast", data=raw, content_type="application/json")
            count += 1
        elapsed = time.perf_counter() - started
        out[label] = {"requests_s": count / elapsed, "weeks_s": count * PLAN_SERIES * PLAN_WEEKS / elapsed}
        time.sleep(1.0)  # the log's writer catches up before the next run
    return out


def serving_forecasts(folder, seconds=5, runs=3):
    """The same plans through the service as the images run it: gunicorn (2 workers, its production config,
    a listening socket per worker) on 127.0.0.1, wrk as the client (8 connections, on the same cores), the forecast log on and off; the
    median of `runs` runs each."""
    import statistics

    from bench.run import IMAGE_SETTINGS, ensure_wrk, lua_script, wrk
    from pipeline.bundle import Bundle
    from pipeline.registry import Registry
    from service.testing import running_service

    ensure_wrk()
    models = folder / "models-generated"
    bundle = Bundle.load(Registry(models))
    ids = sorted(bundle.tails)[:PLAN_SERIES]
    week = {name: 1.0 for name in bundle.spec.known}
    body = json.dumps({"series": [{"id": name, "weeks": [week] * PLAN_WEEKS} for name in ids]}).encode()
    script = lua_script(folder, "plan", body, {"Content-Type": "application/json"})
    out = {}
    for label, log in (("log on", "1"), ("log off", "0")):
        with running_service(models, folder, workers=2, forecast_log=log, **IMAGE_SETTINGS) as service:
            wrk(service.url + "/forecast", script, 2, 8)  # warm-up
            measured_runs = [wrk(service.url + "/forecast", script, seconds, 8) for _ in range(runs)]
        assert all(r["non_2xx"] == 0 for r in measured_runs), measured_runs
        rps = statistics.median(r["rps"] for r in measured_runs)
        weeks = [r["rps"] * PLAN_SERIES * PLAN_WEEKS for r in measured_runs]
        out[label] = {"requests_s": rps, "weeks_s": rps * PLAN_SERIES * PLAN_WEEKS, "runs": weeks}
    return out


def three_inputs():
    """{set: {"chapter inputs" | "history, calendar": (one-step WAPE, recursive WAPE)}}, backtest of one window."""
    from pipeline.backtest import backtest
    from pipeline.data import load_file
    from pipeline.features import CHAPTER, FeatureSpec

    out = {}
    for name in ("additive", "stockouts", "trend_season", "small_series"):
        out[name] = {}
        for label, spec in (
            ("chapter inputs", CHAPTER),
            ("history, calendar", FeatureSpec(history=True, calendar=True)),
        ):
            print(f"backtest {name}, {label}...", file=sys.stderr)
            report = backtest(
                load_file(OUTSAMPLE / f"{name}.csv", spec=spec),
                windows=1,
                horizon=13,
                preset="auto",
                overrides={"device": "cpu", "seed": 0},
            )
            fold = report["folds"][0]
            out[name][label] = (fold["one_step"]["model"]["wape"], fold["recursive"]["model"]["wape"])
    return out


def measure():
    with tempfile.TemporaryDirectory(prefix="demand-features-") as tmp:
        folder = Path(tmp)
        results = {"training": training(folder), "predict": predicting(folder), "forecast": forecasting(folder)}
        results["served"] = serving_forecasts(folder)
        print("demand predict --engine dask against the single process...", file=sys.stderr)
        from bench.cluster import measure as measure_cluster

        results["cluster"] = measure_cluster(folder / "models-generated", folder / "plain-generated.csv")
    results["three_inputs"] = three_inputs()
    return results


def report(results):
    def verdict(ok):
        return "met" if ok else "**not met**"

    lines = [
        "## Features",
        "",
        "Models of history and the calendar (`python -m bench.features`): `demand train --device cpu` on a plain "
        "sales history (the file without its prev_week_sales column, so history and the calendar come on by "
        "default), whole command; peak memory of the process tree.",
        "",
        "| measurement | rows | seconds | peak RSS | result | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in results["training"].items():
        target = TRAIN_TARGETS[label]
        lines.append(
            f"| `demand train`, {label} | {r['rows']:,} | {r['seconds']:.1f} | {r['peak_mb']:,.0f} MB "
            f"| holdout WAPE {r['holdout_wape']:.2f}% | <= {target} s | {verdict(r['seconds'] <= target)} |"
        )
    for label, p in results["predict"].items():
        ok = p["rows_s"] >= PREDICT_TARGET and p["peak_mb"] <= PREDICT_MEMORY_MB
        lines.append(
            f"| `demand predict`, {label} | {p['rows']:,} | {p['seconds']:.1f} | {p['peak_mb']:,.0f} MB "
            f"| {p['rows_s'] / 1e6:.2f} M rows/s | >= {PREDICT_TARGET / 1e6:.0f} M rows/s, "
            f"<= {PREDICT_MEMORY_MB / 1024:.0f} GB | {verdict(ok)} |"
        )
    for label, f in results.get("served", {}).items():
        lines.append(
            f"| POST /forecast, {PLAN_SERIES:,} series x {PLAN_WEEKS} weeks, gunicorn (2 workers, a listening "
            f"socket each, as in the images) and wrk (8 connections) on the same 2 cores, {label} | | | "
            f"| {f['weeks_s'] / 1e3:,.0f} k forecast weeks/s ({f['requests_s']:.1f} req/s; runs "
            f"{', '.join(f'{w / 1e3:,.0f}' for w in f['runs'])} k) "
            f"| >= {FORECAST_TARGET // 1000} k weeks/s, every run | {verdict(min(f['runs']) >= FORECAST_TARGET)} |"
        )
    for label, f in results["forecast"].items():  # what one worker's thread does: no target of its own
        lines.append(
            f"| POST /forecast, {PLAN_SERIES:,} series x {PLAN_WEEKS} weeks, one worker's thread alone "
            f"(in process), {label} | | | | {f['weeks_s'] / 1e3:,.0f} k forecast weeks/s ({f['requests_s']:.1f} "
            "req/s) | | |"
        )
    lines += [
        "",
        "`demand predict` of a history model streams the file a chunk at a time: each chunk's rows continue "
        "from the weeks the chunks before left of their series (the version's stored weeks before that), so "
        "memory stays flat; a file whose series go back in time is read whole. A chunk is featured (one "
        "[series, weeks] matrix, each row reading the cells before its own, no Python loop per row) while the "
        "two before are forecast side by side and the one before those written. A plan's answer is written "
        "from texts, a template a week (service/plan_json.py); the forecast log writes a row per series "
        "(pipeline.store.forecast_runs). Under gunicorn each worker listens on a socket of its own, as the "
        "images run it (DEMAND_REUSE_PORT): on one shared socket a run's figure depended on how wrk's "
        "keep-alive connections fell to the two workers when it connected (docs/serving.md).",
        "",
        "Three-input held-out sets, backtest of one window of 13 weeks, `--preset auto`, seed 0, WAPE % of the "
        "model one step ahead / recursively (a window's figures move by a point or more with the seed):",
        "",
        "| data | chapter inputs | history, calendar |",
        "|---|---|---|",
    ]
    for name, scores in results["three_inputs"].items():
        cells = [f"{one:.2f} / {rec:.2f}" for one, rec in scores.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "History and the calendar gained on the sets with a trend or a season and lost a little on the "
        "others: a file of the chapter's form keeps its three inputs by default, and `--history "
        "--calendar` asks for more.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure()))
