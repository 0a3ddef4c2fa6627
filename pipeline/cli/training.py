"""`demand train`, `backtest`, `retrain`, `schedule`, `gradcheck`: making and judging models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..documents import shown
from ..errors import DataError
from ..presets import (
    AUTO,
    BACKTEST_HORIZON,
    BACKTEST_WINDOWS,
    GRADCHECK_SEED,
    GRADCHECK_TRIALS,
    MIN_NEW_WEEKS,
)
from .base import (
    SEEDS,
    FiniteRange,
    Progress,
    data_option,
    emit_json,
    engine_options,
    feature_options,
    friendly_errors,
    json_option,
    log,
    main,
    model_dir_option,
    preset_option,
    skip_option,
    spec_of,
    training_options,
)


@main.command()
@data_option("train")
@preset_option(AUTO)
@training_options
@feature_options
@click.option(
    "--refit/--no-refit",
    default=True,
    show_default=True,
    help="Publish the chosen settings retrained on every row, holdout included (--no-refit: the evaluated model).",
)
@click.option(
    "--backtest",
    "backtest_windows",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Also run a rolling-origin backtest of this many windows and store it in the card.",
)
@click.option(
    "--horizon", type=click.IntRange(1), default=BACKTEST_HORIZON, show_default=True, help="Weeks per backtest window."
)
@click.option("--promote", is_flag=True, help="Make the new version champion (the first one always is).")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, help="Seconds to wait for the registry lock.")
@model_dir_option
@skip_option
@json_option
@friendly_errors
def train(
    data_path: Path,
    preset: str,
    refit: bool,
    backtest_windows: int,
    horizon: int,
    promote: bool,
    wait: float,
    model_dir: Path,
    skip_bad_rows: bool,
    as_json: bool,
    features: dict[str, Any],
    **overrides: Any,
) -> None:
    """Select, evaluate, refit, export and publish a model version."""
    import torch

    from ..publish import publish
    from ..registry import Registry
    from ..sources import load_sources
    from ..workflow import train_model

    spec = spec_of(features, data=None if preset == "chapter" else [data_path])
    if preset == "chapter" and not spec.is_chapter:
        raise DataError(
            "--preset chapter is the book's network on its three inputs: leave out --known, --static, "
            "--history and --calendar, or pick another preset"
        )
    if not spec.is_chapter:
        log(f"features: {', '.join(spec.names)}")
    Registry(model_dir).check_writable()  # before minutes of training, not after
    dataset = load_sources([data_path], skip_bad_rows, warn=log, spec=spec)
    report: dict[str, Any] | None = None
    if backtest_windows:
        from ..backtest import backtest, format_table

        report = backtest(dataset, backtest_windows, horizon, preset, overrides, log, refit=refit)
        log(format_table(report))
    progress = Progress()
    try:
        trained = train_model(dataset, preset, overrides, refit, progress=progress, log=log)
    finally:
        progress.close()
    split = trained.split
    log(
        f"data {data_path}: {len(dataset)} rows; train {len(split.train)}, validation {len(split.validation)}, "
        f"holdout {len(split.holdout)}"
    )
    published = trained.published
    log(
        f"chose {trained.chosen}; trained on {published.device} ({published.config.engine} engine, torch "
        f"{torch.__version__}) in {published.seconds:.1f}s: {published.stopped_because}"
    )
    version, card, crowned = publish(Registry(model_dir), trained, dataset, promote, wait, backtest=report)
    log(f"published {version} in {model_dir}{' as champion' if crowned else ''}")
    if as_json:
        emit_json(
            {
                "version": version,
                "champion": crowned,
                "device": published.device,
                "features": card["features"],
                "data": card["data"],
                "selection": card["selection"],
                "trained_on": card["trained_on"],
                "evaluated_model": card["evaluated_model"],
                "data_findings": card["data_findings"],
                "metrics": card["metrics"],
                "interval": card["interval"],
                "training": card["training"],
                "backtest": report,
            }
        )
    else:
        click.echo(format_candidates(card))
        click.echo(format_metrics(version, card))
        click.echo(f"champion: {'yes' if crowned else 'no (use --promote)'}")


def format_candidates(card: dict[str, Any]) -> str:
    selection = card["selection"]
    lines = [
        f"preset {selection['preset']}: validation WAPE of each candidate, weeks {selection['validation_weeks']}",
        f"  {'candidate':<18}{'WAPE %':>9}{'epochs':>8}{'seconds':>9}",
    ]
    for c in selection["candidates"]:
        mark = "*" if c["name"] in selection["members"] else " "
        lines.append(
            f"{mark} {c['name']:<18}{shown(c['validation_wape'], '>9.2f')}{c['kept_epoch']:>8}{c['seconds']:>9.1f}"
        )
    trained_on = card["trained_on"]
    lines.append(
        f"* in the model ({selection['chosen']}): validation WAPE "
        f"{shown(card['metrics']['validation']['model']['wape'], '.2f')}%"
    )
    lines.append(
        f"published model trained on {trained_on['rows']} rows, weeks {trained_on['weeks']}: {trained_on['what']}"
    )
    found = {k: v for k, v in card["data_findings"].items() if v}
    if found:
        lines.append(f"data findings: {json.dumps(found)}")
    return "\n".join(lines)


@main.command()
@data_option("backtest")
@click.option(
    "--windows",
    type=click.IntRange(1),
    default=BACKTEST_WINDOWS,
    show_default=True,
    help="Origins at the end of the history.",
)
@click.option(
    "--horizon",
    type=click.IntRange(1),
    default=BACKTEST_HORIZON,
    show_default=True,
    help="Weeks forecast from each origin.",
)
@preset_option(AUTO)
@training_options
@feature_options
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("backtest.png"),
    show_default=True,
    help="Where to draw the figures.",
)
@engine_options(partitions=False, flag="--run-on", dest="run_on")  # its --engine is the training engine
@skip_option
@json_option
@friendly_errors
def backtest(
    data_path: Path,
    windows: int,
    horizon: int,
    preset: str,
    plot: Path,
    run_on: str,
    scheduler: str | None,
    skip_bad_rows: bool,
    as_json: bool,
    features: dict[str, Any],
    **overrides: Any,
) -> None:
    """Rolling-origin backtest: train before each origin, forecast the weeks after it.

    Reports WAPE, MASE, bias and interval coverage per window and on average,
    one step ahead and recursively (forecasts fed back as prev_week_sales),
    for the model and the baselines.
    """
    from ..backtest import backtest as run
    from ..backtest import format_table, write_plot
    from ..sources import load_sources

    check_plot_path(plot)  # before the trainings, not after
    spec = spec_of(features, data=None if preset == "chapter" else [data_path])
    if preset == "chapter" and not spec.is_chapter:
        raise DataError("--preset chapter is the book's network on its three inputs; it takes no other features")
    dataset = load_sources([data_path], skip_bad_rows, warn=log, spec=spec)
    if run_on == "dask":  # each window a task of a Dask cluster
        try:
            from ..cluster import windows_on_dask
        except ImportError:
            raise click.ClickException("--engine dask needs Dask: pip install '.[dask]'") from None
        with windows_on_dask(scheduler, log) as map_windows:
            report = run(dataset, windows, horizon, preset, overrides, log, map_windows=map_windows)
    elif scheduler:
        raise click.UsageError("--scheduler goes with --run-on dask")
    else:
        report = run(dataset, windows, horizon, preset, overrides, log)
    if as_json:  # the report first: a figure that cannot be written must not lose it
        emit_json(report)
    else:
        click.echo(format_table(report))
    try:
        write_plot(plot, report)
    except OSError as err:
        raise click.ClickException(f"{plot}: cannot be written: {err.strerror or err}") from None
    log(f"wrote {plot}")


def check_plot_path(path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise click.BadParameter(
            f"{path}: the figure is written as one of .{', .'.join(sorted(formats))}; name it so", param_hint="'--plot'"
        )
    if not path.parent.is_dir():
        raise click.BadParameter(f"{path}: no folder {path.parent}", param_hint="'--plot'")


def format_metrics(version: str, card: dict[str, Any]) -> str:
    holdout = card["metrics"]["holdout"]
    lines = [
        f"{version}: holdout of {holdout['model']['rows']} rows, weeks {card['data']['splits']['holdout']['weeks']}",
        f"  {'':<8}{'WAPE %':>9}{'MAPE %':>9}{'MAE':>11}{'RMSE':>11}{'bias':>10}{'MASE':>7}",
    ]
    for name in ("model", "naive", "linear"):
        m = holdout[name]
        lines.append(
            f"  {name:<8}{shown(m['wape'], '>9.2f')}{shown(m['mape'], '>9.2f')}{shown(m['mae'], '>11.0f')}{shown(m['rmse'], '>11.0f')}{shown(m['bias'], '>10.0f')}{shown(m['mase'], '>7.3f')}"
        )
    interval = card["interval"]
    lines.append(
        f"  {interval['level']:.0%} interval: {interval['holdout_mean_width_units']:.0f} units wide on average, holdout coverage {interval['holdout_coverage']:.1%}"
    )
    return "\n".join(lines)


@main.command()
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    envvar="DEMAND_RETRAIN_DATA",
    help="A CSV file or a folder of CSVs; repeat for more. Rows of the same week and series "
    "in several files are taken from the most recently modified file.",
)
@click.option(
    "--min-improvement",
    type=FiniteRange(0),
    default=0.0,
    show_default=True,
    help="WAPE points by which the challenger must beat the champion.",
)
@click.option(
    "--min-new-weeks",
    type=click.IntRange(1),
    default=MIN_NEW_WEEKS,
    show_default=True,
    help="Weeks after the champion's last training week needed to compare; fewer keep the champion.",
)
@click.option("--keep-rejected", is_flag=True, help="Publish a rejected challenger as a (non-champion) version.")
@click.option(
    "--from-store",
    is_flag=True,
    help="Also train on the store's actuals (POST /actuals, demand actuals load): its weeks after the "
    "champion's training are the weeks the two are compared on.",
)
@click.option("--store-url", envvar="DEMAND_STORE_URL", default=None, help="The store (env DEMAND_STORE_URL).")
@preset_option(None)
@training_options
@feature_options
@click.option(
    "--wait",
    type=FiniteRange(0, infinity=True),
    default=0,
    show_default=True,
    help="Seconds to wait for another writer's registry lock before giving up.",
)
@model_dir_option
@skip_option
@json_option
@friendly_errors
def retrain(
    data_paths: tuple[Path, ...],
    min_improvement: float,
    min_new_weeks: int,
    keep_rejected: bool,
    from_store: bool,
    store_url: str | None,
    preset: str | None,
    wait: float,
    model_dir: Path,
    skip_bad_rows: bool,
    as_json: bool,
    features: dict[str, Any],
    **overrides: Any,
) -> None:
    """Train a challenger; promote it only if it beats the champion and the baselines
    on the weeks the champion never trained on.

    Without --preset the challenger is made as the champion was: a new auto
    selection, or the champion's own settings. Exit status 0 when the
    challenger was promoted or the champion kept; 1 for errors (bad data, lock
    held by another writer, failed export checks). The challenger reads the
    champion's features unless the feature options say otherwise; each is
    scored on the same weeks reading its own.
    """
    from ..registry import Registry
    from ..retrain import retrain as run

    store = None
    if from_store:
        from ..store import open_engine
        from ..store import store_url as url_of

        store = open_engine(url_of(model_dir, store_url))
    progress = Progress()
    log(f"retraining from {', '.join(map(str, data_paths))} into {model_dir}")
    try:
        outcome = run(
            Registry(model_dir),
            data_paths,
            overrides,
            min_improvement,
            keep_rejected,
            wait,
            skip_bad_rows,
            warn=log,
            progress=progress,
            preset=preset,
            min_new_weeks=min_new_weeks,
            log=log,
            features=features,
            store=store,
        )
    finally:
        progress.close()
    stored = outcome["data"].get("store")
    if stored:
        log(f"the store gave {stored['rows']} weeks, {stored['first_week']} to {stored['last_week']}")
    log(f"{outcome['decision']}: {outcome['reason']}")
    if as_json:
        emit_json(outcome)
        return
    m = outcome["metrics"] or {}
    click.echo(f"{outcome['decision']}: {outcome['reason']}")
    if m:
        click.echo(f"  scored on weeks {outcome['holdout_weeks']} ({outcome['scored_on']})")
    for name in ("challenger", "champion", "naive", "linear"):
        if m.get(name):
            click.echo(f"  {name:<11} WAPE {shown(m[name]['wape'], '6.2f')}%  MAE {shown(m[name]['mae'], '10.0f')}")
    click.echo(f"  champion now: {outcome['champion_after']}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--cron", required=True, help='When to retrain, e.g. "0 3 * * 1" (Mondays 03:00, local time).')
@click.option("--run-now", is_flag=True, help="Also retrain once at start.")
@click.argument("retrain_args", nargs=-1, type=click.UNPROCESSED)
def schedule(cron: str, run_now: bool, retrain_args: tuple[str, ...]) -> None:
    """Run `demand retrain RETRAIN_ARGS...` on a cron schedule until stopped.

    Example: demand schedule --cron "0 3 * * 1" --run-now --data data/incoming --min-improvement 0.2
    """
    from ..schedule import Scheduler

    try:
        # Refuse bad retrain options now, not at 3 am (reading DEMAND_RETRAIN_* as the run will).
        retrain.make_context("retrain", list(retrain_args), auto_envvar_prefix="DEMAND_RETRAIN")
    except click.UsageError as err:
        raise click.UsageError(f"retrain options: {err.format_message()}") from None
    try:
        scheduler = Scheduler(cron, retrain_args, log)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--cron") from None
    scheduler.run(run_now)


@main.command()
@click.option("--trials", type=click.IntRange(1), default=GRADCHECK_TRIALS, show_default=True)
@click.option("--seed", type=SEEDS, default=GRADCHECK_SEED, show_default=True)
@json_option
@friendly_errors
def gradcheck(trials: int, seed: int, as_json: bool) -> None:
    """Check the hand-written backprop against autograd (float64).

    Each gradient element must be within 1e-10 + 1e-7 x |autograd's| of
    autograd's, as torch.autograd.gradcheck compares; exit status 1 when any is not.
    """
    from ..gradcheck import gradcheck as run

    report = run(trials, seed)
    if as_json:
        emit_json(report)
    else:
        tolerance = report["tolerance"]
        click.echo(
            f"{trials} random networks, float64, each gradient within {tolerance['atol']:g} + "
            f"{tolerance['rtol']:g} x |autograd's|:"
        )
        for variant in report["variants"]:
            click.echo(
                f"  {variant['variant']:<26} {variant['cases']:>4} cases  worst |error| "
                f"{variant['worst_abs_error']:.1e}, {variant['worst_ratio']:.1e} of the tolerance  "
                f"{'ok' if variant['passed'] else 'FAILED'}"
            )
    if not report["passed"]:
        raise click.ClickException("the hand-written gradients differ from autograd's beyond the tolerance")
