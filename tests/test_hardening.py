"""What a hostile or broken client, or a broken registry, can do to a real
gunicorn on loopback: every loop here is bounded in time and count."""

import json
import logging
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from pipeline.errors import RegistryError
from pipeline.registry import Registry
from service.config import Settings
from service.http_framing import COMPLETE, RequestScanner
from service.testing import ROOT, running_service, wait_until

from .conftest import INSTANCE

pytestmark = pytest.mark.slow
PREDICT_BODY = json.dumps(INSTANCE).encode()


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    with running_service(published, tmp_path_factory.mktemp("gunicorn")) as s:
        yield s


def raw_exchange(server, data, wait=5.0):
    """Send raw bytes, return everything the server answers until it closes (or `wait` passes)."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        answer, deadline = b"", time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
    return answer


def status_and_json(answer):
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return int(head.split(b" ")[1]), json.loads(body)


def answered_within_a_second(server):
    """One probe: True when /predict answered 200 in under a second."""
    began = time.monotonic()
    try:
        ok = requests.post(server.url + "/predict", json=INSTANCE, timeout=1).status_code == 200
    except requests.RequestException:
        return False
    return ok and time.monotonic() - began < 1


def worker_pids(server):
    out = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


# ---------------------------------------------------------------- slow clients


def test_slow_clients_get_408_and_cannot_starve_the_service(published, tmp_path):
    """40 slow clients (20 stop half-way through the body, 20 send headers a
    byte a second) and 10 idle kept-alive connections, for 12 s, against 2
    workers x 4 threads: a probe still gets 90% of its answers in under 1 s.
    Each slow client gets a JSON 408 after DEMAND_CLIENT_TIMEOUT (10 s)."""
    with running_service(published, tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        half_body = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for i, sock in enumerate(half_body):
            head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            if i % 2:  # chunked behind another coding, which gunicorn accepts too
                sock.sendall(head + b"Transfer-Encoding: gzip, chunked\r\n\r\n1\r\n{\r\n")
            else:
                sock.sendall(head + b"Content-Length: 1000\r\n\r\n" + b" " * 500)
        dribblers = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        idle = [requests.Session() for _ in range(10)]
        for session in idle:
            assert session.post(server.url + "/predict", json=INSTANCE, timeout=5).status_code == 200
        header = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 100
        answers = {sock: b"" for sock in half_body + dribblers}
        probes, fast = 0, 0
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 12:
            if time.monotonic() - started >= sent and sent < len(header):
                for sock in dribblers:
                    try:
                        sock.send(header[sent : sent + 1])
                    except OSError:
                        pass  # closed by the server after its 408
                sent += 1
            readable, _, _ = select.select([s for s in answers if s.fileno() >= 0], [], [], 0)
            for sock in readable:
                try:
                    answers[sock] += sock.recv(4096)
                except OSError:
                    pass
            probes += 1
            fast += answered_within_a_second(server)
            time.sleep(0.05)
        for sock in answers:
            sock.settimeout(1)
            try:
                while chunk := sock.recv(4096):
                    answers[sock] += chunk
            except OSError:
                pass
            sock.close()
        assert probes >= 50 and fast / probes >= 0.9, (fast, probes)
        timed_out = [status_and_json(a) for a in answers.values() if a]
        assert len(timed_out) == 40
        assert all(status == 408 and "DEMAND_CLIENT_TIMEOUT" in body["error"] for status, body in timed_out)
        assert server.metric("demand_client_timeouts_total") >= 40


# ---------------------------------------------------------------- the port


def test_serve_on_a_port_in_use_exits_at_once_with_status_1(server, published):
    taken = int(server.url.rsplit(":", 1)[1])
    with socket.socket() as other:  # a port held by any other program
        other.bind(("127.0.0.1", 0))
        other.listen()
        for port in (taken, other.getsockname()[1]):
            began = time.monotonic()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--model-dir",
                    str(published),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
            )
            assert result.returncode == 1
            assert "address already in use" in result.stderr
            assert time.monotonic() - began < 5
    assert server.get("/readyz").status_code == 200  # the first server is untouched


def test_no_listening_socket_is_shared_with_so_reuseport(server):
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize(
    "body, expected",
    [
        pytest.param(b'{"instances":[' + b",".join([b"{}"] * 2_700_000) + b"]}", 413, id="2.7M empty objects (8 MB)"),
        pytest.param(
            json.dumps(
                {
                    "instances": [
                        {"prev_week_sales": 41512.125, "discount_fraction": 12.5, "weeks_to_next_holidays": i % 30}
                        for i in range(200_000)
                    ]
                }
            ).encode(),
            200,
            id="200,000 rows, the row cap (15 MB)",
        ),
    ],
)
def test_a_request_within_the_caps_raises_a_worker_peak_rss_by_at_most_256_mb(published, tmp_path, body, expected):
    with running_service(published, tmp_path, workers=1) as server:
        server.post("/predict", json=INSTANCE)
        (pid,) = worker_pids(server)
        before = peak_rss_mb(pid)
        response = requests.post(
            server.url + "/predict", data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        assert response.status_code == expected, response.text[:200]
        assert peak_rss_mb(pid) - before <= 256


# ---------------------------------------------------------------- the champion pointer


def test_registry_accepts_only_version_names(tmp_path):
    registry = Registry(tmp_path)
    for pointer in ("../other/versions/v7", "/etc", "v1/../../x", "latest"):
        registry.champion_file.parent.mkdir(parents=True, exist_ok=True)
        registry.champion_file.write_text(pointer + "\n")
        with pytest.raises(RegistryError, match="not a version name"):
            registry.champion()
        with pytest.raises(RegistryError, match="not a version name"):
            registry.path(pointer)
        assert not registry.exists(pointer)


def test_a_pointer_outside_the_registry_is_refused_counted_and_v1_keeps_serving(tmp_path, own_registry):
    root = own_registry
    outside = tmp_path / "other" / "versions" / "v7"
    shutil.copytree(root / "versions" / "v1", outside)  # a loadable model, but not ours
    with running_service(root, tmp_path, workers=1, reload_interval=0.2) as server:
        for pointer in ("../other/versions/v7", str(outside)):
            before = server.metric("demand_model_reload_failures_total")
            (root / "champion").write_text(pointer + "\n")
            wait_until(lambda: server.metric("demand_model_reload_failures_total") > before)
            ready = server.get("/readyz").json()
            assert ready["model_version"] == "v1" and "/" not in json.dumps(ready["model_version"])
            assert server.post("/predict", json=INSTANCE).json()["model_version"] == "v1"
        assert "not a version name" in server.log()


def test_a_worker_starting_on_a_broken_champion_serves_the_last_one_that_loads(tmp_path, own_registry):
    root = own_registry
    registry = Registry(root)
    shutil.copytree(root / "versions" / "v1", root / "versions" / "v2")
    (root / "versions" / "v2" / "model.onnx").write_bytes(b"\x08garbage")
    with registry.writer() as writer:
        writer.promote("v2", reason="test", by="test")
    with running_service(root, tmp_path) as server:  # waits until both workers are ready
        health = server.get("/healthz").json()
        assert health["model_version"] == "v1" and health["champion"] == "v2" and health["fallback"] is True
        assert server.get("/readyz").status_code == 200
        assert server.post("/predict", json=INSTANCE).json()["model_version"] == "v1"
        assert str(root) not in json.dumps(health)
        # v2 failed its checks: not retried until the pointer is written again.
        shutil.copy(root / "versions" / "v1" / "model.onnx", root / "versions" / "v2" / "model.onnx")
        time.sleep(2.5)  # two checks (every 2 s): nothing to poll for, since nothing must happen
        assert server.get("/readyz").json()["model_version"] == "v1"
        with registry.writer() as writer:
            writer.set_champion("v2")
        wait_until(lambda: {server.get("/readyz").json()["model_version"] for _ in range(6)} == {"v2"})
        assert "fallback" not in server.get("/healthz").json()


def test_a_champion_whose_folder_appears_later_is_picked_up(tmp_path, own_registry):
    root = own_registry
    with running_service(root, tmp_path, reload_interval=0.2) as server:
        (root / "champion").write_text("v5\n")  # named before its folder exists
        wait_until(lambda: server.get("/healthz").json().get("champion") == "v5")
        assert server.post("/predict", json=INSTANCE).json()["model_version"] == "v1"
        staged = root / "staging" / "v5"
        shutil.copytree(root / "versions" / "v1", staged)
        os.rename(staged, root / "versions" / "v5")
        wait_until(lambda: {server.get("/readyz").json()["model_version"] for _ in range(6)} == {"v5"})


def test_no_registry_path_in_answers_to_clients(tmp_path):
    empty = tmp_path / "secret-registry-location"
    with running_service(empty, tmp_path, wait_ready=False) as server:
        for answer in (
            server.get("/healthz"),
            server.get("/readyz"),
            server.post("/predict", json=INSTANCE),
            server.get("/v2/health/ready"),
        ):
            assert "secret-registry-location" not in answer.text and str(tmp_path) not in answer.text
        assert server.get("/readyz").status_code == 503


# ---------------------------------------------------------------- no 500, no HTML


def test_hostile_v2_ids_get_400(server):
    deep = {
        "id": json.loads("[" * 254 + "]" * 254),
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
    }
    response = server.post("/v2/models/demand/infer", json=deep)
    assert response.status_code == 400 and "'id' must be a string" in response.json()["error"]
    huge = (
        b'{"id": 123456789012345678901234567890, "inputs": [{"name": "features", "datatype": "FP32",'
        b' "shape": [1, 3], "data": [1, 2, NaN]}]}'
    )
    response = server.post("/v2/models/demand/infer", data=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\n{}\r\n0\r\n\r\n",
        b"2;\x01\r\n{}\r\n0\r\n\r\n",  # gunicorn refuses such an extension: it was a 500 that kept the connection
        b"2\r\n{}\r\n0\r\nContent-Length: 5\r\n\r\n",  # a field trailers may not carry
        b"2\r\n{}\r\n0\r\nBad Name: 5\r\n\r\n",
    ],
)
def test_invalid_chunked_framing_gets_json_400_and_a_closed_connection(server, chunks):
    answer = raw_exchange(
        server,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    status, body = status_and_json(answer)
    assert status == 400 and "chunk" in body["error"] and b"Connection: close" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing read past the bad body


def test_chunk_extensions_and_trailers_gunicorn_accepts_are_accepted(server):
    whole = json.dumps(INSTANCE).encode()
    for chunked in (b"%x;a=b\r\n%s\r\n0\r\n\r\n", b'%x ;a="q"\r\n%s\r\n0\r\nX-Checksum: abc\r\n\r\n'):
        answer = raw_exchange(
            server,
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked % (len(whole), whole),
        )
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:300]


def test_well_formed_chunked_bodies_still_work(server):
    response = requests.post(
        server.url + "/predict",
        data=iter([PREDICT_BODY[:10], PREDICT_BODY[10:]]),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "request_bytes, expected",
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 120 + b"\r\n", 431),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n", 413),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501),
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400),  # bare LF: at once, not a 408 after the client timeout
    ],
)
def test_the_http_layer_answers_its_own_errors_in_json(server, request_bytes, expected):
    counted = f'demand_http_requests_total{{method="(none)",route="(none)",status="{expected}"}}'
    before = server.metric(counted)
    status, body = status_and_json(raw_exchange(server, request_bytes))
    assert status == expected and body["error"]
    assert server.metric(counted) == before + 1  # counted, though the app never saw it


def test_v2_duplicate_inputs_and_non_boolean_parameters_get_400(server):
    tensor = {"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    cases = [
        {"inputs": [tensor, tensor]},
        {"inputs": [tensor], "parameters": {"binary_data_output": "false"}},
        {"inputs": [tensor], "parameters": "binary"},
        {"inputs": [tensor], "outputs": [{"name": "units_sold", "parameters": {"binary_data": 1}}]},
        {"inputs": [tensor], "outputs": [{"name": "units_sold"}, {"name": "units_sold"}]},
        {"inputs": [{**tensor, "parameters": {"binary_data_size": "12"}}]},
    ]
    for case in cases:
        response = server.post("/v2/models/demand/infer", json=case)
        assert response.status_code == 400 and response.json()["error"], case


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/predict"),
        ("post", "/v1/models/demand:predict"),
        ("post", "/v2/models/demand/infer"),
        ("get", "/healthz"),
    ],
)
def test_an_unsupported_content_encoding_gets_415_on_every_route(server, method, path):
    response = getattr(requests, method)(
        server.url + path,
        data=PREDICT_BODY,
        timeout=10,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 415 and "Content-Encoding" in response.json()["error"]


def test_an_exception_on_the_fast_path_is_the_same_json_500_and_metric_as_in_flask(app, client, monkeypatch):
    def count_500():
        text = client.get("/metrics").get_data(as_text=True)
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("demand_http_requests_total{") and 'route="/predict"' in line and 'status="500"' in line
        )

    holder = app.config["MODEL_HOLDER"]
    monkeypatch.setattr(holder.bundle, "forecast", lambda *a: 1 / 0)
    before = count_500()
    fast = client.post("/predict", json=INSTANCE)
    # The same request through the Flask view, without the fast path in front.
    app.wsgi_app, middleware = app.wsgi_app.wsgi_app, app.wsgi_app
    try:
        slow = client.post("/predict", json=INSTANCE)
    finally:
        app.wsgi_app = middleware
    assert fast.status_code == slow.status_code == 500
    assert fast.get_json() == slow.get_json() == {"error": "internal error; the details are in the server log"}
    assert count_500() - before == 2


def test_clients_that_stop_reading_their_answer_hold_no_thread(published, tmp_path):
    """12 clients ask for an 8 MB answer and never read it (a 4 KB receive
    buffer), against 2 workers x 4 threads: for 6 s a probe still gets 90% of
    its answers in under 1 s, because the event loop, not a thread, waits to
    send the rest. After DEMAND_CLIENT_TIMEOUT the connections are closed."""
    body = json.dumps({"instances": [INSTANCE] * 60_000}).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with running_service(published, tmp_path, client_timeout=8) as server:
        port = int(server.url.rsplit(":", 1)[1])
        stalled = []
        for _ in range(12):
            sock = socket.socket()
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            stalled.append(sock)
        time.sleep(1.0)  # nothing to poll for: the answers are computed and stuck in the send buffers
        probes, fast, started = 0, 0, time.monotonic()
        while time.monotonic() - started < 6:
            probes += 1
            fast += answered_within_a_second(server)
            time.sleep(0.05)
        assert probes >= 30 and fast / probes >= 0.9, (fast, probes)
        wait_until(lambda: server.metric("demand_client_timeouts_total") >= 12, 15)
        for sock in stalled:
            sock.close()


def test_clients_that_never_close_after_connection_close_do_not_stall_the_event_loop(server):
    """After an answer with `Connection: close` the worker half-closes and waits for
    the client to close too (RFC 9112 9.6), in its event loop: 20 HTTP/1.0 clients
    that never close cost the next client nothing."""
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps(INSTANCE).encode()
    lingering = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        lingering.append(sock)
    for sock in lingering:
        sock.settimeout(5)
        assert sock.recv(65536).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    began = time.monotonic()
    assert requests.post(server.url + "/predict", json=INSTANCE, timeout=5).status_code == 200
    assert time.monotonic() - began < 0.5
    for sock in lingering:
        sock.close()


# ---------------------------------------------------------------- a worker killed mid-answer


class CountedSends:
    """A real socket that records what each call that sends was given."""

    def __init__(self, sock):
        self.sock, self.sends = sock, []

    def sendmsg(self, buffers):
        sent = self.sock.sendmsg(buffers)
        self.sends.append(b"".join(buffers)[:sent])
        return sent

    def send(self, data, *flags):
        sent = self.sock.send(data, *flags)
        self.sends.append(bytes(data[:sent]))
        return sent

    def __getattr__(self, name):
        return getattr(self.sock, name)


@pytest.fixture
def holding_client():
    """(a ClientSocket holding the next head, its CountedSends, the other end of the socket)."""
    from service.worker import ClientSocket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        counted = CountedSends(ours)
        client = ClientSocket(counted, timeout=1)
        client.hold_head()
        yield client, counted, theirs


def test_a_response_head_leaves_in_the_same_send_as_its_body(holding_client):
    """Killed between two sends, a worker would leave the load balancer a head
    without a body, which it can neither retry nor complete."""
    client, counted, theirs = holding_client
    client.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert counted.sends == []
    client.sendall(b"body")
    client.sendall(b"more")
    client.release_head()
    assert counted.sends == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]
    client.hold_head()  # a head with no body (HEAD, 204) goes at the end of the request
    client.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    client.release_head()
    assert counted.sends[-1] == b"HTTP/1.1 204 No Content\r\n\r\n"
    theirs.settimeout(1)
    expected = b"HTTP/1.1 200 OK\r\n\r\nbodymoreHTTP/1.1 204 No Content\r\n\r\n"
    received = b""
    while len(received) < len(expected):
        received += theirs.recv(65536)
    assert received == expected


def test_a_head_and_a_body_larger_than_the_socket_takes_arrive_whole_and_in_order():
    from service.worker import ClientSocket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = ClientSocket(ours, timeout=1)
        head, body = b"HTTP/1.1 200 OK\r\nContent-Length: 8000000\r\n\r\n", os.urandom(8_000_000)
        client.hold_head()
        client.sendall(head)
        client.sendall(body)
        client.release_head()
        assert client.outgoing, "the socket buffer cannot take 8 MB at once: the rest waits for the event loop"
        received, deadline = bytearray(), time.monotonic() + 10
        theirs.setblocking(False)
        while len(received) < len(head) + len(body) and time.monotonic() < deadline:
            client.flush()
            try:
                received += theirs.recv(1 << 20)
            except BlockingIOError:
                select.select([theirs], [], [], 0.1)
        assert bytes(received) == head + body
        assert client.flush()


@pytest.fixture
def bare_worker(tmp_path):
    """The service's worker class and gunicorn config around tests/streaming_app.py."""
    with running_service(
        tmp_path, tmp_path, workers=1, app="tests.streaming_app:app", is_ready=lambda s: s.get("/").ok
    ) as s:
        yield s


def test_an_interim_103_goes_at_once_not_with_the_final_head(bare_worker):
    port = int(bare_worker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /early-hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = sock.recv(65536)  # the app pauses a second between the 103 and its answer
        assert first.startswith(b"HTTP/1.1 103 ") and b"HTTP/1.1 200" not in first, first
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"hello")


def test_a_streamed_answer_that_fails_half_way_does_not_crash_the_worker(bare_worker):
    """gunicorn closes the connection while unsent bytes wait for the event loop:
    they are dropped, and the worker carries on (it had died on the closed socket)."""
    workers_before = worker_pids(bare_worker)
    port = int(bare_worker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /fails-mid-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.0)  # not reading: the answer backs up in the worker's event loop
        received = b""
        try:
            while chunk := sock.recv(1 << 20):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert len(received) < 32_000_000, "an answer that failed half-way must not look complete"
    assert requests.get(bare_worker.url + "/", timeout=5).text == "ok"
    assert worker_pids(bare_worker) == workers_before
    assert "exited with code" not in bare_worker.log() and "Invalid file descriptor" not in bare_worker.log()


def test_an_interim_answer_is_sent_at_once_and_the_head_still_waits_for_its_body(holding_client):
    client, counted, _ = holding_client
    client.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
    assert counted.sends == [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"]
    client.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    client.sendall(b"body")
    assert counted.sends[1:] == [b"HTTP/1.1 200 OK\r\n\r\nbody"]


def test_a_small_request_is_answered_on_the_event_loop_and_a_large_one_on_a_request_thread(bare_worker):
    small = requests.post(bare_worker.url + "/thread", data=b"x" * 100, timeout=5)
    large = requests.post(bare_worker.url + "/thread", data=b"x" * (Settings.inline_request_bytes + 1), timeout=5)
    assert (small.text, large.text) == ("loop ", "request thread ")


def test_with_inline_requests_off_every_request_goes_to_a_request_thread(tmp_path):
    with running_service(
        tmp_path,
        tmp_path,
        workers=1,
        app="tests.streaming_app:app",
        inline_request_bytes=0,
        is_ready=lambda s: s.get("/").ok,
    ) as s:
        assert requests.post(s.url + "/thread", data=b"x", timeout=5).text == "request thread "


def test_a_long_pipeline_of_small_requests_is_answered_whole_and_in_order(bare_worker):
    """Each answered on the loop or on a thread, never one inside another's answer (no deep recursion)."""
    port = int(bare_worker.url.rsplit(":", 1)[1])
    count = 2000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(b"GET /thread?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
        received, deadline = b"", time.monotonic() + 20
        while received.count(b"HTTP/1.1 200 OK") < count and time.monotonic() < deadline:
            received += sock.recv(1 << 20)
    bodies = [answer.rsplit(b"\r\n\r\n", 1)[-1] for answer in received.split(b"HTTP/1.1 200 OK")[1:]]
    assert [body.split(b" ")[-1] for body in bodies] == [b"%d" % i for i in range(count)]
    assert {body.rsplit(b" ", 1)[0] for body in bodies} == {b"loop", b"request thread"}
    assert "RecursionError" not in bare_worker.log()


@pytest.mark.parametrize(
    "request_bytes, framed",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nok", False),  # gunicorn refuses it
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", False),
    ],
)
def test_only_a_request_the_loop_framed_itself_can_be_answered_on_it(request_bytes, framed):
    scanner = RequestScanner(max_body=1 << 20)
    assert scanner.feed(bytearray(request_bytes)) == COMPLETE
    assert scanner.framed is framed


def test_a_request_after_one_empty_line_is_still_read_whole_by_the_event_loop(published, tmp_path):
    """gunicorn skips one CRLF before the request line; so does the loop's framing,
    so such a client cannot hold a request thread with a half-sent body."""
    with running_service(published, tmp_path, client_timeout=1) as server:
        answer = raw_exchange(
            server,
            b"\r\nPOST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            wait=5,
        )
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        whole = json.dumps(INSTANCE).encode()
        answer = raw_exchange(
            server,
            b"\r\nPOST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(whole), whole),
        )
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
        assert "Traceback" not in server.log()


def stopped_worker(listener):
    """A Worker as gunicorn's loop leaves it, with one real listener, for its shutdown steps alone."""
    from gunicorn.config import Config
    from gunicorn.workers.gthread import PollableMethodQueue

    from service.worker import Worker

    worker = Worker.__new__(Worker)
    worker.alive, worker._accepting, worker.sockets, worker.cfg = True, False, [listener], Config()
    worker.nr_conns, worker.worker_connections = 0, 1000
    worker.poller, worker.method_queue = selectors.DefaultSelector(), PollableMethodQueue()
    worker.method_queue.init()
    return worker


def a_listener():
    from gunicorn.config import Config
    from gunicorn.sock import TCPSocket

    return TCPSocket(("127.0.0.1", 0), Config(), logging.getLogger("test"))


def test_sigterm_between_two_steps_of_the_loop_leaves_the_listeners_to_the_loop():
    """The interleaving the SIGTERM test below hits only now and then, made certain.
    The signal lands after the loop's `while alive` check and before it turns
    accepting back on. The handler must not have closed the listeners (that
    crashed the worker, exit 255, without draining); the loop's last turn closes
    them."""
    listener = a_listener()
    worker = stopped_worker(listener)
    try:
        worker.handle_exit(signal.SIGTERM, None)
        worker.set_accept_enabled(True)  # what the loop does next when it had stopped accepting
        assert listener.sock is not None
        worker.set_accept_enabled(False)  # the loop's last turn
        assert listener.sock is None
    finally:
        listener.close()
        worker.poller.close()
        worker.method_queue.close()


def test_a_worker_whose_master_died_stops_as_on_sigterm():
    """Orphaned (the master killed), it must close its listeners and answer
    "Connection: close", not keep them open for the whole graceful timeout."""
    listener = a_listener()
    worker = stopped_worker(listener)
    worker.ppid, worker.log = os.getpid() + 1, logging.getLogger("test")  # not our parent: the master is gone
    try:
        assert worker.is_parent_alive() is False
        assert worker.alive is False
        worker.set_accept_enabled(False)  # the loop's last turn, as after SIGTERM
        assert listener.sock is None
    finally:
        listener.close()
        worker.poller.close()
        worker.method_queue.close()


def test_sigquit_while_the_loop_answers_a_request_exits_once_the_answer_is_out():
    """gunicorn exits from inside the SIGQUIT/SIGINT handler. On the loop's thread,
    answering a small request itself, that exit landed in gunicorn's request
    handling, was logged as an error and became a graceful stop instead."""
    from concurrent.futures import ThreadPoolExecutor

    listener = a_listener()
    worker = stopped_worker(listener)
    worker._inline, worker.tpool = True, ThreadPoolExecutor(1)
    try:
        worker.handle_quit(signal.SIGQUIT, None)  # lands mid-answer: nothing may raise into it
        assert worker.alive
        worker._inline = False  # the answer is out; the loop turns to its next events
        with pytest.raises(SystemExit):
            worker.method_queue.run_callbacks(None)
        assert not worker.alive
    finally:
        listener.close()
        worker.poller.close()
        worker.method_queue.close()


def test_a_full_worker_still_takes_the_connections_waiting_when_it_stops():
    """Busy past worker_connections is when the queues are longest: closing the
    listener would reset them all."""
    listener = a_listener()
    worker = stopped_worker(listener)
    worker.nr_conns = worker.worker_connections = 2
    taken = []
    worker._start_serving = lambda client, address, server: taken.append(client)
    clients = [socket.create_connection(listener.getsockname()[:2]) for _ in range(5)]
    try:
        worker.alive = False
        worker.set_accept_enabled(False)  # the loop's last turn
        assert len(taken) == 5 and listener.sock is None
    finally:
        for sock in taken + clients:
            sock.close()
        listener.close()
        worker.poller.close()
        worker.method_queue.close()


def test_connections_waiting_when_a_worker_stops_are_answered_not_reset(published, tmp_path):
    """With DEMAND_REUSE_PORT each worker's own socket has its own queue of
    connections, reset when it closes, though the service stays up (a reload,
    one worker's restart). The worker takes them before closing it. Made
    certain: the worker is paused while clients connect and send, then told to
    stop."""
    body = json.dumps(INSTANCE).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with running_service(published, tmp_path, workers=1, reuse_port=1) as server:
        port, (worker,) = int(server.url.rsplit(":", 1)[1]), worker_pids(server)
        os.kill(worker, signal.SIGSTOP)
        try:
            clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(12)]
            for client in clients:
                client.sendall(request)
            os.kill(worker, signal.SIGTERM)
        finally:
            os.kill(worker, signal.SIGCONT)
        answers = []
        for client in clients:
            with client:
                answer = b""
                try:
                    while chunk := client.recv(65536):
                        answer += chunk
                except ConnectionResetError:
                    answer += b"(reset)"
                answers.append(answer.split(b"\r\n", 1)[0])
        assert answers == [b"HTTP/1.1 200 OK"] * len(clients)
        assert "Traceback" not in server.log()


def test_sigterm_while_small_requests_arrive_stops_every_worker_cleanly(published, tmp_path):
    """A stopping worker closes its listeners while clients keep connecting: no step
    of its loop may then meet a closed one (it exited 255 without draining), and
    taking the connections waiting on them must end though the clients connect again."""
    body = json.dumps(INSTANCE).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    for attempt in range(3):
        (tmp_path / str(attempt)).mkdir()
        with running_service(published, tmp_path / str(attempt), workers=2, reuse_port=1) as server:
            port, stop = int(server.url.rsplit(":", 1)[1]), threading.Event()

            def new_connections():
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                            sock.sendall(request)
                            while sock.recv(65536):
                                pass
                    except OSError:
                        time.sleep(0.005)

            clients = [threading.Thread(target=new_connections) for _ in range(8)]
            for client in clients:
                client.start()
            time.sleep(1.0)
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)
            stop.set()
            for client in clients:
                client.join()
            log = server.log()
            assert "Exception in worker process" not in log and "exited with code" not in log, log[-3000:]
            assert server.process.returncode == 0
