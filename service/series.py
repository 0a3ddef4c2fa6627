"""Series names beside a request's features, in every format.

A model that learned each series' own level and response forecasts a row
better when the row names its series (`series` beside the features, a plan's
series `id`). A row without one, and a series the model never saw, is
forecast as a typical series; the answer lists the names the model did not
know (`unknown_series`), so a client can tell.
"""
import numpy as np

from pipeline.schema import MAX_SERIES_NAME, SERIES_COLUMN, series_problem

from .errors import ApiError

UNNAMED = ""  # a row that names no series: forecast as one the model never saw
MAX_UNKNOWN_SHOWN = 100  # names listed in `unknown_series`; `unknown_series_count` counts them all


def names_from_values(values, field_name):
    """[n] str array of series names from a list of JSON values (None: no name),
    or a 400 naming the first value that is not one (`field_name(i)` says where)."""
    if all(type(value) is str for value in values) and max(map(len, values), default=0) <= MAX_SERIES_NAME:
        return np.asarray(values, dtype=str) if values else np.empty(0, dtype=str)
    for i, value in enumerate(values):
        if value is not None:
            problem = series_problem(value)
            if problem:
                raise ApiError(400, f"{field_name(i)} {problem}")
    return np.asarray([UNNAMED if value is None else value for value in values], dtype=str)


def names_from_instances(instances, prefix):
    """The rows' series names, or None when no row names one."""
    values = [item.get(SERIES_COLUMN) for item in instances]
    if not any(value is not None for value in values):
        return None
    return names_from_values(values, lambda i: f"{prefix}[{i}].{SERIES_COLUMN}" if prefix == "instances"
                             else SERIES_COLUMN)


def unknown_series(bundle, names):
    """{"unknown_series": [...], "unknown_series_count": n} for the named series the model does not know; {} if none."""
    if names is None:
        return {}
    named = names[names != UNNAMED]
    unknown = np.unique(named[bundle.unknown_series(named)]) if len(named) else named
    if not len(unknown):
        return {}
    return {"unknown_series": unknown[:MAX_UNKNOWN_SHOWN].tolist(), "unknown_series_count": int(len(unknown))}
