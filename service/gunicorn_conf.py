"""Production gunicorn settings; every value can be set with a DEMAND_* variable.

    gunicorn -c service/gunicorn_conf.py 'service.app:create_app()'

The app is not preloaded: each worker imports it and builds its own ONNX
Runtime session after the fork, so the master never holds a model.
"""

import errno
import os
import shutil
import socket
import sys
import tempfile

from service.config import Settings

_env = os.environ.get

bind = f"{_env('DEMAND_HOST', '127.0.0.1')}:{_env('DEMAND_PORT', '8000')}"
workers = Settings.from_env().worker_count()  # the app sizes its ONNX Runtime threads from the same value
threads = int(_env("DEMAND_THREADS") or 4)
worker_class = "service.worker.Worker"  # gthread, reading whole requests in its event loop (see service/worker.py)
timeout = int(_env("DEMAND_TIMEOUT") or 30)
graceful_timeout = int(_env("DEMAND_GRACEFUL_TIMEOUT") or 30)
keepalive = int(_env("DEMAND_KEEPALIVE") or 5)
backlog = int(_env("DEMAND_BACKLOG") or 2048)
preload_app = False
control_socket_disable = True  # several services may share a host and a home folder
reuse_port = Settings.from_env().reuse_port  # DEMAND_REUSE_PORT: see service/config.py
accesslog = _env("DEMAND_ACCESS_LOG") or None  # "-" for stdout
errorlog = "-"
loglevel = _env("DEMAND_LOG_LEVEL") or "info"
# Request line and header limits stay at gunicorn's defaults; body size is the app's (DEMAND_MAX_BODY_BYTES).


def refuse_a_taken_address(host, port):
    """Exit at once, status 1, when something already listens on the address.

    gunicorn would retry for 5 s and then fail with a generic message.
    Without SO_REUSEPORT (above) nothing can join our port later either.
    """
    if os.environ.get("GUNICORN_PID") or os.environ.get("LISTEN_FDS"):
        return  # an upgrade or systemd hands over sockets we already own
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as err:
            problem = "address already in use" if err.errno == errno.EADDRINUSE else err.strerror
            print(f"error: cannot listen on {host}:{port}: {problem} (DEMAND_HOST, DEMAND_PORT)", file=sys.stderr)
            sys.exit(1)


# Prometheus multiprocess mode: one folder of metric files shared by the
# workers, which read its name from their environment (gunicorn sets raw_env
# in the master before it forks them).
metrics_dir = _env("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="demand-metrics-")
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={metrics_dir}"]


def on_starting(server):
    host, _, port = bind.rpartition(":")
    refuse_a_taken_address(host, port)
    # Emptied at every start, so that counters from a previous run do not leak in.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if metrics_dir.startswith(tempfile.gettempdir() + "/demand-metrics-"):
        shutil.rmtree(metrics_dir, ignore_errors=True)
