"""Champion / challenger retraining.

A challenger is trained with the champion's settings on the new data; both are
scored on the same latest holdout; the challenger is promoted only when it
beats the champion by the required margin and beats the naive and linear
baselines. Every decision, with both sets of figures, goes to history.jsonl.
The registry lock is held from start to finish, so two retrains never
interleave and the champion cannot change under a decision.
"""
from dataclasses import fields

from .bundle import Bundle
from .data import time_split
from .evaluate import beats_baselines, evaluate, metrics, naive_scale
from .model import PRESETS, TrainConfig
from .publish import write_version
from .registry import Registry
from .sources import load_sources


def champion_config(card):
    """The TrainConfig a champion was trained with, from its card."""
    known = {f.name for f in fields(TrainConfig)}
    params = {k: v for k, v in card["params"].items() if k in known}
    if "hidden" in params:
        params["hidden"] = tuple(params["hidden"])
    return TrainConfig(**params)


def decide(challenger_wape, champion_wape, min_improvement, holdout):
    """(promote?, reason). WAPE is in percent; the margin is in WAPE points."""
    if not beats_baselines(holdout):
        return False, (f"challenger WAPE {challenger_wape:.2f}% does not beat naive "
                       f"({holdout['naive']['wape']:.2f}%) and linear ({holdout['linear']['wape']:.2f}%)")
    if champion_wape is None:
        return True, "no champion yet; the challenger beats the baselines"
    if challenger_wape < champion_wape and champion_wape - challenger_wape >= min_improvement:
        return True, (f"challenger WAPE {challenger_wape:.2f}% beats champion {champion_wape:.2f}% "
                      f"by {champion_wape - challenger_wape:.2f} points (required {min_improvement:g})")
    return False, (f"challenger WAPE {challenger_wape:.2f}% does not beat champion {champion_wape:.2f}% "
                   f"by the required {min_improvement:g} points")


def retrain(registry: Registry, paths, overrides=None, min_improvement=0.0, keep_rejected=False, wait=0.0,
            skip_bad_rows=False, warn=None, progress=None, by="demand retrain"):
    from .train import fit, predict_units

    with registry.lock(wait):
        champion = registry.champion()
        base = champion_config(registry.card(champion)) if champion else PRESETS["default"]
        config = base.with_overrides(**(overrides or {}))
        data = load_sources(paths, skip_bad_rows, warn)
        split = time_split(data)
        result = fit(split.train, split.validation, config, progress)
        evaluation = evaluate(split, lambda X: predict_units(result.mlp, result.stats, X), scale=config.transform)
        holdout = evaluation["holdout"]

        champion_metrics = None
        if champion:
            bundle = Bundle.load(registry, champion, provider="cpu")
            forecast = bundle.forecast(split.holdout.X)["units_sold"]
            champion_metrics = metrics(split.holdout.y, forecast, naive_scale(split.train))
        promote, reason = decide(holdout["model"]["wape"], champion_metrics and champion_metrics["wape"],
                                 min_improvement, holdout)

        version = None
        if promote or keep_rejected:
            version, _ = write_version(registry, result, data, split, evaluation)
        figures = {"challenger": holdout["model"], "champion": champion_metrics,
                   "naive": holdout["naive"], "linear": holdout["linear"]}
        if promote:
            registry.promote(version, reason, by, holdout_wape=holdout["model"]["wape"], metrics=figures)
        else:
            registry.append_history({"event": "reject", "version": version, "champion": champion,
                                     "reason": reason, "by": by, "kept": version is not None, "metrics": figures})
        return {
            "decision": "promoted" if promote else "rejected",
            "reason": reason,
            "challenger_version": version,
            "champion_before": champion,
            "champion_after": registry.champion(),
            "metrics": figures,
            "holdout_weeks": split.holdout.date_range(),
            "data": {"files": data.source.get("files", [data.source]), "rows": len(data),
                     "replaced_duplicates": data.source.get("replaced_duplicates", 0)},
            "params": config.describe(),
            "device": result.device,
            "training_seconds": round(result.seconds, 3),
        }
