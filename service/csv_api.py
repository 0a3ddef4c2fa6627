"""CSV over HTTP: POST /predict with Content-Type text/csv.

A table of weeks in (a header row naming the feature columns; any other
columns, such as series and week, ride along), the same table out as
text/csv with the forecast columns added: what `demand predict` writes for
the same rows, column for column (pipeline.scoring), so that

    curl --data-binary @weeks.csv -H 'Content-Type: text/csv' http://host/predict

answers a file ready to open in a spreadsheet. A bad row is a 400 naming its
line and column, as `demand predict` names it.
"""
from pipeline.errors import DataError
from pipeline.schema import FEATURES

from . import metrics
from .errors import ApiError

MEDIA_TYPE = "text/csv"
SOURCE = "body"  # what messages call the table: "body: line 3, column ..."


def is_csv(content_type):
    return (content_type or "").split(";", 1)[0].strip().lower() == MEDIA_TYPE


def forecast_csv(raw, bundle, max_rows):
    """CSV body bytes -> CSV answer bytes; raises ApiError for bad input."""
    # pyarrow is imported on the first CSV body: 40 MB that a worker serving only JSON never pays.
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from pipeline import tables
    from pipeline.scoring import append_forecasts, features_of

    if not raw.strip():
        raise ApiError(400, f"the CSV body is empty: send a header row naming {', '.join(FEATURES)}, then the rows")
    try:
        header = tables.header_of_bytes(raw, SOURCE)
        tables.require_columns(header, FEATURES, SOURCE)
        # As text: the cells go back verbatim, and text writes faster than numbers (as demand predict into a CSV).
        table, ragged = tables.read_csv(raw, SOURCE, header, header, numbers=(), threads=False)
    except DataError as err:
        raise ApiError(400, str(err)) from None
    if table.num_rows == 0 and not ragged.rows:
        raise ApiError(400, "the CSV body has a header but no rows")
    # Counted once parsed (a quoted cell may hold a line break); the body cap bounds the parse itself.
    if table.num_rows + len(ragged.rows) > max_rows:
        raise ApiError(413, f"{table.num_rows + len(ragged.rows)} rows in the CSV body, more than the limit of "
                            f"{max_rows} per request (DEMAND_MAX_ROWS)")
    checked = tables.check_columns(table, FEATURES, series=False)
    problems = tables.all_problems(checked, tables.ragged_problems(ragged))
    if problems:
        raise ApiError(400, _problems_message(problems))
    scored, outside = append_forecasts(table, features_of(checked), bundle)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(scored, sink)
    metrics.ROWS_CSV.inc(table.num_rows)
    if outside:
        metrics.EXTRAPOLATED.inc(outside)
    return sink.getvalue().to_pybytes()


def _problems_message(problems):
    from pipeline.tables import ProblemTally, row_label

    tally = ProblemTally()
    tally.add(problems)
    named = "; ".join(tally.lines(row_label(parquet=False)))
    more = tally.problems - len(tally.first)
    return f"{tally.bad_rows} bad row(s) in the CSV body: {named}" + (f" (and {more} more)" if more else "")
