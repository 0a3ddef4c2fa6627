"""Model selection: train every candidate on the training window, score each
on the validation window by WAPE in units, keep the best.

The holdout plays no part here, so the chosen model's holdout figures stay an
honest estimate of how it forecasts weeks it has never seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import TrainingError
from .evaluate import metrics, naive_scale
from .presets import AUTO, CANDIDATES, PRESETS, TrainConfig

if TYPE_CHECKING:
    from .data import Split
    from .train import Progress, TrainResult

CUSTOM = "custom"  # the label of settings given whole, e.g. a champion's own


@dataclass
class Candidate:
    name: str
    result: TrainResult  # trained on the training window
    validation: dict[str, Any]  # metrics on the validation window, in units

    @property
    def score(self) -> float:
        """WAPE, or the MAE where WAPE is undefined (a window that sold nothing)."""
        wape = self.validation["wape"]
        return wape if math.isfinite(wape) else self.validation["mae"]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "validation_wape": self.validation["wape"],
            "validation_mae": self.validation["mae"],
            "params": self.result.config.describe(),
            "epochs_run": len(self.result.train_loss),
            "kept_epoch": self.result.kept_epoch,
            "seconds": round(self.result.seconds, 3),
        }


def preset_configs(preset: str | TrainConfig, overrides: dict[str, Any] | None = None) -> dict[str, TrainConfig]:
    """{name: TrainConfig} to try for `preset`: every candidate for auto, else just the one.

    `preset` may also be a TrainConfig (a champion's settings, reused by retrain).
    """
    if isinstance(preset, TrainConfig):
        chosen = {CUSTOM: preset}
    elif preset == AUTO:
        chosen = CANDIDATES
    elif preset in PRESETS:
        chosen = {preset: PRESETS[preset]}
    else:
        raise TrainingError(f"--preset must be one of {AUTO}, {', '.join(PRESETS)}; got {preset!r}")
    return {name: config.with_overrides(**(overrides or {})) for name, config in chosen.items()}


def select(
    split: Split,
    configs: dict[str, TrainConfig],
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Candidate, list[Candidate]]:
    """(best Candidate, every Candidate in the order tried)."""
    from .parallel import fit_all
    from .train import predict_units

    scale = naive_scale(split.train)
    tried = []
    results = fit_all(list(configs.values()), split.train, split.validation, progress)
    for name, result in zip(configs, results):
        forecast = predict_units(result.mlp, result.stats, split.validation.X, split.validation.series)
        tried.append(Candidate(name, result, metrics(split.validation.y, forecast, scale)))
        if log:
            log(
                f"candidate {name}: validation WAPE {tried[-1].validation['wape']:.2f}% "
                f"({len(result.train_loss)} epochs, {result.seconds:.1f}s)"
            )
    best = min(tried, key=lambda c: c.score)  # the first of equals: candidates are tried in a fixed order
    return best, tried
