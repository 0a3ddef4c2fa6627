"""Forecasts several weeks ahead on data the model was not tuned on: do the
per-step intervals cover what they promise, and how far ahead does the model
beat naive?

For each data set, `demand backtest --windows 4 --horizon 8` (the whole train
path on the weeks before each origin; each week's forecast fed back as the
next week's prev_week_sales), then over every step 1..8 of every window: the
share of actual weeks inside the 80% and 95% intervals, and the recursive
WAPE of the model against naive (the last actual week carried forward).
"""

import sys

from bench.compare_models import DATASETS
from pipeline.backtest import backtest
from pipeline.data import load_file

WINDOWS, HORIZON = 4, 8


def coverage_table(seed=0, log=None):
    lines = [
        "| data | 80% interval covers | 95% interval covers | WAPE model, steps 1-8 | WAPE naive, steps 1-8 |",
        "|---|---|---|---|---|",
    ]
    for name, path in DATASETS.items():
        report = backtest(load_file(path), WINDOWS, HORIZON, "auto", {"seed": seed, "device": "cpu"})
        model = report["average"]["recursive"]["model"]
        naive = report["average"]["recursive"]["naive"]
        cover = model["coverage_by_level"]
        lines.append(
            f"| {name} | {cover['0.8']:.1%} | {cover['0.95']:.1%} | {model['wape']:.2f} | {naive['wape']:.2f} |"
        )
        if log:
            log(lines[-1])
    return "\n".join(lines)


if __name__ == "__main__":
    print(coverage_table(log=lambda line: print(line, file=sys.stderr)))
