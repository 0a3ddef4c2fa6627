"""Drift: how far what sells, the covariates it sells under, and the inputs served, have moved from what the
model trained on.

At training the card stores each input's reference distribution: the
training rows' deciles as bin edges and each bin's share. Later the same
bins are filled from the store's actuals over a trailing window, and the
population stability index compares the two: sum((a - e) * ln(a / e)) over
the bins. Above 0.2 the input is flagged, the usual threshold for a shift
worth acting on. The inputs the service is sent are counted into the same
bins as they are served (pipeline.store.served_inputs) and compared the same
way, per serving week.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .features import LAG_1, FeatureSpec
from .store import WEEK, actuals, reading, served_inputs

BINS = 10
FLAGGED = 0.2
FLOOR = 1e-4  # a bin's share, at least: an empty bin would make the index infinite


def reference_bins(values: np.ndarray) -> dict[str, list[float]]:
    """The deciles of `values` as inner bin edges, and the share of `values` in each bin."""
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1])) if len(finite) else np.array([])
    return {"edges": edges.tolist(), "shares": shares(edges, finite).tolist()}


def shares(edges: np.ndarray | list[float], values: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


def psi(reference: dict[str, list[float]], values: np.ndarray) -> float:
    return psi_of_shares(reference, shares(reference["edges"], values))


def psi_of_shares(reference: dict[str, list[float]], observed: np.ndarray) -> float:
    """The population stability index of `observed` shares of the reference's bins."""
    expected = np.maximum(np.asarray(reference["shares"]), FLOOR)
    actual = np.maximum(np.asarray(observed, dtype=np.float64), FLOOR)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def served_columns(card: dict[str, Any]) -> list[tuple[str, int, dict[str, list[float]]]]:
    """(input, its column in the model's features, its reference bins) of each input whose served values are
    counted: last week's sales (against the reference of what sold) and each numeric covariate."""
    reference = card.get("reference") or {}
    spec = FeatureSpec.from_json(card.get("features"))
    columns = []
    if spec.target_column in reference:
        columns.append((LAG_1, 0, reference[spec.target_column]))
    for name in (*spec.known, *spec.static):
        if name in reference and name in spec.names:
            columns.append((name, spec.names.index(name), reference[name]))
    return columns


def served_drift(engine: Engine, card: dict[str, Any], version: str, weeks: int) -> dict[str, Any]:
    """{"weeks", "through", "inputs": {name: {"psi", "count", "flagged"}}} of what `version` was served over the
    last `weeks` weeks it served in (pipeline.store.served_inputs)."""
    with reading(engine) as connection:
        through = connection.execute(
            select(func.max(served_inputs.c.week)).where(served_inputs.c.version == version)
        ).scalar()
        rows: Sequence[Any] = (
            connection.execute(
                select(served_inputs.c.input, served_inputs.c.bin, func.sum(served_inputs.c.count))
                .where(served_inputs.c.version == version, served_inputs.c.week > through - weeks * WEEK)
                .group_by(served_inputs.c.input, served_inputs.c.bin)
            ).all()
            if through is not None
            else []
        )
    counted: dict[str, dict[int, int]] = {}
    for name, bin_, count in rows:
        counted.setdefault(name, {})[int(bin_)] = int(count)
    inputs = {}
    for name, _, reference in served_columns(card):
        bins = counted.get(name)
        if not bins:
            continue
        counts = np.zeros(len(reference["shares"]))
        for bin_, count in bins.items():
            counts[min(bin_, len(counts) - 1)] += count
        index = psi_of_shares(reference, counts / counts.sum())
        inputs[name] = {"psi": index, "count": int(counts.sum()), "flagged": index > FLAGGED}
    return {"weeks": weeks, "through": through.isoformat() if through else None, "inputs": inputs}


def reference_of(spec: FeatureSpec, X: np.ndarray, y: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """The card's `reference`: the target and each numeric covariate a row of actuals carries."""
    columns = {spec.target_column: y}
    for name in (*spec.known, *spec.static):
        if name in spec.names:
            columns[name] = X[:, spec.names.index(name)]
    return {name: reference_bins(np.asarray(values, dtype=np.float64)) for name, values in columns.items()}


def input_drift(engine: Engine, card: dict[str, Any], weeks: int) -> dict[str, Any]:
    """{"weeks", "inputs": {name: {"psi", "count", "flagged"}}} over the last `weeks` weeks of actuals."""
    reference = card.get("reference") or {}
    spec = FeatureSpec.from_json(card.get("features"))
    with reading(engine) as connection:
        through = connection.execute(select(func.max(actuals.c.week))).scalar()
        rows = (
            connection.execute(
                select(actuals.c.units_sold, actuals.c.covariates).where(actuals.c.week > through - weeks * WEEK)
            ).all()
            if through is not None and reference
            else []
        )
    inputs = {}
    for name, bins in reference.items():
        if name == spec.target_column:
            values = np.array([row.units_sold for row in rows], dtype=np.float64)
        else:
            values = np.array([(row.covariates or {}).get(name, np.nan) for row in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            index = psi(bins, values)
            inputs[name] = {"psi": index, "count": int(len(values)), "flagged": index > FLAGGED}
    return {"weeks": weeks, "inputs": inputs}
