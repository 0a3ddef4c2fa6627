"""`demand`: the command line of the demand forecaster.

Results go to stdout (a table, or one JSON document with --json); logs and
progress go to stderr. Heavy libraries are imported inside the commands, so
`demand --help` starts instantly. Every option can also be set from the
environment as DEMAND_<COMMAND>_<OPTION> (e.g. DEMAND_TRAIN_EPOCHS), and the
registry folder as DEMAND_MODEL_DIR.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import click

from ..errors import DataError
from ..presets import (
    HIDDEN_ACTIVATIONS,
    LOSS_NAMES,
    MAX_HIDDEN_UNITS,
    OUTPUT_ACTIVATIONS,
    PRESET_NAMES,
)
from ..registry import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from ..features import FeatureSpec

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])  # a command function, before or after its options

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "data" / "demand.csv"


def log(message: str) -> None:
    click.echo(message, err=True)


def emit_json(document: Any) -> None:
    from ..documents import dumps

    click.echo(dumps(document, indent=2, default=str))


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing NaN (which passes every comparison, so every
    range) and, unless `infinity` is a meaningful value (`--wait inf`), infinity."""

    def __init__(self, *args: Any, infinity: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.infinity = infinity

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.infinity):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


SEEDS = click.IntRange(0, 2**64 - 1)  # what numpy and torch take


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the pipeline's own errors into a one-line message and exit status 1,
    any error that a Ctrl-C caused into click's "Aborted!", and a SIGTERM into
    the same unwinding as a Ctrl-C (see signals_unwind)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from ..errors import PipelineError

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
def signals_unwind() -> Iterator[types.SimpleNamespace]:
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

    def remember(signum: int, frame: types.FrameType | None) -> None:
        interrupts.seen = True
        signal.default_int_handler(signum, frame)

    def unwind(signum: int, frame: types.FrameType | None) -> None:
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
def main() -> None:
    """Weekly demand forecaster: train, evaluate, publish and serve the model."""


def names_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list of column names, blanks dropped; None when not given."""
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise click.BadParameter(f"names {', '.join(repeated)} more than once")
    return names


def feature_options(command: F) -> F:
    """What the model reads from a file, and what the file calls its columns (pipeline.features): seven
    options, handed to the command as one `features` dict (FEATURE_OPTIONS) for spec_of or with_options."""

    @functools.wraps(command)
    def collected(*args: Any, **kwargs: Any) -> Any:
        return command(*args, features={name: kwargs.pop(name) for name in FEATURE_OPTIONS}, **kwargs)

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
        collected = option(collected)
    return cast("F", collected)


FEATURE_OPTIONS = ("known", "static", "history", "calendar", "series_column", "week_column", "target_column")


def spec_of(features: dict[str, Any], data: Sequence[Path] | None = None) -> FeatureSpec:
    """The FeatureSpec the feature options (`features`, as feature_options collects them) ask for; what they
    leave out is the chapter's three inputs'.

    With `data` (the paths to train on), history and calendar left unsaid are
    on where pipeline.sources.history_by_default says so.
    """
    from ..features import CHAPTER, with_options

    spec = with_options(CHAPTER, **features)
    if data is not None and features["history"] is None and features["calendar"] is None:
        from ..sources import history_by_default

        try:
            if history_by_default(data, spec):
                spec = with_options(spec, history=True, calendar=True)
        except (OSError, DataError):
            pass  # the loader says what is wrong with the data, in its own words
    return spec


class Progress:
    """A bar on a terminal; a plain line every tenth of the run otherwise."""

    def __init__(self) -> None:
        self.bar: Any = None  # click.progressbar()'s bar, whose class click keeps private

    def __call__(self, epoch: int, total: int, train_loss: float, val_loss: float) -> None:
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

    def close(self) -> None:
        if self.bar:
            self.bar.__exit__(None, None, None)
            self.bar = None


def hidden_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
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


def training_options(command: F) -> F:
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


def preset_option(default: str | None) -> Callable[[F], F]:
    return click.option(
        "--preset",
        type=click.Choice(PRESET_NAMES),
        default=default,
        show_default=default is not None,
        help="auto: try every candidate and keep the best on the validation window; chapter: the book's "
        "3-10-5-1 sigmoid net and SGD schedule; or force one candidate.",
    )


def data_option(command_name: str) -> Callable[[F], F]:
    return click.option(
        "--data",
        "data_path",
        type=click.Path(path_type=Path),
        default=DEFAULT_DATA,
        show_default=True,
        envvar=f"DEMAND_{command_name.upper()}_DATA",
        help="The sales history: a CSV or Parquet file, or a folder of them.",
    )


def engine_options(partitions: bool = True, flag: str = "--engine", dest: str = "engine") -> Callable[[F], F]:
    """--engine, --scheduler (and --partitions), for the commands a Dask cluster can run (pipeline/cluster.py).
    `flag`: the engine's option where --engine means something else (backtest's training engine)."""
    options = [
        click.option(
            flag,
            dest,
            type=click.Choice(["local", "dask"]),
            default="local",
            show_default=True,
            help="dask: the work as tasks of a Dask cluster (pip install .[dask]).",
        ),
        click.option("--scheduler", help=f"With {flag} dask: the scheduler's address; default a local cluster."),
    ]
    if partitions:
        options.append(
            click.option(
                "--partitions", type=click.IntRange(1, 100_000), help="With --engine dask: default 4 a worker."
            )
        )

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
