"""TF-Serving's columnar format of POST /predict: one list per feature in,
one list per output out.

    {"inputs": {"prev_week_sales": [76440, 20000], "discount_fraction": [63, 0], "weeks_to_next_holidays": [2, 3]},
     "fields": ["units_sold", "interval_low", "interval_high"], "levels": [0.8]}
    -> {"model_version": "v1", "interval_level": 0.9,
        "outputs": {"units_sold": [...], "interval_low": [...], "interval_high": [...],
                    "intervals": {"0.8": {"low": [...], "high": [...]}}}}

Without `fields` every column of OUTPUT_COLUMNS comes back; `intervals` only
with `levels` (null, with `notes`, for a model without per-step calibration).
The values are those of the row format (`instances`) for the same rows.

Columns are the cheap shape for large requests: no object per row on the way
in or out. A well-formed body is decoded by msgspec against the shape below in
one pass in C, each column straight to floats (`decode_columnar`), and the
answer is encoded from the numpy arrays directly. Any body that shape refuses
goes the general way (`read_columnar`), which names what is wrong; only a bad
body is walked value by value, to name the first bad one.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import orjson

from pipeline.calibrate import level_key
from pipeline.normalize import column_ranges
from pipeline.schema import (
    EXTRAPOLATED_COLUMN,
    FEATURES,
    HIGH_COLUMN,
    LOW_COLUMN,
    NORMALIZED_TENSOR,
    OUTPUT_TENSOR,
    SERIES_COLUMN,
    domain_problem,
    json_kind,
)

from .errors import ApiError
from .inputs import NUMBER_TYPES, check_domain, check_row_count, features_of, load_json
from .plans import read_levels
from .series import names_from_values

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from pipeline.bundle import Bundle

# What one row of the answer has, in this order; `fields` picks among them.
# The interval and extrapolated columns are named as in batch scoring's tables.
OUTPUT_COLUMNS = (OUTPUT_TENSOR, NORMALIZED_TENSOR, LOW_COLUMN, HIGH_COLUMN, EXTRAPOLATED_COLUMN)
FEATURE_LIST = ", ".join(FEATURES)
OUTPUT_LIST = ", ".join(OUTPUT_COLUMNS)


@dataclass
class ColumnarRequest:
    X: np.ndarray  # [rows, len(FEATURES)] float64, every value inside the domain
    ranges: tuple[np.ndarray, np.ndarray]  # column_ranges(X)
    fields: tuple[str, ...]  # the output columns asked for, in the order asked
    levels: list[float] | None  # interval levels for `intervals`; None: no `intervals`
    series: list[str] | None = None  # each row's series name ("" for none), when `inputs` has a series column


# What a columnar body may hold: a misspelt option ("field") is an error, not ignored.
REQUEST_KEYS = ("inputs", "fields", "levels")


def is_columnar(body: Any) -> bool:
    return isinstance(body, dict) and "inputs" in body


# The shape of a well-formed columnar body, for msgspec: every feature a list
# of JSON numbers (ints are widened; true, "7" and null are refused, where numpy
# would take them as 1, 7 and NaN), no other key. The options are kept as their
# JSON text and parsed as the general way parses them, so they read the same.
_INPUTS = msgspec.defstruct(
    "ColumnarInputs",
    [*((name, list[float]) for name in FEATURES), (SERIES_COLUMN, list[str] | msgspec.UnsetType, msgspec.UNSET)],
    forbid_unknown_fields=True,
)
_BODY = msgspec.defstruct(
    "ColumnarBody",
    [(REQUEST_KEYS[0], _INPUTS), *((key, msgspec.Raw, msgspec.UNSET) for key in REQUEST_KEYS[1:])],
    forbid_unknown_fields=True,
)
_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_BODY)  # a struct made at runtime: its fields are Any


def decode_columnar(raw: bytes, max_rows: int) -> ColumnarRequest | None:
    """A validated ColumnarRequest from the bytes of a well-formed columnar body, or
    None for any other body (read_columnar then says what is wrong with it).

    Checks what read_columnar checks, in the same order, with the same words.
    """
    try:
        body = _DECODER.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):  # not this shape, not JSON (bad UTF-8), too deep
        return None
    fields = OUTPUT_COLUMNS if body.fields is msgspec.UNSET else read_fields(load_json(bytes(body.fields)))
    levels = None if body.levels is msgspec.UNSET else read_levels(load_json(bytes(body.levels)))
    columns = tuple(getattr(body.inputs, name) for name in FEATURES)
    series = getattr(body.inputs, SERIES_COLUMN)
    del body
    check_lengths(columns, max_rows)
    X = np.array(columns, dtype=np.float64).T  # [features, rows] -> a [rows, features] view
    ranges = column_ranges(X)
    check_domain(X, lambda i, name: f"inputs.{name}[{i}]", ranges)
    return ColumnarRequest(
        X, ranges, fields, levels, None if series is msgspec.UNSET else series_column(series, len(X))
    )


def read_columnar(body: dict[str, Any], max_rows: int) -> ColumnarRequest:
    """A validated ColumnarRequest from a parsed body with `inputs`; ApiError names what is wrong."""
    if "instances" in body:
        raise ApiError(400, "send either 'instances' (one object per row) or 'inputs' (one list per feature), not both")
    unknown = next((key for key in body if key not in REQUEST_KEYS), None)
    if unknown is not None:
        raise ApiError(400, f"{unknown[:40]!r} is not a key of a columnar body; it takes {', '.join(REQUEST_KEYS)}")
    fields = read_fields(body["fields"]) if "fields" in body else OUTPUT_COLUMNS
    levels = read_levels(body["levels"]) if "levels" in body else None
    X, ranges = matrix_from_columns(body["inputs"], max_rows)
    series = body["inputs"].get(SERIES_COLUMN)
    return ColumnarRequest(X, ranges, fields, levels, None if series is None else series_column(series, len(X)))


def series_column(values: Any, rows: int) -> list[str]:
    """inputs.series: one name (or null) per row, checked."""
    if not isinstance(values, list):
        raise ApiError(400, f"inputs.{SERIES_COLUMN} must be a list of series names, got {json_kind(values)}")
    if len(values) != rows:
        raise ApiError(
            400,
            f"inputs.{SERIES_COLUMN} has {len(values)} names for {rows} rows; give one per row "
            "(null for a row of no particular series)",
        )
    return names_from_values(values, lambda i: f"inputs.{SERIES_COLUMN}[{i}]")


def read_fields(value: Any, outputs: Sequence[str] = OUTPUT_COLUMNS) -> tuple[str, ...]:
    listed = ", ".join(outputs)
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ApiError(400, f"fields must be a list of output names, some of {listed}")
    if not value:
        raise ApiError(400, f"fields is empty: name at least one of {listed}")
    for i, name in enumerate(value):
        if name not in outputs:
            raise ApiError(400, f"fields[{i}] {name[:40]!r} is not an output; the outputs are {listed}")
    if len(set(value)) != len(value):
        raise ApiError(400, "fields names an output twice")
    return tuple(value)


def matrix_from_columns(inputs: Any, max_rows: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """`inputs` {feature: [values]} -> (X [rows, features] float64, column ranges)."""
    if not isinstance(inputs, dict):
        raise ApiError(400, f"'inputs' must be an object with one list of numbers per feature: {FEATURE_LIST}")
    try:
        columns = features_of(inputs)
    except KeyError:
        missing = next(name for name in FEATURES if name not in inputs)
        raise ApiError(400, f"inputs.{missing} is missing") from None
    if len(inputs) != len(FEATURES) + (SERIES_COLUMN in inputs):
        unknown = next(name for name in inputs if name not in FEATURES and name != SERIES_COLUMN)
        raise ApiError(
            400,
            f"inputs.{unknown[:40]} is not a feature; the features are {FEATURE_LIST} "
            f"(and {SERIES_COLUMN}, the series' names)",
        )
    for name, column in zip(FEATURES, columns):
        if not isinstance(column, list):
            raise ApiError(400, f"inputs.{name} must be a list of numbers, got {json_kind(column)}")
    check_lengths(columns, max_rows)
    try:
        # numpy would take True as 1, "7" as 7 and null as NaN: only JSON numbers pass this.
        if not set(map(type, chain.from_iterable(columns))) <= NUMBER_TYPES:
            raise TypeError
        X = np.array(columns, dtype=np.float64).T  # [features, rows] -> a [rows, features] view
    except (TypeError, OverflowError, ValueError):
        raise _first_bad_value(columns) from None
    ranges = column_ranges(X)
    check_domain(X, lambda i, name: f"inputs.{name}[{i}]", ranges)
    return X, ranges


def check_lengths(columns: Sequence[Sized], max_rows: int) -> None:
    """400 unless the feature columns are one length and not empty; 413 past `max_rows`."""
    lengths = list(map(len, columns))
    if len(set(lengths)) > 1:
        raise ApiError(
            400,
            "the columns of inputs must have the same length, got "
            + ", ".join(f"{name}: {length}" for name, length in zip(FEATURES, lengths)),
        )
    if not lengths[0]:
        raise ApiError(400, "the columns of inputs are empty: send at least one row")
    check_row_count(lengths[0], max_rows)


def _first_bad_value(columns: Sequence[Sequence[Any]]) -> ApiError:
    """The 400 naming the first bad value in row order, as check_domain names one."""
    for i, values in enumerate(zip(*columns)):
        for name, value in zip(FEATURES, values):
            problem = domain_problem(name, value)
            if problem:
                return ApiError(400, f"inputs.{name}[{i}] {problem}")
    return ApiError(400, "inputs could not be read as numbers")


def columnar_json(
    head: dict[str, Any],
    bundle: Bundle,
    out: dict[str, Any],
    extrapolated: list[list[str]],
    request: ColumnarRequest,
) -> bytes:
    """The answer's bytes, from Bundle.forecast's `out` and the per-row `extrapolated` names.

    orjson writes the numpy arrays itself, in C; float32 forecasts are widened
    first, so each value is written as the row format writes it.
    """
    columns = dict(
        zip(
            OUTPUT_COLUMNS,
            [*map(_float64, (out["units_sold"], out["units_sold_normalized"], out["low"], out["high"])), extrapolated],
            strict=True,
        )
    )
    outputs = {name: columns[name] for name in request.fields}
    if request.levels is not None:
        bounds = bundle.plan_intervals(out["units_sold"].reshape(-1, 1), request.levels)["intervals"]
        if bounds is None:
            head["notes"] = bundle.interval_notes(1)
            outputs["intervals"] = None
        else:
            outputs["intervals"] = {
                level_key(level): {"low": _float64(low[:, 0]), "high": _float64(high[:, 0])}
                for level, (low, high) in bounds.items()
            }
    head["outputs"] = outputs
    return orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)


def _float64(values: ArrayLike) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)  # orjson writes only C-contiguous arrays
