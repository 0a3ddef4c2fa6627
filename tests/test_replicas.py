"""Three `demand serve` replicas behind nginx (Debian's, with the repository's
proxy config rendered for their loopback ports), under concurrent load: a
rolling restart, replicas killed with SIGKILL, and a new champion, all with
no failed request. What a Kubernetes Deployment does to its pods, with real
processes on one machine."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from pipeline.registry import Registry
from service.testing import ROOT, free_port, wait_until

from .conftest import INSTANCE

pytestmark = pytest.mark.slow
REPLICAS = 3
KILLS = 10


def nginx():
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    assert found, "nginx is needed for the multi-replica test (make test installs it)"
    return found


def render_proxy(ports, listen):
    """deploy/nginx.conf with its upstream on `ports` (no DNS re-resolution) and listening on `listen`."""
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
    text = "\n".join(lines)
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in text
    return re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", text)


class Replica:
    def __init__(self, port, model_dir, folder):
        self.port, self.model_dir, self.folder = port, model_dir, folder
        self.url = f"http://127.0.0.1:{port}"
        self.process = None

    def start(self):
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.folder / f"metrics-{self.port}")}
        log = open(self.folder / f"replica-{self.port}.log", "a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--model-dir",
                str(self.model_dir),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.ready, 30)

    def ready(self):
        assert self.process.poll() is None, (self.folder / f"replica-{self.port}.log").read_text()[-2000:]
        try:
            return requests.get(self.url + "/readyz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def version(self):
        return requests.get(self.url + "/readyz", timeout=2).json()["model_version"]

    def stop(self, sig=signal.SIGTERM):
        os.killpg(self.process.pid, sig)
        self.process.wait(30)


def write_proxy_config(tmp_path, ports, proxy_port):
    """An nginx.conf in `tmp_path` running deploy/nginx.conf in front of `ports`."""
    (tmp_path / "demand.conf").write_text(render_proxy(ports, proxy_port))
    user = "user root;\n" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi;\n  uwsgi_temp_path {tmp_path}/uwsgi;\n  scgi_temp_path {tmp_path}/scgi;\n"
        f"  include {tmp_path}/demand.conf;\n}}\n"
    )


@pytest.fixture
def cluster(own_registry, tmp_path):
    replicas = [Replica(free_port(), own_registry, tmp_path) for _ in range(REPLICAS)]
    proxy_port = free_port()
    write_proxy_config(tmp_path, [r.port for r in replicas], proxy_port)
    proxy = None
    try:
        for replica in replicas:
            replica.start()
        proxy = subprocess.Popen(
            [nginx(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{proxy_port}"

        def proxy_up():
            assert proxy.poll() is None, proxy.stderr.read()
            try:
                return requests.get(url + "/readyz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_until(proxy_up, 10)
        yield url, replicas, own_registry
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for replica in replicas:
            if replica.process and replica.process.poll() is None:
                replica.stop()


def load(url, stop, results):
    with requests.Session() as session:
        while not stop.is_set():
            try:
                response = session.post(url + "/predict", json={"instances": [INSTANCE] * 5}, timeout=10)
            except requests.RequestException as err:
                results.append((None, repr(err)))
                continue
            try:
                results.append((response.status_code, response.json().get("model_version")))
            except ValueError:
                results.append((response.status_code, response.text[:200]))


def test_rolling_restart_kill_9_and_a_new_champion_fail_no_request(cluster):
    url, replicas, root = cluster
    stop, results = threading.Event(), []
    clients = [threading.Thread(target=load, args=(url, stop, results)) for _ in range(6)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: len(results) > 50)
        # (a) a rolling restart, one replica at a time, each ready before the next goes
        for replica in replicas:
            replica.stop()
            replica.start()
        # (b) replicas killed outright, one at a time, ten times; the others carry
        # the load. A kill can land between two writes of an answer: the
        # worker sends a head and its body together, or nginx could neither
        # retry nor complete it (service/worker.py).
        for kill in range(KILLS):
            replica, seen = replicas[kill % REPLICAS], len(results)
            replica.stop(signal.SIGKILL)
            wait_until(lambda: len(results) > seen + 30)
            replica.start()
        # (c) a new champion, seen by every replica within 5 s
        shutil.copytree(root / "versions" / "v1", root / "staging" / "v2")
        os.rename(root / "staging" / "v2", root / "versions" / "v2")
        with Registry(root).writer() as writer:
            writer.promote("v2", "test", "test")
        promoted = time.monotonic()
        wait_until(lambda: all(r.version() == "v2" for r in replicas), 5)
        assert time.monotonic() - promoted <= 5
        count = len(results)
        wait_until(lambda: len(results) > count + 50)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    assert results[-1][1] == "v2" and len(results) > 300


@pytest.mark.slow
def test_what_nginx_answers_itself_is_json(tmp_path):
    """nginx's own 400s (a malformed request, headers too large), 413, 414 and 502 are JSON like every answer
    of the service, not HTML."""
    import json
    import socket

    proxy_port = free_port()
    write_proxy_config(tmp_path, [free_port()], proxy_port)  # an upstream nobody listens on
    proxy = subprocess.Popen(
        [nginx(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def raw(request):
        """(status, head, body) of one answer, read to its Content-Length: nginx may keep the connection."""
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as conn:
            conn.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += conn.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
        return int(head.split()[1]), head.decode("latin-1").lower(), body

    def up():
        assert proxy.poll() is None, proxy.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(up, 10)
        cases = [
            (400, "malformed", b"GARBAGE\r\n\r\n"),
            (413, "larger than", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 40000000\r\n\r\n"),
            (414, "line too long", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            (400, "headers too large", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n"),
            (502, "no api replica", b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ]
        for status, words, request in cases:
            got, head, body = raw(request)
            assert got == status, (status, head)
            assert "content-type: application/json" in head, head
            assert words in json.loads(body)["error"], body
    finally:
        proxy.terminate()
        proxy.wait(10)
