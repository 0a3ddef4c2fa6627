"""`demand`: the command line of the demand forecaster.

Results go to stdout (a table, or one JSON document with --json); logs and
progress go to stderr. Heavy libraries are imported inside the commands, so
`demand --help` starts instantly. Every option can also be set from the
environment as DEMAND_<COMMAND>_<OPTION> (e.g. DEMAND_TRAIN_EPOCHS), and the
registry folder as DEMAND_MODEL_DIR.
"""

import contextlib
import functools
import json
import math
import os
import sys
import types
from pathlib import Path

import click

from .documents import shown
from .errors import DataError
from .generate import DemandLaw, GeneratorConfig
from .presets import (
    AUTO,
    BACKTEST_HORIZON,
    BACKTEST_WINDOWS,
    GRADCHECK_SEED,
    GRADCHECK_TRIALS,
    HIDDEN_ACTIVATIONS,
    LOSS_NAMES,
    MAX_HIDDEN_UNITS,
    MIN_NEW_WEEKS,
    OUTPUT_ACTIVATIONS,
    PRESET_NAMES,
)
from .registry import DEFAULT_MODEL_DIR

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "demand.csv"


def log(message):
    click.echo(message, err=True)


def emit_json(document):
    from .documents import dumps

    click.echo(dumps(document, indent=2, default=str))


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing NaN (which passes every comparison, so every
    range) and, unless `infinity` is a meaningful value (`--wait inf`), infinity."""

    def __init__(self, *args, infinity=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.infinity = infinity

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.infinity):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


SEEDS = click.IntRange(0, 2**64 - 1)  # what numpy and torch take


def friendly_errors(command):
    """Turn the pipeline's own errors into a one-line message and exit status 1,
    any error that a Ctrl-C caused into click's "Aborted!", and a SIGTERM into
    the same unwinding as a Ctrl-C (see signals_unwind)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .errors import PipelineError

        with signals_unwind() as interrupts:
            try:
                return command(*args, **kwargs)
            except Exception as err:
                if interrupts.seen:
                    raise click.Abort() from None
                if isinstance(err, PipelineError):
                    raise click.ClickException(str(err)) from None
                raise

    return wrapper


@contextlib.contextmanager
def signals_unwind():
    """While a command runs:
    - SIGTERM (docker stop, kill, the scheduler stopping a retrain) unwinds as
      Ctrl-C does and exits 143: a half-written output is removed and training
      workers are stopped on the way out, where by default the process dies on
      the spot, leaving the temporary file and orphaned workers behind;
    - Ctrl-C raises KeyboardInterrupt as always, and is also remembered: one
      that lands while a C extension is being imported (ONNX Runtime, numpy)
      is swallowed there and comes out as an ImportError such as
      "initialization failed", which would otherwise read as a broken model.
    Both handlers are put back afterwards."""
    import signal
    import threading

    interrupts = types.SimpleNamespace(seen=False)
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield interrupts
        return

    def remember(signum, frame):
        interrupts.seen = True
        signal.default_int_handler(signum, frame)

    def unwind(signum, frame):
        interrupts.seen = True
        sys.exit(128 + signum)

    # A signal the process was started ignoring stays ignored (a background job
    # of a script, nohup): Ctrl-C meant for the script must not stop it.
    previous = {
        signum: signal.signal(signum, handler)
        for signum, handler in ((signal.SIGINT, remember), (signal.SIGTERM, unwind))
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield interrupts
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


model_dir_option = click.option(
    "--model-dir",
    envvar="DEMAND_MODEL_DIR",
    default=DEFAULT_MODEL_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model registry folder (env DEMAND_MODEL_DIR).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
skip_option = click.option(
    "--skip-bad-rows", is_flag=True, help="Drop invalid rows (counted on stderr) instead of refusing the file."
)


@click.group(context_settings={"auto_envvar_prefix": "DEMAND", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="demand-forecaster")
def main():
    """Weekly demand forecaster: train, evaluate, publish and serve the model."""


# ---------------------------------------------------------------- data


def names_list(ctx, param, value):
    """A comma-separated list of column names, blanks dropped; None when not given."""
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise click.BadParameter(f"names {', '.join(repeated)} more than once")
    return names


def feature_options(command):
    """What the model reads from a file, and what the file calls its columns (pipeline.features)."""
    for option in reversed(
        [
            click.option(
                "--known",
                callback=names_list,
                help="Covariates known in advance, a value per week, comma-separated "
                "(default: discount_fraction,weeks_to_next_holidays).",
            ),
            click.option(
                "--static",
                callback=names_list,
                help="Covariates with one number per series, comma-separated (a store's size).",
            ),
            click.option(
                "--history/--no-history",
                default=None,
                help="Lags of 2-4 and 52 weeks and rolling means of 4 and 13 weeks, from each series' own "
                "earlier weeks (needs a week column). Default: on, with --calendar, for data with two "
                "years of weeks or more, or without a prev_week_sales column.",
            ),
            click.option(
                "--calendar/--no-calendar",
                default=None,
                help="The week's place in the year, so years of history teach the yearly season.",
            ),
            click.option("--series-column", help="The file's name for the series column (default: series)."),
            click.option("--week-column", help="The file's name for the week column (default: week)."),
            click.option("--target-column", help="The file's name for the units sold (default: units_sold)."),
        ]
    ):
        command = option(command)
    return command


def spec_of(known, static, history, calendar, series_column, week_column, target_column, base=None, data=None):
    """The FeatureSpec the options ask for; what they leave out is `base`'s (default: the chapter's three inputs).

    With `data` (the paths to train on), history and calendar left unsaid are
    on where pipeline.sources.history_by_default says so, unless the
    covariates asked for are exactly the chapter's and the preset is the chapter's.
    """
    from .features import CHAPTER, with_options

    spec = with_options(
        base or CHAPTER,
        known=known,
        static=static,
        history=history,
        calendar=calendar,
        series_column=series_column,
        week_column=week_column,
        target_column=target_column,
    )
    if data is not None and history is None and calendar is None:
        from .sources import history_by_default

        try:
            if history_by_default(data, spec):
                spec = with_options(spec, history=True, calendar=True)
        except (OSError, DataError):
            pass  # the loader says what is wrong with the data, in its own words
    return spec


@main.group()
def data():
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
def data_generate(output, seed, series, weeks, start, noise, promo_rate, lift_max, holiday_bump, carryover):
    """Write the deterministic synthetic weekly sales series."""
    from .data import min_periods
    from .generate import generate, write_csv
    from .schema import DOMAIN, FEATURES, TARGET

    if weeks < min_periods():
        raise click.BadParameter(
            f"{weeks} weeks cannot be trained on: at least {min_periods()} are needed to train, select and evaluate",
            param_hint="'--weeks'",
        )
    law = DemandLaw(lift_max=lift_max, holiday_bump=holiday_bump, carryover=carryover)
    config = GeneratorConfig(
        seed=seed, series=series, weeks=weeks, start=start, noise=noise, promo_rate=promo_rate, law=law
    )
    rows = generate(config)
    largest = max(max(row[TARGET], row[FEATURES[0]]) for row in rows)
    if not largest <= DOMAIN[TARGET][1]:  # NaN too
        raise click.UsageError(
            f"these settings make sales of {largest:g} units, past the largest a model takes "
            f"({DOMAIN[TARGET][1]:g}): lower --carryover, --lift-max or --holiday-bump"
        )
    from .atomic import write_atomically

    def write(partial):
        output.parent.mkdir(parents=True, exist_ok=True)
        write_csv(rows, partial)

    write_atomically(output, write)
    log(f"wrote {len(rows)} rows ({series} series x {weeks} weeks) to {output}")


def iso_date(value):
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
def data_check(path, skip_bad_rows, as_json, **features):
    """Validate a data file (or a folder of them, read as train reads it) and show how it would be split.

    Takes train's feature options, so a column train would not read is named here too."""
    from .data import findings, time_split
    from .sources import load_sources

    dataset = load_sources([path], skip_bad_rows, warn=log, spec=spec_of(**features))
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


# ---------------------------------------------------------------- training


class Progress:
    """A bar on a terminal; a plain line every tenth of the run otherwise."""

    def __init__(self):
        self.bar = None

    def __call__(self, epoch, total, train_loss, val_loss):
        if epoch == 1:
            self.close()  # a new run (the refit after the selection) gets a bar of its own
        if epoch == 1 and sys.stderr.isatty():
            self.bar = click.progressbar(length=total, label="training", file=sys.stderr)
            self.bar.__enter__()
        if self.bar:
            self.bar.update(1)
        elif epoch == 1 or epoch % max(1, total // 10) == 0:
            watched = "" if math.isnan(val_loss) else f"  validation loss {val_loss:.6f}"
            log(f"epoch {epoch}/{total}  train loss {train_loss:.6f}{watched}")

    def close(self):
        if self.bar:
            self.bar.__exit__(None, None, None)
            self.bar = None


def hidden_sizes(ctx, param, value):
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give layer sizes as integers separated by commas, e.g. 10,5") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter("every hidden layer needs at least one unit")
    if max(sizes) > MAX_HIDDEN_UNITS:
        raise click.BadParameter(f"a hidden layer may have at most {MAX_HIDDEN_UNITS} units")
    return sizes


def training_options(command):
    """The options that override a preset's (or a champion's) training settings."""
    for option in reversed(
        [
            click.option("--hidden", callback=hidden_sizes, help="Hidden layer sizes, e.g. 10,5."),
            click.option(
                "--activation", type=click.Choice(HIDDEN_ACTIVATIONS), help="gelu: the candidates' (torch engine only)."
            ),
            click.option("--optimizer", type=click.Choice(["sgd", "adam"])),
            click.option("--lr", type=FiniteRange(min=0, min_open=True)),
            click.option("--momentum", type=FiniteRange(0, 1)),
            click.option("--epochs", type=click.IntRange(1)),
            click.option("--batch-size", type=click.IntRange(0), help="Rows per step; 0 for the whole training set."),
            click.option("--seed", type=SEEDS),
            click.option("--target-loss", type=FiniteRange(0), help="Stop once the training loss is at or below this."),
            click.option(
                "--patience", type=click.IntRange(0), help="Early stop after N epochs without a better validation loss."
            ),
            click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="auto takes CUDA when present."),
            click.option(
                "--engine", type=click.Choice(["torch", "manual"]), help="manual: the hand-written backprop (CPU)."
            ),
            click.option(
                "--transform",
                type=click.Choice(["none", "log1p"]),
                help="log1p: learn on log(1 + value) of sales and features.",
            ),
            click.option(
                "--output-activation",
                type=click.Choice(OUTPUT_ACTIVATIONS),
                help="sigmoid with --loss half-sse: the chapter's Algorithm 8.5 (presets: linear).",
            ),
            click.option(
                "--loss",
                type=click.Choice(LOSS_NAMES),
                help="mse (presets); mae: mean absolute error (the -mae candidates); "
                "half-sse: 1/2 the sum of squared errors (Algorithm 8.5).",
            ),
            click.option(
                "--series/--no-series",
                "by_series",
                default=None,
                help="Learn each series' own offsets when the data has a series column "
                "(auto's candidates do; chapter and the manual engine do not).",
            ),
        ]
    ):
        command = option(command)
    return command


def preset_option(default):
    return click.option(
        "--preset",
        type=click.Choice(PRESET_NAMES),
        default=default,
        show_default=default is not None,
        help="auto: try every candidate and keep the best on the validation window; chapter: the book's "
        "3-10-5-1 sigmoid net and SGD schedule; or force one candidate.",
    )


def data_option(command_name):
    return click.option(
        "--data",
        "data_path",
        type=click.Path(path_type=Path),
        default=DEFAULT_DATA,
        show_default=True,
        envvar=f"DEMAND_{command_name.upper()}_DATA",
        help="The sales history: a CSV or Parquet file, or a folder of them.",
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
    data_path,
    preset,
    refit,
    backtest_windows,
    horizon,
    promote,
    wait,
    model_dir,
    skip_bad_rows,
    as_json,
    known,
    static,
    history,
    calendar,
    series_column,
    week_column,
    target_column,
    **overrides,
):
    """Select, evaluate, refit, export and publish a model version."""
    import torch

    from .publish import publish
    from .registry import Registry
    from .sources import load_sources
    from .workflow import train_model

    spec = spec_of(
        known,
        static,
        history,
        calendar,
        series_column,
        week_column,
        target_column,
        data=None if preset == "chapter" else [data_path],
    )
    if preset == "chapter" and not spec.is_chapter:
        raise DataError(
            "--preset chapter is the book's network on its three inputs: leave out --known, --static, "
            "--history and --calendar, or pick another preset"
        )
    if not spec.is_chapter:
        log(f"features: {', '.join(spec.names)}")
    Registry(model_dir).check_writable()  # before minutes of training, not after
    dataset = load_sources([data_path], skip_bad_rows, warn=log, spec=spec)
    report = None
    if backtest_windows:
        from .backtest import backtest, format_table

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


def format_candidates(card):
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
@skip_option
@json_option
@friendly_errors
def backtest(
    data_path,
    windows,
    horizon,
    preset,
    plot,
    skip_bad_rows,
    as_json,
    known,
    static,
    history,
    calendar,
    series_column,
    week_column,
    target_column,
    **overrides,
):
    """Rolling-origin backtest: train before each origin, forecast the weeks after it.

    Reports WAPE, MASE, bias and interval coverage per window and on average,
    one step ahead and recursively (forecasts fed back as prev_week_sales),
    for the model and the baselines.
    """
    from .backtest import backtest as run
    from .backtest import format_table, write_plot
    from .sources import load_sources

    check_plot_path(plot)  # before the trainings, not after
    spec = spec_of(
        known,
        static,
        history,
        calendar,
        series_column,
        week_column,
        target_column,
        data=None if preset == "chapter" else [data_path],
    )
    if preset == "chapter" and not spec.is_chapter:
        raise DataError("--preset chapter is the book's network on its three inputs; it takes no other features")
    dataset = load_sources([data_path], skip_bad_rows, warn=log, spec=spec)
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


def check_plot_path(path):
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise click.BadParameter(
            f"{path}: the figure is written as one of .{', .'.join(sorted(formats))}; name it so", param_hint="'--plot'"
        )
    if not path.parent.is_dir():
        raise click.BadParameter(f"{path}: no folder {path.parent}", param_hint="'--plot'")


def format_metrics(version, card):
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
    data_paths,
    min_improvement,
    min_new_weeks,
    keep_rejected,
    preset,
    wait,
    model_dir,
    skip_bad_rows,
    as_json,
    known,
    static,
    history,
    calendar,
    series_column,
    week_column,
    target_column,
    **overrides,
):
    """Train a challenger; promote it only if it beats the champion and the baselines
    on the weeks the champion never trained on.

    Without --preset the challenger is made as the champion was: a new auto
    selection, or the champion's own settings. Exit status 0 when the
    challenger was promoted or the champion kept; 1 for errors (bad data, lock
    held by another writer, failed export checks). The challenger reads the
    champion's features unless the feature options say otherwise; each is
    scored on the same weeks reading its own.
    """
    from .registry import Registry
    from .retrain import retrain as run

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
            features=dict(
                known=known,
                static=static,
                history=history,
                calendar=calendar,
                series_column=series_column,
                week_column=week_column,
                target_column=target_column,
            ),
        )
    finally:
        progress.close()
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
def schedule(cron, run_now, retrain_args):
    """Run `demand retrain RETRAIN_ARGS...` on a cron schedule until stopped.

    Example: demand schedule --cron "0 3 * * 1" --run-now --data data/incoming --min-improvement 0.2
    """
    from .schedule import Scheduler

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
def gradcheck(trials, seed, as_json):
    """Check the hand-written backprop against autograd (float64).

    Each gradient element must be within 1e-10 + 1e-7 x |autograd's| of
    autograd's, as torch.autograd.gradcheck compares; exit status 1 when any is not.
    """
    from .gradcheck import gradcheck as run

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


# ---------------------------------------------------------------- registry


@main.group()
def models():
    """Inspect and manage published versions."""


@models.command("list")
@model_dir_option
@json_option
@friendly_errors
def models_list(model_dir, as_json):
    """Every version, newest last, with its holdout WAPE."""
    from .registry import Registry

    registry = Registry(model_dir)
    champion = registry.champion()
    rows = []
    for version in registry.versions():
        card = registry.card(version)
        rows.append(
            {
                "version": version,
                "champion": version == champion,
                "created_at": card["created_at"],
                "architecture": card["model"]["architecture"],
                "activation": card["model"]["activation"],
                "holdout_wape": card["metrics"]["holdout"]["model"]["wape"],
            }
        )
    if as_json:
        emit_json({"champion": champion, "versions": rows})
        return
    if not rows:
        click.echo(f"no versions in {model_dir}")
        return
    click.echo(f"  {'version':<9}{'created (UTC)':<27}{'network':<20}{'WAPE %':>8}")
    for r in rows:
        mark = "*" if r["champion"] else " "
        click.echo(
            f"{mark} {r['version']:<9}{r['created_at']:<27}{r['architecture'] + ' ' + r['activation']:<20}{shown(r['holdout_wape'], '>8.2f')}"
        )
    click.echo("* champion")


@models.command("promote")
@click.argument("version")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, show_default=True)
@model_dir_option
@friendly_errors
def models_promote(version, wait, model_dir):
    """Make VERSION the champion."""
    from .registry import Registry

    registry = Registry(model_dir)
    with registry.writer(wait) as writer:
        previous = writer.promote(version, "manual promotion", "demand models promote")
    click.echo(f"champion: {version} (was {previous})")


@models.command("rollback")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, show_default=True)
@model_dir_option
@friendly_errors
def models_rollback(wait, model_dir):
    """Make the previous champion (per history.jsonl) the champion again."""
    from .registry import Registry

    registry = Registry(model_dir)
    with registry.writer(wait) as writer:
        current, target = writer.rollback("demand models rollback")
    click.echo(f"champion: {target} (rolled back from {current})")


@models.command("prune")
@click.option("--keep", type=click.IntRange(1), required=True, help="How many of the newest versions to keep.")
@click.option("--wait", type=FiniteRange(0, infinity=True), default=0, show_default=True)
@model_dir_option
@friendly_errors
def models_prune(keep, wait, model_dir):
    """Delete old versions; never the champion or the rollback target."""
    from .registry import Registry

    registry = Registry(model_dir)
    with registry.writer(wait) as writer:
        removed = writer.prune(keep, "demand models prune")
    click.echo(f"removed {', '.join(removed) if removed else 'nothing'}; kept {', '.join(registry.versions())}")


@models.command("history")
@model_dir_option
@json_option
@friendly_errors
def models_history(model_dir, as_json):
    """Promotions, rejections, rollbacks and prunes, oldest first."""
    from .registry import Registry

    events = Registry(model_dir).history()
    if as_json:
        emit_json(events)
        return
    for e in events:
        click.echo(
            f"{e.get('at', '?'):<22} {e.get('event', '?'):<9} {e.get('version') or '-':<6} {e.get('reason', '')}"
        )


@models.command("show")
@click.argument("version")
@model_dir_option
@json_option
@friendly_errors
def models_show(version, model_dir, as_json):
    """One version's card: data, parameters, metrics, interval, software."""
    from .registry import Registry

    registry = Registry(model_dir)
    card = registry.card(version)
    if as_json:
        emit_json(card)
        return
    click.echo(format_metrics(version, card))
    click.echo(f"  champion: {'yes' if registry.champion() == version else 'no'}")
    click.echo(
        f"  created {card['created_at']} by {card['created_by']}, git {(card.get('git') or {}).get('sha', 'unknown')}"
    )
    click.echo(
        f"  network {card['model']['architecture']} {card['model']['activation']}; params {json.dumps(card['params'])}"
    )
    click.echo(
        f"  trained on {card['training']['device']} in {card['training']['seconds']}s, {card['training']['stopped_because']}"
    )
    if "selection" in card:  # versions from before selection and refit have neither
        click.echo(f"  preset {card['selection']['preset']}: {card['selection']['chosen']}")
        trained_on = card["trained_on"]
        click.echo(
            f"  published model trained on {trained_on['rows']} rows, weeks {trained_on['weeks']}: {trained_on['what']}"
        )
    data_info = card["data"]
    click.echo(
        f"  data {data_info['path']} sha256 {data_info['sha256'][:12]} rows {data_info['rows']} weeks {data_info['date_range']}"
    )
    click.echo(
        f"  ONNX opset {card['export']['opset']}, parity error {card['export']['parity_max_relative_error']:.2e}"
    )
    click.echo(f"  files in {registry.path(version)}")


# ---------------------------------------------------------------- serving


@main.command()
@click.option("--host", help="Address to listen on [env DEMAND_HOST].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on [env DEMAND_PORT].")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [env DEMAND_WORKERS].")
@click.option("--threads", type=click.IntRange(1), help="Threads per worker [env DEMAND_THREADS].")
@click.option(
    "--timeout",
    type=click.IntRange(1),
    help="Seconds before a stuck worker is restarted [env DEMAND_TIMEOUT].",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(1),
    help="Seconds to finish in-flight requests on SIGTERM [env DEMAND_GRACEFUL_TIMEOUT].",
)
@model_dir_option
def serve(host, port, workers, threads, timeout, graceful_timeout, model_dir):
    """Serve the champion model over HTTP with gunicorn (replaces this process).

    Every setting is a DEMAND_* variable, a field of the service's one
    settings object with its default (service/config.py, listed in
    docs/serving.md); an option given here sets its variable.
    """
    given = {
        "DEMAND_HOST": host,
        "DEMAND_PORT": port,
        "DEMAND_WORKERS": workers,
        "DEMAND_THREADS": threads,
        "DEMAND_TIMEOUT": timeout,
        "DEMAND_GRACEFUL_TIMEOUT": graceful_timeout,
        "DEMAND_MODEL_DIR": model_dir,
    }
    os.environ.update({name: str(value) for name, value in given.items() if value is not None})
    log(f"starting gunicorn with models from {model_dir}")
    # The service's own entry point (service/__main__.py): the pipeline imports nothing of the service.
    os.execv(sys.executable, [sys.executable, "-m", "service"])


# ---------------------------------------------------------------- scoring


@main.command()
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", help="A published version; default the champion.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@model_dir_option
@skip_option
@friendly_errors
def predict(input_path, output_path, version, provider, model_dir, skip_bad_rows):
    """Score a CSV or Parquet file offline through ONNX Runtime, with intervals.

    The file is streamed a chunk at a time, so its size is bounded by the
    disk, not by memory. Every input column is passed through, and the
    forecast columns are added; the output is CSV or Parquet by its extension.
    """
    from .bundle import Bundle
    from .registry import Registry
    from .scoring import score_file, score_history_file, scoring_threads

    bundle = Bundle.load(Registry(model_dir), version, provider, scoring_threads())
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


def interval_levels(ctx, param, value):
    """--levels 0.8,0.95 -> [0.8, 0.95], each from 0.5 to 0.99."""
    from .calibrate import LEVELS

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
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV: series, week and the model's known covariates per week (discount_fraction, "
    "weeks_to_next_holidays for the chapter's); prev_week_sales on each series' first week unless "
    "the model stored its weeks; static covariates unless stored.",
)
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--levels",
    default="0.8,0.95",
    show_default=True,
    callback=interval_levels,
    help="Interval levels, from 0.5 to 0.99.",
)
@click.option("--version", help="A published version; default the champion.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@model_dir_option
@friendly_errors
def forecast(plan_path, output_path, levels, version, provider, model_dir):
    """Forecast a promotion plan week by week offline, through ONNX Runtime.

    Each week's forecast becomes the next week's prev_week_sales, and the
    intervals widen with the step, as POST /forecast answers.
    """
    import numpy as np

    from .bundle import Bundle
    from .plan import read_plan, write_forecasts
    from .registry import Registry

    bundle = Bundle.load(Registry(model_dir), version, provider)
    spec = bundle.spec
    plan = read_plan(plan_path, spec=spec, stored=bundle.tails if spec.history else (), statics=bundle.statics)
    start = plan["prev_week_sales"]
    if spec.history:  # each series continues from the weeks its version stored
        start, _, _ = bundle.plan_start(plan["ids"], start)
    dates = np.array(
        [
            [np.datetime64(w, "D") for w in weeks]
            + [np.datetime64("NaT", "D")] * (int(plan["weeks"].max()) - len(weeks))
            for weeks in plan["weeks_of"]
        ]
    )
    out = bundle.forecast_plan(start, plan["features"], plan["weeks"], levels, plan["ids"], dates, plan["static"])
    count = write_forecasts(output_path, plan, out, levels, spec)
    if out["intervals"] is None:
        log(f"model {bundle.version} has no per-step interval calibration: the interval columns are empty")
    elif int(plan["weeks"].max()) > bundle.calibrated_steps():
        log(
            f"weeks after {bundle.calibrated_steps()} use the interval of week {bundle.calibrated_steps()}, "
            "the last step calibrated on held-out weeks"
        )
    unknown = out["unknown_series"]
    if len(unknown):
        log(
            f"{len(unknown)} of the plan's series are not known to model {bundle.version} and were forecast as a "
            f"typical series: {', '.join(plan['ids'][i] for i in unknown[:5])}{', ...' if len(unknown) > 5 else ''}"
        )
    log(
        f"wrote {count} forecasts of {len(plan['ids'])} series from model {bundle.version} ({bundle.provider}) "
        f"to {output_path}"
    )
