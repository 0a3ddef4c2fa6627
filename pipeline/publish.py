"""Turn a trained model into a published, immutable version in the registry."""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import json
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import export
from .documents import dumps
from .drift import reference_of
from .features import CHAPTER
from .registry import TAILS_FILE, Registry, crashpoint
from .schema import INPUT_TENSOR, NORMALIZED_TENSOR, OUTPUT_TENSOR, SERIES_TENSOR, TARGET, UNKNOWN_SERIES, domain_of

if TYPE_CHECKING:
    from .data import Dataset
    from .features import FeatureSpec
    from .registry import RegistryWriter
    from .workflow import Trained

# Each series' last weeks of sales from the published model's training rows,
# which the weeks after them are forecast from (pipeline.features).

REPO_ROOT = Path(__file__).resolve().parent.parent


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime-gpu", "onnxruntime", "numpy", "demand-forecaster"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


@functools.cache
def git_revision() -> dict[str, Any] | None:
    """The commit of the code this process runs, and whether it had changes: asked once, when it was loaded."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def io_schema(knows_series: bool = False, spec: FeatureSpec = CHAPTER) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "input": {
            "name": INPUT_TENSOR,
            "dtype": "float32",
            "shape": ["batch", len(spec.names)],
            "features": [
                {"name": name, "unit": domain_of(name)[2], "min": domain_of(name)[0], "max": domain_of(name)[1]}
                for name in spec.names
            ],
        },
        "outputs": [
            {"name": OUTPUT_TENSOR, "dtype": "float32", "shape": ["batch", 1], "unit": "units"},
            {"name": NORMALIZED_TENSOR, "dtype": "float32", "shape": ["batch", 1], "unit": "min-max normalized"},
        ],
    }
    if knows_series:
        schema["series_input"] = {
            "name": SERIES_TENSOR,
            "dtype": "int64",
            "shape": ["batch"],
            "values": f"i + 1 for the i-th series in normalization.json; {UNKNOWN_SERIES} "
            "for a series the model does not know",
        }
    return schema


def build_card(
    version: str,
    trained: Trained,
    data: Dataset,
    export_info: dict[str, Any],
    backtest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    result = trained.published
    evaluation = trained.evaluation
    card = {
        "version": version,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "created_by": f"{getpass.getuser()}@{socket.gethostname()}",
        "model": {
            "architecture": f"{len(data.spec.names)} -> {' -> '.join(str(h) for h in result.config.hidden)} -> 1",
            "hidden": list(result.config.hidden),
            "activation": result.config.activation,
            "output": result.config.output_activation,
            # Series with their own first-layer offsets (listed in normalization.json); 0: none told apart.
            "series_known": len(result.stats.series),
        },
        "params": result.config.describe(),
        "training": result.describe(),
        **trained.describe(),
        "data": {**data.source, "date_range": data.date_range(), "splits": trained.split.describe()},
        # Every figure comes from the evaluated model, on rows it never trained on.
        "metrics": {"holdout": evaluation["holdout"], "validation": evaluation["validation"]},
        "interval": evaluation["interval"],
        # Several weeks ahead: half-widths by step and level (pipeline.calibrate); None without weeks to chain.
        "calibration": evaluation.get("calibration"),
        "export": export_info,
        "software": software_versions(),
        "git": git_revision(),
        "schema": io_schema(bool(result.stats.series), data.spec),
        "target": TARGET,
        "features": data.spec.to_json(),
        # Each input's training distribution, for drift (pipeline/drift.py).
        "reference": reference_of(data.spec, data.X, data.y),
    }
    if backtest is not None:
        card["backtest"] = backtest
    return card


def publish(
    registry: Registry,
    trained: Trained,
    data: Dataset,
    promote: bool = False,
    wait: float = 0.0,
    reason: str = "demand train",
    backtest: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any], bool]:
    """Write a version (ONNX, statistics, card, report, weights) and maybe crown it.

    The first version becomes champion; later ones only with `promote`.
    Returns (version, card, became_champion). Nothing is published if any
    check fails.
    """
    wape = trained.evaluation["holdout"]["model"]["wape"]
    with registry.writer(wait) as writer:
        version, card = write_version(writer, trained, data, backtest)
        previous = registry.champion()
        crowned = previous is None or promote
        if crowned:
            writer.promote(version, "first model" if previous is None else "--promote", reason, holdout_wape=wape)
        else:
            writer.record(
                "publish", version, "published without --promote", reason, champion_before=previous, holdout_wape=wape
            )
    return version, card, crowned


def write_version(
    writer: RegistryWriter, trained: Trained, data: Dataset, backtest: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Build, check and commit a new version with a RegistryWriter.

    The export checks (ONNX checker, ORT-vs-torch parity) run on the published
    model; the report shows the evaluated one on the holdout it never saw.
    """
    import torch

    from .report import write_report
    from .train import predict_units

    result, evaluated, split = trained.published, trained.evaluated, trained.split
    interval = trained.evaluation["interval"]
    version = writer.next_version()
    with writer.staging() as stage:
        export_info = export.export(
            stage / "model.onnx",
            result.mlp,
            result.stats,
            split.holdout.X,
            {
                "version": version,
                "interval_half_width": interval["half_width"],
                "interval_scale": interval["scale"],
                "interval_level": interval["level"],
            },
            members=[config.hidden for config in result.member_configs],
        )
        crashpoint("while-staging")  # the model written, the rest of the version not yet
        (stage / "normalization.json").write_text(json.dumps(result.stats.to_json(), indent=2) + "\n")
        if data.spec.history or data.spec.static:
            (stage / TAILS_FILE).write_text(json.dumps(tails_document(data)) + "\n")
        torch.save(
            {
                "state_dict": result.mlp.state_dict(),
                "model_args": result.mlp.args(),
                "config": result.config.describe(),
                "normalization": result.stats.to_json(),
            },
            stage / "model.pt",
        )
        predicted = predict_units(evaluated.mlp, evaluated.stats, split.holdout.X, split.holdout.series)
        write_report(stage / "report.png", version, trained, predicted)
        if backtest is not None:
            from .backtest import write_plot

            write_plot(stage / "backtest.png", backtest)
        card = build_card(version, trained, data, export_info, backtest)
        (stage / "card.json").write_text(dumps(card, indent=2) + "\n")
        writer.commit(stage, version)
    return version, card


def tails_document(data: Dataset) -> dict[str, Any]:
    """What scoring and plans continue from, per series: {"next_week": {series: ISO week}, "sales": {series:
    [WINDOW_WEEKS sales, oldest first, null unknown]}, "static": {series: {covariate: its number or category}}}."""
    import numpy as np

    from .features import SeriesWeeks

    doc: dict[str, Any] = {"next_week": {}, "sales": {}, "static": {}}
    if data.week is not None and data.spec.history:
        layout = SeriesWeeks.of(data.week, data.series)
        doc["next_week"] = dict(zip(map(str, layout.names), map(str, layout.next_week())))
        doc["sales"] = {name: [None if np.isnan(v) else float(v) for v in tail] for name, tail in data.tails.items()}
    if data.spec.static and data.series is not None:
        names, last = np.unique(data.series[::-1], return_index=True)  # each series' last row
        rows = data.X[len(data) - 1 - last]
        spec = data.spec
        values = {}
        for name in spec.static:
            vocabulary = spec.vocabulary(name)
            if vocabulary is None:
                values[name] = rows[:, spec.names.index(name)].tolist()
            else:  # the value whose column is 1
                first = spec.names.index(f"{name}={vocabulary[0]}")
                values[name] = [vocabulary[i] for i in rows[:, first : first + len(vocabulary)].argmax(axis=1)]
        doc["static"] = {str(series): {name: values[name][i] for name in spec.static} for i, series in enumerate(names)}
    return doc
