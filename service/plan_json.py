"""A plan's series as JSON, encoded from texts rather than from a dict per week.

orjson writes each column of numbers once (one list of floats), and each week
is one %-format of a template whose keys are the same for the whole answer:
a third of the time of building a dict per week, and one per interval, for
orjson to walk. The answer is the same JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from pipeline.calibrate import level_key

# Fields of each week: their JSON with a %b for each text, and those texts (one list per %b, one text per week:
# series after series, each series' weeks in order).
Field = tuple[bytes, list[list[bytes]]]

# Categories whose combinations are numbered densely (their product); past it, found by sorting.
DENSE_COMBINATIONS = 1 << 16


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


def text_field(key: str, texts: list[bytes]) -> Field:
    """A field whose value is one text a week."""
    return (orjson.dumps(key) + b":%b", [texts])


def chosen_field(keys: Sequence[str], choices: Sequence[Sequence[Any]], codes: Sequence[np.ndarray]) -> Field:
    """Fields whose values are picked from a few choices each (keys[i]'s value of a week is
    choices[i][codes[i][week]]) as one text a week: each combination that occurs is encoded once."""
    encoded = [[orjson.dumps(key) + b":" + orjson.dumps(c) for c in options] for key, options in zip(keys, choices)]
    sizes = [max(len(options), 1) for options in encoded]
    combination = np.ravel_multi_index([np.asarray(code, dtype=np.intp) for code in codes], sizes)
    dense = np.prod(sizes, dtype=np.float64) <= DENSE_COMBINATIONS  # numbered as they are: no sort
    if dense:
        occurring, slot = np.flatnonzero(np.bincount(combination, minlength=1)), combination
    else:
        occurring, slot = np.unique(combination, return_inverse=True)
    table = np.empty(int(np.prod(sizes)) if dense else len(occurring), dtype=object)
    table[occurring if dense else slice(None)] = [
        b",".join(options[pick] for options, pick in zip(encoded, picks))
        for picks in zip(*np.unravel_index(occurring, sizes))
    ]
    return (b"%b", [table[slot.ravel()].tolist()])


class WeekTexts(NamedTuple):
    """The numbers of a plan's weeks as JSON texts, one per week (weeks_planned): the forecast, and each
    level's "low,high" (None without intervals). The answer and the forecast log are written from the same."""

    units: list[bytes]
    intervals: list[list[bytes]] | None


def week_texts(
    units: np.ndarray,
    bounds: Mapping[float, tuple[np.ndarray, np.ndarray]] | None,
    levels: Sequence[float],
    at: np.ndarray,
) -> WeekTexts:
    """The WeekTexts of the weeks at flat indices `at` of forecasts [S, H] and each level's (low, high) [S, H]."""
    if bounds is None:
        return WeekTexts(number_texts(units.ravel()[at]), None)
    pairs = [np.stack([low.ravel()[at], high.ravel()[at]], axis=-1) for low, high in (bounds[lv] for lv in levels)]
    return WeekTexts(number_texts(units.ravel()[at]), [rows_of_json(pair, 1) for pair in pairs])


def interval_field(levels: Sequence[float], intervals: list[list[bytes]] | None) -> Field:
    """ "intervals": {level: [low, high]} per week, from each level's "low,high" texts (WeekTexts), or null."""
    if intervals is None:
        return (b'"intervals":null', [])
    part = b",".join(orjson.dumps(level_key(level)) + b":[%b]" for level in levels)
    return (b'"intervals":{' + part + b"}", intervals)


def series_lists(
    texts: list[bytes], lengths: Sequence[int], opening: bytes, between: bytes, closing: bytes
) -> list[str]:
    """Each series' weeks (`lengths`, at least one each, series after series) as one text: `opening`, its weeks'
    `texts` joined by `between`, `closing`. One join for all, cut where the series meet (no text holds a
    line break: they are numbers)."""
    if not texts:
        return []
    after = [between] * len(texts)
    for end in np.cumsum(np.asarray(lengths, dtype=np.int64)).tolist():
        after[end - 1] = closing + b"\n" + opening
    pieces: list[bytes] = [b""] * (2 * len(texts))
    pieces[0::2] = texts
    pieces[1::2] = after
    return (opening + b"".join(pieces)).decode()[: -len(opening) - 1].split("\n")


def run_lists(texts: WeekTexts, lengths: Sequence[int], levels: Sequence[float]) -> tuple[list[str], list[str] | None]:
    """(each series' forecasts as a JSON list, its intervals as JSON {level: [[low, high] per week]} or None)
    of a plan's WeekTexts: what the forecast log keeps of each series (pipeline.store.forecast_runs)."""
    units = series_lists(texts.units, lengths, b"[", b",", b"]")
    if texts.intervals is None:
        return units, None
    sides = [series_lists(pairs, lengths, b"[[", b"],[", b"]]") for pairs in texts.intervals]
    template = "{" + ",".join(orjson.dumps(level_key(level)).decode() + ":%s" for level in levels) + "}"
    return units, [template % lists for lists in zip(*sides)]


def rows_of_json(values: np.ndarray, depth: int) -> list[bytes]:
    """The JSON of each row of `values` [n, ...] (`depth` dimensions below the rows; numbers as doubles, null
    for NaN), without the row's own outer brackets: one orjson call for all, cut where the rows meet."""
    if not len(values):
        return []
    text = orjson.dumps(np.ascontiguousarray(values, dtype=np.float64), option=orjson.OPT_SERIALIZE_NUMPY)
    return text[depth + 1 : -(depth + 1)].split(b"]" * depth + b",[" + b"[" * (depth - 1))


def encoded_series(ids: Sequence[str], lengths: Sequence[int], fields: Sequence[Field]) -> bytes:
    """The series' objects {"id": ..., "weeks": [...]}, comma-separated (no brackets), each series' weeks
    (`lengths`, at least one each) of the fields' texts in turn.

    A series' first week opens the series' object before its own, and its last closes it after: the
    answer is one join of the weeks."""
    weeks = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(weeks)
    if len(ends) and int(np.min(weeks)) < 1:
        raise ValueError("every series of a plan has a week")
    opening = np.full(int(ends[-1]) if len(ends) else 0, b"{", dtype=object)
    opening[ends - weeks] = [b'{"id":%b,"weeks":[{' % orjson.dumps(ident) for ident in ids]
    closing = np.full(len(opening), b"}", dtype=object)
    closing[ends - 1] = b"}]}"
    template = b"%b" + b",".join(part for part, _ in fields) + b"%b"
    columns = [opening.tolist(), *(texts for _, lists in fields for texts in lists), closing.tolist()]
    return b",".join([template % week for week in zip(*columns)])
