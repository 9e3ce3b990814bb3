"""Run an argv with a timeout; on timeout or cancellation kill its whole process group."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import IO

from flows.runtime.process_groups import terminate_async

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
        await terminate_async(process.pid, KILL_GRACE_SECONDS)  # children it left behind must not outlive its GPU lease
        return Outcome(returncode, timed_out=False)
    except asyncio.TimeoutError:
        await kill_group(process)
        return Outcome(process.returncode if process.returncode is not None else -signal.SIGKILL, timed_out=True)
    finally:
        if process.returncode is None:  # cancelled: never leave the command running
            await asyncio.shield(kill_group(process))


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """End the command's whole process group, then collect its exit code."""
    await terminate_async(process.pid, KILL_GRACE_SECONDS)
    await process.wait()
