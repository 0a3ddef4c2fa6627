"""CSV over HTTP: POST /predict with Content-Type text/csv.

A table of weeks in (a header row naming the feature columns; any other
columns, such as series and week, ride along; a model that tells series
apart reads the series column), the same table out as
text/csv with the forecast columns added: what `demand predict` writes for
the same rows, column for column (pipeline.scoring), so that

    curl --data-binary @weeks.csv -H 'Content-Type: text/csv' http://host/predict

answers a file ready to open in a spreadsheet. A bad row is a 400 naming its
line and column, as `demand predict` names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline.errors import DataError
from pipeline.schema import FEATURES

from . import metrics
from .errors import ApiError

if TYPE_CHECKING:
    import pyarrow

    from pipeline.bundle import Bundle

MEDIA_TYPE = "text/csv"
SOURCE = "body"  # what messages call the table: "body: line 3, column ..."


def is_csv(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == MEDIA_TYPE


def forecast_csv(raw: bytes, bundle: Bundle, max_rows: int) -> bytes | Iterator[bytes]:
    """CSV body bytes -> the CSV answer's bytes (past ROWS_PER_PIECE rows, an iterator of them, sent chunked);
    raises ApiError for bad input, before any byte of the answer."""
    # pyarrow is imported on the first CSV body: 40 MB that a worker serving only JSON never pays.
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from pipeline import tables
    from pipeline.scoring import append_forecasts, csv_table, features_of, series_of

    if not bundle.reads_three_inputs:  # rows by name, featured as files are (service/feature_rows.py)
        from .feature_rows import predict_csv

        return predict_csv(raw, bundle, max_rows)
    if not raw.strip():
        raise ApiError(400, f"the CSV body is empty: send a header row naming {', '.join(FEATURES)}, then the rows")
    try:
        header = tables.header_of_bytes(raw, SOURCE)
        tables.require_columns(header, FEATURES, SOURCE)
        check_cell_count(raw, len(header), max_rows)
        # As text: the cells go back verbatim, and text writes faster than numbers (as demand predict into a CSV).
        table, ragged = tables.read_csv(raw, SOURCE, header, header, numbers=(), threads=False)
    except DataError as err:
        raise ApiError(400, str(err)) from None
    if table.num_rows == 0 and not ragged.rows:
        raise ApiError(400, "the CSV body has a header but no rows")
    # Counted once parsed (a quoted cell may hold a line break); the body cap bounds the parse itself.
    if table.num_rows + len(ragged.rows) > max_rows:
        raise ApiError(
            413,
            f"{table.num_rows + len(ragged.rows)} rows in the CSV body, more than the limit of "
            f"{max_rows} per request (DEMAND_MAX_ROWS)",
        )
    checked = tables.check_columns(table, FEATURES, series=False)
    problems = tables.all_problems(checked, tables.ragged_problems(ragged))
    if problems:
        raise ApiError(400, _problems_message(problems))
    # The series column is read as `demand predict` reads it, for a model that tells series apart.
    scored, outside, _ = append_forecasts(table, features_of(checked), bundle, series_of(table, bundle, SOURCE))
    metrics.ROWS_CSV.inc(table.num_rows)
    if outside:
        metrics.EXTRAPOLATED.inc(outside)
    pieces = _csv_pieces(csv_table(scored), pa, pa_csv)
    return next(pieces) if scored.num_rows <= ROWS_PER_PIECE else pieces  # one piece: sent with its length


ROWS_PER_PIECE = 16384


def _csv_pieces(table: pyarrow.Table, pa: ModuleType, pa_csv: ModuleType) -> Iterator[bytes]:
    """The answer a slice of rows at a time, as it is sent (chunked): the whole
    text at once, and the copy made of it, had cost twice the answer's size on
    top of the table (a 28 MiB body grew a worker by 300 MB)."""
    for start in range(0, max(table.num_rows, 1), ROWS_PER_PIECE):
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(
            table.slice(start, ROWS_PER_PIECE), sink, write_options=pa_csv.WriteOptions(include_header=start == 0)
        )
        yield sink.getvalue().to_pybytes()


# Cells a CSV body may hold, as a multiple of DEMAND_MAX_ROWS: a parsed cell
# costs a worker about 28 bytes whatever its text, so a body of a thousand
# one-character columns within the body cap had grown a worker by 460 MB.
CELLS_PER_ROW = 16


def check_cell_count(raw: bytes, columns: int, max_rows: int) -> None:
    """413 before parsing when the body's lines times its columns pass the budget
    (a quoted line break counts as a line: never fewer cells than there are)."""
    breaks = max(raw.count(b"\n"), raw.count(b"\r"))  # a bare \r ends a row too
    lines = breaks + (not raw.endswith((b"\n", b"\r"))) - 1  # the header aside
    if lines * columns > CELLS_PER_ROW * max_rows:
        raise ApiError(
            413,
            f"the CSV body has {columns} columns and about {lines} rows, more than "
            f"{CELLS_PER_ROW * max_rows} cells ({CELLS_PER_ROW} x DEMAND_MAX_ROWS): send fewer rows "
            "or leave out columns the forecast does not need",
        )


def _problems_message(problems: list[tuple[int, str, str]]) -> str:
    from pipeline.tables import ProblemTally, row_label

    tally = ProblemTally()
    tally.add(problems)
    named = "; ".join(tally.lines(row_label(parquet=False)))
    more = tally.problems - len(tally.first)
    return f"{tally.bad_rows} bad row(s) in the CSV body: {named}" + (f" (and {more} more)" if more else "")
