"""report.png: how training went and how the model does on the holdout."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .evaluate import interval_bounds  # noqa: E402

if TYPE_CHECKING:
    from .workflow import Trained

# Points drawn per panel at most: a random sample beyond it. A million dots
# show nothing more than a few thousand and take minutes to draw.
PLOTTED_POINTS = 5000


def write_report(path: str | os.PathLike[str], version: str, trained: Trained, predicted: np.ndarray) -> None:
    """`predicted`: the evaluated model's forecasts of the holdout, which it never trained on."""
    evaluation, result, holdout = trained.evaluation, trained.evaluated, trained.split.holdout
    fig, (curves, scatter, residuals) = plt.subplots(1, 3, figsize=(17, 5.2))
    wape = evaluation["holdout"]["model"]["wape"]
    fig.suptitle(
        f"Demand model {version}: holdout WAPE {wape:.1f}% "
        f"(naive {evaluation['holdout']['naive']['wape']:.1f}%, linear {evaluation['holdout']['linear']['wape']:.1f}%)",
        fontsize=13,
    )

    epochs = np.arange(1, len(result.train_loss) + 1)
    curves.plot(epochs, result.train_loss, label=f"train ({trained.chosen})")
    curves.plot(epochs, result.validation_loss, label="validation")
    curves.axvline(result.kept_epoch, color="grey", linestyle=":", label=f"kept epoch {result.kept_epoch}")
    if trained.refit:
        refit = trained.published.train_loss
        curves.plot(np.arange(1, len(refit) + 1), refit, label="refit on every row", alpha=0.7)
    curves.set_yscale("log")
    curves.set_title("Loss curves (MSE on the normalized scale)")
    curves.set_xlabel("epoch")
    curves.set_ylabel("loss")
    curves.legend(loc="upper right")

    shown = plotted(len(holdout))
    actual, predicted = holdout.y[shown], np.asarray(predicted)[shown]
    sampled = f" ({len(actual):,} of {len(holdout):,} rows)" if len(actual) < len(holdout) else ""
    scatter.scatter(actual, predicted, s=10, alpha=0.6)
    lims = [0, max(actual.max(), predicted.max()) * 1.05]
    scatter.plot(lims, lims, color="grey", linestyle="--", label="perfect forecast")
    scatter.set_xlim(lims)
    scatter.set_ylim(lims)
    scatter.set_title(f"Holdout: predicted vs actual{sampled}")
    scatter.set_xlabel("actual units sold")
    scatter.set_ylabel("predicted units sold")
    scatter.legend(loc="upper left")

    interval = evaluation["interval"]
    low, high = interval_bounds(predicted, interval["half_width"], interval["scale"])
    when = holdout.week[shown] if holdout.week is not None else shown
    residuals.vlines(
        when,
        low - predicted,
        high - predicted,
        color="tab:green",
        alpha=0.25,
        label=f"{interval['level']:.0%} interval ({interval['holdout_coverage']:.0%} covered)",
    )
    residuals.scatter(when, actual - predicted, s=10, alpha=0.7, label="actual - predicted")
    residuals.axhline(0, color="grey")
    residuals.set_title(f"Holdout residuals over time{sampled}")
    residuals.set_xlabel("week" if holdout.week is not None else "row")
    residuals.set_ylabel("units")
    residuals.legend(loc="upper left")
    residuals.tick_params(axis="x", labelrotation=30)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plotted(rows: int) -> np.ndarray:
    """Indexes of the rows drawn, in order: all, or a fixed random sample."""
    if rows <= PLOTTED_POINTS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(0).choice(rows, PLOTTED_POINTS, replace=False))
