"""A long-running scheduler that runs `demand retrain` on a cron expression.

Each run is a child process, so a crash or a leak in one retrain cannot take
the scheduler down; runs happen one after the other, never two at once (and
the registry lock keeps out any retrain started elsewhere). Cron expressions
are read by croniter, in the machine's local time (UTC in the containers).
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType


class Scheduler:
    def __init__(
        self,
        cron: str,
        retrain_args: Iterable[str],
        log: Callable[[str], None],
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ValueError(f'--cron {cron!r} is not a valid cron expression (e.g. "0 3 * * 1": Mondays at 03:00)')
        self.cron = cron
        self.retrain_args = list(retrain_args)
        self.log = log
        self.now = now or (lambda: dt.datetime.now().astimezone())
        try:
            self.next_run()
        except Exception:  # croniter's CroniterBadDateError: valid fields that no date has (the 30th of February)
            raise ValueError(f"--cron {cron!r} names no date that exists, so it would never run") from None
        self.stop = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.runs: list[int] = []  # exit codes, in order

    def next_run(self) -> dt.datetime:
        from croniter import croniter

        return croniter(self.cron, self.now()).get_next(dt.datetime)

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.log(f"received {signal.Signals(signum).name}: stopping after the current run")
        self.stop.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)  # a killed retrain leaves the registry consistent

    def run_once(self) -> int:
        command = [sys.executable, "-m", "pipeline", "retrain", *self.retrain_args]
        self.log(f"retrain starting: {' '.join(command[3:])}")
        try:
            self.child = subprocess.Popen(command)
            code = self.child.wait()
        except OSError as err:
            self.log(f"retrain could not start: {err}")
            code = -1
        finally:
            self.child = None
        self.runs.append(code)
        self.log("retrain finished" if code == 0 else f"retrain failed with exit code {code}; the scheduler carries on")
        return code

    def run(self, run_now: bool = False) -> None:
        signal.signal(signal.SIGTERM, self.handle_signal)
        signal.signal(signal.SIGINT, self.handle_signal)
        if run_now and not self.stop.is_set():
            self.run_once()
        while not self.stop.is_set():
            when = self.next_run()
            self.log(f"next retrain at {when.isoformat(timespec='seconds')} ({self.cron})")
            if self.stop.wait(max(0.0, (when - self.now()).total_seconds())):
                break
            self.run_once()
        self.log("scheduler stopped")
