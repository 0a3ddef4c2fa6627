"""Series names beside a request's features, in every format.

A model that learned each series' own level and response forecasts a row
better when the row names its series (`series` beside the features, a plan's
series `id`). A row without one, and a series the model never saw, is
forecast as a typical series; the answer lists the names the model did not
know (`unknown_series`), so a client can tell. A model that tells no series
apart ignores the names, as it always did.

Names are kept as Python strings, never as a fixed-width numpy array: one
long name among 200,000 would make every row that long.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from pipeline.schema import MAX_SERIES_NAME, SERIES_COLUMN, has_control_character, series_problem

from .errors import ApiError

if TYPE_CHECKING:
    import numpy as np

UNNAMED = ""  # a row that names no series: forecast as one the model never saw
MAX_UNKNOWN_SHOWN = 100  # names listed in `unknown_series`; `unknown_series_count` counts them all


def names_from_values(values: Sequence[Any], field_name: Callable[[int], str]) -> list[str]:
    """A list of series names from JSON values (text, a whole number, or null for
    none), trimmed as a file's are; or a 400 naming the first value that is not
    one (`field_name(i)` says where)."""
    if (
        all(type(value) is str for value in values)
        and max(map(len, values), default=0) <= MAX_SERIES_NAME
        and not has_control_character(values)
    ):
        return list(map(str.strip, values))
    names: list[str] = []
    for i, value in enumerate(values):
        if value is None:
            names.append(UNNAMED)
            continue
        problem = series_problem(value)
        if problem:
            raise ApiError(400, f"{field_name(i)} {problem}")
        names.append(str(value).strip())
    return names


def names_from_instances(instances: Sequence[dict[str, Any]], prefix: str) -> list[str] | None:
    """The rows' series names, or None when no row names one."""
    values = [item.get(SERIES_COLUMN) for item in instances]
    if not any(value is not None for value in values):
        return None
    return names_from_values(
        values, lambda i: f"{prefix}[{i}].{SERIES_COLUMN}" if prefix == "instances" else SERIES_COLUMN
    )


def unknown_series(names: Sequence[str] | None, rows: np.ndarray) -> dict[str, Any]:
    """{"unknown_series": [...], "unknown_series_count": n} for the rows of `names` that name a series
    the model does not know (Bundle.unknown_series); {} if none."""
    if not len(rows):
        return {}
    named = cast("Sequence[str]", names)  # rows of unknown series exist only where rows were named
    unknown = sorted({named[i] for i in rows.tolist()})
    return {"unknown_series": unknown[:MAX_UNKNOWN_SHOWN], "unknown_series_count": len(unknown)}
