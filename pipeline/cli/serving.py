"""`demand serve`: the service, under gunicorn."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .base import log, main, model_dir_option


@main.command()
@click.option("--host", help="Address to listen on [env DEMAND_HOST].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on [env DEMAND_PORT].")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [env DEMAND_WORKERS].")
@click.option("--threads", type=click.IntRange(1), help="Threads per worker [env DEMAND_THREADS].")
@click.option(
    "--timeout",
    type=click.IntRange(1),
    help="Seconds before a stuck worker is restarted [env DEMAND_TIMEOUT].",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(1),
    help="Seconds to finish in-flight requests on SIGTERM [env DEMAND_GRACEFUL_TIMEOUT].",
)
@model_dir_option
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    timeout: int | None,
    graceful_timeout: int | None,
    model_dir: Path,
) -> None:
    """Serve the champion model over HTTP with gunicorn (replaces this process).

    Every setting is a DEMAND_* variable, a field of the service's one
    settings object with its default (service/config.py, listed in
    docs/serving.md); an option given here sets its variable.
    """
    given = {
        "DEMAND_HOST": host,
        "DEMAND_PORT": port,
        "DEMAND_WORKERS": workers,
        "DEMAND_THREADS": threads,
        "DEMAND_TIMEOUT": timeout,
        "DEMAND_GRACEFUL_TIMEOUT": graceful_timeout,
        "DEMAND_MODEL_DIR": model_dir,
    }
    os.environ.update({name: str(value) for name, value in given.items() if value is not None})
    log(f"starting gunicorn with models from {model_dir}")
    # The service's own entry point (service/__main__.py): the pipeline imports nothing of the service.
    os.execv(sys.executable, [sys.executable, "-m", "service"])
