"""Three `demand serve` replicas behind nginx (Debian's, with the repository's
proxy config rendered for their loopback ports), under concurrent load: a
rolling restart, replicas killed with SIGKILL, and a new champion, all with
no failed request but, at most, the answer a killed replica was writing.
What a Kubernetes Deployment does to its pods, with real processes on one
machine, the replicas sharing one PostgreSQL store."""

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
from service.testing import ROOT, free_port, running_proxy, wait_until

from .conftest import INSTANCE

pytestmark = pytest.mark.slow
REPLICAS = 3
KILLS = 10


class Replica:
    def __init__(self, port, model_dir, folder, store_url):
        self.port, self.model_dir, self.folder, self.store_url = port, model_dir, folder, store_url
        self.url = f"http://127.0.0.1:{port}"
        self.process = None

    def start(self):
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.folder / f"metrics-{self.port}"),
            "DEMAND_STORE_URL": self.store_url,  # one PostgreSQL store for every replica
        }
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


@pytest.fixture
def cluster(own_registry, tmp_path, postgres):
    replicas = [Replica(free_port(), own_registry, tmp_path, postgres) for _ in range(REPLICAS)]
    try:
        for replica in replicas:
            replica.start()
        with running_proxy([r.port for r in replicas], tmp_path) as url:
            yield url, replicas, own_registry
    finally:
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
        # (b) replicas killed outright, one at a time, ten times; the others carry the load.
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
    # gunicorn writes an answer's head and body in two calls: a kill between them leaves nginx an answer it can
    # neither complete nor retry, and that one client a truncated body (docs/deployment.md). Nothing else fails.
    truncated = [r for r in results if r[0] is None and "IncompleteRead" in r[1]]
    failed = [r for r in results if r[0] != 200 and r not in truncated]
    assert not failed, failed[:5]
    assert len(truncated) <= KILLS, truncated[:3]
    assert results[-1][1] == "v2" and len(results) > 300


@pytest.mark.slow
def test_what_nginx_answers_itself_is_json(tmp_path):
    """nginx's own 400s (a malformed request, headers too large), 413, 414 and 502 are JSON like every answer
    of the service, not HTML."""
    import json
    import socket

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

    with running_proxy([free_port()], tmp_path) as url:  # an upstream nobody listens on
        proxy_port = int(url.rsplit(":", 1)[1])
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


def test_actuals_posted_through_one_replica_reach_every_replicas_next_forecast(cluster):
    """Three replicas on one PostgreSQL store: a week posted through the proxy (to whichever replica) is the
    history each replica's next plan for that series starts from."""
    url, replicas, _ = cluster
    week = {"discount_fraction": 20, "weeks_to_next_holidays": 4}
    series = f"store-{os.getpid()}"  # the store outlives the test: a series no other test posts
    sold = [
        {**week, "series": series, "week": w, "units_sold": u}
        for w, u in (("2030-01-07", 41000.0), ("2030-01-14", 43500.0))
    ]
    answer = requests.post(url + "/actuals", json={"instances": sold}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"stored": 2, "replaced": 0}, answer.text
    for replica in replicas:
        plan = requests.post(replica.url + "/forecast", json={"series": [{"id": series, "weeks": [week]}]}, timeout=10)
        assert plan.status_code == 200 and plan.json()["history_through"] == {series: "2030-01-14"}, plan.text
