"""What a hostile or broken client, or a broken registry, can do to the
service as it is deployed: gunicorn's stock threaded worker behind nginx with
deploy/nginx.conf (compose and Kubernetes run it so), both real, on loopback.
Every loop here is bounded in time and count."""

import contextlib
import json
import os
import select
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
from service.testing import ROOT, running_proxy, running_service, wait_until

from .conftest import INSTANCE

pytestmark = pytest.mark.slow
PREDICT_BODY = json.dumps(INSTANCE).encode()


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    with running_service(published, tmp_path_factory.mktemp("gunicorn")) as s:
        yield s


@contextlib.contextmanager
def behind_nginx(published, folder, **settings):
    """(the proxy's URL, the service) for a service of its own behind deploy/nginx.conf."""
    with running_service(published, folder, **settings) as service:
        with running_proxy([port_of(service.url)], folder) as url:
            yield url, service


@pytest.fixture(scope="module")
def proxy(server, tmp_path_factory):
    """The URL of nginx with deploy/nginx.conf in front of the module's service."""
    with running_proxy([port_of(server.url)], tmp_path_factory.mktemp("nginx")) as url:
        yield url


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def raw_exchange(url, data, wait=5.0):
    """Send raw bytes, return everything the server answers until it closes (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=wait) as sock:
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


def answered_within_a_second(url):
    """One probe: True when /predict answered 200 in under a second."""
    began = time.monotonic()
    try:
        ok = requests.post(url + "/predict", json=INSTANCE, timeout=1).status_code == 200
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


def test_slow_clients_time_out_at_the_proxy_and_cannot_starve_the_service(published, tmp_path):
    """40 slow clients (20 stop half-way through the body, 20 send headers a
    byte a second) and 10 idle kept-alive connections, for 12 s, against 2
    workers x 4 threads behind nginx: a probe still gets 90% of its answers in
    under 1 s, and nginx closes every slow connection by its deadline (10 s)."""
    with behind_nginx(published, tmp_path) as (url, _):
        port = port_of(url)
        half_body = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for i, sock in enumerate(half_body):
            head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            if i % 2:
                sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
            else:
                sock.sendall(head + b"Content-Length: 1000\r\n\r\n" + b" " * 500)
        dribblers = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        idle = [requests.Session() for _ in range(10)]
        for session in idle:
            assert session.post(url + "/predict", json=INSTANCE, timeout=5).status_code == 200
        header = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 100
        open_until = {sock: None for sock in half_body + dribblers}
        probes, fast = 0, 0
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 12:
            if time.monotonic() - started >= sent and sent < len(header):
                for sock in dribblers:
                    try:
                        sock.send(header[sent : sent + 1])
                    except OSError:
                        pass  # closed by the proxy
                sent += 1
            readable, _, _ = select.select([s for s, t in open_until.items() if t is None], [], [], 0)
            for sock in readable:
                try:
                    if not sock.recv(4096):
                        open_until[sock] = time.monotonic() - started
                except OSError:
                    open_until[sock] = time.monotonic() - started
            probes += 1
            fast += answered_within_a_second(url)
            time.sleep(0.05)
        for sock in open_until:
            sock.close()
        assert probes >= 50 and fast / probes >= 0.9, (fast, probes)
        assert all(t is not None and t < 11.5 for t in open_until.values()), sorted(open_until.values(), key=str)


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
        b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        b"2\r\n{}XX0\r\n\r\n",  # no line end after the data
    ],
)
def test_invalid_chunked_framing_gets_one_json_400_and_a_closed_connection(proxy, chunks):
    """Behind nginx, which reads the chunked body itself: one answer, JSON, nothing read past the bad body."""
    answer = raw_exchange(
        proxy,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    status, body = status_and_json(answer)
    assert status == 400 and body["error"] and b"Connection: close" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing read past the bad body


@pytest.mark.parametrize(
    "trailer",
    [b"X-Checksum: abc", b"X-Trailer: a\x01b", b"Bad Name: 5", b"Content-Length: 5"],
)
def test_chunk_extensions_and_trailers_get_exactly_one_answer(proxy, trailer):
    """Directly, gunicorn answered a trailer with a control character in its value twice (401 or 404, then 400),
    or with a 500. nginx reads the body and drops its trailers: one request, one answer."""
    whole = json.dumps(INSTANCE).encode()
    for extension in (b"", b";a=b", b' ;a="q"'):
        answer = raw_exchange(
            proxy,
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x%s\r\n%s\r\n0\r\n%s\r\n\r\n"
            % (len(whole), extension, whole, trailer),
        )
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.count(b"HTTP/1.1 ") == 1, answer[:300]


@pytest.mark.parametrize("url", ["server", "proxy"])
def test_well_formed_chunked_bodies_still_work(url, request):
    base = request.getfixturevalue(url)
    response = requests.post(
        (base if isinstance(base, str) else base.url) + "/predict",
        data=iter([PREDICT_BODY[:10], PREDICT_BODY[10:]]),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "request_bytes, expected",
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),  # the api's own
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 1600 + b"\r\n", 400),  # too large
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n", 413),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501),
        (b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n", 200),  # bare LF: read, not left to time out
    ],
)
def test_every_answer_behind_the_proxy_is_json(proxy, request_bytes, expected):
    """What nginx refuses itself it answers in JSON (deploy/nginx.conf); what it lets through, the api answers."""
    status, body = status_and_json(raw_exchange(proxy, request_bytes))
    assert status == expected and body


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
    buffer), against 2 workers x 4 threads behind nginx: for 6 s a probe still
    gets 90% of its answers in under 1 s, because nginx, not a thread, holds
    the rest of each answer."""
    body = json.dumps({"instances": [INSTANCE] * 60_000}).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with behind_nginx(published, tmp_path) as (url, service):
        stalled = []
        for _ in range(12):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port_of(url)))
            sock.sendall(request)
            stalled.append(sock)
        # Every answer computed: the service has counted 12 /predict requests.
        counted = 'demand_http_requests_total{method="POST",route="/predict",status="200"}'
        wait_until(lambda: service.metric(counted) >= 12, 30)
        probes, fast, started = 0, 0, time.monotonic()
        while time.monotonic() - started < 6:
            probes += 1
            fast += answered_within_a_second(url)
            time.sleep(0.05)
        assert probes >= 30 and fast / probes >= 0.9, (fast, probes)
        for sock in stalled:
            sock.close()


def test_clients_that_never_close_after_connection_close_cost_the_next_client_nothing(proxy):
    """After an answer with `Connection: close` the server waits for the client
    to close too (RFC 9112 9.6): 20 HTTP/1.0 clients that never close cost the
    next client nothing."""
    body = json.dumps(INSTANCE).encode()
    lingering = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port_of(proxy)))
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
    assert requests.post(proxy + "/predict", json=INSTANCE, timeout=5).status_code == 200
    assert time.monotonic() - began < 0.5
    for sock in lingering:
        sock.close()


# ---------------------------------------------------------------- stopping workers


def sockets_on(pid, port, state):
    """The inodes of the sockets on `port` in TCP `state` ("01" established, "0A" listening) that the
    process `pid` holds (/proc: its file descriptors, and the kernel's table of sockets)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    with open("/proc/net/tcp") as table:
        next(table)
        rows = [line.split() for line in table]
    return {row[9] for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == state} & inodes


@pytest.mark.parametrize("reuse_port", [0, 1])
def test_each_worker_listens_on_its_own_socket_only_with_reuse_port(published, tmp_path, reuse_port):
    """With DEMAND_REUSE_PORT (as the images run) each worker listens on a socket of its own and the
    kernel spreads new connections over them, so a client's few kept-alive connections keep both
    workers busy: 16 of them are never all held by one (the chance that hashing puts them so is 2 in
    65,536). Without it (the default) the workers share the one socket the master opened."""
    body = json.dumps(INSTANCE).encode()
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    with running_service(published, tmp_path, workers=2, reuse_port=reuse_port) as server:
        port, workers = int(server.url.rsplit(":", 1)[1]), worker_pids(server)
        listening = [sockets_on(pid, port, "0A") for pid in workers]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        try:
            for client in clients:
                client.sendall(request)
                assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")  # answered, and kept alive
            held = [len(sockets_on(pid, port, "01")) for pid in workers]
        finally:
            for client in clients:
                client.close()
    assert all(len(own) == 1 for own in listening), listening
    if reuse_port:
        assert listening[0] != listening[1]
        assert sum(held) == 16 and min(held) >= 1, held
    else:
        assert listening[0] == listening[1]
        assert sum(held) == 16


def test_connections_waiting_when_a_worker_stops_are_answered_not_reset(published, tmp_path):
    """With one listening socket shared by the workers (the default), a
    worker that stops while the service stays up (a reload, one worker's
    restart) leaves the connections waiting on it to the next one: answered,
    not reset. Made certain: the worker is paused while clients connect and
    send, then told to stop."""
    body = json.dumps(INSTANCE).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with running_service(published, tmp_path, workers=1) as server:
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
        with running_service(published, tmp_path / str(attempt), workers=2) as server:
            port, stop, answered = int(server.url.rsplit(":", 1)[1]), threading.Event(), []

            def new_connections():
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                            sock.sendall(request)
                            while sock.recv(65536):
                                pass
                            answered.append(1)
                    except OSError:
                        time.sleep(0.005)

            clients = [threading.Thread(target=new_connections) for _ in range(8)]
            for client in clients:
                client.start()
            wait_until(lambda: len(answered) >= 50)  # under way on every client
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)
            stop.set()
            for client in clients:
                client.join()
            log = server.log()
            assert "Exception in worker process" not in log and "exited with code" not in log, log[-3000:]
            assert server.process.returncode == 0
