"""Run the grading argv in its own process group; kill the whole group on timeout or cancel."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workpools.local.command import group_alive

KILL_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class Outcome:
    returncode: int
    timed_out: bool = False
    cancelled: bool = False


def kill_group(process: subprocess.Popen, grace: float = KILL_GRACE_SECONDS) -> int:
    """SIGTERM the process group, SIGKILL what is left after `grace`; the leader's exit code."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while group_alive(process.pid) and time.monotonic() < deadline:
            process.poll()
            time.sleep(0.05)
        if not group_alive(process.pid):
            break
    return process.wait()


def run_watched(
    argv: list[str], cwd: Path, stdout: Path, stderr: Path, timeout: float,
    should_stop: Callable[[], bool], poll_seconds: float = 1.0,
) -> Outcome:
    """Run `argv` (no shell) with output to files; every `poll_seconds` ask `should_stop`."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                returncode = process.wait(timeout=max(0.0, min(poll_seconds, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    return Outcome(kill_group(process), timed_out=True)
                if should_stop():
                    return Outcome(kill_group(process), cancelled=True)
                continue
            if group_alive(process.pid):  # children it left behind go with it
                kill_group(process)
            return Outcome(returncode)
    finally:
        if process.returncode is None:  # interrupted (signal, crash): never leave the command running
            kill_group(process)
