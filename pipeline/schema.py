"""The data contract: feature names, their order, and the domain of each value.

One definition used by the CSV loader, the CLI and the prediction service, so a
value refused in one place is refused everywhere with the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

FEATURES = ("prev_week_sales", "discount_fraction", "weeks_to_next_holidays")
N_FEATURES = len(FEATURES)


def flagged_names(names: Sequence[str]) -> list[list[str]]:
    """The names each code flags (bit i: names[i]): 2**len(names) lists, shared by the rows of one code."""
    return [[name for i, name in enumerate(names) if code >> i & 1] for code in range(2 ** len(names))]


# The features outside the training range of a row of the chapter's three inputs, by its code.
OUTSIDE_NAMES = flagged_names(FEATURES)
TARGET = "units_sold"
TIME_COLUMN = "week"
SERIES_COLUMN = "series"

# The ONNX graph's tensors: one input of N_FEATURES columns in FEATURES order,
# the forecast in units, and the network's own output before it is turned
# back into units (see pipeline.export).
INPUT_TENSOR = "features"
OUTPUT_TENSOR = TARGET
NORMALIZED_TENSOR = f"{TARGET}_normalized"
# A model that learned each series' own level and response has a second
# input: per row, the index of its series in the model's list of the series it
# knows (pipeline.normalize.MinMaxStats.series), or UNKNOWN_SERIES for a series
# it never saw or a row that names none.
SERIES_TENSOR = "series_index"
UNKNOWN_SERIES = 0
OUTPUT_TENSORS = (OUTPUT_TENSOR, NORMALIZED_TENSOR)

# The columns batch scoring adds to a table of weeks (`demand predict`, and
# POST /predict with a CSV body). Named apart from TARGET, which a table of
# past weeks may hold as the actual sales.
FORECAST_COLUMN, LOW_COLUMN, HIGH_COLUMN = f"forecast_{TARGET}", "interval_low", "interval_high"
EXTRAPOLATED_COLUMN, VERSION_COLUMN = "extrapolated", "model_version"
FORECAST_COLUMNS = (FORECAST_COLUMN, LOW_COLUMN, HIGH_COLUMN, EXTRAPOLATED_COLUMN, VERSION_COLUMN)

# The model reads float32: a larger value would become infinity inside it.
FLOAT32_MAX = 3.4028234663852886e38

# name -> (lowest allowed, highest allowed, unit shown in messages)
DOMAIN = {
    "prev_week_sales": (0.0, FLOAT32_MAX, "units"),
    "discount_fraction": (0.0, 100.0, "percent"),
    "weeks_to_next_holidays": (0.0, FLOAT32_MAX, "weeks"),
    "units_sold": (0.0, FLOAT32_MAX, "units"),
}

# A declared covariate (a price, a temperature): any finite number.
COVARIATE_DOMAIN = (-FLOAT32_MAX, FLOAT32_MAX, "")


def domain_of(name: str) -> tuple[float, float, str]:
    """(lowest, highest, unit) of a column: the chapter's own, or any finite number for a covariate."""
    return DOMAIN.get(name, COVARIATE_DOMAIN)


def domain_problem(name: str, value: object) -> str | None:
    """Return why `value` is not a valid `name`, or None when it is valid.

    `value` may be anything a client sent: JSON booleans, strings and None are
    refused as "not a number" rather than coerced.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {describe_value(value)}"
    try:
        value = float(value)
    except OverflowError:
        return "must be a finite number, got an integer too large for a float"
    if math.isnan(value):
        return "must be a finite number, got NaN"
    if math.isinf(value):
        return f"must be a finite number, got {'-' if value < 0 else ''}infinity"
    low, high, unit = domain_of(name)
    if value < low:
        limit, shown = _apart(low, value)
        return f"must be >= {limit}{' ' + unit if unit else ''}, got {shown}"
    if value > high:
        limit, shown = _apart(high, value)
        return f"must be <= {limit}{' ' + unit if unit else ''}, got {shown}"
    return None


def _apart(limit: float, value: float) -> tuple[str, str]:
    """Both numbers short (`:g`), unless that rounds them alike ("must be <= 100, got 100" for 100.00000000000001)."""
    short = f"{limit:g}", f"{value:g}"
    return short if short[0] != short[1] else (repr(float(limit)), repr(float(value)))


# A series' name, wherever a row may give one (the series column of a file,
# `series` beside a request's features, a plan's series id): text of at most
# this many characters. A name the model does not know, and a row without one,
# is forecast as a series it never saw.
MAX_SERIES_NAME = 200
# The forecast log numbers a week by its run (a series' weeks of one request) times this plus its place in the
# run (pipeline.store.forecasts): a run, and so a plan's weeks per series, holds fewer.
RUN_WEEKS = 65536


# Never in a series' name: control characters, and whatever else breaks a line of text (str.splitlines).
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def series_problem(value: object) -> str | None:
    """Why `value` is not a series' name, or None when it is one: text without
    control characters, or a whole number (a store numbered 7 is the series
    "7" of a file). Names are trimmed of spaces where they are read."""
    if type(value) is int:  # not a bool
        value = str(value)
    if not isinstance(value, str):
        return f"must be text, the series' name, got {describe_value(value)}"
    if len(value) > MAX_SERIES_NAME:
        return f"must be at most {MAX_SERIES_NAME} characters, got {len(value)}"
    if CONTROL_CHARACTER.search(value.strip()):  # spaces around it are trimmed, as a file's
        return "must be a name without control characters (line breaks, tabs, NUL)"
    return None


def named_series_problem(value: object) -> str | None:
    """series_problem of a name that must be given: a blank one is a problem too (an actual's series, a plan's
    id)."""
    return series_problem(value) or (None if str(value).strip() else "must be a name, not blank")


def has_control_character(names: Sequence[str]) -> bool:
    """Whether any of the names holds a control character (one search over all of them)."""
    return CONTROL_CHARACTER.search("".join(names)) is not None


# What a parsed JSON value is, in JSON's words (a request body's values, or a data file's cells).
JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def json_kind(value: object) -> str:
    return JSON_KINDS.get(type(value), "a value")


def describe_value(value: object) -> str:
    """A value that is not a number, for an error message: the text itself, or its JSON kind."""
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"the text {shown!r}"
    return json_kind(value)
