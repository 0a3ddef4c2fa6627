"""`demand data`: generate the embedded data, check a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..generate import DemandLaw, GeneratorConfig
from .base import (
    DEFAULT_DATA,
    SEEDS,
    FiniteRange,
    emit_json,
    feature_options,
    friendly_errors,
    json_option,
    log,
    main,
    skip_option,
    spec_of,
)


@main.group()
def data() -> None:
    """Create and check data files."""


@data.command("generate")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DATA, show_default=True
)
@click.option("--seed", type=SEEDS, default=GeneratorConfig.seed, show_default=True)
@click.option(
    "--series",
    type=click.IntRange(1, 100_000),
    default=GeneratorConfig.series,
    show_default=True,
    help="Stores or products.",
)
@click.option("--weeks", type=click.IntRange(10, 5200), default=GeneratorConfig.weeks, show_default=True)
@click.option(
    "--start",
    default=GeneratorConfig.start,
    show_default=True,
    callback=lambda ctx, param, value: iso_date(value),
    help="First week (ISO date).",
)
@click.option("--noise", type=FiniteRange(0, 1), default=GeneratorConfig.noise, show_default=True)
@click.option("--promo-rate", type=FiniteRange(0, 1), default=GeneratorConfig.promo_rate, show_default=True)
@click.option(
    "--lift-max",
    type=FiniteRange(0),
    default=DemandLaw.lift_max,
    show_default=True,
    help="Largest relative lift of a discount.",
)
@click.option("--holiday-bump", type=FiniteRange(0), default=DemandLaw.holiday_bump, show_default=True)
@click.option("--carryover", type=FiniteRange(0), default=DemandLaw.carryover, show_default=True)
@friendly_errors
def data_generate(
    output: Path,
    seed: int,
    series: int,
    weeks: int,
    start: str,
    noise: float,
    promo_rate: float,
    lift_max: float,
    holiday_bump: float,
    carryover: float,
) -> None:
    """Write the deterministic synthetic weekly sales series."""
    from ..data import min_periods
    from ..generate import generate, write_csv
    from ..schema import DOMAIN, FEATURES, TARGET

    if weeks < min_periods():
        raise click.BadParameter(
            f"{weeks} weeks cannot be trained on: at least {min_periods()} are needed to train, select and evaluate",
            param_hint="'--weeks'",
        )
    law = DemandLaw(lift_max=lift_max, holiday_bump=holiday_bump, carryover=carryover)
    config = GeneratorConfig(
        seed=seed, series=series, weeks=weeks, start=start, noise=noise, promo_rate=promo_rate, law=law
    )
    rows: list[dict[str, Any]] = generate(config)
    largest = max(max(row[TARGET], row[FEATURES[0]]) for row in rows)
    if not largest <= DOMAIN[TARGET][1]:  # NaN too
        raise click.UsageError(
            f"these settings make sales of {largest:g} units, past the largest a model takes "
            f"({DOMAIN[TARGET][1]:g}): lower --carryover, --lift-max or --holiday-bump"
        )
    from ..atomic import write_atomically

    def write(partial: Path) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_csv(rows, partial)

    write_atomically(output, write)
    log(f"wrote {len(rows)} rows ({series} series x {weeks} weeks) to {output}")


def iso_date(value: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date like 2023-01-02", param_hint="'--start'") from None


@data.command("check")
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_DATA)
@feature_options
@skip_option
@json_option
@friendly_errors
def data_check(path: Path, skip_bad_rows: bool, as_json: bool, features: dict[str, Any]) -> None:
    """Validate a data file (or a folder of them, read as train reads it) and show how it would be split.

    Takes train's feature options, so a column train would not read is named here too."""
    from ..data import findings, time_split
    from ..sources import load_sources

    dataset = load_sources([path], skip_bad_rows, warn=log, spec=spec_of(features))
    summary = {
        **dataset.source,
        "date_range": dataset.date_range(),
        "splits": time_split(dataset).describe(),
        "findings": findings(dataset),
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"{path}: {summary['rows']} valid rows, {summary['skipped_rows']} skipped, weeks {summary['date_range']}"
        )
        for part, info in summary["splits"].items():
            click.echo(f"  {part:<10} {info['rows']:>6} rows  {info['weeks']}")
        found = {name: value for name, value in summary["findings"].items() if value}
        if found:
            click.echo(f"  findings: {json.dumps(found)}")
