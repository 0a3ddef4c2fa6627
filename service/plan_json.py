"""A plan's series as JSON, encoded from texts rather than from a dict per week.

orjson writes each column of numbers once (one list of floats), and each week
is one %-format of a template whose keys are the same for the whole answer:
a third of the time of building a dict per week, and one per interval, for
orjson to walk. The answer is the same JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from pipeline.calibrate import level_key

SERIES_TEMPLATE = b'{"id":%b,"weeks":[%b]}'

# A field of each week: its key, its value's JSON with a %b for each text, and those texts (one list per %b,
# one text per week: series after series, each series' weeks in order).
Field = tuple[str, bytes, list[list[bytes]]]


def weeks_planned(lengths: np.ndarray, horizon: int) -> np.ndarray:
    """The flat indices, into [S, horizon] arrays, of each series' weeks (lengths [S]), series after series."""
    return np.flatnonzero((np.arange(horizon)[None, :] < np.asarray(lengths)[:, None]).ravel())


def number_texts(values: np.ndarray) -> list[bytes]:
    """Each number of `values` [n] as orjson writes it (null for NaN), as a double: float32 forecasts read as
    their float values do (orjson writes a float32 array in float32's own shortest digits)."""
    if not len(values):
        return []
    doubles = np.ascontiguousarray(values, dtype=np.float64)
    return orjson.dumps(doubles, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def chosen_texts(choices: Sequence[Any], codes: np.ndarray) -> list[bytes]:
    """For each of `codes` [n], the JSON of choices[code] (each choice encoded once)."""
    texts = np.array([orjson.dumps(choice) for choice in choices] or [b""], dtype=object)
    return texts[np.asarray(codes, dtype=np.intp)].tolist()


def step_texts(planned: np.ndarray, horizon: int) -> list[bytes]:
    """Each planned week's step (1 for the first week), from weeks_planned()."""
    return chosen_texts(range(1, horizon + 1), planned % horizon)


def text_field(key: str, texts: list[bytes]) -> Field:
    """A field whose value is one text a week."""
    return (key, b"%b", [texts])


def interval_field(
    levels: Sequence[float], bounds: Mapping[float, tuple[np.ndarray, np.ndarray]] | None, at: np.ndarray
) -> Field:
    """ "intervals": {level: [low, high]} per week, the weeks at flat indices `at` of each level's (low, high)
    [S, H] (weeks_planned()), or null without them."""
    if bounds is None:
        return ("intervals", b"null", [])
    part = b",".join(orjson.dumps(level_key(level)) + b":[%b,%b]" for level in levels)
    sides = [number_texts(side.ravel()[at]) for level in levels for side in bounds[level]]
    return ("intervals", b"{" + part + b"}", sides)


def encoded_series(ids: Sequence[str], lengths: Sequence[int], fields: Sequence[Field]) -> bytes:
    """The series' objects {"id": ..., "weeks": [...]}, comma-separated (no brackets), each series' weeks
    `lengths` of the fields' texts in turn."""
    template = b"{" + b",".join(orjson.dumps(key) + b":" + part for key, part, _ in fields) + b"}"
    columns = [texts for _, _, lists in fields for texts in lists]
    weeks = [template % row for row in zip(*columns)]
    series, at = [], 0
    for ident, n in zip(ids, lengths):
        series.append(SERIES_TEMPLATE % (orjson.dumps(ident), b",".join(weeks[at : at + n])))
        at += n
    return b",".join(series)
