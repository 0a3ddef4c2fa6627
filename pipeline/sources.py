"""Reading training data from several files or folders of CSV and Parquet files at once."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import cast

import numpy as np

from .data import Dataset, concat, featured, load_file, repeated_week_series, week_series_keys
from .errors import DataError
from .features import CHAPTER, FeatureSpec
from .schema import SERIES_COLUMN, TIME_COLUMN
from .tables import DATA_SUFFIXES


def data_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The CSV and Parquet files named or found (not recursively) in the folders named,
    oldest first by modification time, so that later files win."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no {', '.join(DATA_SUFFIXES)} files in this folder")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    unique = list({p.resolve(): p for p in reversed(files)}.values())[::-1]  # each file once, named as given
    return sorted(unique, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def load_sources(
    paths: Iterable[str | os.PathLike[str]],
    skip_bad_rows: bool = False,
    warn: Callable[[str], None] | None = None,
    spec: FeatureSpec | None = None,
) -> Dataset:
    """One dataset from many files. A row whose (week, series) appears in more
    than one file is taken from the latest file only, with a warning that
    counts the replaced rows."""
    files = data_files(paths)
    spec = spec or CHAPTER
    if (spec.history or spec.static) and len(files) > 1:
        return history_across_files(files, skip_bad_rows, warn, spec)
    parts = [load_file(f, skip_bad_rows, warn, spec=spec) for f in files]
    if len(parts) == 1:
        return parts[0]
    for column in (TIME_COLUMN, SERIES_COLUMN):
        having = [f for f, part in zip(files, parts) if getattr(part, column) is not None]
        if having and len(having) < len(files):
            # Read together, the column would be dropped from every file: weeks out of the split, series out of the merge.
            lacking = next(f for f, part in zip(files, parts) if getattr(part, column) is None)
            raise DataError(
                f"{lacking}: has no '{column}' column, but {having[0]} has one: files read together "
                "must all have it or all lack it"
            )
    merged = concat(parts)
    keep = np.arange(len(merged))
    replaced = 0
    if merged.week is not None and merged.series is not None:
        keep = last_of_each(merged.week, merged.series)
        replaced = len(merged) - len(keep)
        # Every part has weeks and series when the merged data does (concat; files that differ are refused above).
        within = sum(repeated_week_series(cast(np.ndarray, part.week), cast(np.ndarray, part.series)) for part in parts)
        if replaced - within and warn:
            warn(
                f"{replaced - within} row(s) repeat a week and series of an earlier file; kept the latest file's values"
            )
        if within and warn:
            warn(f"{within} row(s) repeat a week and series of an earlier row of their own file; kept the last of each")
    elif merged.week is not None and warn:
        # Without series a week may hold several stores' rows: a later file's row
        # cannot be told to replace an earlier one, so both stay. Say so.
        earlier, overlapping = np.array([], dtype="datetime64[D]"), 0
        for part in parts:
            weeks = cast(np.ndarray, part.week).astype("datetime64[D]")  # every part's, as the merged data has them
            overlapping += int(np.isin(weeks, earlier).sum())
            earlier = np.union1d(earlier, weeks)
        if overlapping:
            warn(
                f"{overlapping} row(s) fall in weeks an earlier file has too; without a '{SERIES_COLUMN}' column "
                "they cannot replace that file's rows, so both are kept: add the column for corrections to "
                "replace what they correct"
            )
    digest = hashlib.sha256("".join(p.source["sha256"] for p in parts).encode()).hexdigest()
    whole = merged.take(keep)
    whole.source = {
        "path": ", ".join(str(f) for f in files),
        "files": [{"path": p.source["path"], "sha256": p.source["sha256"], "rows": p.source["rows"]} for p in parts],
        "sha256": digest,
        "rows": int(len(keep)),
        "replaced_duplicates": int(replaced),
        "skipped_rows": sum(p.source["skipped_rows"] for p in parts),
        "skipped_reasons": dict(sum((Counter(p.source["skipped_reasons"]) for p in parts), Counter())),
    }
    return whole


def last_of_each(weeks: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Sorted indexes of the last row of each (week, series): a later file overwrites an earlier one."""
    key = week_series_keys(weeks, series)
    _, first_from_end = np.unique(key[::-1], return_index=True)
    return np.sort(len(key) - 1 - first_from_end)


def history_across_files(
    files: Sequence[Path], skip_bad_rows: bool, warn: Callable[[str], None] | None, spec: FeatureSpec
) -> Dataset:
    """One dataset of history features from many files (a folder of weekly exports): the files' rows are
    put together first (a later file's row replacing an earlier one of the same week and series), then
    featured once, so a week's lags reach into the files before it and a category's values are those
    of every file."""
    read = [load_file(f, skip_bad_rows, warn, spec=spec, raw_values=True) for f in files]
    names = set().union(*(values for values, _, _ in read))
    lacking = next(
        (
            (f, name)
            for f, (values, _, _) in zip(files, read)
            for name in (SERIES_COLUMN,)
            if name in names and name not in values
        ),
        None,
    )
    if lacking:
        raise DataError(
            f"{lacking[0]}: has no '{lacking[1]}' column, but another file has one: files read together "
            "must all have it or all lack it"
        )
    merged = {}
    for name in names:
        parts = [values[name] if name in values else np.full(len(y), np.nan) for values, y, _ in read]
        if any(part.dtype == object for part in parts):  # a category: text throughout
            parts = [part.astype(object) for part in parts]
        merged[name] = np.concatenate(parts)
    y = np.concatenate([y for _, y, _ in read])
    keep = np.arange(len(y))
    if SERIES_COLUMN in merged:
        keep = last_of_each(merged[TIME_COLUMN], merged[SERIES_COLUMN])
        replaced = len(y) - len(keep)
        if replaced and warn:
            warn(f"{replaced} row(s) repeat a week and series of an earlier row or file; kept the latest values")
    merged = {name: values[keep] for name, values in merged.items()}
    sources = [source for _, _, source in read]
    source = {
        "path": ", ".join(str(f) for f in files),
        "files": [{"path": s["path"], "sha256": s["sha256"], "rows": s["rows"]} for s in sources],
        "sha256": hashlib.sha256("".join(s["sha256"] for s in sources).encode()).hexdigest(),
        "replaced_duplicates": int(len(y) - len(keep)),
        "skipped_rows": sum(s["skipped_rows"] for s in sources),
        "skipped_reasons": dict(sum((Counter(s["skipped_reasons"]) for s in sources), Counter())),
    }
    return featured(source["path"], merged, y[keep], spec, source)


def history_by_default(paths: Iterable[str | os.PathLike[str]], spec: FeatureSpec) -> bool:
    """Whether `demand train` reads history and the calendar when not told: when the data has a week
    column but no prev_week_sales column (a plain sales history, as retailers export it), the series'
    own weeks are the only way to last week's sales. A file in the chapter's form (its own
    prev_week_sales) keeps the chapter's inputs: on the held-out sets of that form, history and the
    calendar gained on some and lost on others (docs/benchmarks.md), so they are asked for with --history."""
    from .data import has_column
    from .features import LAG_1

    files = data_files(paths)
    return all(has_column(f, TIME_COLUMN, spec) for f in files) and not any(has_column(f, LAG_1, spec) for f in files)
