"""Run the real service under gunicorn on a free loopback port: for the tests
and the benchmarks (which need `requests`, a test dependency)."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from .launch import gunicorn_command

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url, process, log_path):
        self.url, self.process, self.log_path = url, process, log_path

    def log(self):
        return self.log_path.read_text()

    def get(self, path, **kwargs):
        return requests.get(self.url + path, timeout=10, **kwargs)

    def post(self, path, **kwargs):
        return requests.post(self.url + path, timeout=10, **kwargs)

    def metric(self, name):
        """The value of an unlabelled metric, merged across workers (0 before its first count)."""
        lines = [line for line in self.get("/metrics").text.splitlines() if line.startswith(name + " ")]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    def serving(self):
        """{version: number of workers serving it}."""
        counts = {}
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("demand_model_info{") and line.endswith(" 1.0"):
                version = line.split('version="', 1)[1].split('"', 1)[0]
                counts[version] = counts.get(version, 0) + 1
        return counts

    def ready_workers(self):
        text = self.get("/metrics").text
        return sum(1 for line in text.splitlines() if line.startswith("demand_worker_ready{") and line.endswith(" 1.0"))


def wait_until(condition, seconds=15.0, step=0.05):
    """Poll `condition` until it is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(step)


@contextlib.contextmanager
def running_service(
    model_dir,
    tmp_path,
    workers=2,
    threads=4,
    wait_ready=True,
    app="service.app:create_app()",
    is_ready=None,
    **settings,
):
    """Yield a Server once every worker is ready; stop it (SIGTERM) afterwards.

    `is_ready(server)` replaces the default check (every worker reports a
    loaded model in /metrics); with `wait_ready=False` answering /healthz is enough.
    """
    port = free_port()
    env = {
        **os.environ,
        "DEMAND_MODEL_DIR": str(model_dir),
        "DEMAND_HOST": "127.0.0.1",
        "DEMAND_PORT": str(port),
        "DEMAND_WORKERS": str(workers),
        "DEMAND_THREADS": str(threads),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{port}"),
    }
    env.update({f"DEMAND_{k.upper()}": str(v) for k, v in settings.items()})
    log_path = tmp_path / f"gunicorn-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            gunicorn_command(app), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.log()}")
            try:
                if is_ready:
                    if is_ready(server):
                        break
                elif (server.ready_workers() == workers) if wait_ready else server.get("/healthz").ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not ready in 30 s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
