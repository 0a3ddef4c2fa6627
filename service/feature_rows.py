"""Requests to a model that reads more than the chapter's three inputs: rows by name, featured as files are.

A row names its series and week (under the column names the model's card
records), carries the model's known covariates for that week and its series'
static covariates (those of a series the model trained on may be left out),
and may carry `prev_week_sales` (last week's sales) and the target column
(the week's actual sales, which later rows of the same series then read as
their history). History and calendar features come from
pipeline.features.feature_matrix with the version's stored tails, exactly as
`demand predict` computes them for the same rows:

- a row of a series the version stored continues from its stored weeks, so a
  row for the week after training needs no prev_week_sales; a row without a
  week is that next week;
- a row of any other series needs prev_week_sales, and its missing history
  is filled from it; a row without a week gets the year's centre for its
  calendar;
- every answer names the features that were filled (`filled`), and the
  series the model never trained on (`unknown_series`).

The same reading serves the row format, the columnar format, CSV bodies and
plans several weeks ahead (service/plans.py, service/forecast_api.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import orjson

from pipeline.calibrate import level_key
from pipeline.features import LAG_1, feature_matrix, filled_patterns, flag_patterns
from pipeline.schema import (
    EXTRAPOLATED_COLUMN,
    HIGH_COLUMN,
    LOW_COLUMN,
    MAX_SERIES_NAME,
    NORMALIZED_TENSOR,
    OUTPUT_TENSOR,
    SERIES_COLUMN,
    TARGET,
    TIME_COLUMN,
    domain_of,
    domain_problem,
    has_control_character,
    series_problem,
)

from . import metrics
from .errors import ApiError
from .forecast_log import log_rows
from .inputs import check_row_count
from .plan_json import WeekTexts, chosen_field, encoded_series, interval_field, text_field, weeks_planned
from .plans import check_interval_count, read_levels

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from pipeline.bundle import Bundle
    from pipeline.features import FeatureSpec

    # Where a row's key is, for messages: (row index, its key, or None for the row itself) -> "inputs.week[3]".
    Where = Callable[[int, str | None], str]

FILLED = "filled"
OUTPUT_COLUMNS = (OUTPUT_TENSOR, NORMALIZED_TENSOR, LOW_COLUMN, HIGH_COLUMN, EXTRAPOLATED_COLUMN, FILLED)


def row_keys(spec: FeatureSpec) -> dict[str, str]:
    """{a request's key: the name used here} for every key a row of this model's requests may hold."""
    keys = {spec.series_column: SERIES_COLUMN, spec.week_column: TIME_COLUMN, LAG_1: LAG_1, spec.target_column: TARGET}
    keys.update({name: name for name in spec.covariates})
    return keys


def describe_row(spec: FeatureSpec) -> str:
    """What a row holds, for messages."""
    parts = [f"{', '.join(spec.known)} (known, every row)"] if spec.known else []
    if spec.static:
        parts.append(f"{', '.join(spec.static)} (static, unless the series is one the model trained on)")
    parts.append(
        f"{spec.series_column}, {spec.week_column} and {LAG_1} where the model has no stored week before the row's"
    )
    return "; ".join(parts)


def week_value(value: Any) -> np.datetime64 | None:
    """A week as numpy's day, or None when `value` is not an ISO date (text or None for none)."""
    if value is None or value == "":
        return np.datetime64("NaT", "D")
    if not isinstance(value, str) or len(value) > 32:
        return None
    try:
        return np.datetime64(value.strip(), "D")
    except ValueError:
        return None


def columns_from_rows(rows: Sequence[Any], bundle: Bundle, where: Where) -> dict[str, np.ndarray]:
    """{name used here: [n] values} from rows (dicts of a request's keys); a 400 naming the first bad field,
    `where(i, key)` saying where row i's key is."""
    spec = bundle.spec
    keys = row_keys(spec)
    n = len(rows)
    series = [""] * n
    weeks = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    categories: dict[str, list[str | None]] = {
        name: [None] * n for name in spec.static if spec.vocabulary(name) is not None
    }
    numbers = {name: np.full(n, np.nan) for name in (LAG_1, TARGET, *spec.covariates) if name not in categories}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ApiError(400, f"{where(i, None)} must be an object with {describe_row(spec)}")
        for key, value in row.items():
            name = keys.get(key)
            if name is None:
                raise ApiError(
                    400, f"{where(i, key)} is not a column of model {bundle.version}, which reads {describe_row(spec)}"
                )
            if name == SERIES_COLUMN:
                if value is not None:
                    problem = series_problem(value)
                    if problem:
                        raise ApiError(400, f"{where(i, key)} {problem}")
                    series[i] = str(value).strip()
            elif name == TIME_COLUMN:
                week = week_value(value)
                if week is None:
                    raise ApiError(400, f"{where(i, key)} must be an ISO date like 2024-01-01, got {str(value)[:40]!r}")
                weeks[i] = week
            elif name in categories:
                if value is not None:
                    problem = category_problem(value)
                    if problem:
                        raise ApiError(400, f"{where(i, key)} {problem}")
                    categories[name][i] = str(value).strip()
            elif value is not None:
                problem = domain_problem(name, value)
                if problem:
                    raise ApiError(400, f"{where(i, key)} {problem}")
                numbers[name][i] = value
            elif name in spec.known:
                raise ApiError(400, f"{where(i, key)} must be a number, got null")
    for name in spec.known:
        missing = np.flatnonzero(np.isnan(numbers[name]))
        if len(missing):
            raise ApiError(
                400,
                f"{where(int(missing[0]), name)} is missing: model {bundle.version} reads {name}, "
                "a value known in advance for every week",
            )
    for name in spec.static:
        given = categories.get(name)
        absent = (
            [i for i, v in enumerate(given) if v is None]
            if given is not None
            else np.flatnonzero(np.isnan(numbers[name])).tolist()
        )
        for i in absent:
            stored = bundle.statics.get(series[i], {}).get(name)
            if stored is None:
                raise ApiError(
                    400,
                    f"{where(i, name)} is missing: model {bundle.version} reads {name}, one value per "
                    "series, and has none stored for "
                    + (f"series {series[i]!r}" if series[i] else "a row without a series"),
                )
            (given if given is not None else numbers[name])[i] = stored
    return {
        SERIES_COLUMN: np.array(series, dtype=object),
        TIME_COLUMN: weeks,
        **numbers,
        **{name: np.array(values, dtype=object) for name, values in categories.items()},
    }


MAX_CATEGORY = 200  # characters of a category's value, as of a series' name


def category_problem(value: Any) -> str | None:
    """Why `value` is not a category's value (text, or a whole number), or None."""
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return "must be text, a category's value"
    if len(value) > MAX_CATEGORY:
        return f"must be at most {MAX_CATEGORY} characters, got {len(value)}"
    return None


def forecast_columns(bundle: Bundle, columns: dict[str, np.ndarray], where: Where) -> dict[str, Any]:
    """Bundle.forecast's answer for featured rows, with "filled" [n] lists of filled feature names and
    "extrapolated" [n] lists of features outside the training range; a 400 for a row with no last week."""
    from .stored_history import tails_with_store

    spec = bundle.spec
    sales = columns.pop(TARGET)
    tails, through = tails_with_store(bundle, columns[SERIES_COLUMN], columns[TIME_COLUMN])
    features = feature_matrix(spec, columns, sales=sales, tail_of=tails)
    lacking = np.flatnonzero(np.isnan(features.X[:, 0]))
    if len(lacking):
        i = int(lacking[0])
        name = columns[SERIES_COLUMN][i]
        raise ApiError(
            400,
            f"{where(i, LAG_1)} is missing, and model {bundle.version} has no stored week before this "
            "row's for "
            + (f"series {name!r}" if name else "a row without a series")
            + f": send {LAG_1} (last week's sales)",
        )
    series = list(columns[SERIES_COLUMN])
    out = bundle.forecast(features.X, series=series)
    patterns, codes = filled_patterns(spec, features.filled)
    out["filled"] = [patterns[code] for code in codes.tolist()]  # shared lists, one per pattern
    extrapolated: list[list[str]] = [[] for _ in range(len(features.X))]
    for i, names in bundle.extrapolated_names(out).items():
        extrapolated[i] = names
    if len(out["extrapolated_rows"]):
        metrics.EXTRAPOLATED.inc(len(out["extrapolated_rows"]))
    out["extrapolated"] = extrapolated
    out["series"] = series
    out["X"] = features.X
    out["history_through"] = through
    log_rows(bundle.version, series, columns[TIME_COLUMN], out, bundle.level)
    return out


def _head(bundle: Bundle, out: dict[str, Any]) -> dict[str, Any]:
    from .series import unknown_series

    return {
        "model_version": bundle.version,
        "interval_level": bundle.level,
        "features": list(bundle.spec.names),
        **unknown_series(out["series"], out["unknown_series"]),
        **({"history_through": out["history_through"]} if out.get("history_through") else {}),
    }


def predict_json(body: Any, bundle: Bundle, max_rows: int) -> bytes:
    """A parsed JSON body (instances, one instance, or columnar `inputs`) -> the answer's bytes."""
    from .columnar import REQUEST_KEYS, read_fields
    from .inputs import instances_from_body

    if isinstance(body, dict) and "inputs" in body:
        unknown = next((key for key in body if key not in REQUEST_KEYS), None)
        if unknown is not None:
            raise ApiError(400, f"{unknown[:40]!r} is not a key of a columnar body; it takes {', '.join(REQUEST_KEYS)}")
        inputs = body["inputs"]
        if not isinstance(inputs, dict) or not inputs:
            raise ApiError(400, "'inputs' must be an object of columns, one list per column")
        lengths = {key: len(values) if isinstance(values, list) else None for key, values in inputs.items()}
        bad = next((key for key, length in lengths.items() if length is None), None)
        if bad is not None:
            raise ApiError(400, f"inputs.{bad[:40]} must be a list")
        if len(set(lengths.values())) != 1:
            raise ApiError(
                400,
                "the columns of 'inputs' must have the same length, got "
                + ", ".join(f"{key[:40]}: {length}" for key, length in lengths.items()),
            )
        n = next(iter(lengths.values()))
        if not n:
            raise ApiError(400, "the columns of 'inputs' are empty: send at least one row")
        check_row_count(n, max_rows)
        rows = [dict(zip(inputs, values)) for values in zip(*inputs.values())]
        fields = read_fields(body["fields"], OUTPUT_COLUMNS) if "fields" in body else OUTPUT_COLUMNS
        levels = read_levels(body["levels"]) if "levels" in body else None
        check_interval_count(n, levels, max_rows)
        in_inputs = lambda i, key: f"inputs.{key}[{i}]" if key is not None else f"row {i} of inputs"  # noqa: E731
        out = forecast_columns(bundle, columns_from_rows(rows, bundle, in_inputs), in_inputs)
        return _columnar_answer(bundle, out, fields, levels)
    instances, prefix = instances_from_body(body)
    check_row_count(len(instances), max_rows)
    levels = read_levels(body["levels"]) if isinstance(body, dict) and "levels" in body else None
    check_interval_count(len(instances), levels, max_rows)

    def where(i: int, key: str | None) -> str:
        at = f"instances[{i}]" if prefix == "instances" else "body"
        return at if key is None else (f"{at}.{key}" if prefix == "instances" else key)

    columns = columns_from_rows(instances, bundle, where)
    out = forecast_columns(bundle, columns, where)
    metrics.ROWS_JSON.inc(len(instances))
    head = _head(bundle, out)
    rows = [
        {
            "units_sold": units,
            "units_sold_normalized": normalized,
            "interval": [low, high],
            "extrapolated": outside,
            "filled": filled,
        }
        for units, normalized, low, high, outside, filled in zip(
            out["units_sold"].tolist(),
            out["units_sold_normalized"].tolist(),
            out["low"].tolist(),
            out["high"].tolist(),
            out["extrapolated"],
            out["filled"],
        )
    ]
    if levels is not None:
        bounds = bundle.plan_intervals(out["units_sold"].reshape(-1, 1), levels)["intervals"]
        if bounds is None:
            head["notes"] = bundle.interval_notes(1)
        for i, row in enumerate(rows):
            row["intervals"] = (
                None
                if bounds is None
                else {level_key(level): [float(low[i, 0]), float(high[i, 0])] for level, (low, high) in bounds.items()}
            )
    head["predictions"] = rows
    return orjson.dumps(head)


def _columnar_answer(
    bundle: Bundle, out: dict[str, Any], fields: Sequence[str], levels: Sequence[float] | None
) -> bytes:
    metrics.ROWS_JSON.inc(len(out["units_sold"]))
    columns = dict(
        zip(
            OUTPUT_COLUMNS,
            [
                *(np.asarray(out[k], dtype=np.float64) for k in ("units_sold", "units_sold_normalized", "low", "high")),
                out["extrapolated"],
                out["filled"],
            ],
        )
    )
    head = _head(bundle, out)
    outputs: dict[str, Any] = {name: columns[name] for name in fields}
    if levels is not None:
        bounds = bundle.plan_intervals(out["units_sold"].reshape(-1, 1), levels)["intervals"]
        if bounds is None:
            head["notes"] = bundle.interval_notes(1)
            outputs["intervals"] = None
        else:
            outputs["intervals"] = {
                level_key(level): {
                    "low": np.ascontiguousarray(low[:, 0], dtype=np.float64),
                    "high": np.ascontiguousarray(high[:, 0], dtype=np.float64),
                }
                for level, (low, high) in bounds.items()
            }
    head["outputs"] = outputs
    return orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)


def predict_csv(raw: bytes, bundle: Bundle, max_rows: int) -> bytes:
    """A CSV body -> the CSV answer: the rows' series and week, the forecast columns and the filled features,
    as `demand predict` writes them for the same rows (pipeline.history_scoring.score_history_file)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from pipeline import tables
    from pipeline.errors import DataError
    from pipeline.schema import FORECAST_COLUMN, VERSION_COLUMN
    from pipeline.scoring import csv_table, rounded

    from .csv_api import SOURCE, check_cell_count

    spec = bundle.spec
    keys = row_keys(spec)
    if not raw.strip():
        raise ApiError(400, f"the CSV body is empty: send a header row naming {describe_row(spec)}, then the rows")
    try:
        header = tables.header_of_bytes(raw, SOURCE)
        check_cell_count(raw, len(header), max_rows)
        table, ragged = tables.read_csv(raw, SOURCE, header, header, numbers=(), threads=False)
    except DataError as err:
        raise ApiError(400, str(err)) from None
    if ragged.rows:
        number, cells, expected = sorted(ragged.rows, key=lambda r: r[0] or 0)[0]
        raise ApiError(400, f"{SOURCE}: line {number or '?'} has {cells} cell(s), the header has {expected}")
    if table.num_rows == 0:
        raise ApiError(400, "the CSV body has a header but no rows")
    check_row_count(table.num_rows, max_rows)
    read = [name for name in table.column_names if name in keys]
    values = {name: table.column(name).to_pylist() for name in read}
    rows: list[dict[str, Any]] = []
    for i in range(table.num_rows):
        row: dict[str, Any] = {}
        for name in read:
            cell = (values[name][i] or "").strip()
            if not cell:
                continue
            if keys[name] in (SERIES_COLUMN, TIME_COLUMN) or spec.vocabulary(keys[name]) is not None:
                row[name] = cell
            else:
                row[name] = tables.parse_number(cell)
        rows.append(row)
    where = lambda i, key: f"{SOURCE}: line {i + 2}" + (f", column {key!r}" if key else "")  # noqa: E731
    out = forecast_columns(bundle, columns_from_rows(rows, bundle, where), where)
    metrics.ROWS_CSV.inc(table.num_rows)
    answer = pa.table(
        {
            spec.series_column: values.get(spec.series_column, [""] * table.num_rows),
            spec.week_column: values.get(spec.week_column, [""] * table.num_rows),
            FORECAST_COLUMN: rounded(out["units_sold"]),
            LOW_COLUMN: rounded(out["low"]),
            HIGH_COLUMN: rounded(out["high"]),
            EXTRAPOLATED_COLUMN: [";".join(names) for names in out["extrapolated"]],
            "filled_features": [";".join(names) for names in out["filled"]],
            VERSION_COLUMN: [bundle.version] * table.num_rows,
        }
    )
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(csv_table(answer), sink)
    return sink.getvalue().to_pybytes()


PLAN_SERIES_KEYS = ("id", LAG_1, "history", "weeks")
MAX_HISTORY = 520  # weeks a plan's series may carry: ten years; the features read the last WINDOW_WEEKS


def read_feature_plan(
    body: Any, bundle: Bundle, max_horizon: int, max_rows: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[str, ArrayLike], np.ndarray, list[float]]:
    """A plan for a model of any spec: (ids, start windows, first weeks, known [S, H, k], static [S, s], lengths,
    levels); a 400 naming the first bad field.

        {"series": [{"id": "store-7", "week": "2026-01-05", "history": [41000, 39500, ...],
                     "store_size": 1200, "weeks": [{"price": 4.5, "display": 1}, ...]}], "levels": [0.8]}

    `week` (the card's week column) is the plan's first week; without it, the
    week after the series' stored history. `history` (recent weekly sales,
    oldest first) replaces the stored history; `prev_week_sales` is last
    week's sales. A series the model stored needs none of the three.
    """
    from .plans import plan_series

    spec = bundle.spec
    series, levels = plan_series(body, max_rows, "id and weeks")
    allowed = (*PLAN_SERIES_KEYS, spec.week_column, *spec.static)
    ids: list[str] = []
    prevs: list[float] = []
    histories: list[list[Any] | None] = []
    firsts: list[np.datetime64] = []
    statics: list[list[Any]] = []
    plans: list[list[Any]] = []
    seen: dict[str, int] = {}
    plain = None if spec.static else _plain_series(series, max_horizon)
    if plain is not None:  # every series is its id and its weeks, checked in a few C-level passes
        ids, plans = plain
        prevs, histories = [np.nan] * len(ids), [None] * len(ids)
        firsts, statics = [np.datetime64("NaT", "D")] * len(ids), [[] for _ in ids]
        series = []  # nothing left to walk
    for i, item in enumerate(series):
        where = f"series[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where} must be an object with id and weeks")
        bad = next((key for key in item if key not in allowed), None)
        if bad is not None:
            raise ApiError(400, f"{where}.{bad[:40]} is not a key of a plan's series; it takes {', '.join(allowed)}")
        ident = item.get("id")
        problem = series_problem(ident) if ident is not None else "is missing"
        if problem or not str(ident).strip():
            raise ApiError(400, f"{where}.id {problem or 'must not be empty'}")
        ident = str(ident).strip()
        if ident in seen:
            raise ApiError(400, f"{where}.id {ident!r} is the id of series[{seen[ident]}] too; ids must differ")
        seen[ident] = i
        ids.append(ident)
        prev = item.get(LAG_1)
        if prev is not None:
            problem = domain_problem(LAG_1, prev)
            if problem:
                raise ApiError(400, f"{where}.{LAG_1} {problem}")
        prevs.append(np.nan if prev is None else float(prev))
        history = item.get("history")
        if history is not None:
            if not isinstance(history, list) or not 0 < len(history) <= MAX_HISTORY:
                raise ApiError(400, f"{where}.history must be a list of 1 to {MAX_HISTORY} weekly sales, oldest first")
            for h, value in enumerate(history):
                problem = domain_problem(TARGET, value)
                if problem:
                    raise ApiError(400, f"{where}.history[{h}] {problem}")
        histories.append(history)
        first = week_value(item.get(spec.week_column))
        if first is None:
            raise ApiError(
                400, f"{where}.{spec.week_column} must be an ISO date like 2024-01-01, the plan's first week"
            )
        firsts.append(first)
        weeks = item.get("weeks")
        if not isinstance(weeks, list) or not weeks:
            raise ApiError(400, f"{where}.weeks must be a non-empty list of objects with {', '.join(spec.known)}")
        if len(weeks) > max_horizon:
            raise ApiError(
                413, f"{where}.weeks has {len(weeks)} weeks, more than the limit of {max_horizon} (DEMAND_MAX_HORIZON)"
            )
        plans.append(weeks)
        values: list[Any] = []
        for name in spec.static:
            value = item.get(name)
            if value is None:
                value = bundle.statics.get(ident, {}).get(name)
                if value is None:
                    raise ApiError(
                        400,
                        f"{where}.{name} is missing: model {bundle.version} reads {name}, one value "
                        f"per series, and has none stored for series {ident!r}",
                    )
            category = spec.vocabulary(name) is not None
            problem = category_problem(value) if category else domain_problem(name, value)
            if problem:
                raise ApiError(400, f"{where}.{name} {problem}")
            values.append(str(value).strip() if category else float(value))
        statics.append(values)
    lengths = np.array([len(p) for p in plans])
    rows = _known_values(list(chain.from_iterable(plans)), spec.known)  # every week of every series at once
    if rows is None:  # something is wrong: walk the weeks to name it
        for i, weeks in enumerate(plans):
            if _known_values(weeks, spec.known) is None:
                _check_weeks(weeks, f"series[{i}]", bundle)
    total = int(lengths.sum())
    if total > max_rows:
        raise ApiError(
            413, f"{total} series x weeks is more than the limit of {max_rows} per request (DEMAND_MAX_ROWS)"
        )
    check_interval_count(total, levels, max_rows)
    windows, stored_first, lacking = bundle.plan_start(ids, np.array(prevs), histories)
    if lacking.any():
        i = int(np.flatnonzero(lacking)[0])
        raise ApiError(
            400,
            f"series[{i}].{LAG_1} is missing, and model {bundle.version} has no stored weeks of series "
            f"{ids[i]!r}: send {LAG_1} (last week's sales) or history (recent weekly sales)",
        )
    first_weeks = np.where(np.isnat(np.array(firsts)), stored_first, np.array(firsts))
    H = int(lengths.max())
    known = np.zeros((len(ids), H, len(spec.known)), dtype=np.float32)
    if spec.known:
        known[np.arange(H) < lengths[:, None]] = rows  # series by series, week by week
    dates = first_weeks[:, None] + (7 * np.arange(H)).astype("timedelta64[D]")[None, :]
    static: dict[str, ArrayLike] = {name: [values[j] for values in statics] for j, name in enumerate(spec.static)}
    return ids, (windows if spec.history else windows[:, -1]), dates, known, static, lengths, levels


def _plain_series(series: list[Any], max_horizon: int) -> tuple[list[str], list[list[Any]]] | None:
    """(ids, weeks) of a plan whose every series is {"id": its name, "weeks": [...]} and nothing else, names
    trimmed, distinct and not too long, weeks lists of 1 to `max_horizon`; None for any other plan (walked
    series by series, to name what is wrong)."""
    try:
        if set(map(type, series)) != {dict} or set(map(len, series)) != {2}:
            return None
        ids, weeks = list(map(itemgetter("id"), series)), list(map(itemgetter("weeks"), series))
    except KeyError:
        return None
    if set(map(type, ids)) != {str} or set(map(type, weeks)) != {list}:
        return None
    lengths = list(map(len, weeks))
    if not 0 < min(lengths) <= max(lengths) <= max_horizon or max(map(len, ids)) > MAX_SERIES_NAME:
        return None
    if list(map(str.strip, ids)) != ids or min(map(len, ids)) == 0 or len(set(ids)) != len(ids):
        return None
    if has_control_character(ids):
        return None
    return ids, weeks


def _known_values(weeks: Sequence[Any], known: Sequence[str]) -> np.ndarray | None:
    """[weeks, len(known)] float64 of well-formed weeks, in a few C-level passes; None when any week is not."""
    try:
        if set(map(type, weeks)) != {dict} or set(map(len, weeks)) != {len(known)}:
            return None
        rows = np.empty((len(weeks), len(known)))
        for j, name in enumerate(known):  # a column at a time: one list, one pass of type checks
            column = list(map(itemgetter(name), weeks))
            if not set(map(type, column)) <= {int, float}:
                return None
            rows[:, j] = np.fromiter(column, dtype=np.float64, count=len(column))
    except (KeyError, OverflowError):
        return None
    low, high = np.array([domain_of(n)[0] for n in known]), np.array([domain_of(n)[1] for n in known])
    return rows if ((rows >= low) & (rows <= high)).all() else None  # NaN fails too


def _check_weeks(weeks: Sequence[Any], where: str, bundle: Bundle) -> NoReturn:
    """The 400 naming the first bad field of a plan's weeks."""
    spec = bundle.spec
    for h, week in enumerate(weeks):
        if not isinstance(week, dict):
            raise ApiError(400, f"{where}.weeks[{h}] must be an object with {', '.join(spec.known)}")
        extra = next((key for key in week if key not in spec.known), None)
        if extra is not None:
            raise ApiError(
                400,
                f"{where}.weeks[{h}].{extra[:40]} is not a known covariate of model "
                f"{bundle.version}; a plan's week takes {', '.join(spec.known) or 'nothing'}",
            )
        for name in spec.known:
            if name not in week:
                raise ApiError(
                    400,
                    f"{where}.weeks[{h}].{name} is missing: model {bundle.version} reads {name}, "
                    "known in advance for every week",
                )
            problem = domain_problem(name, week[name])
            if problem:
                raise ApiError(400, f"{where}.weeks[{h}].{name} {problem}")
    raise ApiError(400, f"{where}.weeks could not be read")


def plan_answer(
    bundle: Bundle,
    ids: Sequence[str],
    dates: np.ndarray,
    lengths: np.ndarray,
    levels: Sequence[float],
    out: dict[str, Any],
    texts: WeekTexts,
    through: dict[str, str] | None = None,
) -> bytes:
    """The /forecast answer for a model of any spec: per series and week, the week, the forecast, its
    intervals, what was outside the training range and what was filled (one shared list per pattern).
    `texts`: the numbers of the planned weeks (plan_json.week_texts)."""
    from .series import unknown_series

    spec = bundle.spec
    head = {
        "model_version": bundle.version,
        "levels": levels,
        "features": list(spec.names),
        **unknown_series(ids, out["unknown_series"]),
        **({"history_through": through} if through else {}),
    }
    notes = bundle.interval_notes(int(lengths.max()))
    if notes:
        head["notes"] = notes
    S, H = out["units_sold"].shape
    planned = weeks_planned(lengths, H)
    outside_names, outside_codes = flag_patterns(spec.names, out["outside"].reshape(S * H, -1)[planned])
    filled_names, filled_codes = flag_patterns(spec.fillable, out["filled"].reshape(S * H, -1)[planned])
    distinct, where = np.unique(dates.ravel()[planned], return_inverse=True)  # a plan's weeks are few
    names = [None if np.isnat(day) else str(day) for day in distinct.astype("datetime64[D]")]
    fields = [
        chosen_field(("step", "week"), (range(1, H + 1), names), (planned % H, where)),
        text_field("units_sold", texts.units),
        interval_field(levels, texts.intervals),
        chosen_field(("extrapolated", "filled"), (outside_names, filled_names), (outside_codes, filled_codes)),
    ]
    series = encoded_series(ids, lengths.tolist(), fields)
    return b"".join([orjson.dumps(head)[:-1], b',"series":[', series, b"]}"])
