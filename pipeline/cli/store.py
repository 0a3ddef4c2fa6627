"""The store's commands: `demand store upgrade`, `demand actuals load`, `demand models accuracy`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .base import emit_json, friendly_errors, json_option, log, main, model_dir_option
from .models import models

store_url_option = click.option(
    "--store-url",
    envvar="DEMAND_STORE_URL",
    default=None,
    help="SQLAlchemy URL of the store, e.g. postgresql+psycopg://user:password@host/demand "
    "(env DEMAND_STORE_URL; default: store.sqlite in the registry folder).",
)


def engine_of(model_dir: Path, url: str | None) -> Any:
    from ..store import open_engine, store_url

    return open_engine(store_url(model_dir, url))


@main.group()
def store() -> None:
    """The store of actuals and served forecasts."""


@store.command("upgrade")
@model_dir_option
@store_url_option
@friendly_errors
def store_upgrade(model_dir: Path, store_url: str | None) -> None:
    """Bring the store's schema to the latest revision (the service does it at its start too)."""
    from ..store import upgrade

    click.echo(f"store at schema revision {upgrade(engine_of(model_dir, store_url))}")


@main.group()
def actuals() -> None:
    """What actually sold, into the store."""


@actuals.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_dir_option
@store_url_option
@json_option
@friendly_errors
def actuals_load(file: Path, model_dir: Path, store_url: str | None, as_json: bool) -> None:
    """Store the weeks of FILE (CSV or Parquet: series, week, units sold and the champion's declared
    covariates, under the champion's names for them). All or nothing; a week stored before is replaced."""
    import pyarrow.parquet as pq

    from ..errors import DataError
    from ..features import FeatureSpec
    from ..registry import TAILS_FILE, Registry
    from ..store import actual_columns, actual_from_row, csv_actual_rows, put_actuals, upgrade
    from ..tables import is_parquet

    registry = Registry(model_dir)
    champion = registry.champion()
    spec = FeatureSpec.from_json(registry.card(champion).get("features")) if champion else FeatureSpec()
    columns = actual_columns(spec)
    if is_parquet(file):
        try:
            table = pq.read_table(file)
        except Exception as err:  # pyarrow's own errors name the problem
            raise DataError(f"{file}: cannot read the file: {str(err).splitlines()[0]}") from None
        repeated = next((n for i, n in enumerate(table.column_names) if n in table.column_names[:i]), None)
        if repeated is not None:
            raise DataError(f"{file}: the file names column {repeated[:40]!r} twice")
        rows = table.to_pylist()
        where = [f"{file}: row {1 + i}" for i in range(len(rows))]
    else:
        rows, where = csv_actual_rows(file.read_bytes(), columns, 10**9, str(file))
    found = [actual_from_row(row, at, columns) for row, at in zip(rows, where)]
    engine = engine_of(model_dir, store_url)
    upgrade(engine)
    trained_until = {}
    if champion and (registry.path(champion) / TAILS_FILE).exists():
        from ..bundle import last_training_weeks, read_tails

        trained_until = last_training_weeks(read_tails(registry.path(champion) / TAILS_FILE)[0])
    counts = put_actuals(engine, found, where, trained_until)
    if as_json:
        emit_json({"file": str(file), **counts})
    else:
        log(f"read {len(rows)} weeks from {file}")
        click.echo(f"stored {counts['stored']} new weeks, replaced {counts['replaced']}")


@models.command("accuracy")
@click.option("--weeks", type=click.IntRange(1, 520), default=13, show_default=True, help="The trailing window.")
@model_dir_option
@store_url_option
@json_option
@friendly_errors
def models_accuracy(weeks: int, model_dir: Path, store_url: str | None, as_json: bool) -> None:
    """How each version's served forecasts did against what sold, per step ahead: over the last WEEKS
    weeks of actuals and over everything logged."""
    from ..accuracy import live_accuracy
    from ..drift import input_drift, served_drift
    from ..registry import Registry

    engine = engine_of(model_dir, store_url)
    answer = live_accuracy(engine, weeks)
    registry = Registry(model_dir)
    champion = registry.champion()
    if champion:
        answer["champion"] = champion
        answer["drift"] = input_drift(engine, registry.card(champion), weeks)
        answer["drift"]["served"] = served_drift(engine, registry.card(champion), champion, weeks)
    if as_json:
        emit_json(answer)
        return
    for name, figures in answer.get("drift", {}).get("inputs", {}).items():
        flag = "  DRIFTED" if figures["flagged"] else ""
        click.echo(f"drift of {name} over {figures['count']} recent weeks: PSI {figures['psi']:.3f}{flag}")
    for name, figures in answer.get("drift", {}).get("served", {}).get("inputs", {}).items():
        flag = "  DRIFTED" if figures["flagged"] else ""
        click.echo(f"drift of {name} as served, {figures['count']} rows: PSI {figures['psi']:.3f}{flag}")
    if not answer["versions"]:
        click.echo("no served forecast has an actual yet")
        return
    click.echo(f"through {answer['through']}; window: the last {weeks} weeks")
    click.echo(f"{'version':<9}{'span':<8}{'step':>5}{'weeks':>8}{'WAPE':>9}{'bias':>9}{'MASE':>7}  coverage")

    def shown(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    for version, spans in answer["versions"].items():
        for span in ("window", "all"):
            for s in spans[span]:
                coverage = " ".join(f"{level}:{share:.0%}" for level, share in s["coverage"].items())
                click.echo(
                    f"{version:<9}{span:<8}{s['step']:>5}{s['count']:>8}{shown(s['wape'], '>9.2%')}"
                    f"{shown(s['bias'], '>+9.2%')}{shown(s['mase'], '>7.2f')}  {coverage}"
                )
