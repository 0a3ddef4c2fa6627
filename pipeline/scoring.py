"""Batch scoring: forecasts added as columns to a table of weeks.

`demand predict` streams a CSV or Parquet file through here a chunk at a
time, and POST /predict with a CSV body scores its table the same way, so the
command line and the service answer the same rows with the same columns.
Every input column is passed through unchanged (series, week, actual
units_sold, anything else; from a CSV into a CSV, as the very text of its
cells), then the forecast columns are added; an input column named like one
of them is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from . import tables
from .atomic import partial_path
from .errors import DataError
from .parallel import usable_cores
from .schema import (
    EXTRAPOLATED_COLUMN,
    FEATURES,
    FORECAST_COLUMN,
    HIGH_COLUMN,
    LOW_COLUMN,
    OUTSIDE_NAMES,
    SERIES_COLUMN,
    VERSION_COLUMN,
)

if TYPE_CHECKING:
    from .bundle import Bundle
    from .tables import Columns

T = TypeVar("T")

DECIMALS = 1  # forecasts are whole units; one decimal shows the model's own rounding

# "extrapolated": the features outside the training range, joined by ";", by code.
_OUTSIDE_NAMES = [";".join(names) for names in OUTSIDE_NAMES]


def scoring_threads() -> int:
    """ONNX Runtime's threads for streaming a file: half the cores.

    The other half read and check the next chunk and write the last one
    (score_file). A thread pool on every core spins waiting for work against
    them: on 2 cores, 10M rows took 5.4 s that way against 4.6 s on one thread.
    """
    return max(1, usable_cores() // 2)


def append_forecasts(
    table: pa.Table, X: np.ndarray, bundle: Bundle, series: pa.ChunkedArray | None = None
) -> tuple[pa.Table, int, int]:
    """(`table` with the forecast columns of the rows of `X` [n, 3] appended, rows outside the training
    range, rows naming a series the model does not know).

    `series`: each row's series name, for a model that tells series apart."""
    out = bundle.forecast(X, series=series)
    n = len(X)
    pattern = np.zeros(n, dtype=np.int8)
    if len(out["extrapolated_rows"]):
        flags = np.asarray(out["extrapolated_flags"], dtype=np.int8)
        pattern[out["extrapolated_rows"]] = flags @ (1 << np.arange(len(FEATURES), dtype=np.int8))
    columns = {
        FORECAST_COLUMN: rounded(out["units_sold"]),
        LOW_COLUMN: rounded(out["low"]),
        HIGH_COLUMN: rounded(out["high"]),
        EXTRAPOLATED_COLUMN: decoded(pattern, _OUTSIDE_NAMES),
        VERSION_COLUMN: decoded(np.zeros(n, dtype=np.int8), [bundle.version]),
    }
    kept = table.drop_columns([name for name in columns if name in table.column_names])
    for name, values in columns.items():
        kept = kept.append_column(name, values)
    return kept, len(out["extrapolated_rows"]), len(out["unknown_series"])


def series_of(table: pa.Table, bundle: Bundle, source: str | os.PathLike[str]) -> pa.ChunkedArray | None:
    """The rows' series names (pyarrow), for a model that tells series apart and a
    table with a series column; else None. Any other column passes through untouched."""
    if not bundle.knows_series or SERIES_COLUMN not in table.column_names:
        return None
    try:
        return tables.series_names(table)
    except DataError as err:
        raise DataError(f"{source}: {err}") from None


def rounded(values: np.ndarray) -> pa.Array:
    """Forecasts as a file shows them: rounded to DECIMALS places."""
    return pa.array(np.round(np.asarray(values, dtype=np.float64), DECIMALS))


def decimal_column(values: np.ndarray) -> pa.Array:
    """`values` rounded to DECIMALS places, as decimals: a CSV's text of them in a third of the time pyarrow
    takes to write a float's shortest digits (the scaled integers are the decimals' own words, no cast). A
    value that is not finite, or past 10**17, is left empty."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 10**DECIMALS)
    finite = np.abs(scaled) < 1e18  # the 18 digits of a 64-bit decimal; False for NaN too
    units = (scaled if finite.all() else np.where(finite, scaled, 0.0)).astype(np.int64)
    validity = None if finite.all() else pa.array(finite).buffers()[1]
    return pa.Array.from_buffers(pa.decimal64(18, DECIMALS), len(units), [validity, pa.py_buffer(units)])


def csv_table(table: pa.Table) -> pa.Table:
    """`table` as a CSV of forecasts holds it: the forecast and its interval as decimal_column, and dates as
    their text, each distinct date written once (a file's rows share a few weeks)."""
    for at, field in enumerate(table.schema):
        if field.name in (FORECAST_COLUMN, LOW_COLUMN, HIGH_COLUMN) and pa.types.is_floating(field.type):
            table = table.set_column(at, field.name, decimal_column(table.column(at).to_numpy()))
        elif pa.types.is_date32(field.type):
            dates = pc.dictionary_encode(table.column(at).combine_chunks())
            text = pa.DictionaryArray.from_arrays(dates.indices, pc.cast(dates.dictionary, pa.string()))
            table = table.set_column(at, field.name, text)
    return table


# Rows pyarrow turns into text at a time: past its default of 1,024, its per-batch work shows.
CSV_WRITE_OPTIONS = pa_csv.WriteOptions(batch_size=8192)


def decoded(codes: np.ndarray, names: Sequence[str]) -> pa.Array:
    """Text column of `names`, by each row's code."""
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names)).cast(pa.string())


def features_of(checked: Columns, keep: np.ndarray | None = None) -> np.ndarray:
    X = np.column_stack([checked.values[name] for name in FEATURES])
    return X if keep is None else X[keep]


class Output:
    """Chunks written to a temporary file beside `path`, renamed into place only when all went well.

    Each chunk is written on a thread of its own while the next is read and
    forecast (pyarrow's writers and ONNX Runtime release the GIL); at most
    one chunk waits to be written, so memory stays at about two chunks.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self.pending: Future[None] | None = None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="writer")

    def write(self, table: pa.Table) -> None:
        self.wait()
        if not tables.is_parquet(self.path):
            table = csv_table(table)
        try:
            if self.writer is None:
                if tables.is_parquet(self.path):
                    # Floats written plain: forecasts rarely repeat, and trying a dictionary of them first
                    # costs a third of the write (docs/benchmarks.md, Features). Parquet names a nested
                    # column's leaves, not the column: a file with one keeps the dictionary everywhere.
                    flat = not any(pa.types.is_nested(field.type) for field in table.schema)
                    coded = [field.name for field in table.schema if not pa.types.is_floating(field.type)]
                    self.writer = pq.ParquetWriter(self.partial, table.schema, use_dictionary=coded if flat else True)
                else:
                    self.writer = pa_csv.CSVWriter(self.partial, table.schema, write_options=CSV_WRITE_OPTIONS)
        except (pa.ArrowException, OSError) as err:
            raise self.failed(err) from None
        self.pending = self.thread.submit(self.writer.write_table, table)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is None:
            return
        try:
            pending.result()
            return
        except (pa.ArrowException, OSError) as err:
            failure = self.failed(err)
        finally:
            # The failed future holds the error, whose traceback holds this
            # frame: without this the cycle would keep the files open until
            # the garbage collector happened to run.
            del pending
        raise failure

    def failed(self, err: BaseException) -> DataError:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0][:200]
        return DataError(f"{self.path}: cannot be written: {reason}")

    def finish(self) -> None:
        self.wait()
        self.thread.shutdown()
        if self.writer is None:
            raise AssertionError("finish() before any write: _score_file refuses a file with no usable rows first")
        self.writer.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        try:
            try:
                self.wait()
            finally:
                self.thread.shutdown()
                if self.writer is not None:
                    self.writer.close()
        except Exception:
            pass  # already failing: the error that brought us here is the one to report
        finally:
            self.partial.unlink(missing_ok=True)


def refuse_what_a_csv_cannot_hold(table: pa.Table, input_path: str | os.PathLike[str]) -> None:
    """A CSV cannot hold a list, a struct or a map, nor bytes that are not UTF-8
    text (a Parquet input's column can): say so of the input, not the output."""
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_nested(field.type):
            raise DataError(
                f"{input_path}: column {field.name!r} holds {field.type}, which a CSV cannot hold: "
                "write the forecasts to a .parquet file, or leave the column out"
            )
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            try:
                pc.cast(column, pa.string())  # checks the bytes are UTF-8
            except pa.ArrowInvalid:
                raise DataError(
                    f"{input_path}: column {field.name!r} holds bytes that are not UTF-8 text, which a "
                    "CSV cannot hold: write the forecasts to a .parquet file, or leave the column out"
                ) from None


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of an iterator, each next one taken on a thread of its own
    while the one before is used: the next chunk is read and checked while
    this one is forecast. Errors come out where the item would have."""
    with ThreadPoolExecutor(1, thread_name_prefix="reader") as pool:
        end = object()
        pending: Future[Any] = pool.submit(next, items, end)  # an item, or `end`
        while True:
            try:
                item = pending.result()
            except BaseException:
                # As in Output.wait: no cycle through the failed future. (None only on the way out, to the raise.)
                pending = None  # type: ignore[assignment]
                raise
            if item is end:
                return
            pending = pool.submit(next, items, end)
            yield item


def score_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    bundle: Bundle,
    skip_bad_rows: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Stream `input_path` (CSV or Parquet) through the model into `output_path`
    (CSV or Parquet, by extension), a chunk at a time: memory stays flat
    whatever the file's size. A bad row refuses the file, naming up to
    tables.SHOWN_ERRORS of them, unless `skip_bad_rows`; nothing is written then.
    Returns counts."""
    # Into a CSV, a CSV's cells go as the text they were (and the numbers need
    # no formatting back); into Parquet, its features go as numbers.
    settings = {"numbers": tables.is_parquet(output_path)}
    while True:
        try:
            return _score_file(input_path, output_path, bundle, skip_bad_rows, warn, settings)
        except tables.ReadAgain as again:
            settings.update(again.settings)


def _score_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    bundle: Bundle,
    skip_bad_rows: bool,
    warn: Callable[[str], None] | None,
    settings: dict[str, bool],
) -> dict[str, int]:
    input_path = Path(input_path)
    output = Output(output_path)
    into_parquet = tables.is_parquet(output_path)
    tally, written, outside, unknown = tables.ProblemTally(), 0, 0, 0
    try:
        chunks = (
            (*chunk, tables.check_columns(chunk[0], FEATURES, series=False))
            for chunk in tables.stream(input_path, FEATURES, settings.get("threads", True), settings["numbers"])
        )
        for chunk, dropped, record_of, checked in read_ahead(chunks):
            tally.add(dropped + [(record_of(index), column, problem) for index, column, problem in checked.problems])
            if tally.bad_rows and not skip_bad_rows:
                continue  # keep counting the bad rows, write nothing
            keep = checked.good() if checked.problems else None
            rows = chunk if keep is None else chunk.filter(keep)
            if not rows.num_rows:
                continue  # every row of the chunk skipped
            X = features_of(checked, keep)
            if into_parquet:  # the features as numbers, however the file had to be read
                for i, name in enumerate(FEATURES):
                    rows = rows.set_column(rows.column_names.index(name), name, pa.array(X[:, i]))
            scored, chunk_outside, chunk_unknown = append_forecasts(
                rows, X, bundle, series_of(rows, bundle, input_path)
            )
            if not into_parquet:
                refuse_what_a_csv_cannot_hold(scored, input_path)
            output.write(scored)
            written += scored.num_rows
            outside += chunk_outside
            unknown += chunk_unknown
        label = tables.row_label(tables.is_parquet(input_path))
        bad_rows, _ = tally.report(input_path, label, skip_bad_rows, warn)
        if not written:
            raise DataError(f"{input_path}: no usable rows")
        output.finish()
    except BaseException:
        output.abandon()
        raise
    return {"rows": written, "skipped_rows": bad_rows, "extrapolated_rows": outside, "unknown_series_rows": unknown}
