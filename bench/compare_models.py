"""Out-of-sample comparison: each data set is cut into a history and the
weeks that follow it; every method learns from the history alone and
forecasts the following weeks (one step ahead, from the real last week's sales).

The `auto` default, the chapter preset and the baselines (naive persistence,
linear regression and scikit-learn's gradient boosting, without and with the
series as an input, all fitted on the same history) go through the one-window
backtest, the same path as `demand backtest --windows 1`, so each network is
exactly what `demand train` would have published from that history. The data sets under
tests/fixtures/outsample/ differ in structure from `demand data generate`
(additive effects, stock-outs, trend and season, many small series); nothing
was tuned on them.
"""

import sys
from pathlib import Path

from pipeline.backtest import backtest
from pipeline.data import load_file

ROOT = Path(__file__).resolve().parent.parent
FOLLOWING_WEEKS = 13  # a quarter
DATASETS = {
    "embedded data (multiplicative, 6 stores)": ROOT / "data" / "demand.csv",
    "additive effects, 8 series": ROOT / "tests/fixtures/outsample/additive.csv",
    "stock-outs capping sales, 10 series": ROOT / "tests/fixtures/outsample/stockouts.csv",
    "trend, season, post-promotion dip": ROOT / "tests/fixtures/outsample/trend_season.csv",
    "40 small series with zeros": ROOT / "tests/fixtures/outsample/small_series.csv",
}


def following_weeks_wape(data, preset, seed=0):
    """{method: WAPE %} on the following weeks, each method learning from the history only."""
    report = backtest(
        data, windows=1, horizon=FOLLOWING_WEEKS, preset=preset, overrides={"seed": seed, "device": "cpu"}
    )
    return {name: m["wape"] for name, m in report["folds"][0]["one_step"].items()}


def compare(seeds=(0, 1, 2), log=None):
    header = (
        "| data | naive | linear | gradient boosting | gradient boosting given the series | chapter preset "
        "| default `auto` (seeds " + ", ".join(map(str, seeds)) + ") |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, path in DATASETS.items():
        data = load_file(path)
        chapter = following_weeks_wape(data, "chapter")
        auto = [following_weeks_wape(data, "auto", seed)["model"] for seed in seeds]
        lines.append(
            f"| {name} | {chapter['naive']:.2f} | {chapter['linear']:.2f} | "
            f"{chapter['gradient_boosting']:.2f} | {chapter['gradient_boosting_by_series']:.2f} | "
            f"{chapter['model']:.2f} | "
            f"{' / '.join(f'{w:.2f}' for w in auto)} |"
        )
        if log:
            log(lines[-1])
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(log=lambda line: print(line, file=sys.stderr)))
