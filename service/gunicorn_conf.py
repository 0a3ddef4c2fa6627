"""Production gunicorn settings; every value can be set with a DEMAND_* variable.

    gunicorn -c service/gunicorn_conf.py 'service.app:create_app()'

The app is not preloaded: each worker imports it and builds its own ONNX
Runtime session after the fork, so the master never holds a model.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from service.config import Settings

service_settings = Settings.from_env()  # every DEMAND_* setting, with its default (service/config.py)
bind = f"{service_settings.host}:{service_settings.port}"
workers = service_settings.worker_count()  # the app sizes its ONNX Runtime threads from the same value
threads = service_settings.threads
# Stock gthread. Slow clients are a buffering proxy's job, as gunicorn's documentation
# says: compose and Kubernetes run deploy/nginx.conf in front (docs/deployment.md).
worker_class = "gthread"
timeout = service_settings.timeout
graceful_timeout = service_settings.graceful_timeout
keepalive = service_settings.keepalive
backlog = service_settings.backlog
reuse_port = service_settings.reuse_port
preload_app = False
control_socket_disable = True  # several services may share a host and a home folder
accesslog = service_settings.access_log or None
errorlog = "-"
loglevel = service_settings.log_level
# Above deploy/nginx.conf's own header limits, so that behind it every refusal of a
# request head is nginx's JSON answer, never gunicorn's plain text one. Body size is
# the app's (DEMAND_MAX_BODY_BYTES).
limit_request_line = 8190  # gunicorn's largest
limit_request_fields = 32768  # gunicorn's largest


def refuse_a_taken_address(host: str, port: str | int) -> None:
    """Exit at once, status 1, when something already listens on the address.

    gunicorn would retry for 5 s and then fail with a generic message.
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
metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="demand-metrics-")
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={metrics_dir}"]


def on_starting(server: Any) -> None:  # server hooks, as gunicorn's settings document them
    host, _, port = bind.rpartition(":")
    refuse_a_taken_address(host, port)
    # Emptied at every start, so that counters from a previous run do not leak in.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)
    upgrade_the_store(server)


def upgrade_the_store(server: Any) -> None:
    """The store's schema brought up to date once, before any worker starts. A store that cannot be reached
    stops nothing: forecasts are served, /actuals answers 503 and the forecast log counts what it drops."""
    from pipeline.store import open_engine, store_url, upgrade

    try:
        engine = open_engine(store_url(service_settings.model_dir, service_settings.store_url or None))
        revision = upgrade(engine)
        engine.dispose()
        server.log.info("store at schema revision %s", revision)
    except Exception as err:  # any failure of the database: serving goes on
        server.log.error("cannot bring the store up to date: %s", str(err).splitlines()[0])


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if metrics_dir.startswith(tempfile.gettempdir() + "/demand-metrics-"):
        shutil.rmtree(metrics_dir, ignore_errors=True)
