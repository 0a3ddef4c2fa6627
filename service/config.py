"""Service settings: defaults, overridden by DEMAND_* environment variables,
overridden by the mapping passed to create_app().

The one home of every DEMAND_* setting of the service: the app, gunicorn's
config (service/gunicorn_conf.py) and `demand serve` (which sets the
variables) all read these fields; docs/serving.md's table lists each one
(tests/test_api.py holds the two together).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pipeline.parallel import usable_cores
from pipeline.schema import RUN_WEEKS


def _bool(text: object) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    # gunicorn (service/gunicorn_conf.py)
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 4  # request threads per worker
    timeout: int = 30  # seconds before a stuck worker is restarted
    graceful_timeout: int = 30  # seconds to finish in-flight requests on SIGTERM
    keepalive: int = 5  # seconds an idle kept-alive connection stays open
    backlog: int = 2048  # the listening socket's backlog
    # A listening socket per worker (SO_REUSEPORT), the kernel spreading new connections over them, so that a
    # few kept-alive clients keep every worker busy, not one. Off on a host, where any process of the same user
    # could join the port and take a share of its connections; on in the images, where the only other process
    # is the service's own nginx (Dockerfile). docs/serving.md weighs it.
    reuse_port: bool = False
    access_log: str = ""  # "-" for an access log on stdout; empty: none
    log_level: str = "info"
    # the app
    model_dir: str = "models"
    api_token: str = ""  # bearer token for prediction routes; empty: open
    admin_token: str = ""  # enables POST /admin/reload; empty: the route does not exist
    max_body_bytes: int = 32 * 1024 * 1024
    max_rows: int = 200_000  # rows per request; for /forecast, series x weeks
    max_horizon: int = 52  # weeks per series in a /forecast plan
    # The store of actuals and the forecast log (pipeline/store.py): an SQLAlchemy URL,
    # postgresql+psycopg://... for several replicas; empty: an SQLite file in the registry folder.
    store_url: str = ""
    forecast_log: bool = True  # record every forecast served for a named series and week
    # a version scored again on each logged request, off its path, its forecasts logged under its own name
    # (service/shadow.py); "latest": the newest published version other than the champion; empty: none
    shadow: str = ""
    reload_interval: float = 2.0  # seconds between checks of the champion pointer
    provider: str = "auto"  # auto | cpu | cuda
    require_gpu: bool = False  # never become ready without the CUDA provider
    intra_op_threads: int = 0  # 0: cores / workers
    workers: int = 0  # gunicorn worker processes (service/gunicorn_conf.py); 0: one per core

    @classmethod
    def fields_from(cls, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """{"MODEL_DIR": ...} or {"model_dir": ...} -> field values; an unknown name is an error."""
        values = {str(name).lower(): value for name, value in mapping.items()}
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown service settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return values

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"DEMAND_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            kind: type[Any] = type(f.default)  # every field has a default
            values[f.name] = _bool(raw) if kind is bool else kind(raw)
        return replace(cls(**values), **overrides)

    def __post_init__(self) -> None:
        if not 1 <= self.max_horizon < RUN_WEEKS:  # a plan's weeks of a series are one run of the log
            raise ValueError(f"DEMAND_MAX_HORIZON must be from 1 to {RUN_WEEKS - 1} weeks, got {self.max_horizon}")

    def worker_count(self) -> int:
        return self.workers or usable_cores()

    def threads_per_session(self) -> int:
        if self.intra_op_threads > 0:
            return self.intra_op_threads
        return max(1, usable_cores() // self.worker_count())
