"""A model's life from data to what is published: select, evaluate, refit.

1. Every candidate of the preset trains on the training window; the validation
   window ranks them (pipeline.select). With `auto` the model is the mean of
   the best ENSEMBLE_SIZE candidates on the winner's scale, merged into one
   wider network; with any other preset it is that preset's network.
2. That model, which never saw the holdout, is scored on it against the
   baselines, and its validation residuals calibrate the interval; its
   recursive forecasts over the validation and holdout weeks calibrate the
   intervals of forecasts several weeks ahead (pipeline.calibrate).
3. The chosen settings are trained again on every row, holdout included, each
   for the epoch count the validation window chose: forecasts depend most on
   the latest weeks, and this is the model that is published. `refit=False`
   publishes the evaluated model itself.

`demand train`, `demand retrain` and every window of `demand backtest` go
through this one function, so what a backtest measures is what train publishes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .calibrate import per_step_calibration
from .data import concat, findings, rows_and_weeks, time_split
from .evaluate import evaluate
from .presets import AUTO, ENSEMBLE_SIZE
from .select import CUSTOM, preset_configs, select

if TYPE_CHECKING:
    import numpy as np

    from .data import Dataset, Split
    from .presets import TrainConfig
    from .select import Candidate
    from .train import Progress, TrainResult


@dataclass
class Trained:
    preset: str
    members: list[str]  # names of the candidates averaged into the model, best first (one without auto)
    candidates: list[Candidate]  # in the order tried
    evaluated: TrainResult  # on the training window: produced every figure
    evaluation: dict[str, Any]  # evaluate(): holdout metrics, validation metrics, interval
    published: TrainResult  # what is exported: the refit, or `evaluated`
    split: Split
    data_findings: dict[str, Any]
    published_rows: dict[str, Any]  # rows and weeks the published model trained on
    options: dict[str, Any]  # the training options given over the preset's (--seed 5, --epochs 300)

    @property
    def chosen(self) -> str:
        return self.members[0] if len(self.members) == 1 else "mean of " + ", ".join(self.members)

    @property
    def refit(self) -> bool:
        return self.published is not self.evaluated

    def member_candidates(self) -> list[Candidate]:
        by_name = {c.name: c for c in self.candidates}
        return [by_name[name] for name in self.members]

    def predict(self, X: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
        """The published model's forecasts in units (torch, CPU); `series` names each row's series."""
        from .train import predict_units

        return predict_units(self.published.mlp, self.published.stats, X, series)

    def describe(self) -> dict[str, Any]:
        """The card's account of what produced the figures and what is served."""
        split = self.split
        return {
            "selection": {
                "preset": self.preset,
                "chosen": self.chosen,
                "members": self.members,
                "scored_on": "validation WAPE in units",
                "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
                "validation_weeks": split.validation.date_range(),
                "candidates": [c.describe() for c in self.candidates],
            },
            "evaluated_model": {
                "what": "the chosen model (its members averaged) trained on the training window, "
                "each member early-stopped on validation",
                "trained_on": rows_and_weeks(split.train),
                "validated_on": rows_and_weeks(split.validation),
                "scored_on": rows_and_weeks(split.holdout),
                "training": self.evaluated.describe(),
            },
            "trained_on": {
                **self.published_rows,
                "refit": self.refit,
                "what": (
                    "refit on every row, each member for the epochs chosen on validation"
                    if self.refit
                    else "the evaluated model itself (--no-refit)"
                ),
                "epochs": {
                    m.name: config.epochs if self.refit else m.result.kept_epoch
                    for m, config in zip(self.member_candidates(), self.published.member_configs)
                },
            },
            "data_findings": self.data_findings,
        }


def train_model(
    data: Dataset,
    preset: str | TrainConfig = AUTO,
    overrides: dict[str, Any] | None = None,
    refit: bool = True,
    split: Split | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> Trained:
    """Select, evaluate and (by default) refit on `data`; returns a Trained.

    `split` replaces the usual latest-weeks split (the retraining gate holds
    out exactly the weeks the champion never saw).
    """
    from .parallel import fit_all
    from .train import predict_units

    split = split or time_split(data)
    configs = preset_configs(preset, overrides)
    best, tried = select(split, configs, progress if len(configs) == 1 else None, log)
    members = [best]
    if preset == AUTO:
        same_scale = [
            c
            for c in sorted(tried, key=lambda c: c.score)
            if c is not best and c.result.config.transform == best.result.config.transform
        ]
        members += same_scale[: ENSEMBLE_SIZE - 1]
    evaluated = combine([m.result for m in members])

    def evaluated_predict(X: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
        return predict_units(evaluated.mlp, evaluated.stats, X, series)

    evaluation = evaluate(split, evaluated_predict, scale=evaluated.config.transform)
    evaluation["calibration"] = per_step_calibration(
        evaluated_predict, concat([split.validation, split.holdout]), evaluated.config.transform
    )
    published, published_rows = evaluated, rows_and_weeks(split.train)
    if refit:
        # Each member again for as many passes over the data as its best
        # validation epoch; nothing is left to stop early on.
        everything = concat([split.train, split.validation, split.holdout])
        refit_configs = [refit_config(m.result, len(split.train), len(everything)) for m in members]
        if log:
            for member, config in zip(members, refit_configs):
                log(f"refitting {member.name} on all {len(everything)} rows for {config.epochs} epochs")
        refits = fit_all(refit_configs, everything, None, progress)
        published, published_rows = combine(refits), rows_and_weeks(everything)
    label = preset if isinstance(preset, str) else CUSTOM
    options = {k: v for k, v in (overrides or {}).items() if v is not None}
    return Trained(
        label,
        [m.name for m in members],
        tried,
        evaluated,
        evaluation,
        published,
        split,
        findings(data),
        published_rows,
        options,
    )


def refit_config(result: TrainResult, trained_rows: int, all_rows: int) -> TrainConfig:
    """The settings to train `result`'s network again on every row: as many
    epochs as its validation window chose, and steps as it was selected with:
    a training window trained in full batches or passes is refit that way
    too, even when all the rows together pass the size from which steps are
    sampled (pipeline.presets.SAMPLE_ABOVE_ROWS)."""
    config = result.config
    sampled = bool(config.max_batch_rows) and trained_rows > config.sample_above_rows
    return replace(
        config,
        epochs=max(1, result.kept_epoch),
        patience=0,
        sample_above_rows=config.sample_above_rows if sampled else max(config.sample_above_rows, all_rows),
    )


def combine(results: Sequence[TrainResult]) -> TrainResult:
    """One TrainResult for the mean of several trained on the same rows and scale.

    Its config is the first (best) member's with the merged hidden sizes; every
    member's own config stays in `member_configs`.
    """
    from .model import average_of

    first = results[0]
    if any(r.stats != first.stats for r in results):
        raise ValueError("members must share their normalization statistics (same rows, same scale)")
    mlp = average_of([r.mlp for r in results])
    return replace(
        first,
        mlp=mlp,
        config=replace(first.config, hidden=mlp.hidden),
        seconds=sum(r.seconds for r in results),
        member_configs=[r.config for r in results],
    )
