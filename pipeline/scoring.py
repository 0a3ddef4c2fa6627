"""Offline scoring: forecasts for every row of a CSV, written to another CSV."""
import csv

from .schema import FEATURES, SERIES_COLUMN, TIME_COLUMN


def write_forecasts(path, dataset, bundle):
    out = bundle.forecast(dataset.X)
    extrapolated = bundle.extrapolated_names(out)
    columns = [c for c, present in ((TIME_COLUMN, dataset.week is not None), (SERIES_COLUMN, dataset.series is not None)) if present]
    header = [*columns, *FEATURES, "forecast_units_sold", "interval_low", "interval_high", "extrapolated", "model_version"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for i in range(len(dataset)):
            passthrough = [str(dataset.week[i]) if c == TIME_COLUMN else dataset.series[i] for c in columns]
            outside = extrapolated.get(i, [])
            writer.writerow([
                *passthrough,
                *(f"{v:g}" for v in dataset.X[i]),
                f"{out['units_sold'][i]:.1f}",
                f"{out['low'][i]:.1f}",
                f"{out['high'][i]:.1f}",
                ";".join(outside),
                bundle.version,
            ])
    return len(dataset)
