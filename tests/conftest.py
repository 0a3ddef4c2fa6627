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


def plain_sales(folder, seed, series, weeks):
    """A generated sales history without its prev_week_sales column, as a retailer exports it (series, week,
    units sold and the two covariates), written to folder/sales.csv: (the file, its rows)."""
    generated = folder / "generated.csv"
    write_csv(generate(GeneratorConfig(seed=seed, series=series, weeks=weeks)), generated)
    rows = list(csv.DictReader(generated.open()))
    plain = folder / "sales.csv"
    with plain.open("w", newline="") as out:
        writer = csv.DictWriter(out, [k for k in rows[0] if k != "prev_week_sales"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return plain, rows


def trained(models, data, preset="log-large-batch", epochs=20):
    """`demand train` of `data` into the registry `models`, quickly (no early stopping); the registry."""
    from click.testing import CliRunner

    done = invoke(CliRunner(), "train", "--data", str(data), "--model-dir", str(models), "--preset", preset,
                  "--epochs", str(epochs), "--patience", "0")  # fmt: skip
    assert done.exit_code == 0, done.output
    return models


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


@pytest.fixture(scope="session", autouse=True)
def answers_asked_of_other_programs_once():
    """What the code asks other programs once per process (the commit a card records, the cores scikit-learn's
    baselines count, the word size croniter asks `file` for when imported), asked before any test runs: a test
    that is not slow starts no process."""
    import croniter  # noqa: F401
    from joblib import cpu_count

    from pipeline.publish import git_revision

    git_revision()
    cpu_count(only_physical_cores=True)


@pytest.fixture(autouse=True)
def no_subprocess_unless_slow(request, monkeypatch):
    """`-m "not slow"` (make test-fast) starts no process: a test that runs a program or a server is marked slow."""
    if request.node.get_closest_marker("slow"):
        return
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process ({args[0]!r}): mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess, "Popen", refuse)


def postgres_bin(name):
    """A PostgreSQL server program: Debian keeps them under /usr/lib/postgresql/<major>/bin, off the PATH."""
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    assert found[-1], "PostgreSQL is needed for the store's tests (make test installs Debian's postgresql)"
    return found[-1]


@pytest.fixture(scope="session")
def postgres():
    """The URL of a real PostgreSQL server of its own, in a temporary folder, run as an unprivileged user."""
    import os
    import pwd
    import shutil
    import subprocess
    import tempfile

    from service.testing import free_port

    # Not under pytest's own temporary folder, which only its owner may enter.
    folder = Path(tempfile.mkdtemp(prefix="demand-postgres-"))
    data, port = folder / "data", free_port()
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "demand", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    subprocess.run(
        [*as_user, postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [*as_user, postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "demand", "demand"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://demand@127.0.0.1:{port}/demand"
    finally:
        subprocess.run([*as_user, postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
