"""`demand predict` for a model that reads history: a file of weeks streamed a chunk at a time.

A row's history features read its series' earlier weeks, so each chunk is
featured with what came before it: the tail of each series the published
version stored, then the tails the file's own earlier chunks left (their
actual sales, where the file has its target column). A file in week order,
or series by series in week order, is scored in memory that does not grow
with its length, and gets exactly the features of the file read whole.

A file whose series go back in time across chunks (a series' week in a
chunk before one of its weeks in an earlier chunk) cannot be streamed: it
is read whole instead, and a line on stderr says so.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import pyarrow as pa

from . import tables
from .errors import DataError
from .features import LAG_1, FeatureSpec, SeriesWeeks, StoredTails, feature_matrix, filled_patterns
from .schema import FORECAST_COLUMN, HIGH_COLUMN, LOW_COLUMN, SERIES_COLUMN, TARGET, TIME_COLUMN, VERSION_COLUMN
from .scoring import CSV_WRITE_OPTIONS, Output, csv_table, decoded, read_ahead, rounded

if TYPE_CHECKING:
    from .bundle import Bundle

FILLED_COLUMN = "filled_features"
SCORERS = 2  # chunks forecast at a time
Tail = tuple[np.datetime64, np.ndarray]  # (the week after it, [WINDOW_WEEKS] sales before it)


class WeeksGoBack(Exception):
    """A series' week in this chunk comes before one of its weeks in an earlier chunk."""


def score_history_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    bundle: Bundle,
    skip_bad_rows: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Score a file of weeks for a model that reads history features (pipeline.features).

    Each series continues from the weeks the published version stored, then
    from the file's own earlier weeks. Writes series, week, the forecast with
    its interval, the features filled for lack of weeks, and the model's
    version, in the file's row order. Returns counts.
    """
    settings = {"threads": True, "numbers": True}
    while True:
        try:
            return _streamed(Path(input_path), output_path, bundle, skip_bad_rows, warn, settings)
        except tables.ReadAgain as again:
            settings.update(again.settings)
        except WeeksGoBack:
            if warn:
                warn(
                    f"{input_path}: a series' weeks go back in time across the file (or change their day of the "
                    "week), which cannot be streamed: reading it whole (sort it by week, or by series then week, "
                    "to stream it)"
                )
            return score_history_whole(input_path, output_path, bundle, skip_bad_rows, warn)


class History:
    """Each series' last weeks so far: the stored tails, then the file's own as its chunks go by."""

    def __init__(self, stored: Mapping[str, Tail]) -> None:
        self.tails = StoredTails.of(stored).copy()  # the version's own are never changed
        self.in_file = np.zeros(len(self.tails), dtype=bool)  # by row of tails: seen in the file's earlier chunks

    def go_on(self, layout: SeriesWeeks, grid: np.ndarray) -> None:
        """Move on past a chunk laid out as `layout` ([S, weeks] `grid`): each series' last weeks become its
        tail. WeeksGoBack when a series' weeks here come before its weeks in the file's earlier chunks, or
        fall on other days of the week than they did (its weeks' places are counted in whole weeks from its
        first)."""
        names = layout.names.tolist()
        rows = self.tails.rows_of(names)
        seen = rows >= 0
        seen[seen] = self.in_file[rows[seen]]  # a series new to the file is free
        days = (layout.first_week[seen] - self.tails.next_weeks[rows[seen]]).astype(np.int64)
        if (days < 0).any() or (days % 7).any():
            raise WeeksGoBack
        rows = self.tails.update(names, layout.next_week(), layout.tails(grid), rows)
        if len(self.in_file) < len(self.tails):
            self.in_file = np.concatenate([self.in_file, np.zeros(len(self.tails) - len(self.in_file), dtype=bool)])
        self.in_file[rows] = True


def _streamed(
    input_path: Path,
    output_path: str | os.PathLike[str],
    bundle: Bundle,
    skip_bad_rows: bool,
    warn: Callable[[str], None] | None,
    settings: dict[str, bool],
) -> dict[str, int]:
    spec = bundle.spec
    original = tables.file_header(input_path)
    header = tables.renamed(original, spec.renames(), input_path)
    numbers, categories, read = columns_read(spec, header, input_path)
    unread = [name for name in header if name not in read]
    if unread and warn:
        warn(
            f"{input_path}: column(s) {', '.join(unread)} not read: the model's features are "
            f"{', '.join(spec.names)}; these are not among them"
        )
    parquet = tables.is_parquet(input_path)
    chunks = tables.stream(input_path, numbers, settings["threads"], settings["numbers"], spec.renames(), columns=read)
    output = Output(output_path)
    history = History(bundle.tails)
    statics = StaticValues(spec, input_path)
    tally = tables.ProblemTally(tables.file_names(spec.renames(), original))
    counts = {"rows": 0, "extrapolated_rows": 0, "unknown_series_rows": 0, "without_history": 0}
    # Chunks are forecast (ONNX Runtime, their answers' columns) on threads of their own while the next is
    # featured: the model's work is the largest part, and two chunks at a time take up a core left idle.
    scorer = ThreadPoolExecutor(SCORERS, thread_name_prefix="scorer")
    pending: deque[Future[tuple[pa.Table, dict[str, int]]]] = deque()

    def written(waiting: int = 0) -> None:
        while len(pending) > waiting:
            table, scored = pending.popleft().result()
            output.write(table)
            for name, count in scored.items():
                counts[name] += count

    try:
        for dropped, record_of, checked, names in read_ahead(_checked(chunks, numbers, categories, parquet)):
            tally.add(dropped + [(record_of(index), column, problem) for index, column, problem in checked.problems])
            if tally.bad_rows and not skip_bad_rows:
                continue  # keep counting the bad rows, write nothing
            keep = checked.good() if checked.problems else None
            values = checked.values if keep is None else {k: v[keep] for k, v in checked.values.items()}
            if names is not None:
                values[SERIES_COLUMN] = names if keep is None else names.filter(pa.array(keep))
            rows = len(next(iter(values.values()), ()))
            if not rows:
                continue
            featured = _featured_chunk(values, spec, history, statics)
            counts["without_history"] += rows - len(featured.X)
            if len(featured.X):
                written(SCORERS - 1)
                pending.append(scorer.submit(_forecast_table, featured, bundle))
        written()
        bad_rows, _ = tally.report(input_path, tables.row_label(parquet), skip_bad_rows, warn)
        if not counts["rows"]:
            raise DataError(
                f"{input_path}: no row has a week before it to forecast from; give each series' {LAG_1} or more weeks"
            )
        output.finish()
    except BaseException:
        output.abandon()
        raise
    finally:
        scorer.shutdown(cancel_futures=True)
    if counts["without_history"] and warn:
        warn(
            f"{counts['without_history']} row(s) of series the model has no earlier week of, and without "
            f"{spec.names[0]}: not forecast"
        )
    return {
        "rows": counts["rows"],
        "skipped_rows": bad_rows,
        "extrapolated_rows": counts["extrapolated_rows"],
        "unknown_series_rows": counts["unknown_series_rows"],
    }


def columns_read(
    spec: FeatureSpec, header: list[str], path: str | os.PathLike[str]
) -> tuple[list[str], list[str], list[str]]:
    """(the columns read as numbers, as categories, and every column read) of a file with `header` (our
    names) for a model of `spec`; a clear error when a model of history has no week to order weeks by."""
    if spec.history and TIME_COLUMN not in header:
        raise DataError(f"{path}: history features need a {spec.week_column!r} column to order each series' weeks")
    categories = [name for name in spec.static if spec.vocabulary(name) is not None]
    required = [*(() if spec.history else (LAG_1,)), *spec.known, *spec.static]
    numbers = [
        *(name for name in required if name not in categories),
        *(name for name in (TARGET, LAG_1) if name in header and name not in required),
    ]
    read = [*required, *(name for name in (TARGET, LAG_1, TIME_COLUMN, SERIES_COLUMN) if name in header)]
    return numbers, categories, read


def _checked(
    chunks: Iterator[tuple[pa.Table, list[tables.Problem], Callable[[int], int]]],
    numbers: list[str],
    categories: list[str],
    parquet: bool,
) -> Iterator[tuple[list[tables.Problem], Callable[[int], int], tables.Columns, pa.Array | None]]:
    """Each chunk with its checked columns, and its series names as pyarrow text coded by distinct name (no
    Python string per row; only a CSV's quotes can join lines)."""
    for table, dropped, record_of in chunks:
        checked = tables.check_columns(table, numbers, series=False, csv=not parquet, text=categories)
        names = None
        if SERIES_COLUMN in table.column_names:
            names = tables.coded_series_names(table, csv=not parquet, problems=checked.problems)
        yield dropped, record_of, checked, names


class StaticValues:
    """A static covariate has one value per series across the whole file, not only within a chunk."""

    def __init__(self, spec: FeatureSpec, path: Path) -> None:
        self.spec, self.path = spec, path
        self.seen: dict[str, tuple[Any, ...]] = {}

    def check(self, values: dict[str, Any]) -> None:
        from .data import check_static

        if not self.spec.static:
            return
        series = values.get(SERIES_COLUMN)
        names = (
            np.zeros(len(values[self.spec.static[0]]), dtype=object)
            if series is None
            else series.cast(pa.string()).to_numpy(zero_copy_only=False)
        )
        check_static(self.path, self.spec, {**values, SERIES_COLUMN: names})
        distinct, first = np.unique(names.astype(str), return_index=True)
        for name, row in zip(distinct.tolist(), first.tolist()):
            cells = tuple(values[column][row] for column in self.spec.static)
            before = self.seen.setdefault(name, cells)
            if before != cells:
                changed = next(c for c, a, b in zip(self.spec.static, before, cells) if a != b)
                raise DataError(
                    f"{self.path}: column {changed!r} is declared static (one value per series) but changes "
                    f"within series {name!r}"
                )


class Featured(NamedTuple):
    """One chunk's rows that have a week to forecast from, featured."""

    X: np.ndarray
    filled: np.ndarray
    series: pa.Array | None
    week: np.ndarray | None


def _featured_chunk(values: dict[str, Any], spec: FeatureSpec, history: History, statics: StaticValues) -> Featured:
    """The features of one chunk's checked rows (those without a last week left out); `history` moves on past them."""
    statics.check(values)
    # float32: what the model reads, at half the memory while it waits
    features = feature_matrix(spec, values, sales=values.get(TARGET), tail_of=history.tails, dtype=np.float32)
    layout = features.layout
    if layout is not None:
        history.go_on(layout, cast(np.ndarray, features.grid))
    series, week = values.get(SERIES_COLUMN), values.get(TIME_COLUMN)
    usable = without_nan(features.X)  # a row whose last week is unknown has nothing to go on
    X = features.X
    if usable.all():
        return Featured(X, features.filled, series, week)
    rows = np.flatnonzero(usable)
    return Featured(
        X[rows],
        features.filled[rows],
        None if series is None else series.take(pa.array(rows)),
        None if week is None else week[rows],
    )


def without_nan(X: np.ndarray) -> np.ndarray:
    """[n] whether each row of the features X [n, k] has no NaN.

    A row's sum is NaN only through one, the features being finite otherwise, summed in float64, where no
    float32 values overflow. einsum sums a row in a fraction of a row-wise any(), and unlike a product
    with ones it calls no BLAS, whose threads would spin on the other core.
    """
    return ~np.isnan(np.einsum("ij->i", X, dtype=np.float64))


def _forecast_table(chunk: Featured, bundle: Bundle) -> tuple[pa.Table, dict[str, int]]:
    """(The forecast columns of a featured chunk, its counts)."""
    out = bundle.forecast(chunk.X, series=chunk.series)  # a file's names dictionary-coded: each looked up once
    series = None if chunk.series is None else chunk.series.cast(pa.string())
    n = len(chunk.X)
    patterns, codes = filled_patterns(bundle.spec, chunk.filled)
    table = pa.table(
        {
            bundle.spec.series_column: series if series is not None else pa.array([""] * n),
            # a date: YYYY-MM-DD in a CSV, a date in Parquet
            bundle.spec.week_column: pa.array(chunk.week) if chunk.week is not None else pa.array([""] * n),
            FORECAST_COLUMN: rounded(out["units_sold"]),
            LOW_COLUMN: rounded(out["low"]),
            HIGH_COLUMN: rounded(out["high"]),
            FILLED_COLUMN: decoded(codes, [";".join(names) for names in patterns]),
            VERSION_COLUMN: decoded(np.zeros(n, dtype=np.int8), [bundle.version]),
        }
    )
    counts = {
        "rows": n,
        "extrapolated_rows": len(out["extrapolated_rows"]),
        "unknown_series_rows": len(out["unknown_series"]),
    }
    return table, counts


def score_history_whole(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    bundle: Bundle,
    skip_bad_rows: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """score_history_file of a file read whole: any row order (memory grows with the file)."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from .atomic import write_atomically
    from .data import has_column, load_file

    spec = bundle.spec
    data = load_file(
        input_path,
        skip_bad_rows,
        warn,
        require_target=has_column(input_path, TARGET, spec),
        spec=spec,
        tails=bundle.tails,
    )
    dropped = data.source.get("rows_without_an_earlier_week", 0)
    if dropped and warn:
        warn(f"{dropped} row(s) of series the model has no earlier week of, and without {spec.names[0]}: not forecast")
    series = None if data.series is None else pa.array(data.series, pa.string())
    # load_file features every row
    table, counts = _forecast_table(Featured(data.X, cast(np.ndarray, data.filled), series, data.week), bundle)
    if tables.is_parquet(output_path):
        write_atomically(output_path, lambda partial: pq.write_table(table, partial))
    else:
        write_atomically(
            output_path, lambda partial: pa_csv.write_csv(csv_table(table), partial, write_options=CSV_WRITE_OPTIONS)
        )
    return {**counts, "skipped_rows": data.source.get("skipped_rows", 0)}
