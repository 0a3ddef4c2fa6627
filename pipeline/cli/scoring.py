"""`demand predict` and `demand forecast`: forecasts offline, through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..presets import DEFAULT_LEVELS
from .base import engine_options, friendly_errors, log, main, model_dir_option, skip_option


@main.command()
@click.option(
    "--input", "input_path", required=True, type=click.Path(path_type=Path), help="A file; with --engine dask, "
    "a folder of Parquet files, a glob of them, or one.",
)  # fmt: skip
@click.option(
    "--output", "output_path", required=True, type=click.Path(path_type=Path), help="A file (CSV or Parquet by "
    "its extension); with --engine dask, a new folder of Parquet part files.",
)  # fmt: skip
@click.option("--version", help="A published version; default the champion.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@engine_options()
@model_dir_option
@skip_option
@friendly_errors
def predict(
    input_path: Path,
    output_path: Path,
    version: str | None,
    provider: str,
    engine: str,
    scheduler: str | None,
    partitions: int | None,
    model_dir: Path,
    skip_bad_rows: bool,
) -> None:
    """Score a CSV or Parquet file offline through ONNX Runtime, with intervals.

    The file is streamed a chunk at a time, so its size is bounded by the
    disk, not by memory. Every input column is passed through, and the
    forecast columns are added (for a model of history: series, week, the
    forecasts and the features filled); the output is CSV or Parquet by its
    extension. With --engine dask a Parquet dataset is scored on a Dask
    cluster, each partition holding whole series, into a folder of part files.
    """
    if engine == "dask":
        return predict_on_dask(input_path, output_path, version, model_dir, scheduler, partitions, skip_bad_rows)
    if scheduler or partitions:
        raise click.UsageError("--scheduler and --partitions go with --engine dask")
    for option, path in (("--input", input_path), ("--output", output_path)):
        if path.is_dir():
            raise click.UsageError(f"{option} {path} is a folder: a folder of Parquet files goes with --engine dask")
    from ..bundle import Bundle
    from ..history_scoring import score_history_file
    from ..registry import Registry
    from ..scoring import score_file, scoring_threads

    threads = scoring_threads()
    # A session of one thread lets the chunks in flight (history_scoring.SCORERS) compute side by side.
    bundle = Bundle.load(Registry(model_dir), version, provider, threads, concurrent=threads == 1)
    score = score_file if bundle.reads_three_inputs else score_history_file
    counts = score(input_path, output_path, bundle, skip_bad_rows, warn=log)
    log(
        f"wrote {counts['rows']} forecasts from model {bundle.version} ({bundle.provider}) to {output_path}"
        + (f"; {counts['extrapolated_rows']} row(s) outside the training range" if counts["extrapolated_rows"] else "")
        + (
            f"; {counts['unknown_series_rows']} row(s) of series the model does not know, forecast as a typical series"
            if counts["unknown_series_rows"]
            else ""
        )
    )


def predict_on_dask(
    input_path: Path,
    output_path: Path,
    version: str | None,
    model_dir: Path,
    scheduler: str | None,
    partitions: int | None,
    skip_bad_rows: bool,
) -> None:
    from ..bundle import Bundle
    from ..registry import Registry

    try:
        from ..cluster import score_on_dask
    except ImportError:
        raise click.ClickException("--engine dask needs Dask: pip install '.[dask]'") from None
    bundle = Bundle.load(Registry(model_dir), version)  # a missing or broken model is said here, not on a worker
    counts = score_on_dask(
        input_path, output_path, model_dir, bundle.version, scheduler, partitions, skip_bad_rows, log=log
    )
    log(
        f"wrote {counts['rows']} forecasts from model {bundle.version} to {output_path} "
        f"({counts['partitions']} partitions of {counts['files']} file(s))"
    )


def interval_levels(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    """--levels 0.8,0.95 -> [0.8, 0.95], each from 0.5 to 0.99."""
    from ..calibrate import LEVELS

    try:
        levels = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"must be numbers separated by commas, got {value!r}") from None
    if not levels or any(not LEVELS[0] <= level <= LEVELS[-1] for level in levels):
        raise click.BadParameter(f"each level must be from {LEVELS[0]} to {LEVELS[-1]}, got {value!r}")
    return levels


@main.command()
@click.option(
    "--plan",
    "plan_path",
    required=True,
    type=click.Path(path_type=Path),
    help="CSV: series, week and the model's known covariates per week (discount_fraction, "
    "weeks_to_next_holidays for the chapter's); prev_week_sales on each series' first week unless "
    "the model stored its weeks; static covariates unless stored. With --engine dask, a folder of such "
    "files, a glob, or one.",
)
@click.option(
    "--output", "output_path", required=True, type=click.Path(path_type=Path),
    help="A CSV file; with --engine dask, a new folder of CSV part files.",
)  # fmt: skip
@click.option(
    "--levels",
    default=",".join(f"{level:g}" for level in DEFAULT_LEVELS),
    show_default=True,
    callback=interval_levels,
    help="Interval levels, from 0.5 to 0.99.",
)
@click.option("--version", help="A published version; default the champion.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@engine_options()
@model_dir_option
@friendly_errors
def forecast(
    plan_path: Path,
    output_path: Path,
    levels: list[float],
    version: str | None,
    provider: str,
    engine: str,
    scheduler: str | None,
    partitions: int | None,
    model_dir: Path,
) -> None:
    """Forecast a promotion plan week by week offline, through ONNX Runtime.

    Each week's forecast becomes the next week's prev_week_sales, and the
    intervals widen with the step, as POST /forecast answers.
    """
    from ..bundle import Bundle
    from ..plan import forecast_plan_file
    from ..registry import Registry

    if engine == "dask":
        return forecast_on_dask(plan_path, output_path, levels, version, model_dir, scheduler, partitions)
    if scheduler or partitions:
        raise click.UsageError("--scheduler and --partitions go with --engine dask")
    bundle = Bundle.load(Registry(model_dir), version, provider)
    done = forecast_plan_file(plan_path, output_path, bundle, levels)
    report_forecasts(done, bundle.version, output_path)


def report_forecasts(done: dict[str, Any], version: str, output_path: Path) -> None:
    for note in dict.fromkeys(done["notes"]):  # each once: on a cluster, each partition says them
        log(note)
    unknown = done["unknown"]
    if unknown:
        log(
            f"{len(unknown)} of the plan's series are not known to model {version} and were forecast as a "
            f"typical series: {', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}"
        )
    log(f"wrote {done['rows']} forecasts of {done['series']} series from model {version} to {output_path}")


def forecast_on_dask(
    plan_path: Path,
    output_path: Path,
    levels: list[float],
    version: str | None,
    model_dir: Path,
    scheduler: str | None,
    partitions: int | None,
) -> None:
    from ..bundle import Bundle
    from ..registry import Registry

    try:
        from ..cluster import forecast_on_dask as run
    except ImportError:
        raise click.ClickException("--engine dask needs Dask: pip install '.[dask]'") from None
    bundle = Bundle.load(Registry(model_dir), version)
    done = run(plan_path, output_path, model_dir, bundle.version, levels, scheduler, partitions, log=log)
    report_forecasts(done, bundle.version, output_path)
