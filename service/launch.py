"""The one command line that starts the service: `demand serve`, the tests and
the benchmarks all run it (the images run `demand serve`)."""

from __future__ import annotations

import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().with_name("gunicorn_conf.py")
APP = "service.app:create_app()"


def gunicorn_command(app: str = APP) -> list[str]:
    """gunicorn with this service's settings (service/gunicorn_conf.py) serving `app`."""
    return [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), app]
