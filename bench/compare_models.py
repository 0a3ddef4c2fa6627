"""Holdout WAPE of both presets, the baselines and gradient boosting, on the
embedded data and on generator variants the default preset was not tuned on."""
import tempfile
from pathlib import Path

import numpy as np

from pipeline.data import load_csv, time_split
from pipeline.evaluate import evaluate
from pipeline.generate import DemandLaw, GeneratorConfig, generate, write_csv
from pipeline.model import PRESETS
from pipeline.train import fit, predict_units

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "embedded data (6 stores, 3 years)": None,
    "12 stores, busier promotions": GeneratorConfig(seed=11, series=12, promo_rate=0.2),
    "stronger elasticities": GeneratorConfig(seed=3, law=DemandLaw(lift_max=0.8, lift_scale=35, holiday_bump=0.3, carryover=0.8)),
    "weak discounts, noisier": GeneratorConfig(seed=21, series=4, weeks=200, noise=0.1,
                                               law=DemandLaw(lift_max=0.2, holiday_bump=0.1, carryover=0.95)),
}


def gbdt_wape(split):
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(random_state=0).fit(
        np.vstack([split.train.X, split.validation.X]), np.concatenate([split.train.y, split.validation.y]))
    predicted = model.predict(split.holdout.X)
    return 100 * np.abs(predicted - split.holdout.y).sum() / split.holdout.y.sum()


def preset_wape(split, preset, seed):
    config = PRESETS[preset].with_overrides(device="cpu", seed=seed)
    result = fit(split.train, split.validation, config)
    return evaluate(split, lambda X: predict_units(result.mlp, result.stats, X), scale=config.transform)["holdout"]


def compare(seeds=(0, 1, 2)):
    lines = ["| data | naive | linear | chapter preset | default preset (seeds " + ", ".join(map(str, seeds)) + ") | gradient boosting |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in VARIANTS.items():
            path = ROOT / "data" / "demand.csv"
            if config is not None:
                path = Path(tmp) / "variant.csv"
                write_csv(generate(config), path)
            split = time_split(load_csv(path))
            chapter = preset_wape(split, "chapter", 0)
            default = [preset_wape(split, "default", s)["model"]["wape"] for s in seeds]
            lines.append(f"| {name} | {chapter['naive']['wape']:.2f} | {chapter['linear']['wape']:.2f} | "
                         f"{chapter['model']['wape']:.2f} | {' / '.join(f'{w:.2f}' for w in default)} | {gbdt_wape(split):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare())
