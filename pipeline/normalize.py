"""Min-max normalization statistics, fitted on the training window only."""
from dataclasses import dataclass

import numpy as np

from .schema import FEATURES, TARGET


@dataclass(frozen=True)
class MinMaxStats:
    x_min: tuple
    x_max: tuple
    y_min: float
    y_max: float

    @classmethod
    def fit(cls, X, y):
        return cls(
            tuple(float(v) for v in X.min(axis=0)),
            tuple(float(v) for v in X.max(axis=0)),
            float(y.min()),
            float(y.max()),
        )

    @property
    def x_range(self):
        # A constant feature would divide by zero; it then maps to 0 instead.
        return tuple((hi - lo) or 1.0 for lo, hi in zip(self.x_min, self.x_max))

    @property
    def y_range(self):
        return (self.y_max - self.y_min) or 1.0

    def normalize_x(self, X):
        return (np.asarray(X) - np.array(self.x_min)) / np.array(self.x_range)

    def normalize_y(self, y):
        return (np.asarray(y) - self.y_min) / self.y_range

    def denormalize_y(self, y_normalized):
        return np.asarray(y_normalized) * self.y_range + self.y_min

    def outside_training_range(self, X):
        """Boolean [n, 3]: which feature values lie outside what training saw."""
        X = np.asarray(X)
        return (X < np.array(self.x_min)) | (X > np.array(self.x_max))

    def to_json(self):
        return {
            "method": "min-max, fitted on the training window",
            "features": {
                name: {"min": lo, "max": hi} for name, lo, hi in zip(FEATURES, self.x_min, self.x_max)
            },
            "target": {"name": TARGET, "min": self.y_min, "max": self.y_max},
        }

    @classmethod
    def from_json(cls, doc):
        features = doc["features"]
        return cls(
            tuple(float(features[name]["min"]) for name in FEATURES),
            tuple(float(features[name]["max"]) for name in FEATURES),
            float(doc["target"]["min"]),
            float(doc["target"]["max"]),
        )
