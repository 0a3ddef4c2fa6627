"""Champion / challenger retraining, scored only on weeks the champion never saw.

The champion's card says the last week it trained on. Only the weeks after it
can compare the two honestly, so they are the challenger's holdout too: the
challenger is selected and evaluated on the weeks before them, scored beside
the champion on them, and promoted only when it beats the champion by the
required margin and beats the naive and linear baselines there. What is
published is the challenger refit on every row. With fewer new weeks than
`min_new_weeks` nothing is trained and the champion stays. Every decision,
with its figures, goes to history.jsonl. The registry lock is held from start
to finish, so two retrains never interleave and the champion cannot change
under a decision.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .bundle import Bundle
from .data import time_split, week_series_keys
from .evaluate import beats_baselines, metrics, naive_scale
from .features import CHAPTER, FeatureSpec, with_options
from .presets import AUTO, CANDIDATES, MIN_NEW_WEEKS, TrainConfig
from .publish import write_version
from .registry import Registry
from .sources import load_sources

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .data import Dataset, Split
    from .train import Progress


def champion_config(card: dict[str, Any]) -> TrainConfig:
    """The TrainConfig the champion was selected with, from its card: its
    chosen candidate's settings, early stopping included. `params` are those
    of its refit, which trains a fixed number of epochs without stopping early
    (pipeline.workflow.refit_config): reused, every later generation would
    be frozen at that count. Cards from before selection keep only `params`."""
    known = {f.name for f in fields(TrainConfig)}
    params = {k: v for k, v in (_best_candidate(card)[1] or card["params"]).items() if k in known}
    if "hidden" in params:
        params["hidden"] = tuple(params["hidden"])
    return TrainConfig(**params)


# Settings that were every candidate's default in cards that did not record
# their options: a card that shows them did not choose them (the candidates'
# hidden units were tanh before GELU).
FORMER_CANDIDATE_DEFAULTS = {"activation": "tanh"}


def champion_overrides(card: dict[str, Any]) -> dict[str, Any]:
    """The training options an `auto` champion was trained with (`--seed 5`,
    `--epochs 300`), as its card records them. Cards that do not: where its
    best candidate's settings differ from that candidate's defaults, then or now."""
    options = (card.get("selection") or {}).get("options")
    if options is not None:
        return {k: tuple(v) if k == "hidden" else v for k, v in options.items()}
    name, params = _best_candidate(card)
    if params is None or name not in CANDIDATES:
        return {}
    defaults = CANDIDATES[name].describe()
    return {
        k: tuple(v) if k == "hidden" else v
        for k, v in params.items()
        if k in defaults and v != defaults[k] and FORMER_CANDIDATE_DEFAULTS.get(k) != v
    }


def _best_candidate(card: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """(name, settings) of the candidate that won the champion's selection, or (None, None).

    An `auto` champion publishes the mean of several, and its `chosen` names
    them all ("mean of a, b, c"); its `members` list them, the best first.
    """
    selection = card.get("selection") or {}
    name = (selection.get("members") or [selection.get("chosen")])[0]
    params = next((c.get("params") for c in selection.get("candidates", []) if c.get("name") == name), None)
    return name, params


def challenger_settings(
    card: dict[str, Any] | None, preset: str | None, overrides: dict[str, Any] | None = None
) -> tuple[str | TrainConfig, dict[str, Any]]:
    """(preset, overrides) the challenger is trained with: `preset` when given,
    else what made the champion. A champion chosen by `auto` gets a new
    selection (the data may favour another candidate now) with the options it
    was trained with; any other champion's exact settings are reused. Options
    given now win over the champion's."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if preset or card is None:
        return preset or AUTO, given
    if card.get("selection", {}).get("preset") == AUTO:
        return AUTO, {**champion_overrides(card), **given}
    return champion_config(card), given


def last_trained_week(card: dict[str, Any]) -> str | None:
    """The last week `card`'s model trained on, or None when its data had no week column."""
    if "trained_on" in card:
        weeks = card["trained_on"].get("weeks")
    else:  # a version from before refits: count every week it saw, validation and holdout too
        weeks = card["data"].get("date_range")
    return weeks[1] if weeks else None


def decide(
    challenger_wape: float, champion_wape: float | None, min_improvement: float, holdout: dict[str, dict[str, Any]]
) -> tuple[bool, str]:
    """(promote?, reason). WAPE is in percent; the margin is in WAPE points."""
    if not beats_baselines(holdout):
        unbeaten = [
            f"{name} ({holdout[name]['wape']:.2f}%)"
            for name in ("naive", "linear")
            if not challenger_wape < holdout[name]["wape"]
        ]
        return False, f"challenger WAPE {challenger_wape:.2f}% does not beat {' or '.join(unbeaten)}"
    if champion_wape is None:
        return True, "no champion yet; the challenger beats the baselines"
    if challenger_wape < champion_wape and champion_wape - challenger_wape >= min_improvement:
        return True, (
            f"challenger WAPE {challenger_wape:.2f}% beats champion {champion_wape:.2f}% "
            f"by {champion_wape - challenger_wape:.2f} points (required {min_improvement:g})"
        )
    return False, (
        f"challenger WAPE {challenger_wape:.2f}% does not beat champion {champion_wape:.2f}% "
        f"by the required {min_improvement:g} points"
    )


def unseen_weeks(card: dict[str, Any], data: Dataset, min_new_weeks: int) -> tuple[str, None] | tuple[None, str]:
    """(first week the champion never trained on, None) or (None, why the gate cannot run)."""
    cutoff = last_trained_week(card)
    if cutoff is None:
        return None, "the champion's card names no training weeks, so weeks it never saw cannot be told apart"
    if data.week is None:
        return None, "the data has no week column, so weeks the champion never saw cannot be told apart"
    new = np.unique(data.week[data.week > np.datetime64(cutoff, "D")])
    if len(new) < min_new_weeks:
        return None, (
            f"only {len(new)} week(s) of the data come after the champion's last training week "
            f"{cutoff}; at least {min_new_weeks} are needed to compare on weeks it never saw"
        )
    return str(new[0]), None


def score_champion(
    bundle: Bundle, split: Split, paths: Sequence[str | os.PathLike[str]], spec: FeatureSpec, skip_bad_rows: bool
) -> dict[str, Any]:
    """The champion's metrics on the challenger's holdout rows, each model reading its own features: a champion
    of other features reads the same files its own way, and is scored on the same (week, series) rows."""
    holdout = split.holdout
    if bundle.spec == spec:
        forecast = bundle.forecast(holdout.X, series=holdout.series)["units_sold"]
        return metrics(holdout.y, forecast, naive_scale(split.train))
    own = load_sources(paths, skip_bad_rows, warn=None, spec=bundle.spec)
    # Scored only past the gate (unseen_weeks), which found a week column in these files.
    theirs = week_series_keys(
        cast(np.ndarray, own.week), own.series if own.series is not None else np.zeros(len(own), dtype=str)
    )
    ours = week_series_keys(
        cast(np.ndarray, holdout.week),
        holdout.series if holdout.series is not None else np.zeros(len(holdout), dtype=str),
    )
    order = np.argsort(theirs, kind="stable")
    at = np.minimum(np.searchsorted(theirs, ours, sorter=order), len(order) - 1)
    found = theirs[order[at]] == ours
    rows = order[at[found]]
    forecast = bundle.forecast(own.X[rows], series=None if own.series is None else own.series[rows])["units_sold"]
    return metrics(holdout.y[found], forecast, naive_scale(split.train))


def with_stored_actuals(
    store: Engine,
    paths: Sequence[str | os.PathLike[str]],
    spec: FeatureSpec,
    skip_bad_rows: bool,
    warn: Callable[[str], None] | None,
    scratch: str,
) -> tuple[list[str | os.PathLike[str]], dict[str, Any]]:
    """`paths` and, last, a file of the stored actuals; what the store gave (rows, first and last week)."""
    from .store import export_actuals

    previous = {}
    if not spec.history:  # a stored week's prev_week_sales may be the files' last week of its series
        files = load_sources(paths, skip_bad_rows, None, spec=spec)
        if files.week is not None and files.series is not None:
            order = np.lexsort((files.week, files.series))
            for i in order:
                previous[str(files.series[i])] = (files.week[i].astype(dt.date), float(files.y[i]))
    path = os.path.join(scratch, "stored-actuals.csv")
    stored = export_actuals(store, spec, path, previous)
    if stored["dropped"] and warn:
        warn(f"{stored['dropped']} stored week(s) have no week before them to give their prev_week_sales; left out")
    return [*paths, path], stored


def retrain(
    registry: Registry,
    paths: Sequence[str | os.PathLike[str]],
    overrides: dict[str, Any] | None = None,
    min_improvement: float = 0.0,
    keep_rejected: bool = False,
    wait: float = 0.0,
    skip_bad_rows: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    by: str = "demand retrain",
    preset: str | None = None,
    min_new_weeks: int = MIN_NEW_WEEKS,
    log: Callable[[str], None] | None = None,
    features: dict[str, Any] | None = None,
    store: Engine | None = None,
) -> dict[str, Any]:
    """`features`: feature options (pipeline.features.with_options) over the champion's own spec; the
    challenger reads what the champion reads unless they say otherwise. `store`: the stored actuals are
    read too, as a last file (pipeline.store.export_actuals), so the weeks they add after the champion's
    training are the gate's unseen weeks."""
    from .workflow import train_model

    with registry.writer(wait, log) as writer, tempfile.TemporaryDirectory(prefix="demand-store-") as scratch:
        champion = registry.champion()
        card = registry.card(champion) if champion else None
        champion_spec = FeatureSpec.from_json(card.get("features")) if card else CHAPTER
        spec = with_options(champion_spec, **(features or {}))
        stored = None
        if store is not None:
            paths, stored = with_stored_actuals(store, paths, spec, skip_bad_rows, warn, scratch)
        data = load_sources(paths, skip_bad_rows, warn, spec=spec)
        outcome = {
            "champion_before": champion,
            "challenger_version": None,
            "data": {
                "files": data.source.get("files", [data.source]),
                "rows": len(data),
                "replaced_duplicates": data.source.get("replaced_duplicates", 0),
                **({"store": stored} if stored is not None else {}),
            },
        }
        holdout_from = None
        if champion:
            # a champion has a card
            holdout_from, why_not = unseen_weeks(cast("dict[str, Any]", card), data, min_new_weeks)
            if why_not:
                writer.record("skip", None, why_not, by, champion_before=champion)
                return {
                    **outcome,
                    "decision": "kept",
                    "reason": why_not,
                    "champion_after": champion,
                    "metrics": None,
                    "holdout_weeks": None,
                }
        split = time_split(data, holdout_from=holdout_from)
        trained = train_model(
            data, *challenger_settings(card, preset, overrides), split=split, progress=progress, log=log
        )
        holdout = trained.evaluation["holdout"]

        champion_metrics = None
        if champion:
            bundle = Bundle.load(registry, champion, provider="cpu")
            champion_metrics = score_champion(bundle, split, paths, spec, skip_bad_rows)
        promote, reason = decide(
            holdout["model"]["wape"],
            cast("float | None", champion_metrics and champion_metrics["wape"]),  # metrics() are never empty
            min_improvement,
            holdout,
        )

        version = None
        if promote or keep_rejected:
            version, _ = write_version(writer, trained, data)
        figures = {
            "challenger": holdout["model"],
            "champion": champion_metrics,
            "naive": holdout["naive"],
            "linear": holdout["linear"],
        }
        if promote:
            # `version` was written above: a promoted challenger always is
            writer.promote(cast(str, version), reason, by, holdout_wape=holdout["model"]["wape"], metrics=figures)
        else:
            writer.record(
                "reject", version, reason, by, champion_before=champion, kept=version is not None, metrics=figures
            )
        published = trained.published
        return {
            **outcome,
            "decision": "promoted" if promote else "rejected",
            "reason": reason,
            "challenger_version": version,
            "champion_after": registry.champion(),
            "metrics": figures,
            "holdout_weeks": split.holdout.date_range(),
            "scored_on": "weeks after the champion's last training week" if champion else "the latest weeks",
            "selection": {"preset": trained.preset, "chosen": trained.chosen},
            "params": published.config.describe(),
            "device": published.device,
            "training_seconds": round(published.seconds, 3),
        }
