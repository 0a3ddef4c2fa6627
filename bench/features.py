"""Models of history, calendar and declared covariates: what they cost and what they gain.

- `demand train` on a plain sales history (series, week, units sold, the two
  covariates; no prev_week_sales, so history and the calendar come on by
  default), the embedded data's 936 rows and 1M generated rows;
- `demand predict` of such a model on 1M rows (the whole file is read: a
  row's features read its series' earlier weeks);
- POST /forecast of such a model, 1,000 series x 8 weeks, in process;
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


def predicting(folder):
    data = folder / "plain-generated.csv"
    print("timing demand predict of a history model on 1M rows...", file=sys.stderr)
    seconds, peak, _ = measured(
        [
            *DEMAND,
            "predict",
            "--input",
            str(data),
            "--output",
            str(folder / "scored.csv"),
            "--model-dir",
            str(folder / "models-generated"),
        ]
    )
    rows = sum(1 for _ in data.open()) - 1
    return {"rows": rows, "seconds": seconds, "peak_mb": peak, "rows_s": rows / seconds}


def forecasting(folder, seconds=5.0):
    """Forecast weeks a second through POST /forecast in process (Flask's test client), known series."""
    from pipeline.bundle import Bundle
    from pipeline.registry import Registry
    from service.app import create_app

    models = folder / "models-generated"
    bundle = Bundle.load(Registry(models))
    ids = sorted(bundle.tails)[:PLAN_SERIES]
    week = {name: 1.0 for name in bundle.spec.known}
    body = {"series": [{"id": name, "weeks": [week] * PLAN_WEEKS} for name in ids]}
    client = create_app({"MODEL_DIR": str(models), "RELOAD_INTERVAL": 0, "MAX_ROWS": 200_000}).test_client()
    raw = json.dumps(body).encode()  # encoded once: the client's work is not the service's
    assert client.post("/forecast", data=raw, content_type="application/json").status_code == 200
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        client.post("/forecast", data=raw, content_type="application/json")
        count += 1
    elapsed = time.perf_counter() - started
    return {"requests_s": count / elapsed, "weeks_s": count * PLAN_SERIES * PLAN_WEEKS / elapsed}


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
    p = results["predict"]
    lines.append(
        f"| `demand predict`, csv -> csv | {p['rows']:,} | {p['seconds']:.1f} | {p['peak_mb']:,.0f} MB "
        f"| {p['rows_s'] / 1e6:.2f} M rows/s | | |"
    )
    f = results["forecast"]
    lines.append(
        f"| POST /forecast, {PLAN_SERIES:,} series x {PLAN_WEEKS} weeks, in process | | | "
        f"| {f['weeks_s'] / 1e3:,.0f} k forecast weeks/s ({f['requests_s']:.1f} req/s) "
        f"| >= {FORECAST_TARGET // 1000} k weeks/s | {verdict(f['weeks_s'] >= FORECAST_TARGET)} |"
    )
    lines += [
        "",
        "`demand predict` of a history model reads the whole file (a row's features read its series' earlier "
        "weeks), so its memory grows with the file, unlike the three-input models' streaming; features are "
        "computed from one [series, weeks] matrix, a chunk of rows' windows at a time, with no Python loop per "
        "row. Plans answer through the generic path (a JSON object per week), not the three-input model's "
        "encoder.",
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
