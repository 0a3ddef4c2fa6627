"""Run the real service under gunicorn on a free loopback port: for the tests
and the benchmarks (which need `requests`, a test dependency)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import requests

from .launch import gunicorn_command

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.url, self.process, self.log_path = url, process, log_path

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric, merged across workers (0 before its first count)."""
        lines = [line for line in self.get("/metrics").text.splitlines() if line.startswith(name + " ")]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    def serving(self) -> dict[str, int]:
        """{version: number of workers serving it}."""
        counts: dict[str, int] = {}
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("demand_model_info{") and line.endswith(" 1.0"):
                version = line.split('version="', 1)[1].split('"', 1)[0]
                counts[version] = counts.get(version, 0) + 1
        return counts

    def ready_workers(self) -> int:
        text = self.get("/metrics").text
        return sum(1 for line in text.splitlines() if line.startswith("demand_worker_ready{") and line.endswith(" 1.0"))


def wait_until(condition: Callable[[], object], seconds: float = 15.0, step: float = 0.05) -> None:
    """Poll `condition` until it is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(step)


@contextlib.contextmanager
def running_service(
    model_dir: str | os.PathLike[str],
    tmp_path: Path,
    workers: int = 2,
    threads: int = 4,
    wait_ready: bool = True,
    app: str = "service.app:create_app()",
    is_ready: Callable[[Server], object] | None = None,
    worker_class: str | None = None,
    **settings: Any,
) -> Iterator[Server]:
    """Yield a Server once every worker is ready; stop it (SIGTERM) afterwards.

    `is_ready(server)` replaces the default check (every worker reports a
    loaded model in /metrics); with `wait_ready=False` answering /healthz is enough.
    `worker_class` overrides gunicorn's (gthread) on its command line.
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
            gunicorn_command(app) + (["-k", worker_class] if worker_class else []),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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


def nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    assert found, "nginx is needed here (make test installs it)"
    return found


def render_proxy(ports: Sequence[int], listen: str) -> str:
    """deploy/nginx.conf with its upstream on loopback `ports` (no DNS re-resolution), listening on `listen`
    ("127.0.0.1:8001", or "8080" on every address)."""
    lines = []
    for line in (ROOT / "deploy" / "nginx.conf").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("resolver "):
            continue
        if stripped.startswith("server ") and " resolve" in stripped:  # the same parameters, on loopback
            parameters = stripped.rstrip(";").split()[2:]
            options = " ".join(p for p in parameters if p != "resolve")
            lines += [f"    server 127.0.0.1:{port} {options};" for port in ports]
            continue
        lines.append(line)
    return re.sub(r"listen \d+;", f"listen {listen};", "\n".join(lines))


POD_PROXY_CONFIG = ROOT / "deploy" / "k8s" / "base" / "nginx.conf"


def pod_proxy_config() -> str:
    """deploy/nginx.conf for the Kubernetes api pod's nginx (deploy/k8s/base/api.yaml). Write it with
    `python -c 'import service.testing as t; t.POD_PROXY_CONFIG.write_text(t.pod_proxy_config())'`."""
    return (
        "# Generated from deploy/nginx.conf by service.testing.pod_proxy_config(): the pod's api on\n"
        "# 127.0.0.1:8000, clients on 8080. Edit deploy/nginx.conf and generate this again.\n"
        + render_proxy([8000], "8080")
        + "\n"
    )


def write_proxy_config(folder: Path, ports: Sequence[int], proxy_port: int) -> None:
    """An nginx.conf in `folder` running deploy/nginx.conf in front of `ports`."""
    (folder / "demand.conf").write_text(render_proxy(ports, f"127.0.0.1:{proxy_port}"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/nginx-error.log warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  fastcgi_temp_path {folder}/fastcgi;\n  uwsgi_temp_path {folder}/uwsgi;\n  scgi_temp_path {folder}/scgi;\n"
        f"  include {folder}/demand.conf;\n}}\n"
    )


@contextlib.contextmanager
def running_proxy(ports: Sequence[int], folder: str | os.PathLike[str]) -> Iterator[str]:
    """Yield the URL of nginx running deploy/nginx.conf in front of the services on `ports`, once it listens."""
    folder = Path(folder) / f"nginx-{ports[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    proxy_port = free_port()
    write_proxy_config(folder, ports, proxy_port)
    proxy = subprocess.Popen(
        [nginx(), "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def listening() -> bool:
        assert proxy.poll() is None, cast(IO[str], proxy.stderr).read()  # a pipe: stderr=PIPE
        try:
            socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(listening, 10)
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        proxy.terminate()
        proxy.wait(10)
