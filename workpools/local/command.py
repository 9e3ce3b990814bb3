"""Run an argv with a timeout; on timeout or cancellation kill its whole process group."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from typing import IO

KILL_GRACE_SECONDS = 10.0
"""Between SIGTERM and SIGKILL of the command's process group."""


@dataclass(frozen=True)
class Outcome:
    returncode: int
    timed_out: bool


async def run_argv(
    argv: list[str],
    env: dict[str, str],
    cwd: str | None = None,
    timeout: float | None = None,
    stdout: IO | None = None,
    stderr: IO | None = None,
) -> Outcome:
    """Run `argv` (no shell) in its own session, output to `stdout`/`stderr` (else ours). Killed at `timeout`.

    Cancelling this coroutine kills the command's process group before it returns.
    """
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, start_new_session=True, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
    )
    try:
        returncode = await asyncio.wait_for(process.wait(), timeout)
        await end_leftovers(process.pid)  # children it left behind must not outlive its GPU lease
        return Outcome(returncode, timed_out=False)
    except asyncio.TimeoutError:
        await kill_group(process)
        return Outcome(process.returncode if process.returncode is not None else -signal.SIGKILL, timed_out=True)
    finally:
        if process.returncode is None:  # cancelled: never leave the command running
            await asyncio.shield(kill_group(process))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def end_leftovers(pgid: int) -> None:
    """After the command exited: SIGTERM what is left in its group, SIGKILL it after the grace period."""
    if not group_alive(pgid):
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + KILL_GRACE_SECONDS
    while group_alive(pgid) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(process.wait(), KILL_GRACE_SECONDS)
    except asyncio.TimeoutError:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await process.wait()
