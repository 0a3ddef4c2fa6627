"""Min-max normalization statistics, fitted on the training window only.

With transform "log1p" the features and the target are first mapped through
log(1 + v): sales are multiplicative (a discount lifts sales by a percentage),
and on the log scale a store selling 10,000 units and one selling 300,000 get
the same relative accuracy. Min-max scaling then applies to the log values.
The raw training range is kept as well, to flag forecasts outside it.
"""
from dataclasses import dataclass

import numpy as np

from .schema import FEATURES, TARGET

TRANSFORMS = ("none", "log1p")


def _forward(values, transform):
    values = np.asarray(values, dtype=float)
    return np.log1p(values) if transform == "log1p" else values


@dataclass(frozen=True)
class MinMaxStats:
    x_min: tuple  # per feature, after the transform
    x_max: tuple
    y_min: float  # target, after the transform
    y_max: float
    raw_x_min: tuple  # per feature, raw units: the training range
    raw_x_max: tuple
    transform: str = "none"

    @classmethod
    def fit(cls, X, y, transform="none"):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        tX, ty = _forward(X, transform), _forward(y, transform)
        return cls(
            tuple(float(v) for v in tX.min(axis=0)),
            tuple(float(v) for v in tX.max(axis=0)),
            float(ty.min()),
            float(ty.max()),
            tuple(float(v) for v in X.min(axis=0)),
            tuple(float(v) for v in X.max(axis=0)),
            transform,
        )

    @property
    def x_range(self):
        # A constant feature would divide by zero; it then maps to 0 instead.
        return tuple((hi - lo) or 1.0 for lo, hi in zip(self.x_min, self.x_max))

    @property
    def y_range(self):
        return (self.y_max - self.y_min) or 1.0

    def normalize_x(self, X):
        return (_forward(X, self.transform) - np.array(self.x_min)) / np.array(self.x_range)

    def normalize_y(self, y):
        return (_forward(y, self.transform) - self.y_min) / self.y_range

    def denormalize_y(self, y_normalized):
        y = np.asarray(y_normalized) * self.y_range + self.y_min
        return np.expm1(y) if self.transform == "log1p" else y

    def outside_training_range(self, X):
        """Boolean [n, 3]: which feature values lie outside what training saw."""
        X = np.asarray(X)
        return (X < np.array(self.raw_x_min)) | (X > np.array(self.raw_x_max))

    def to_json(self):
        return {
            "method": "min-max, fitted on the training window",
            "transform": self.transform,
            "features": {
                name: {"min": lo, "max": hi, "raw_min": rlo, "raw_max": rhi}
                for name, lo, hi, rlo, rhi in zip(FEATURES, self.x_min, self.x_max, self.raw_x_min, self.raw_x_max)
            },
            "target": {"name": TARGET, "min": self.y_min, "max": self.y_max},
        }

    @classmethod
    def from_json(cls, doc):
        features = doc["features"]

        def column(key):
            return tuple(float(features[name][key]) for name in FEATURES)

        return cls(
            column("min"), column("max"),
            float(doc["target"]["min"]), float(doc["target"]["max"]),
            column("raw_min"), column("raw_max"),
            doc.get("transform", "none"),
        )
