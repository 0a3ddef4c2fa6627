"""The docker-compose deployment, checked without a Docker engine: the files are
validated, and the commands the compose services run are run on this host."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from service.testing import free_port

from .conftest import INSTANCE, ROOT

BIN = Path(sys.executable).parent


def tool(name):
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


@pytest.mark.slow
def test_compose_files_follow_the_compose_spec():
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
            "docker-compose.gpu.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_dockerfile_has_no_hadolint_findings():
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_shape():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["api"]["build"]["target"] == "service" and services["train"]["build"]["target"] == "trainer"
    assert "models:/app/models:ro" in services["api"]["volumes"]
    assert services["train"]["profiles"] == ["train"]
    assert "healthcheck" in services["api"] and services["api"]["restart"] == "unless-stopped"
    assert set(compose["volumes"]) == {"models", "data", "store"}
    # One PostgreSQL store for the api replicas and the trainers, each started once it answers.
    postgres = services["postgres"]
    assert (
        "pg_isready" in " ".join(postgres["healthcheck"]["test"])
        and "store:/var/lib/postgresql/data" in postgres["volumes"]
    )
    for name in ("api", "train", "retrain"):
        assert services[name]["environment"]["DEMAND_STORE_URL"].startswith("postgresql+psycopg://"), name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    device = gpu["services"]["api"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    service_stage = dockerfile.split("AS service")[1].split("FROM ")[0]
    assert "torch" not in service_stage and "HEALTHCHECK" in service_stage and "/readyz" in service_stage


def interpolate(value, env):
    """Compose's ${VAR:-default} and $$ escaping, enough for our files."""
    value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], value)
    value = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], ""), value)
    assert "${" not in value
    return value.replace("$$", "$")


def service_process(compose, name, overrides):
    """argv and environment of a compose service, with the host's paths swapped in."""
    service = compose["services"][name]
    env = {k: interpolate(str(v), overrides) for k, v in (service.get("environment") or {}).items()}
    env.update(overrides)
    argv = [interpolate(part, env) for part in service["command"]]
    return argv, {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}


@pytest.mark.slow
def test_compose_commands_train_serve_retrain_promote(tmp_path):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    data = tmp_path / "data"
    data.mkdir()
    # The first model learns from all but the last 13 weeks; they arrive before the retrain,
    # which compares champion and challenger on them alone.
    lines = (ROOT / "data" / "demand.csv").read_text().splitlines(keepends=True)
    week = lines[0].rstrip().split(",").index("week")
    last_weeks = sorted({line.split(",")[week] for line in lines[1:]})[-13:]
    (data / "demand.csv").write_text("".join(l for l in lines if l.split(",")[week] not in last_weeks))
    port = free_port()
    paths = {
        "DEMAND_MODEL_DIR": str(tmp_path / "models"),
        "DEMAND_TRAIN_DATA": str(data / "demand.csv"),
        "DEMAND_RETRAIN_DATA": str(data),
        "DEMAND_HOST": "127.0.0.1",
        "DEMAND_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }

    # train (one-shot): a deliberately short first training, so that the retrain has something to beat.
    argv, env = service_process(compose, "train", {**paths, "DEMAND_TRAIN_EPOCHS": "3"})
    assert argv == ["demand", "train"]
    trained = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert trained.returncode == 0, trained.stderr
    shutil.copy(ROOT / "data" / "demand.csv", data / "demand.csv")  # the new weeks arrive

    # api
    argv, env = service_process(compose, "api", paths)
    api = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/readyz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and api.poll() is None, "api did not become ready"
            time.sleep(0.2)
        assert requests.post(url + "/predict", json=INSTANCE, timeout=5).json()["model_version"] == "v1"

        # retrain (scheduler), asked to run once at start; the challenger trains fully.
        argv, env = service_process(
            compose, "retrain", {**paths, "DEMAND_SCHEDULE_RUN_NOW": "1", "DEMAND_RETRAIN_EPOCHS": "150"}
        )
        assert argv[:3] == ["demand", "schedule", "--cron"] and argv[3] == "0 3 * * 1"
        retrain = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(retrain.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("next retrain at" in line for line in lines):
            assert time.monotonic() < deadline and retrain.poll() is None, "".join(lines)
            time.sleep(0.2)
        retrain.send_signal(signal.SIGTERM)
        assert retrain.wait(30) == 0
        reader.join(5)
        assert any("promoted:" in line for line in lines), "".join(lines)

        # The running api serves the new champion within its reload interval.
        deadline = time.monotonic() + 10
        while requests.post(url + "/predict", json=INSTANCE, timeout=5).json()["model_version"] != "v2":
            assert time.monotonic() < deadline, "the api did not pick up v2"
            time.sleep(0.2)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(20)


def test_the_gpu_images_can_use_the_gpu():
    """The service image brings CUDA and cuDNN for ONNX Runtime (pinned wheels,
    checked at build time); the trainer's torch must be a CUDA build."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    service_stage = dockerfile.split("AS service")[1].split("FROM ")[0]
    trainer_stage = dockerfile.split("AS trainer")[1]
    assert "ARG ORT_PACKAGE=onnxruntime-gpu" in service_stage
    assert "-r /tmp/requirements-gpu.txt" in service_stage
    assert "'CUDAExecutionProvider' in ort.get_available_providers()" in service_stage
    assert "torch.version.cuda is None" in trainer_stage
    gpu = dict(
        line.split("==")
        for line in (ROOT / "deploy" / "requirements-gpu.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime"} <= set(gpu)
    assert gpu["nvidia-cudnn-cu13"].startswith("9.") and gpu["nvidia-cuda-runtime"].startswith("13.")
    trainer = (ROOT / "deploy" / "requirements-trainer.txt").read_text()
    assert "torch==" in trainer and "+cpu" not in trainer and "download.pytorch.org/whl/cpu" not in dockerfile


def _pins(name):
    lines = (ROOT / "deploy" / name).read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    return {name.split("[")[0]: version for name, version in pins.items()}  # psycopg[binary] is psycopg


def _requirement_names(requirements):
    return {re.split(r"[<>=!\[ ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_images_pin_every_dependency_the_package_declares():
    """The images install their pins and then the package with --no-deps, so a
    dependency missing from the pins is missing from the image."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    service, trainer = _pins("requirements-service.txt"), _pins("requirements-trainer.txt")
    # ONNX Runtime's package is the Dockerfile's build argument (CPU or GPU build).
    assert _requirement_names(project["dependencies"]) - {"onnxruntime-gpu"} == set(service)
    assert _requirement_names(project["optional-dependencies"]["train"]) == set(trainer)
    assert _requirement_names(project["optional-dependencies"]["dask"]) == set(_pins("requirements-dask.txt"))


def test_a_cuda_session_preloads_the_cuda_libraries_first(published, monkeypatch):
    import onnxruntime as ort

    from pipeline import bundle
    from pipeline.registry import Registry

    calls = []
    monkeypatch.setattr(bundle, "_cuda_driver_present", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "preload_dlls", lambda **kwargs: calls.append(kwargs), raising=False)
    real_session = ort.InferenceSession
    monkeypatch.setattr(
        ort,
        "InferenceSession",
        lambda *a, **k: calls.append("session") or real_session(*a, **{**k, "providers": ["CPUExecutionProvider"]}),
    )
    registry = Registry(published)
    bundle.make_session(registry.path(registry.champion()) / "model.onnx", "auto")
    assert calls[0] == {"cuda": True, "cudnn": True, "msvc": False} and calls[1] == "session"


def test_the_proxy_limits_are_the_services():
    """nginx cannot import the service's settings, so this test keeps the two in step: the same body cap, and
    head limits tighter than gunicorn's, so that behind nginx every refused head gets nginx's JSON answer."""
    from service.config import Settings

    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    gunicorn = (ROOT / "service" / "gunicorn_conf.py").read_text()
    size = re.search(r"client_max_body_size (\d+)m;", conf)
    assert size and int(size[1]) * 1024 * 1024 == Settings.max_body_bytes
    count, kib = map(int, re.search(r"large_client_header_buffers (\d+) (\d+)k;", conf).groups())
    line = int(re.search(r"^limit_request_line = (\d+)", gunicorn, re.M)[1])
    fields = int(re.search(r"^limit_request_fields = (\d+)", gunicorn, re.M)[1])
    assert "limit_request_field_size" not in gunicorn  # gunicorn's default, 8190 bytes a field
    assert kib * 1024 <= min(line, 8190)  # nginx refuses a longer line or field first
    assert count * kib * 1024 // len("a:\r\n") < fields  # and more fields than gunicorn takes cannot fit


def test_every_package_folder_is_in_the_wheel():
    """The images install the project without -e: a package folder missing from pyproject.toml would be missing there."""
    line = re.search(r"^packages = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    listed = set(re.findall(r'"([\w.]+)"', line))
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("pipeline", "service")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed == found


def test_the_service_image_gives_each_worker_a_listening_socket_and_hosts_do_not():
    """The image's port is the service's alone, so its workers spread connections with SO_REUSEPORT; on a
    host, where another process of the same user could join the port, the default keeps one shared socket."""
    from service.config import Settings

    service_stage = (ROOT / "Dockerfile").read_text().split("AS service")[1].split("FROM ")[0]
    assert "DEMAND_REUSE_PORT=1" in service_stage
    assert Settings().reuse_port is False
