"""`demand forecast`: a promotion plan from a CSV, forecast week by week offline.

The plan has one row per series and week: `series`, `week` (ISO date),
`discount_fraction` and `weeks_to_next_holidays`, and `prev_week_sales` on
each series' first week (blank or absent on the others, where the forecast of
the week before takes its place). The output has one row per series and week
with the forecast and the bounds of every interval.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomically
from .calibrate import level_key
from .errors import DataError
from .features import CHAPTER, FeatureSpec
from .schema import FEATURES, domain_problem
from .tables import parse_number

# A week of a plan: (week, line, prev_week_sales or None, planned covariates, static covariates).
_PlanWeek = tuple[dt.date, int, float | str | None, list[float | str], list[Any]]


def read_plan(
    path: str | os.PathLike[str],
    max_horizon: int | None = None,
    spec: FeatureSpec = CHAPTER,
    stored: Collection[str] = (),
    statics: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """{"ids", "weeks_of" (ISO dates per series), "prev_week_sales" [S] (NaN: from the stored history),
    "features" [S, H, len(spec.known)], "weeks" [S], "static" {covariate: [S] its number or category}}.

    The plan's columns are named as the model's card records (spec's series,
    week and covariate names). A series in `stored` (one whose weeks the
    model's version stored) needs no prev_week_sales; its static covariates
    default to `statics` {series: {covariate: value}}.
    """
    PLANNED = spec.known
    SERIES_COLUMN, TIME_COLUMN = spec.series_column, spec.week_column
    REQUIRED = (SERIES_COLUMN, TIME_COLUMN, *PLANNED)
    statics = statics or {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the plan: {getattr(err, 'strerror', None) or err}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {', '.join(missing)}; the header has "
            f"{', '.join(header) if header else 'nothing'}"
        )
    plans: dict[str, list[_PlanWeek]] = {}
    problems: list[str] = []
    for line, record in enumerate(reader, start=2):

        def bad(column, problem):
            problems.append(f"{path}: line {line}, column {column!r}: {problem}")

        name = (record.get(SERIES_COLUMN) or "").strip()
        if not name:
            bad(SERIES_COLUMN, "is empty")
            continue
        try:
            week = dt.date.fromisoformat((record.get(TIME_COLUMN) or "").strip())
        except ValueError:
            bad(TIME_COLUMN, f"must be an ISO date like 2024-01-01, got {record.get(TIME_COLUMN)!r}")
            continue
        values = []
        for column in PLANNED:
            value = parse_number((record.get(column) or "").strip())
            problem = "is empty" if value == "" else domain_problem(column, value)
            if problem:
                bad(column, problem)
            values.append(value)
        prev_cell = (record.get(FEATURES[0]) or "").strip()
        prev = None
        if prev_cell:
            prev = parse_number(prev_cell)
            problem = domain_problem(FEATURES[0], prev)
            if problem:
                bad(FEATURES[0], problem)
        static = []
        for column in spec.static:
            cell = (record.get(column) or "").strip()
            category = spec.vocabulary(column) is not None
            value = (cell if category else parse_number(cell)) if cell else statics.get(name, {}).get(column, "")
            problem = (
                f"is empty, and the model has no value stored for series {name!r}"
                if value == ""
                else None
                if category
                else domain_problem(column, value)
            )
            if problem:
                bad(column, problem)
            static.append(value)
        plans.setdefault(name, []).append((week, line, prev, values, static))
    for name, weeks in plans.items():
        weeks.sort(key=lambda w: w[0])
        first_week, first_line, prev = weeks[0][:3]
        if prev is None and name not in stored:
            problems.append(
                f"{path}: line {first_line}, column {FEATURES[0]!r}: series {name!r} starts in week "
                f"{first_week} and needs prev_week_sales there"
            )
        dates = [w[0] for w in weeks]
        if len(set(dates)) != len(dates):
            problems.append(f"{path}: series {name!r} has a week twice")
        else:  # each week's forecast is the next week's prev_week_sales: a gap would be forecast as the next week
            gap = next(((a, b) for a, b in zip(weeks, weeks[1:]) if (b[0] - a[0]).days != 7), None)
            if gap:
                problems.append(
                    f"{path}: line {gap[1][1]}: series {name!r} goes from week {gap[0][0]} to {gap[1][0]}; "
                    "its weeks must follow one another, 7 days apart"
                )
        given_later = next((w for w in weeks[1:] if w[2] is not None), None)
        if given_later:
            problems.append(
                f"{path}: line {given_later[1]}, column {FEATURES[0]!r}: series {name!r} gives it in week "
                f"{given_later[0]}, after its first; only the first week takes it (the forecast of the week "
                "before stands in for it on the others): leave it blank"
            )
        if max_horizon and len(weeks) > max_horizon:
            problems.append(f"{path}: series {name!r} has {len(weeks)} weeks, more than {max_horizon}")
    if not plans and not problems:
        problems.append(f"{path}: the plan has no rows")
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{path}: plan refused:\n  {shown}{more}")
    ids = list(plans)
    counts = np.array([len(plans[name]) for name in ids])
    features = np.zeros((len(ids), int(counts.max()), len(PLANNED)), dtype=np.float32)
    for s, name in enumerate(ids):
        features[s, : counts[s]] = np.array([w[3] for w in plans[name]], dtype=np.float32).reshape(counts[s], -1)
    first_prev = [plans[name][0][2] for name in ids]
    return {
        "ids": ids,
        "weeks_of": [[str(w[0]) for w in plans[name]] for name in ids],
        "prev_week_sales": np.array([np.nan if v is None else v for v in first_prev], dtype=np.float64),
        "features": features,
        "weeks": counts,
        "static": {column: [plans[name][0][4][j] for name in ids] for j, column in enumerate(spec.static)},
    }


def write_forecasts(
    path: str | os.PathLike[str],
    plan: Mapping[str, Any],
    out: Mapping[str, Any],
    levels: Sequence[float],
    spec: FeatureSpec = CHAPTER,
) -> int:
    """One row per series and week: the forecast, every interval's bounds, and the extrapolated features
    (and, for a model that reads history or the calendar, the features filled for lack of weeks)."""
    keys = [level_key(level) for level in levels]
    columns = ["series", "week", "step", "units_sold"]
    columns += [f"{side}_{key}" for key in keys for side in ("low", "high")] + ["extrapolated"]
    if spec.fillable:
        columns.append("filled_features")
    return write_atomically(path, lambda partial: _write_rows(partial, columns, plan, out, levels, spec))


def _write_rows(
    path: Path,
    columns: list[str],
    plan: Mapping[str, Any],
    out: Mapping[str, Any],
    levels: Sequence[float],
    spec: FeatureSpec,
) -> int:
    count = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # as demand predict writes its lines
        writer.writerow(columns)
        for s, name in enumerate(plan["ids"]):
            for h, week in enumerate(plan["weeks_of"][s]):
                bounds = []
                for level in levels:
                    if out["intervals"] is None:
                        bounds += ["", ""]
                    else:
                        low, high = out["intervals"][level]
                        bounds += [repr(float(low[s, h])), repr(float(high[s, h]))]
                outside = ";".join(f for f, flag in zip(spec.names, out["outside"][s, h]) if flag)
                filled = (
                    [";".join(f for f, flag in zip(spec.fillable, out["filled"][s, h]) if flag)]
                    if spec.fillable
                    else []
                )
                writer.writerow([name, week, h + 1, repr(float(out["units_sold"][s, h])), *bounds, outside, *filled])
                count += 1
    return count


def forecast_plan_file(
    plan_path: str | os.PathLike[str], output_path: str | os.PathLike[str], bundle: Any, levels: Sequence[float]
) -> dict[str, Any]:
    """`demand forecast` of one plan file: {"rows", "series", "notes", "unknown" (names)}."""
    import numpy as np

    spec = bundle.spec
    plan = read_plan(plan_path, spec=spec, stored=bundle.tails if spec.history else (), statics=bundle.statics)
    start = plan["prev_week_sales"]
    if spec.history:  # each series continues from the weeks its version stored
        start, _, _ = bundle.plan_start(plan["ids"], start)
    longest = int(plan["weeks"].max())
    dates = np.array(
        [[np.datetime64(w, "D") for w in weeks] + [np.datetime64("NaT", "D")] * (longest - len(weeks))
         for weeks in plan["weeks_of"]]
    )  # fmt: skip
    out = bundle.forecast_plan(start, plan["features"], plan["weeks"], levels, plan["ids"], dates, plan["static"])
    rows = write_forecasts(output_path, plan, out, levels, spec)
    return {
        "rows": rows,
        "series": len(plan["ids"]),
        "notes": bundle.interval_notes(longest),
        "unknown": [plan["ids"][i] for i in out["unknown_series"]],
    }
