"""Min-max normalization statistics, fitted on the training window only.

With transform "log1p" the features and the target are first mapped through
log(1 + v): sales are multiplicative (a discount lifts sales by a percentage),
and on the log scale a store selling 10,000 units and one selling 300,000 get
the same relative accuracy. Min-max scaling then applies to the log values.
The raw training range is kept as well, to flag forecasts outside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .schema import FEATURES, TARGET, UNKNOWN_SERIES

if TYPE_CHECKING:
    import pyarrow as pa

    from .features import FeatureSpec

TRANSFORMS = ("none", "log1p")
# How far past its training range, in widths of that range, a model's input
# and forecast may go (on the model's scale): a feature beyond it is held at
# the bound, and so is the forecast, which never goes below zero units either.
# The candidates' GELU units extrapolate about linearly rather than
# saturating, so without a bound an absurd input (1e38 weeks to a holiday)
# gives an absurd or infinite forecast; within it, a store twice the size of
# any seen still gets the network's extrapolation.
EXTRAPOLATION_RANGES = 1.0
NORMALIZED_BOUNDS = (-EXTRAPOLATION_RANGES, 1.0 + EXTRAPOLATION_RANGES)  # after min-max scaling


def dictionary_coded(names: object) -> pa.DictionaryArray | None:
    """`names` when they are a pyarrow dictionary array (a file's column: each distinct name once), else None."""
    import pyarrow as pa

    return names if isinstance(names, pa.DictionaryArray) else None


ROWS_A_BLOCK = 64  # column_ranges: rows reduced side by side


def column_ranges(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (min, max) of a 2-D array; NaN anywhere in a column shows in both.

    Large arrays are reduced as blocks of ROWS_A_BLOCK rows laid end to end:
    numpy reduces a narrow array's axis 0 a row at a time, and a strided
    column a cell at a time, while a wide row is reduced in vector registers.
    """
    X = np.asarray(X)
    if len(X) == 1:
        return X[0], X[0]
    if len(X) < 256 or X.ndim != 2 or not X.shape[1]:
        return X.min(axis=0), X.max(axis=0)
    X = np.ascontiguousarray(X)
    k = X.shape[1]
    blocks = len(X) // ROWS_A_BLOCK * ROWS_A_BLOCK
    wide = X[:blocks].reshape(-1, ROWS_A_BLOCK * k)
    low = np.minimum.reduce(wide, axis=0).reshape(ROWS_A_BLOCK, k).min(axis=0)
    high = np.maximum.reduce(wide, axis=0).reshape(ROWS_A_BLOCK, k).max(axis=0)
    rest = X[blocks:]
    if len(rest):
        low, high = np.minimum(low, rest.min(axis=0)), np.maximum(high, rest.max(axis=0))
    return low, high


def _forward(values: np.ndarray, transform: str, logged: Sequence[bool] | None = None) -> np.ndarray:
    """`values` through the transform; for features, only the columns `logged` marks ([k] bools, None: all)."""
    values = np.asarray(values, dtype=float)
    if transform != "log1p":
        return values
    if logged is None or all(logged):
        return np.log1p(values)
    out = values.copy()
    columns = np.flatnonzero(logged)
    out[..., columns] = np.log1p(values[..., columns])
    return out


@dataclass(frozen=True)
class MinMaxStats:
    x_min: tuple[float, ...]  # per feature, after the transform
    x_max: tuple[float, ...]
    y_min: float  # target, after the transform
    y_max: float
    raw_x_min: tuple[float, ...]  # per feature, raw units: the training range
    raw_x_max: tuple[float, ...]
    transform: str = "none"
    # The series the training rows named, sorted: series i is the model's
    # index i + 1 (0 is UNKNOWN_SERIES). Empty for a model that does not tell
    # series apart.
    series: tuple[str, ...] = ()
    names: tuple[str, ...] = FEATURES  # the features, in the order of X's columns
    logged: tuple[bool, ...] = ()  # per feature, whether transform log1p applies to it (empty: to every one)

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        transform: str = "none",
        series: np.ndarray | None = None,
        spec: FeatureSpec | None = None,
    ) -> MinMaxStats:
        """`spec` (pipeline.features.FeatureSpec) names X's columns; without it they are FEATURES."""
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        names = FEATURES if spec is None else spec.names
        logged = () if spec is None or all(spec.logged()) else spec.logged()
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        tX, ty = _forward(X, transform, logged or None), _forward(y, transform)
        return cls(
            tuple(float(v) for v in tX.min(axis=0)),
            tuple(float(v) for v in tX.max(axis=0)),
            float(ty.min()),
            float(ty.max()),
            tuple(float(v) for v in X.min(axis=0)),
            tuple(float(v) for v in X.max(axis=0)),
            transform,
            # A blank name is no series: its rows train the unknown row, as a request naming none is served.
            () if series is None else tuple(str(name) for name in np.unique(series) if name != ""),
            tuple(names),
            tuple(logged),
        )

    @property
    def log_columns(self) -> tuple[bool, ...]:
        """[k] bools: the features transform log1p applies to."""
        return tuple(self.logged) or (True,) * len(self.names)

    def series_codes(self, names: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray | None) -> np.ndarray | None:
        """[n] int64 model indices of series `names` (a sequence of str, or a
        pyarrow string array): UNKNOWN_SERIES for a name the model does not
        know or a blank one; None when `names` is None.

        Looked up name by name, never widened into a fixed-width array: one
        long name among 200,000 would make every row that long.
        """
        if names is None:
            return None
        if not self.series:
            return np.full(len(names), UNKNOWN_SERIES, dtype=np.int64)
        if type(names).__module__.startswith("pyarrow"):  # a file's column, in C
            import pyarrow.compute as pc

            coded = dictionary_coded(names)
            if coded is not None:  # each distinct name looked up once
                codes = cast(np.ndarray, self.series_codes(coded.dictionary))
                return np.take(codes, coded.indices.to_numpy(zero_copy_only=False))
            at = pc.index_in(names, value_set=self._series_text)
            return pc.fill_null(at, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        return np.fromiter(map(self._series_index.get, names, repeat(UNKNOWN_SERIES)), dtype=np.int64, count=len(names))

    @cached_property
    def _series_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.series, start=1)}

    @cached_property
    def _series_text(self) -> Any:
        """The series as pyarrow text, for pc.index_in: built once, not for every chunk of a file."""
        import pyarrow as pa

        return pa.array(self.series, pa.string())

    @property
    def x_range(self) -> tuple[float, ...]:
        # A constant feature would divide by zero; it then maps to 0 instead.
        return tuple((hi - lo) or 1.0 for lo, hi in zip(self.x_min, self.x_max))

    @property
    def y_range(self) -> float:
        return (self.y_max - self.y_min) or 1.0

    def normalize_x(self, X: np.ndarray) -> np.ndarray:
        """Features on the model's scale, each held within EXTRAPOLATION_RANGES of its training range."""
        normalized = (_forward(X, self.transform, self.log_columns) - np.array(self.x_min)) / np.array(self.x_range)
        return np.clip(normalized, *NORMALIZED_BOUNDS)

    def normalize_y(self, y: np.ndarray) -> np.ndarray:
        return (_forward(y, self.transform) - self.y_min) / self.y_range

    def denormalize_y(self, y_normalized: np.ndarray) -> np.ndarray:
        """Units from the network's output, held within `y_bounds`."""
        y = np.clip(np.asarray(y_normalized), *self.y_bounds)
        y = y * self.y_range + self.y_min
        return np.expm1(y) if self.transform == "log1p" else y

    @property
    def y_bounds(self) -> tuple[float, float]:
        """(low, high) where the network's output is held, after min-max scaling:
        within EXTRAPOLATION_RANGES of the target's range, and never below zero units."""
        zero_units = -self.y_min / self.y_range  # log(1 + 0) is 0 too
        return max(NORMALIZED_BOUNDS[0], zero_units), NORMALIZED_BOUNDS[1]

    @property
    def x_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) per feature where inputs are held, after the transform
        (log(1 + value) or raw units) and before min-max scaling."""
        x_min, x_range = np.array(self.x_min), np.array(self.x_range)
        low, high = NORMALIZED_BOUNDS
        return x_min + low * x_range, x_min + high * x_range

    def outside_training_range(
        self, X: np.ndarray, ranges: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a feature outside what training saw: (row indices, their [k, 3] flags).

        `ranges` (from column_ranges) lets the common case, nothing outside,
        skip the per-row comparison.
        """
        X = np.asarray(X)
        low, high = self._raw_bounds
        mins, maxs = ranges if ranges is not None else column_ranges(X)
        beyond = np.flatnonzero((mins < low) | (maxs > high))  # the columns with a value outside
        if not len(beyond):
            return np.empty(0, dtype=np.intp), np.empty((0, X.shape[1]), dtype=bool)
        outside = np.zeros(len(X), dtype=bool)
        for j in beyond.tolist():  # only those columns are compared row by row
            outside |= (X[:, j] < low[j]) | (X[:, j] > high[j])
        rows = np.flatnonzero(outside)
        return rows, (X[rows] < low) | (X[rows] > high)

    def outside_flags(self, X: np.ndarray) -> np.ndarray:
        """[..., 3] booleans: each feature of each row outside what training saw."""
        low, high = self._raw_bounds
        return (X < low) | (X > high)

    @cached_property
    def _raw_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.raw_x_min), np.array(self.raw_x_max)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "min-max, fitted on the training window",
            "transform": self.transform,
            "features": {
                name: {
                    "min": lo,
                    "max": hi,
                    "raw_min": rlo,
                    "raw_max": rhi,
                    **({"logged": bool(log)} if self.logged else {}),
                }
                for name, lo, hi, rlo, rhi, log in zip(
                    self.names, self.x_min, self.x_max, self.raw_x_min, self.raw_x_max, self.log_columns
                )
            },
            "target": {"name": TARGET, "min": self.y_min, "max": self.y_max},
            **({"series": list(self.series)} if self.series else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MinMaxStats:
        features = doc["features"]
        names = tuple(features)

        def column(key: str) -> tuple[float, ...]:
            return tuple(float(features[name][key]) for name in names)

        return cls(
            column("min"),
            column("max"),
            float(doc["target"]["min"]),
            float(doc["target"]["max"]),
            column("raw_min"),
            column("raw_max"),
            doc.get("transform", "none"),
            tuple(str(name) for name in doc.get("series", ())),
            names,
            tuple(bool(features[name]["logged"]) for name in names) if "logged" in features[names[0]] else (),
        )
