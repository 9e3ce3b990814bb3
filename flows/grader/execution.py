"""Run the grading argv in its own process group; kill the whole group on timeout (when it has
one) or cancel."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.runtime.process_groups import group_alive, terminate_group

KILL_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class Outcome:
    returncode: int
    timed_out: bool = False
    cancelled: bool = False


def run_watched(
    argv: list[str], cwd: Path, stdout: Path, stderr: Path, timeout: float | None,
    should_stop: Callable[[], bool], poll_seconds: float = 1.0,
) -> Outcome:
    """Run `argv` (no shell) with output to files; every `poll_seconds` ask `should_stop`.
    `timeout` None: as long as it needs."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
    try:
        while True:
            try:
                returncode = process.wait(timeout=max(0.0, min(poll_seconds, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    return Outcome(terminate_group(process, KILL_GRACE_SECONDS), timed_out=True)
                if should_stop():
                    return Outcome(terminate_group(process, KILL_GRACE_SECONDS), cancelled=True)
                continue
            if group_alive(process.pid):  # children it left behind go with it
                terminate_group(process, KILL_GRACE_SECONDS)
            return Outcome(returncode)
    finally:
        if process.returncode is None:  # interrupted (signal, crash): never leave the command running
            terminate_group(process, KILL_GRACE_SECONDS)
