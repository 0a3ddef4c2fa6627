"""A model's life from data to what is published: select, evaluate, refit.

1. Every candidate of the preset trains on the training window; the validation
   window picks the best (pipeline.select).
2. That model, which never saw the holdout, is scored on it against the
   baselines, and its validation residuals calibrate the interval.
3. The chosen settings are trained again on every row, holdout included, for
   the epoch count the validation window chose: forecasts depend most on the
   latest weeks, and this is the model that is published. `refit=False`
   publishes the evaluated model itself.

`demand train`, `demand retrain` and every window of `demand backtest` go
through this one function, so what a backtest measures is what train publishes.
"""
from dataclasses import dataclass, replace

from .data import concat, findings, rows_and_weeks, time_split
from .evaluate import evaluate
from .presets import AUTO
from .select import CUSTOM, preset_configs, select


@dataclass
class Trained:
    preset: str
    chosen: str  # the candidate that won (the preset's own name when there was one)
    candidates: list  # Candidate, in the order tried
    evaluated: object  # TrainResult on the training window: produced every figure
    evaluation: dict  # evaluate(): holdout metrics, validation metrics, interval
    published: object  # TrainResult that is exported: the refit, or `evaluated`
    split: object
    data_findings: dict

    @property
    def refit(self):
        return self.published is not self.evaluated

    def predict(self, X):
        """The published model's forecasts in units (torch, CPU)."""
        from .train import predict_units

        return predict_units(self.published.mlp, self.published.stats, X)

    def describe(self):
        """The card's account of what produced the figures and what is served."""
        split = self.split
        return {
            "selection": {
                "preset": self.preset, "chosen": self.chosen, "scored_on": "validation WAPE in units",
                "validation_weeks": split.validation.date_range(),
                "candidates": [c.describe() for c in self.candidates],
            },
            "evaluated_model": {
                "what": "the chosen candidate trained on the training window, early-stopped on validation",
                "trained_on": rows_and_weeks(split.train),
                "validated_on": rows_and_weeks(split.validation),
                "scored_on": rows_and_weeks(split.holdout),
                "training": self.evaluated.describe(),
            },
            "trained_on": {
                **rows_and_weeks(concat([split.train, split.validation, split.holdout]) if self.refit else split.train),
                "refit": self.refit,
                "what": (f"refit on every row for the {self.published.config.epochs} epochs chosen on validation"
                         if self.refit else "the evaluated model itself (--no-refit)"),
            },
            "data_findings": self.data_findings,
        }


def train_model(data, preset=AUTO, overrides=None, refit=True, split=None, progress=None, log=None):
    """Select, evaluate and (by default) refit on `data`; returns a Trained.

    `split` replaces the usual latest-weeks split (the retraining gate holds
    out exactly the weeks the champion never saw).
    """
    from .train import fit, predict_units

    split = split or time_split(data)
    configs = preset_configs(preset, overrides)
    best, tried = select(split, configs, progress if len(configs) == 1 else None, log)
    evaluated = best.result
    evaluation = evaluate(split, lambda X: predict_units(evaluated.mlp, evaluated.stats, X),
                          scale=evaluated.config.transform)
    published = evaluated
    if refit:
        # The same number of passes over the data as the evaluated model's
        # best epoch; nothing is left to stop early on.
        config = replace(evaluated.config, epochs=max(1, evaluated.kept_epoch), patience=0)
        everything = concat([split.train, split.validation, split.holdout])
        if log:
            log(f"refitting {best.name} on all {len(everything)} rows for {config.epochs} epochs")
        published = fit(everything, None, config, progress)
    label = preset if isinstance(preset, str) else CUSTOM
    return Trained(label, best.name, tried, evaluated, evaluation, published, split, findings(data))
