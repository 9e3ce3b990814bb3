"""Keeping a process we started alive: restart it when it dies, with back-off, and give up loudly.

What starts a runner keeps it running (the local stack's runner, the local GPU queue's worker):
when the process ends without being asked to, it is started again after `BACKOFF_FIRST_SECONDS`,
doubling up to `BACKOFF_MAX_SECONDS` (a process that ran `STEADY_SECONDS` starts the back-off
over). After `MAX_DEATHS` deaths within `DEATH_WINDOW_SECONDS` it is left dead and `failure`
is one line naming its last exit (the signal, or the exit code) and its log file: what the
campaign stops with. A thread watches the process (a `poll` every `WATCH_SECONDS`); deciding
(`Deaths`) is pure.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from flows.runtime.process_groups import terminate_group

MAX_DEATHS = 5
DEATH_WINDOW_SECONDS = 600.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
STEADY_SECONDS = 60.0
WATCH_SECONDS = 0.2


def exit_description(returncode: int) -> str:
    """`killed by SIGKILL` for a signal (a negative code), else `exit code N`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Deaths:
    """When a process died, and what that means: restart after how long, or give up (pure)."""

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self.now = now
        self.times: deque[float] = deque()
        self.delay = BACKOFF_FIRST_SECONDS

    def died(self, lived_seconds: float) -> float | None:
        """Record a death; the delay before the next start, None to give up."""
        moment = self.now()
        self.times.append(moment)
        while self.times and moment - self.times[0] > DEATH_WINDOW_SECONDS:
            self.times.popleft()
        if len(self.times) >= MAX_DEATHS:
            return None
        if lived_seconds >= STEADY_SECONDS:
            self.delay = BACKOFF_FIRST_SECONDS
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX_SECONDS)
        return delay


class Supervisor:
    """Runs `start(n)` (n: how many starts before this one) and keeps what it returns running."""

    def __init__(self, what: str, start: Callable[[int], subprocess.Popen], log_path: Path,
                 on_death: Callable[[int], None] | None = None, report: Callable[[str], None] | None = None):
        self.what, self._start, self.log_path = what, start, log_path
        self.on_death = on_death
        """Called with the dead process's start number (e.g. to delete its worker row)."""
        self.report = report or (lambda line: None)
        """Told one line per restart."""
        self.process: subprocess.Popen | None = None
        self.failure: str | None = None
        """Set once it gave up: one line with its last exit and its log."""
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name=f"supervisor: {what}", daemon=True)

    def start(self) -> "Supervisor":
        self.process, self.started_at = self._start(0), time.monotonic()
        self._thread.start()
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop watching, then end the process's group; once (a later call does nothing: the group
        id may belong to someone else by then)."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            process = self.process
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if process is not None:
            terminate_group(process, grace=grace)

    def _watch(self) -> None:
        deaths = Deaths()
        while not self._stopping.wait(WATCH_SECONDS):
            code = self.process.poll()
            if code is None:
                continue
            last = exit_description(code)
            if self.on_death is not None:
                try:
                    self.on_death(self.starts)
                except Exception:  # noqa: BLE001 - a courtesy to readers of liveness, never fatal
                    pass
            delay = deaths.died(time.monotonic() - self.started_at)
            if delay is None:
                self.failure = (f"{self.what} died {MAX_DEATHS} times in {DEATH_WINDOW_SECONDS / 60:.0f} minutes "
                                f"(last: {last}); its log: {self.log_path}")
                return
            self.report(f"{self.what} stopped ({last}); restarting it in {delay:.0f} s (log: {self.log_path})")
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.starts += 1
                self.process, self.started_at = self._start(self.starts), time.monotonic()
