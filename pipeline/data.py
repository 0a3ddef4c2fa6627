"""Load a sales file (CSV or Parquet), validate every row, and split it in time order."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import tables
from .errors import DataError
from .features import CHAPTER, LAG_1, WINDOW_WEEKS, FeatureSpec, feature_matrix, week_windows
from .schema import FEATURES, SERIES_COLUMN, TARGET, TIME_COLUMN


@dataclass
class Dataset:
    X: np.ndarray  # [n, k] float64, columns in spec.names order, raw units
    y: np.ndarray  # [n] float64, units sold
    week: np.ndarray | None = None  # [n] datetime64[D], when the file has a week column
    series: np.ndarray | None = None  # [n] str, when the file has a series column
    source: dict[str, Any] = field(default_factory=dict)  # path, sha256, rows, skipped
    spec: FeatureSpec = CHAPTER  # what X's columns are
    # series -> sales of the weeks before the one after its last
    tails: dict[str, np.ndarray] = field(default_factory=dict)
    filled: np.ndarray | None = None  # [n, len(spec.fillable)] features filled for lack of weeks
    grid: np.ndarray | None = None  # sales by series and week, shared by every part taken (features.Features)
    slots: np.ndarray | None = None  # [n, 2] each row's place in grid

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(
            self.X[index],
            self.y[index],
            None if self.week is None else self.week[index],
            None if self.series is None else self.series[index],
            self.source,
            self.spec,
            filled=None if self.filled is None else self.filled[index],
            grid=self.grid,
            slots=None if self.slots is None else self.slots[index],
        )

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), WINDOW_WEEKS] the actual sales of the weeks before each of `rows` (NaN: unknown)."""
        if self.slots is None:
            return np.full((len(rows), WINDOW_WEEKS), np.nan)
        return week_windows(self.grid, self.slots[rows])

    def date_range(self) -> list[str] | None:
        if self.week is None or len(self) == 0:
            return None
        return [str(self.week.min()), str(self.week.max())]


@dataclass
class Split:
    train: Dataset
    validation: Dataset
    holdout: Dataset

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"rows": len(part), "weeks": part.date_range()}
            for name, part in (("train", self.train), ("validation", self.validation), ("holdout", self.holdout))
        }


# A stored version's tails: {series: (the week after its last, [WINDOW_WEEKS] sales before it)}.
Tails = Mapping[str, tuple[np.datetime64, np.ndarray]]
# load_file's raw_values: (checked columns by name, targets, source).
RawValues = tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]


@overload
def load_file(
    path: str | os.PathLike[str],
    skip_bad_rows: bool = ...,
    warn: Callable[[str], None] | None = ...,
    require_target: bool = ...,
    spec: FeatureSpec = ...,
    tails: Tails | None = ...,
    raw_values: Literal[False] = ...,
) -> Dataset: ...
@overload
def load_file(
    path: str | os.PathLike[str],
    skip_bad_rows: bool = ...,
    warn: Callable[[str], None] | None = ...,
    require_target: bool = ...,
    spec: FeatureSpec = ...,
    tails: Tails | None = ...,
    *,
    raw_values: Literal[True],
) -> RawValues: ...
def load_file(
    path: str | os.PathLike[str],
    skip_bad_rows: bool = False,
    warn: Callable[[str], None] | None = None,
    require_target: bool = True,
    spec: FeatureSpec = CHAPTER,
    tails: Tails | None = None,
    raw_values: bool = False,
) -> Dataset | RawValues:
    """Read and validate a CSV or Parquet file (by its extension) into the features of `spec`.

    Every bad row is found, not just the first. Without `skip_bad_rows` a file
    with any bad row is refused whole; with it the bad rows are dropped and
    counted by reason in `source["skipped_reasons"]`. Without `require_target`
    (files to forecast) only the features are read and `y` is NaN. A column
    the spec does not read is named in a warning (`warn`), never dropped
    without a word. With history features a row's last week comes from the
    series' own earlier weeks, so `prev_week_sales` may be left out: a row
    with no earlier week and no prev_week_sales is not trained on, and counted.
    `raw_values`: (checked columns, targets, source) before featuring, for
    several files featured together (pipeline.sources).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err.strerror}") from None
    columns = (*(() if spec.history else (LAG_1,)), *spec.known, *spec.static, *((TARGET,) if require_target else ()))
    optional = (TIME_COLUMN, SERIES_COLUMN, *((LAG_1,) if spec.history else ()))
    parquet = tables.is_parquet(path)
    renames = spec.renames()
    if parquet:
        table = tables.read_parquet_table(pa.BufferReader(raw), path, columns, optional, renames)
        original = [n.strip() for n in pq.ParquetFile(pa.BufferReader(raw)).schema_arrow.names]
        dropped: list[tables.Problem] = []
    else:
        table, ragged_rows = tables.read_csv_table(raw, path, columns, optional, renames)
        original = tables.header_of_bytes(raw, path)
        dropped = tables.ragged_problems(ragged_rows)
    header = tables.renamed(original, renames, path)
    unread = [name for name in header if name not in (*columns, *optional, TARGET)]
    if unread and warn:
        warn(
            f"{path}: column(s) {', '.join(unread)} not read: the model's features are {', '.join(spec.names)}; "
            "declare a column with --known (a value per week) or --static (one per series) to use it"
        )
    if spec.history and TIME_COLUMN not in table.column_names:
        raise DataError(f"{path}: history features need a {spec.week_column!r} column to order each series' weeks")
    categories = [
        name
        for name in spec.static
        if spec.vocabulary(name) is not None or not tables.holds_numbers(table.column(name))
    ]
    new = [name for name in categories if spec.vocabulary(name) is None]
    if new and warn:
        warn(f"{path}: static column(s) {', '.join(new)} hold text, read as categories (one value per series)")
    numbers = (
        *(c for c in columns if c not in categories),
        *((LAG_1,) if LAG_1 in table.column_names and LAG_1 not in columns else ()),
    )
    checked = tables.check_columns(table, numbers, csv=not parquet, text=categories)
    del table
    tally = tables.ProblemTally(tables.file_names(renames, original))
    tally.add(tables.all_problems(checked, dropped))
    bad_rows, skipped = tally.report(path, tables.row_label(parquet), skip_bad_rows, warn)
    keep = checked.good()
    if not keep.any():
        raise DataError(f"{path}: no usable rows")
    values = {name: column[keep] for name, column in checked.values.items()}
    if SERIES_COLUMN in values:
        values[SERIES_COLUMN] = values[SERIES_COLUMN].astype(str)
    y = values[TARGET] if require_target else np.full(int(keep.sum()), np.nan)
    source = {
        "path": str(path),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "rows": int(keep.sum()),
        "skipped_rows": bad_rows,
        "skipped_reasons": skipped,
    }
    if raw_values:
        return values, y, source
    return featured(path, values, y, spec, source, tails)


def featured(
    path: str | os.PathLike[str],
    values: dict[str, np.ndarray],
    y: np.ndarray,
    spec: FeatureSpec,
    source: dict[str, Any],
    tails: Tails | None = None,
) -> Dataset:
    """The Dataset of checked columns `values` (names used here) and targets `y`, in `spec`'s features.

    A static column of text that `spec` has no values for yet is a category of the values it holds here
    (training); the Dataset's spec records them."""
    check_static(path, spec, values)
    learned = tuple(
        (name, tuple(sorted(set(values[name].tolist()))))
        for name in spec.static
        if spec.vocabulary(name) is None and values[name].dtype == object
    )
    if learned:
        spec = replace(spec, categories=spec.categories + learned)
    features = feature_matrix(spec, values, sales=y, tail_of=tails)
    usable = ~np.isnan(features.X).any(axis=1)  # a row whose last week is unknown has nothing to go on
    without_history = int((~usable).sum())
    if not usable.any():
        raise DataError(
            f"{path}: no row has a week before it to forecast from; give each series' {LAG_1} or more weeks"
        )
    data = Dataset(
        X=features.X,
        y=y,
        week=values.get(TIME_COLUMN),
        series=values.get(SERIES_COLUMN),
        source={
            **source,
            "rows": int(usable.sum()),
            **({"rows_without_an_earlier_week": without_history} if without_history else {}),
        },
        spec=spec,
        filled=features.filled,
        grid=features.grid,
        slots=features.slots,
    )
    data = data if usable.all() else data.take(np.flatnonzero(usable))
    data.tails = features.tails
    return data


def has_column(path: str | os.PathLike[str], name: str, spec: FeatureSpec = CHAPTER) -> bool:
    """Whether a CSV or Parquet file has column `name` (after the spec's renames)."""
    return name in tables.renamed(tables.file_header(path), spec.renames(), path)


def check_static(path: str | os.PathLike[str], spec: FeatureSpec, values: Mapping[str, np.ndarray]) -> None:
    """A static covariate has one value per series: a clear error naming the series where it changes."""
    if not spec.static:
        return
    series = values.get(SERIES_COLUMN, np.zeros(len(next(iter(values.values()))), dtype=str))
    names, code = np.unique(series, return_inverse=True)
    for column in spec.static:
        cells = values[column]
        if cells.dtype == object:  # a category: compared by its values' codes
            cells = np.unique(cells.astype(str), return_inverse=True)[1].ravel().astype(np.float64)
        low = np.full(len(names), np.inf)
        high = np.full(len(names), -np.inf)
        np.minimum.at(low, code.ravel(), cells)
        np.maximum.at(high, code.ravel(), cells)
        changing = np.flatnonzero(low != high)
        if len(changing):
            shown = ", ".join(repr(str(names[i])) for i in changing[:5])
            raise DataError(
                f"{path}: column {column!r} is declared static (one value per series) but changes "
                f"within series {shown}{' and more' if len(changing) > 5 else ''}"
            )


# The fewest weeks (or rows, without a week column) a model trains on before
# its validation and holdout windows: enough to fit and to select on.
MIN_TRAIN_PERIODS = 8
VALIDATION_FRACTION, HOLDOUT_FRACTION = 0.15, 0.2


def _window_sizes(n: int, validation_fraction: float, holdout_fraction: float) -> tuple[int, int]:
    return max(1, int(round(n * validation_fraction))), max(1, int(round(n * holdout_fraction)))


def min_periods(validation_fraction: float = VALIDATION_FRACTION, holdout_fraction: float = HOLDOUT_FRACTION) -> int:
    """The fewest weeks time_split accepts."""
    n = MIN_TRAIN_PERIODS
    while n - sum(_window_sizes(n, validation_fraction, holdout_fraction)) < MIN_TRAIN_PERIODS:
        n += 1
    return n


def periods(data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted row order, distinct periods, period index of each sorted row): weeks, or rows in file order."""
    if data.week is not None:
        order = np.argsort(data.week, kind="stable")
        distinct = np.unique(data.week)
        return order, distinct, np.searchsorted(distinct, data.week[order])
    order = np.arange(len(data))
    return order, order, order


def unit_name(data: Dataset) -> str:
    return "weeks" if data.week is not None else "rows"


def time_split(
    data: Dataset,
    validation_fraction: float = VALIDATION_FRACTION,
    holdout_fraction: float = HOLDOUT_FRACTION,
    holdout_from: str | None = None,
) -> Split:
    """Split into train / validation / holdout, oldest first, never shuffled.

    With a week column whole weeks go to one part (every series of the latest
    weeks is held out together); without one, the row order is the time order.
    `holdout_from` (a week) makes every week from it on the holdout instead of
    the latest `holdout_fraction`.
    """
    order, distinct, period_of_row = periods(data)
    n = len(distinct)
    n_validation, n_holdout = _window_sizes(n, validation_fraction, holdout_fraction)
    if holdout_from is not None:
        n_holdout = int(np.sum(distinct >= np.datetime64(holdout_from, "D")))
    n_train = n - n_holdout - n_validation
    if n_train < MIN_TRAIN_PERIODS:
        unit = unit_name(data)
        if holdout_from is not None:
            needed = (
                f"{n_holdout + n_validation + MIN_TRAIN_PERIODS} {unit} are needed: {MIN_TRAIN_PERIODS} to train on, "
                f"then {n_validation} to validate, before the {n_holdout} held out"
            )
        else:
            needed = (
                f"{min_periods(validation_fraction, holdout_fraction)} {unit} are needed: {MIN_TRAIN_PERIODS} to "
                f"train on, then the latest {validation_fraction:.0%} to validate and {holdout_fraction:.0%} "
                "to hold out"
            )
        raise DataError(
            f"{data.source.get('path', 'data')}: {n} {unit} are too few to train, select and evaluate "
            f"a model: at least {needed}"
        )
    parts = np.digitize(period_of_row, [n_train, n_train + n_validation])
    return Split(*(data.take(order[parts == p]) for p in range(3)))


def concat(parts: Sequence[Dataset]) -> Dataset:
    """One dataset from time-ordered parts of the same source (e.g. a split, whole again)."""

    def joined(name):
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    grids = [p.grid for p in parts]
    if any(p.slots is None for p in parts) or all(g is parts[0].grid for g in grids):  # one source: its grid as it is
        grid = parts[0].grid
        slots = joined("slots")
    else:  # parts of several files: their grids stacked, each part's rows moved to its own
        full = [np.full((0, WINDOW_WEEKS), np.nan) if g is None else g for g in grids]
        width = max(g.shape[1] for g in full)
        offsets = np.cumsum([0] + [len(g) for g in full[:-1]])
        grid = np.vstack([np.pad(g, ((0, 0), (0, width - g.shape[1])), constant_values=np.nan) for g in full])
        placed = cast("list[np.ndarray]", [p.slots for p in parts])  # every part's: none is None here
        slots = np.concatenate([np.where(s[:, :1] >= 0, s + [offset, 0], s) for s, offset in zip(placed, offsets)])
    return Dataset(
        np.concatenate([p.X for p in parts]),
        np.concatenate([p.y for p in parts]),
        joined("week"),
        joined("series"),
        parts[0].source,
        parts[0].spec,
        parts[-1].tails,
        joined("filled"),
        grid,
        slots,
    )


def rows_and_weeks(data: Dataset) -> dict[str, Any]:
    """What a model trained on or was scored on: row count and first and last week."""
    return {"rows": len(data), "weeks": data.date_range()}


def findings(data: Dataset) -> dict[str, Any]:
    """Things in the data worth knowing that are not errors: constant columns, series that never sell."""
    columns = dict(zip((*data.spec.names, TARGET), np.column_stack([data.X, data.y]).T))
    found: dict[str, Any] = {
        "constant_columns": [name for name, values in columns.items() if len(values) and np.ptp(values) == 0]
    }
    if data.series is not None:
        names, which = np.unique(data.series, return_inverse=True)
        sold = np.bincount(which.ravel(), weights=data.y, minlength=len(names))
        found["all_zero_series"] = sorted(names[sold == 0].tolist())
    found["all_zero_target"] = bool(len(data.y)) and not np.any(data.y)
    # Percent is expected (0 to 100): a file of fractions (0.2 for 20% off) is
    # valid, but every discount would read as under 1% off.
    discounts = columns.get(FEATURES[1])
    found["discounts_all_at_most_1_percent"] = bool(
        discounts is not None and len(discounts) and 0 < discounts.max() <= 1
    )
    if data.week is not None and data.series is not None:
        found["repeated_week_series_rows"] = repeated_week_series(data.week, data.series)
    return found


def week_series_keys(weeks: np.ndarray, series: np.ndarray) -> np.ndarray:
    """One integer per row, equal for rows of the same week and series."""
    names, code = np.unique(series, return_inverse=True)
    return weeks.astype("datetime64[D]").astype(np.int64) * len(names) + code.ravel()


def repeated_week_series(weeks: np.ndarray, series: np.ndarray) -> int:
    """Rows whose (week, series) an earlier row already has: a double export,
    most likely, whose targets the model would average without a word."""
    key = week_series_keys(weeks, series)
    return int(len(key) - len(np.unique(key)))
