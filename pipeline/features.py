"""What a model sees: the feature spec, and the one function that turns sales history into features.

A model's inputs come from three places, declared at training and recorded in
its card:

- the series' own history: last week's sales (`prev_week_sales`, the chapter's
  first input), more lags and rolling means, computed from the series' earlier
  weeks only, never from the week being forecast;
- the calendar: where the week falls in the year, as a point on a circle, so
  two or more years of history teach the yearly season;
- the file's covariates: `known` ones have a value per week that is known in
  advance (a planned discount, a price, the weeks to the next holiday);
  `static` ones have one number per series (a store's size).

The chapter's network is the spec with no history and no calendar, whose known
covariates are the discount and the weeks to the next holiday: exactly
pipeline.schema.FEATURES.

History is a window of the weeks before the forecast week, oldest first,
NaN where the series has no week yet. Training takes every row's window out of
one matrix per series; a plan appends each week's forecast to the window
before the next week. Both read their windows through one definition of the
features (`history_at` at a file's flat positions, `history_columns` on a
plan's window in place), so a feature means the same in every path. Where a
series has fewer weeks than a feature reaches, the feature is filled from
what it has: a lag past the first week takes the oldest week there is, a
rolling mean is the mean of the weeks there are, and with no week at all
every history feature is last week's sales. The filled features are reported
per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any, cast

import numpy as np

from .schema import FEATURES, SERIES_COLUMN, TARGET, TIME_COLUMN

LAG_1 = FEATURES[0]  # prev_week_sales: last week's sales
CHAPTER_KNOWN = FEATURES[1:]  # the chapter's planned covariates
HISTORY_LAGS = (2, 3, 4, 52)  # weeks back, beside last week's
ROLLING_MEANS = (4, 13)  # weeks averaged, the last one included
HISTORY = (*(f"sales_lag_{k}" for k in HISTORY_LAGS), *(f"sales_mean_{w}" for w in ROLLING_MEANS))
CALENDAR = ("year_cycle_sin", "year_cycle_cos")
WINDOW_WEEKS = max(*HISTORY_LAGS, *ROLLING_MEANS)  # the tail a published version keeps per series
DAYS_PER_YEAR = 365.2425


@dataclass(frozen=True)
class FeatureSpec:
    """Which features a model reads, and what a file calls its columns."""

    known: tuple[str, ...] = CHAPTER_KNOWN
    static: tuple[str, ...] = ()
    history: bool = False
    calendar: bool = False
    series_column: str = SERIES_COLUMN
    week_column: str = TIME_COLUMN
    target_column: str = TARGET
    # Static covariates that are categories, with the values training saw: ((name, (value, ...)), ...).
    # Each is one column per value (1 for the series' value, 0 otherwise); a value training never saw is
    # all zeros, and flagged as filled.
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def vocabulary(self, name: str) -> tuple[str, ...] | None:
        """The values of category `name` as training saw them, or None for a numeric covariate."""
        return dict(self.categories).get(name)

    @property
    def static_names(self) -> tuple[str, ...]:
        """The static covariates' feature columns: a number's own name, a category's `name=value` per value."""
        return tuple(
            column
            for name in self.static
            for column in (
                (f"{name}={value}" for value in cast("tuple[str, ...]", self.vocabulary(name)))
                if self.vocabulary(name) is not None
                else (name,)
            )
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The feature matrix's columns, in order: the ONNX input's columns too."""
        return (
            LAG_1,
            *self.known,
            *(HISTORY if self.history else ()),
            *(CALENDAR if self.calendar else ()),
            *self.static_names,
        )

    @property
    def is_chapter(self) -> bool:
        return self.names == FEATURES

    @property
    def fillable(self) -> tuple[str, ...]:
        """What a row may lack and have filled (feature_matrix): the weeks of history, the week for the
        calendar, a category value training saw."""
        return (
            *(HISTORY if self.history else ()),
            *(CALENDAR if self.calendar else ()),
            *(name for name, _ in self.categories),
        )

    @property
    def covariates(self) -> tuple[str, ...]:
        return (*self.known, *self.static)

    @property
    def sales_features(self) -> tuple[int, ...]:
        """The features in units sold (on the log scale with transform log1p), by position."""
        return tuple(i for i, name in enumerate(self.names) if name == LAG_1 or name in HISTORY)

    def logged(self) -> tuple[bool, ...]:
        """Per feature, whether transform log1p applies to it: sales, and the
        chapter's own covariates (as the chapter's log model always did);
        not the calendar or other covariates, which may be below zero."""
        return tuple(i in self.sales_features or name in CHAPTER_KNOWN for i, name in enumerate(self.names))

    def renames(self) -> dict[str, str]:
        """{a file's column name: the name used here} for columns named otherwise."""
        pairs = ((self.series_column, SERIES_COLUMN), (self.week_column, TIME_COLUMN), (self.target_column, TARGET))
        return {theirs: ours for theirs, ours in pairs if theirs != ours}

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "known": list(self.known),
            "static": list(self.static),
            "history": {"lags": [1, *HISTORY_LAGS], "rolling_means": list(ROLLING_MEANS), "window_weeks": WINDOW_WEEKS}
            if self.history
            else None,
            "calendar": list(CALENDAR) if self.calendar else None,
            "categories": {name: list(values) for name, values in self.categories},
            "columns": {"series": self.series_column, "week": self.week_column, "target": self.target_column},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> FeatureSpec:
        if not doc:
            return cls()
        columns = doc.get("columns", {})
        return cls(
            tuple(doc.get("known", CHAPTER_KNOWN)),
            tuple(doc.get("static", ())),
            bool(doc.get("history")),
            bool(doc.get("calendar")),
            columns.get("series", SERIES_COLUMN),
            columns.get("week", TIME_COLUMN),
            columns.get("target", TARGET),
            tuple((name, tuple(values)) for name, values in (doc.get("categories") or {}).items()),
        )

    def with_columns(self, **names: str | None) -> FeatureSpec:
        columns: dict[str, Any] = {f"{k}_column": v for k, v in names.items() if v}
        return replace(self, **columns)


CHAPTER = FeatureSpec()


def with_options(
    base: FeatureSpec,
    known: Sequence[str] | None = None,
    static: Sequence[str] | None = None,
    history: bool | None = None,
    calendar: bool | None = None,
    series_column: str | None = None,
    week_column: str | None = None,
    target_column: str | None = None,
) -> FeatureSpec:
    """`base` with what command-line options asked for (None: left as `base` has it)."""
    from .errors import DataError

    taken = [*(base.known if known is None else known), *(base.static if static is None else static)]
    twice = sorted({n for n in taken if taken.count(n) > 1})
    if twice:
        raise DataError(f"--known and --static both name {', '.join(twice)}: a covariate is one or the other")
    given: dict[str, Any] = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in (("known", known), ("static", static), ("history", history), ("calendar", calendar))
        if value is not None
    }
    spec = replace(base, **given)
    return spec.with_columns(series=series_column, week=week_column, target=target_column)


def history_columns(window: np.ndarray, last_week: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[n, len(HISTORY)] lags and rolling means from `window` [n, L] (L >= WINDOW_WEEKS),
    and [n, len(HISTORY)] flags of the features that were filled.

    `window[:, -1]` is last week, NaN before a series' first week. `last_week`
    [n] replaces last week's sales where the window has none (a row's own
    prev_week_sales). A plan's window is a view of its weeks, read in place.
    """
    window = np.asarray(window, dtype=np.float64)[:, -WINDOW_WEEKS:]
    n = len(window)
    known = ~np.isnan(window)

    def back(k: int | np.ndarray) -> np.ndarray:
        return window[:, WINDOW_WEEKS - k] if isinstance(k, int) else window[np.arange(n), WINDOW_WEEKS - k]

    def zeroed_back(k: int) -> np.ndarray:
        return np.where(known[:, WINDOW_WEEKS - k], window[:, WINDOW_WEEKS - k], 0.0)

    def known_in_last(k: int) -> np.ndarray:
        return known[:, WINDOW_WEEKS - k :].sum(axis=1, dtype=np.int32)

    return _history_features(n, back, zeroed_back, known_in_last, last_week)


def history_at(cells: np.ndarray, at: np.ndarray, last_week: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """history_columns of the weeks at flat positions `at` [n] of `cells` (a [series, weeks] matrix's
    cells, row by row), each reading the WINDOW_WEEKS cells before it: the features of a whole file
    without laying out every row's window.
    """
    known_cells = ~np.isnan(cells)
    zeroed = np.where(known_cells, cells, 0.0)
    # Known cells before each position; summed as bytes into int32 where that holds every count (twice as fast).
    known_before = np.zeros(len(cells) + 1, dtype=np.int32 if len(cells) < 2**31 else np.int64)
    np.cumsum(known_cells.view(np.uint8), dtype=known_before.dtype, out=known_before[1:])
    start = at - WINDOW_WEEKS  # where each row's window starts: the week k weeks back is start + WINDOW_WEEKS - k

    def back(k: int | np.ndarray) -> np.ndarray:
        return np.take(cells[WINDOW_WEEKS - k :], start) if isinstance(k, int) else cells[at - k]

    def zeroed_back(k: int) -> np.ndarray:
        return np.take(zeroed[WINDOW_WEEKS - k :], start)

    def known_in_last(k: int) -> np.ndarray:
        return np.take(known_before[WINDOW_WEEKS:], start) - np.take(known_before[WINDOW_WEEKS - k :], start)

    return _history_features(len(at), back, zeroed_back, known_in_last, last_week)


def _history_features(
    n: int,
    back: Callable[[int | np.ndarray], np.ndarray],
    zeroed_back: Callable[[int], np.ndarray],
    known_in_last: Callable[[int], np.ndarray],
    last_week: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The one definition of the history features, over n windows read through `back(k)` (each window's
    week k back, k an int or one per window), `zeroed_back(k)` (the same, 0 for an unknown week) and
    `known_in_last(k)` (how many of each window's last k weeks are known). Sums add the weeks one at a
    time, last week first, so every path gets the same numbers to the last bit."""
    last = back(1)
    count = known_in_last(WINDOW_WEEKS)
    given = np.zeros(n, dtype=bool)  # rows whose last week is `last_week`'s, the window having none
    if last_week is not None:
        given = np.isnan(last) & ~np.isnan(np.asarray(last_week, dtype=np.float64))
        last = np.where(given, last_week, last)
        count = count + given
    depth = np.minimum(np.maximum(count, 1), WINDOW_WEEKS)  # np.clip's checks cost more than the clip
    oldest = np.where(depth == 1, last, back(depth))  # the oldest week the window holds
    # Column by column, each column contiguous (transposed views: a row-major [n, k] would write every
    # column with a stride).
    columns, filled = np.empty((len(HISTORY), n)).T, np.empty((len(HISTORY), n), dtype=bool).T
    for i, lag in enumerate(HISTORY_LAGS):
        value = back(lag)
        filled[:, i] = np.isnan(value)
        columns[:, i] = np.where(filled[:, i], oldest, value)
    # Rolling means: the known weeks' sum over how many there are, added one week at a time from last week
    # back, the shorter mean's sum on the way to the longer one's.
    total = np.where(np.isnan(last), 0.0, last)
    summed = 1
    for i, weeks in enumerate(ROLLING_MEANS, start=len(HISTORY_LAGS)):
        for k in range(summed + 1, weeks + 1):
            total += zeroed_back(k)
        summed = weeks
        have = known_in_last(weeks) + given
        columns[:, i] = np.divide(total, have, out=np.full(n, np.nan), where=have > 0)
        filled[:, i] = have < weeks
    return columns, filled


def calendar_columns(weeks: np.ndarray) -> np.ndarray:
    """[n, 2] the week's place in the year as a point on the unit circle."""
    weeks = np.asarray(weeks, dtype="datetime64[D]")
    day = weeks.astype(np.int64)
    if len(day) > 1000:  # a file's rows: each day of their span once (a few hundred weeks of days), then looked up
        first, last = int(day.min()), int(day.max())
        if last - first < len(day):
            return _year_circle(np.arange(first, last + 1))[day - first]
    return _year_circle(day)


def _year_circle(day: np.ndarray) -> np.ndarray:
    weeks = day.astype("datetime64[D]")
    into_year = (weeks - weeks.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.float64)
    angle = 2 * np.pi * into_year / DAYS_PER_YEAR
    return np.column_stack([np.sin(angle), np.cos(angle)])


class StoredTails(Mapping[str, tuple[np.datetime64, np.ndarray]]):
    """A version's tails, {series: (the week after its last, [WINDOW_WEEKS] sales before it)}, held as one
    matrix: the tails of a plan's thousand series are one lookup of their rows, not a thousand arrays."""

    def __init__(self, names: Sequence[str], next_weeks: np.ndarray, sales: np.ndarray) -> None:
        self.row = {name: i for i, name in enumerate(names)}
        self.next_weeks = np.asarray(next_weeks, dtype="datetime64[D]")  # [N]
        self.sales = np.asarray(sales, dtype=np.float64)  # [N, WINDOW_WEEKS]

    @classmethod
    def of(cls, tails: Mapping[str, tuple[np.datetime64, np.ndarray]]) -> StoredTails:
        if isinstance(tails, StoredTails):
            return tails
        names = list(tails)
        sales = np.array([tails[name][1] for name in names], dtype=np.float64).reshape(len(names), WINDOW_WEEKS)
        return cls(names, np.array([tails[name][0] for name in names], dtype="datetime64[D]"), sales)

    def __getitem__(self, name: str) -> tuple[np.datetime64, np.ndarray]:
        i = self.row[name]
        return self.next_weeks[i], self.sales[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.row)

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, name: object) -> bool:
        return name in self.row

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """[len(names)] each name's row, -1 for a series without a stored tail."""
        return np.fromiter(map(self.row.get, names, repeat(-1)), dtype=np.intp, count=len(names))

    def copy(self) -> StoredTails:
        return StoredTails(list(self.row), self.next_weeks.copy(), self.sales.copy())

    def update(
        self, names: Sequence[str], next_weeks: np.ndarray, sales: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Set the tails of `names` (new series added after the others); returns their rows. `rows`: their
        rows_of, when at hand."""
        rows = self.rows_of(names) if rows is None else rows.copy()
        new = np.flatnonzero(rows < 0)
        if len(new):
            rows[new] = np.arange(len(self.row), len(self.row) + len(new))
            self.row.update(zip([names[i] for i in new.tolist()], rows[new].tolist()))
            self.next_weeks = np.concatenate([self.next_weeks, np.empty(len(new), dtype="datetime64[D]")])
            self.sales = np.concatenate([self.sales, np.empty((len(new), WINDOW_WEEKS))])
        self.next_weeks[rows], self.sales[rows] = next_weeks, sales
        return rows


@dataclass
class SeriesWeeks:
    """Each row's place in its series' run of weeks: the layout every window is taken from.

    Rows of one series are laid on consecutive weeks from its first week; a
    week the series skips is filled with the week before it (its last known
    sales carry on).
    """

    series_of_row: np.ndarray  # [n] index into names
    position: np.ndarray  # [n] weeks since the first week of the row's series
    names: np.ndarray  # [S] series names
    first_week: np.ndarray  # [S] datetime64[D]
    span: np.ndarray  # [S] weeks from first to last, inclusive

    @classmethod
    def of(cls, weeks: np.ndarray, series: Any = None) -> SeriesWeeks:
        """The layout of rows of `weeks` [n] and `series` [n] names (numpy, or a pyarrow array: a file's
        column, coded in C); no series: one."""
        weeks = np.asarray(weeks, dtype="datetime64[D]")
        if series is None:
            names, code = np.array(["0"]), np.zeros(len(weeks), dtype=np.int64)
        elif type(series).__module__.startswith("pyarrow"):
            names, code = _pyarrow_codes(series)
        else:
            names, code = np.unique(np.asarray(series).astype(str), return_inverse=True)
            code = code.ravel()
        day = weeks.astype(np.int64)
        first = np.full(len(names), np.iinfo(np.int64).max)
        np.minimum.at(first, code, day)
        position = (day - first[code]) // 7
        span = np.zeros(len(names), dtype=np.int64)
        np.maximum.at(span, code, position + 1)
        return cls(code, position, names, first.astype("datetime64[D]"), span)

    def stored_tails(self, tail_of: Mapping[str, tuple[np.datetime64, np.ndarray]]) -> np.ndarray:
        """[S, WINDOW_WEEKS] the weeks before each series' first week from the tails a version stored
        ({series: (the week after the tail, [WINDOW_WEEKS] sales)}; NaN for a series without one):
        the weeks between a tail and the first week carry its last sales; a tail that reaches past
        the first week is cut there."""
        out = np.full((len(self.names), WINDOW_WEEKS), np.nan)
        if isinstance(tail_of, StoredTails):  # one lookup of their rows
            rows = tail_of.rows_of(self.names.tolist())
            have = np.flatnonzero(rows >= 0)
            next_week, windows = tail_of.next_weeks[rows[have]], tail_of.sales[rows[have]]
        else:
            found = [tail_of.get(str(name)) for name in self.names]
            have = np.flatnonzero([tail is not None for tail in found])
            stored = [cast("tuple[np.datetime64, np.ndarray]", found[s]) for s in have]
            next_week = np.array([week for week, _ in stored], dtype="datetime64[D]")
            windows = np.stack([tail for _, tail in stored]) if stored else np.empty((0, WINDOW_WEEKS))
        if not len(have):
            return out
        gap = (self.first_week[have] - next_week).astype(np.int64) // 7  # weeks from the tail's end to the first
        if not gap.any():  # each series goes on in the week after its tail: a file of the weeks that follow
            out[have] = windows
            return out
        source = np.arange(WINDOW_WEEKS)[None, :] + gap[:, None]  # the tail's week each window week takes
        picked = np.take_along_axis(windows, np.clip(source, 0, WINDOW_WEEKS - 1), 1)
        out[have] = np.where(source >= 0, picked, np.nan)
        return out

    def matrix(self, values: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """[S, WINDOW_WEEKS + max span] of `values` laid out by series and week,
        carried forward over skipped weeks; the WINDOW_WEEKS weeks before each
        series' first week are `before` [S, WINDOW_WEEKS] when given (stored_tails), else NaN."""
        S, T = len(self.names), int(self.span.max(initial=0))
        grid = np.full((S, WINDOW_WEEKS + T), np.nan)
        grid[self.series_of_row, WINDOW_WEEKS + self.position] = values
        if before is not None:
            grid[:, :WINDOW_WEEKS] = before
        return carried_forward(grid, self)

    def tails(self, grid: np.ndarray) -> np.ndarray:
        """[S, WINDOW_WEEKS] each series' last weeks, for the week after its last."""
        ends = WINDOW_WEEKS + self.span
        if len(ends) and (ends == ends[0]).all():  # every series runs to the same week (a chunk of a file)
            return grid[:, ends[0] - WINDOW_WEEKS : ends[0]]
        return grid[np.arange(len(self.names))[:, None], ends[:, None] + np.arange(-WINDOW_WEEKS, 0)[None, :]]

    def next_week(self) -> np.ndarray:
        """[S] the week after each series' last."""
        return self.first_week + (self.span * 7).astype("timedelta64[D]")


def _pyarrow_codes(series: Any) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct names, [n] each row's index into them) of a pyarrow column, as np.unique gives them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(series, pa.ChunkedArray):
        series = series.combine_chunks()
    encoded = series if pa.types.is_dictionary(series.type) else pc.dictionary_encode(pc.cast(series, pa.string()))
    index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    used = np.flatnonzero(np.bincount(index, minlength=len(encoded.dictionary)))  # rows taken out leave names unused
    found = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)[used]
    order = np.argsort(found, kind="stable")
    rank = np.zeros(len(encoded.dictionary), dtype=np.int64)
    rank[used[order]] = np.arange(len(order))
    return found[order], rank[index]


def take(column: Any, rows: np.ndarray) -> Any:
    """Rows `rows` of a numpy or pyarrow column."""
    if type(column).__module__.startswith("pyarrow"):
        return column.take(rows)
    return np.asarray(column)[rows]


def carried_forward(grid: np.ndarray, layout: SeriesWeeks) -> np.ndarray:
    """`grid` with every unknown week inside a series' span taking the last known week before it."""
    unknown = np.isnan(grid)
    ends = WINDOW_WEEKS + layout.span  # past them, the grid is unknown already
    # A series whose known weeks run on from its first to its end skips none: most files' series.
    first_known = np.argmin(unknown, axis=1)
    if np.array_equal(np.count_nonzero(~unknown, axis=1), ends - first_known):
        return grid
    columns = np.arange(grid.shape[1], dtype=np.int32)[None, :]
    index = np.where(unknown, 0, columns)  # each known week's own column
    np.maximum.accumulate(index, axis=1, out=index)  # ... and the last known one's after it
    carried = np.take_along_axis(grid, index, axis=1)
    carried[columns >= ends[:, None]] = np.nan  # past the series' last week
    return carried


def filled_patterns(spec: FeatureSpec, filled: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    """flag_patterns of the filled features (`filled` [n, len(spec.fillable)])."""
    return flag_patterns(spec.fillable, filled)


def flag_patterns(names: Sequence[str], flags: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    """([the names of each distinct row of `flags` [n, len(names)]], [n] each row's pattern): a name list
    per pattern, not per row."""
    if not flags.shape[1]:
        return [[]], np.zeros(len(flags), dtype=np.int64)
    if len(names) <= 16:  # each row's flags as the bits of one integer, packed by numpy; few enough to count
        width = 8 if len(names) <= 8 else 16  # a row's flags padded to one byte, or two, packed as one stream
        rows = np.zeros((len(flags), width), dtype=bool)
        rows[:, : len(names)] = flags
        packed = np.packbits(rows.reshape(-1), bitorder="little")
        bits = (packed if width == 8 else packed.view("<u2")).astype(np.int64)
        present = np.flatnonzero(np.bincount(bits, minlength=1 << len(names)))
        code_of = np.zeros(1 << len(names), dtype=np.int64)
        code_of[present] = np.arange(len(present))
        return [[name for i, name in enumerate(names) if int(p) >> i & 1] for p in present], code_of[bits]
    if len(names) < 63:  # each row's flags as the bits of one integer: a sort of numbers, not of rows
        bits = np.zeros(len(flags), dtype=np.int64)
        for i in range(len(names)):
            bits |= flags[:, i].astype(np.int64) << i
        distinct, codes = np.unique(bits, return_inverse=True)
        return [[name for i, name in enumerate(names) if int(p) >> i & 1] for p in distinct], codes.ravel()
    patterns, codes = np.unique(flags, axis=0, return_inverse=True)
    return [[name for name, flag in zip(names, row) if flag] for row in patterns.tolist()], codes.ravel()


@dataclass
class Features:
    """A feature matrix and what went into it."""

    X: np.ndarray  # [n, len(spec.names)] raw units
    filled: np.ndarray  # [n, len(spec.fillable)] features filled for lack of weeks (or of a week, for the calendar)
    grid: np.ndarray | None = None  # [S, WINDOW_WEEKS + T] sales by series and week (SeriesWeeks.matrix)
    slots: np.ndarray | None = None  # [n, 2] each row's (series, column) in grid; -1 for a row without a week
    layout: SeriesWeeks | None = None  # the grid's series and weeks

    @property
    def tails(self) -> dict[str, np.ndarray]:
        """{series name: [WINDOW_WEEKS] sales before its next week}."""
        if self.layout is None or self.grid is None:
            return {}
        return dict(zip(map(str, self.layout.names), self.layout.tails(self.grid)))


def assemble(
    spec: FeatureSpec,
    last: np.ndarray,
    known: np.ndarray,
    history: np.ndarray | None = None,
    calendar: np.ndarray | None = None,
    static: np.ndarray | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> np.ndarray:
    """The feature matrix [n, len(spec.names)] from its parts, in spec.names order.

    `last` [n] last week's sales; `known` [n, len(spec.known)]; `history`
    [n, len(HISTORY)]; `calendar` [n, 2]; `static` [n, len(spec.static_names)] (static_matrix).
    `dtype`: float32 gives what the model reads without a float64 matrix on the way (the same numbers as
    a float64 matrix cast). The one place the order of spec.names is laid out, for files, requests and plans.
    """
    n = len(last)
    parts = [np.asarray(last, dtype=np.float64).reshape(n, 1), np.asarray(known, dtype=np.float64).reshape(n, -1)]
    # history and calendar are given whenever the spec reads them
    if spec.history:
        parts.append(cast(np.ndarray, history))
    if spec.calendar:
        parts.append(cast(np.ndarray, calendar))
    if spec.static:
        parts.append(np.asarray(static, dtype=np.float64).reshape(n, -1))
    X = np.empty((n, sum(part.shape[1] for part in parts)), dtype=dtype)
    column = 0
    for part in parts:
        X[:, column : column + part.shape[1]] = part
        column += part.shape[1]
    return X


def with_history(spec: FeatureSpec, X: np.ndarray, window: np.ndarray) -> np.ndarray:
    """`X` with its sales features (last week's, lags, rolling means) taken from `window` [n, WINDOW_WEEKS]
    instead: a chain of forecasts feeds each week's into the next week's window. Rows whose window has
    no last week keep theirs."""
    X = np.array(X, dtype=np.float64)
    last = window[:, -1]
    X[:, 0] = np.where(np.isnan(last), X[:, 0], last)
    if spec.history:
        start = 1 + len(spec.known)
        X[:, start : start + len(HISTORY)] = history_columns(window, X[:, 0])[0]
    return X


def week_windows(grid: np.ndarray | None, slots: np.ndarray, weeks_back: int = WINDOW_WEEKS) -> np.ndarray:
    """[n, weeks_back] the weeks before each row from `grid`, by the rows' `slots` (Features.slots); NaN
    for a row without a week."""
    offsets = np.arange(-weeks_back, 0)
    placed = slots[:, 0] >= 0
    out = np.full((len(slots), weeks_back), np.nan)
    if grid is not None and placed.any():
        rows, columns = slots[placed, 0], slots[placed, 1]
        out[placed] = grid[rows[:, None], columns[:, None] + offsets[None, :]]
    return out


def static_matrix(spec: FeatureSpec, columns: Mapping[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """([n, len(spec.static_names)] the static covariates' columns, [n, len(spec.categories)] rows whose
    category value training never saw) from `columns` {name: [n] values}: numbers, or a category's text."""
    parts, unseen = [], []
    for name in spec.static:
        vocabulary = spec.vocabulary(name)
        if vocabulary is None:
            parts.append(np.asarray(columns[name], dtype=np.float64).reshape(n, 1))
            continue
        values = np.asarray(columns[name]).astype(str)
        hot = values[:, None] == np.asarray(vocabulary, dtype=str)[None, :]
        parts.append(hot.astype(np.float64))
        unseen.append(~hot.any(axis=1))
    return (
        np.column_stack(parts) if parts else np.zeros((n, 0)),
        np.column_stack(unseen) if unseen else np.zeros((n, 0), dtype=bool),
    )


def feature_matrix(
    spec: FeatureSpec,
    columns: Mapping[str, Any],
    sales: np.ndarray | None = None,
    tail_of: Mapping[str, tuple[np.datetime64, np.ndarray]] | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> Features:
    """The features of a table's rows, in spec.names order.

    `columns`: {name: [n] array} of the table, with the week, series and
    covariates under the names used here (FeatureSpec.renames). `sales`: [n]
    each row's own actual sales (NaN where unknown), which later rows' history
    reads; `tail_of`: {series: (next week, [WINDOW_WEEKS] window)} a
    published version stored, which a series' rows continue from (weeks
    between its next week and the series' first row here carry its last sales). A row's own prev_week_sales,
    when the table has it, is its last week's sales as given; where it is NaN, the week before's.

    A row without a week (NaT, or no week column) stands alone: a series with
    a stored tail is forecast for the week after it; otherwise its history
    features are its prev_week_sales and its calendar the year's centre (0, 0),
    both flagged as filled. `dtype`: the matrix's (assemble).
    """
    n = len(next(iter(columns.values())))
    given_last = columns.get(LAG_1)
    given_last = np.full(n, np.nan) if given_last is None else np.asarray(given_last, dtype=np.float64)
    known = (
        np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in spec.known])
        if spec.known
        else np.zeros((n, 0))
    )
    static, unseen = static_matrix(spec, columns, n)
    if not (spec.history or spec.calendar):
        return Features(assemble(spec, given_last, known, static=static, dtype=dtype), unseen)
    weeks = columns.get(TIME_COLUMN)
    weeks = (
        np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
        if weeks is None
        else np.asarray(weeks, dtype="datetime64[D]")
    )
    series = columns.get(SERIES_COLUMN)
    if tail_of and series is not None and np.isnat(weeks).any():  # a known series' next week
        weeks = weeks.copy()
        for i in np.flatnonzero(np.isnat(weeks)):
            stored = tail_of.get(str(series[i]))
            if stored is not None:
                weeks[i] = stored[0]
    dated = ~np.isnat(weeks)
    slots = np.full((n, 2), -1, dtype=np.int64)
    grid: np.ndarray | None = None
    layout: SeriesWeeks | None = None
    if spec.history and dated.any():
        every = bool(dated.all())  # a file's rows: read as they are, not copied
        taken = np.flatnonzero(dated)
        rows: np.ndarray | slice = slice(None) if every else taken
        layout = SeriesWeeks.of(weeks[rows], series if series is None or every else take(series, taken))
        values = np.full(len(layout.position), np.nan) if sales is None else np.asarray(sales, dtype=np.float64)[rows]
        grid = layout.matrix(values, layout.stored_tails(tail_of) if tail_of else None)
        slots[rows, 0], slots[rows, 1] = layout.series_of_row, WINDOW_WEEKS + layout.position
    last = given_last.copy()
    filled: list[np.ndarray] = []
    history: np.ndarray | None = None
    if spec.history:
        # Each row reads the cells before its own in the grid; a row without a week, a window of NaN past its end.
        width = 0 if grid is None else grid.shape[1]
        cells = np.concatenate([np.empty(0) if grid is None else grid.ravel(), np.full(WINDOW_WEEKS, np.nan)])
        at = np.where(slots[:, 0] >= 0, slots[:, 0] * width + slots[:, 1], len(cells))
        last = np.where(np.isnan(given_last), cells[at - 1], given_last)
        history, history_filled = history_at(cells, at, last)
        filled.append(history_filled)
    calendar: np.ndarray | None = None
    if spec.calendar and dated.all():  # a file's rows
        calendar = calendar_columns(weeks)
        filled.append(np.zeros((n, len(CALENDAR)), dtype=bool))
    elif spec.calendar:
        calendar = np.zeros((n, len(CALENDAR)))
        calendar[dated] = calendar_columns(weeks[dated])
        filled.append(np.repeat(~dated[:, None], len(CALENDAR), axis=1))
    X = assemble(spec, last, known, history, calendar, static, dtype)
    return Features(X, np.column_stack([*filled, unseen]), grid, slots, layout)
