"""Shared fixtures: small real data, real trained models, real registries on disk."""

import csv
from pathlib import Path

import pytest

from pipeline.data import load_file, time_split
from pipeline.generate import GeneratorConfig, generate, write_csv

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT / "data" / "demand.csv"
FAST = dict(epochs=60, patience=0)  # enough to train something real in a second


def write_rows(
    path, rows, header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays", "units_sold", "week")
):
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.csv"
    write_csv(generate(GeneratorConfig(seed=3, series=3, weeks=60)), path)
    return path


NEW_WEEKS = 13  # what small_history_csv leaves out of small_csv


@pytest.fixture(scope="session")
def small_history_csv(tmp_path_factory):
    """small_csv without its last NEW_WEEKS weeks: what a champion knew before new weeks arrived."""
    path = tmp_path_factory.mktemp("data") / "history.csv"
    rows = generate(GeneratorConfig(seed=3, series=3, weeks=60))
    last_weeks = sorted({r["week"] for r in rows})[-NEW_WEEKS:]
    write_csv([r for r in rows if r["week"] not in last_weeks], path)
    return path


@pytest.fixture(scope="session")
def small_split(small_csv):
    return time_split(load_file(small_csv))


@pytest.fixture(scope="session")
def default_split():
    return time_split(load_file(DEFAULT_CSV))


@pytest.fixture(scope="session")
def default_trained():
    """`--preset auto` on the embedded data, exactly as `demand train` does (selection, evaluation, refit)."""
    from pipeline.workflow import train_model

    return train_model(load_file(DEFAULT_CSV), "auto", {"device": "cpu"})


@pytest.fixture(scope="session")
def default_model(default_trained):
    """The model `demand train` publishes from the embedded data."""
    return default_trained.published


def invoke(runner, *args):
    """Run the `demand` command line in-process (Click's runner)."""
    from pipeline.cli import main

    return runner.invoke(main, list(args))


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture
def model_dir(tmp_path):
    return tmp_path / "models"


@pytest.fixture(scope="session")
def published(tmp_path_factory, small_history_csv):
    """A registry with one small published champion, built by the real CLI from all but
    the last NEW_WEEKS weeks of small_csv (so a retrain on small_csv has new weeks)."""
    from click.testing import CliRunner

    from pipeline.cli import main

    root = tmp_path_factory.mktemp("registry") / "models"
    result = CliRunner().invoke(
        main, ["train", "--data", str(small_history_csv), "--model-dir", str(root), "--epochs", "80", "--json"]
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session")
def expected_provider(published):
    """The execution provider ONNX Runtime really gives the champion here (CPU, or CUDA on a GPU host)."""
    from pipeline.bundle import make_session
    from pipeline.registry import Registry

    registry = Registry(published)
    return make_session(registry.path(registry.champion()) / "model.onnx")[1]


# ---------------------------------------------------------------- service

INSTANCE = {"prev_week_sales": 76440, "discount_fraction": 63, "weeks_to_next_holidays": 2}


@pytest.fixture
def make_app(published):
    """create_app on the published registry (no watcher), with settings on top: make_app(MAX_ROWS=3)."""
    from service.app import create_app

    def make(**settings):
        return create_app({"MODEL_DIR": str(published), "RELOAD_INTERVAL": 0, **settings})

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def own_registry(published, tmp_path):
    """A copy of the published registry that a test may change."""
    import shutil

    root = tmp_path / "models"
    shutil.copytree(published, root)
    return root


@pytest.fixture
def client(app):
    return app.test_client()
