"""Turning request bodies into a validated float32 feature matrix.

The fast path handles well-formed requests with a few vectorized checks; only
when something is wrong does a slow path walk the rows to name the first bad
field exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, cast

import numpy as np
import orjson

from pipeline.normalize import column_ranges
from pipeline.schema import DOMAIN, FEATURES, N_FEATURES, domain_problem

from .errors import ApiError

LOW = np.array([DOMAIN[f][0] for f in FEATURES])
HIGH = np.array([DOMAIN[f][1] for f in FEATURES])
NUMBER_TYPES = {int, float}
features_of = itemgetter(*FEATURES)


def require_json(content_type: str | None, also: Sequence[str] = ()) -> None:
    """415 unless the Content-Type header `content_type` says JSON (`also`: other types the route takes, for the message)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        accepted = " or ".join(("application/json", *also))
        raise ApiError(415, f"Content-Type must be {accepted}, got {media_type[:64] or 'none'}")


def require_identity_encoding(content_encoding: str | None) -> None:
    """415 for any Content-Encoding: no route decompresses, and an encoded body would be read as garbage."""
    if (content_encoding or "identity").strip().lower() != "identity":  # codings are case-insensitive (RFC 9110)
        given = cast(str, content_encoding)  # not None: None reads as identity
        raise ApiError(415, f"Content-Encoding {given[:64]!r} is not supported; send the body uncompressed")


# What a body may hold before it is parsed, so that memory stays bounded by
# the caps: 2.7 million empty objects fit in 8 MB and would cost 500 MB once
# parsed. (objects and lists, JSON tokens) per row: a row of /predict is one
# object and 7 tokens (3 keys, 3 values and a separator), a columnar row of
# /predict no container and 3 tokens (3 values, each with its separator), a
# row of a V2 tensor at most one list and 4 tokens, a week of a /forecast plan
# at most 3 (when it is a whole series: its object, its list of weeks and the
# week) and 12. The bounds leave room for a few extra fields.
ROW_BUDGET = {"instance": (1, 10), "columnar": (0, 4), "plan": (3, 16), "actual": (1, 32)}
SLACK = 1024


def parse_json(raw: bytes, max_rows: int, row: str | Sequence[str] = "instance") -> Any:
    """Parse strict JSON; NaN and Infinity literals are reported by field later.

    Bodies that would make more Python objects than `max_rows` rows of the
    kind `row` (ROW_BUDGET) need are refused before parsing, so memory stays
    bounded by the caps. `row` may be a tuple of the kinds a route accepts:
    the kind is unknown before parsing, so the largest budget applies.
    """
    check_token_count(raw, max_rows, row)
    return load_json(raw)


def load_json(raw: bytes) -> Any:
    """parse_json without the count, for a body already counted."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        fallback = err
    # Non-standard literals and huge integers: parse them so the field can be
    # named. Only UTF-8 text, as RFC 8259 wants and orjson reads: json.loads
    # would also take UTF-16, UTF-32 and encoded surrogates.
    try:
        text = bytes(raw).decode("utf-8")
        body = json.loads(text, parse_constant=lambda name: float(name.replace("Infinity", "inf")), parse_int=_integer)
    except (ValueError, RecursionError):
        raise ApiError(400, f"malformed JSON body: {fallback}") from None
    where = _unpaired_surrogate(body)
    if where is not None:
        raise ApiError(
            400, f"malformed JSON body: {where} holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text"
        )
    return body


MAX_INTEGER_DIGITS = 4000  # under Python's own limit; longer is no number a field takes


def _integer(digits: str) -> int | float:
    """A JSON integer; one too long for a float is infinity, as `1e400` is (and is named by its field)."""
    return int(digits) if len(digits) <= MAX_INTEGER_DIGITS else float("-inf" if digits.startswith("-") else "inf")


def _unpaired_surrogate(body: Any) -> str | None:
    """Where the first string holding an unpaired surrogate (`"\\ud800"`) is, as a JSON path, or None.

    json.loads keeps such escapes as they are, and no answer that echoes the
    string back (a series id, a request id) could be encoded.
    """
    stack: list[tuple[Any, str]] = [(body, "body")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                if not _is_text(key):
                    return f"a key in {where}"
                stack.append((item, f"{where}.{key}" if where != "body" else key))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, str) and not _is_text(value):
            return where
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def check_token_count(raw: bytes, max_rows: int, row: str | Sequence[str] = "instance") -> None:
    """413 for a body that would make more objects than `max_rows` rows need."""
    budgets = [ROW_BUDGET[kind] for kind in ((row,) if isinstance(row, str) else row)]
    containers_per_row, tokens_per_row = map(max, zip(*budgets))
    if len(raw) <= max(1, min(containers_per_row, tokens_per_row)) * max_rows + SLACK:
        return  # a token takes at least one byte: no count could pass its limit
    limit = tokens_per_row * max_rows + SLACK
    # Every key and value but the outermost follows one of these bytes
    # (inside strings they overcount, never undercount).
    containers = raw.count(b"{") + raw.count(b"[")
    tokens = containers + raw.count(b",") + raw.count(b":")
    if containers > containers_per_row * max_rows + SLACK or tokens > limit:
        raise ApiError(
            413,
            f"body holds about {tokens} JSON values in {containers} objects and lists, more than "
            f"{max_rows} rows need (DEMAND_MAX_ROWS)",
        )


# What a body of the row format may hold beside its rows: a misspelt option ("level") is an error, not ignored.
ROW_REQUEST_KEYS = ("instances", "levels")


def instances_from_body(body: Any) -> tuple[list[Any], str]:
    """`{"instances": [...]}` or a single instance object -> list of objects."""
    if isinstance(body, dict) and "instances" in body:
        unknown = next((key for key in body if key not in ROW_REQUEST_KEYS), None)
        if unknown is not None:
            raise ApiError(
                400, f"{unknown[:40]!r} is not a key of a body with instances; it takes {', '.join(ROW_REQUEST_KEYS)}"
            )
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ApiError(400, "'instances' must be a list of objects")
        if not instances:
            raise ApiError(400, "'instances' is empty: send at least one object")
        return instances, "instances"
    if isinstance(body, dict):
        return [body], "instance"
    raise ApiError(400, 'body must be a JSON object: {"instances": [{...}, ...]} or one instance object')


def check_row_count(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise ApiError(413, f"{rows} rows is more than the limit of {max_rows} per request (DEMAND_MAX_ROWS)")


def matrix_from_instances(
    instances: Sequence[Any], prefix: str, max_rows: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    check_row_count(len(instances), max_rows)
    try:
        rows = list(map(features_of, instances))  # C-level loops throughout: this is the hot path
        if not set(map(type, chain.from_iterable(rows))) <= NUMBER_TYPES:  # bool is not a number here
            raise TypeError
        X = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=N_FEATURES * len(rows)).reshape(
            -1, N_FEATURES
        )
    except (KeyError, TypeError, OverflowError, ValueError):
        raise _first_problem(instances, prefix) from None
    ranges = column_ranges(X)
    check_domain(X, lambda i, name: f"{prefix}[{i}].{name}" if prefix == "instances" else name, ranges)
    return X, ranges


def _first_problem(instances: Sequence[Any], prefix: str) -> ApiError:
    """The 400 that names the first bad field, walking the rows one by one."""
    for i, item in enumerate(instances):
        where = f"{prefix}[{i}]" if prefix == "instances" else "body"
        if not isinstance(item, dict):
            return ApiError(400, f"{where} must be an object with {', '.join(FEATURES)}")
        for name in FEATURES:
            field = f"{where}.{name}" if prefix == "instances" else name
            if name not in item:
                return ApiError(400, f"{field} is missing")
            problem = domain_problem(name, item[name])
            if problem:
                return ApiError(400, f"{field} {problem}")
    return ApiError(400, "instances could not be read as numbers")


def check_domain(X: np.ndarray, field_name: Callable[[int, str], str], ranges: tuple[np.ndarray, np.ndarray]) -> None:
    """Raise a 400 naming the first value outside the domain.

    `ranges` are the column (min, max) from column_ranges(): NaN propagates
    into them, so when they are inside the domain every value is.
    """
    mins, maxs = ranges
    if (mins >= LOW).all() and (maxs <= HIGH).all():  # ndarray methods: cheaper than np.all on tiny arrays
        return
    bad = ~np.isfinite(X) | (X < LOW) | (X > HIGH)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        problem = domain_problem(FEATURES[j], float(X[i, j]))
        raise ApiError(400, f"{field_name(int(i), FEATURES[j])} {problem}")
