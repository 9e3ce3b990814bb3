"""Ending processes: SIGTERM, a grace period, SIGKILL what is left.

Everything we start (servers, workers, queued commands, grading commands) runs in its own
session (`start_new_session=True`): its pid is the id of a process group that holds whatever
it spawned. Ending one means the *whole group*: SIGTERM the group, wait until no process of
it is left (not only its leader: a child left behind must not outlive a GPU lease or keep a
SQLite file open), SIGKILL what remains after `grace` seconds, and wait `grace` more.
`terminate_group` does that for a `subprocess.Popen` (and reaps its leader); `terminate`
and, in an event loop, `terminate_async` for a group id (an asyncio child is reaped by the
loop's child watcher).

Some processes are ended one by one instead (`group=False`), since their group is not
theirs to end: a user's `evalq server start` found by its pid (`flows/runtime/user_server.py`; it
may share a shell's job group, and it stops its own server's group itself) and a prefork
worker's run processes (children of the forkserver, which shares their group).

Left apart on purpose: `flows/grader/nodes.py` stops a grading node's worker but not its
group (the job it runs finishes in its own process), and the command evaluator's `kill()`
(`flows/evaluators/command.py`) SIGKILLs at once (the episode is already over).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from typing import Callable, Iterator

POLL_SECONDS = 0.05


def group_alive(pgid: int) -> bool:
    """Some process of the group is left, zombies aside."""
    return _alive(pgid, group=True)


def terminate_group(process: subprocess.Popen, grace: float = 20.0) -> int:
    """End the group `process` leads (see the module); the leader's exit code."""
    for _ in _ending(process.pid, grace, group=True):
        process.poll()  # reap the leader, else the group never looks empty
        time.sleep(POLL_SECONDS)
    return process.wait()


def terminate(target: int, grace: float, group: bool = True) -> bool:
    """End the process group (or with `group=False` the process) `target`; False if there
    was nothing to signal."""
    steps = _ending(target, grace, group)
    for _ in steps:
        time.sleep(POLL_SECONDS)
    return steps.signalled


async def terminate_async(target: int, grace: float, group: bool = True) -> bool:
    """`terminate` in an event loop."""
    steps = _ending(target, grace, group)
    for _ in steps:
        await asyncio.sleep(POLL_SECONDS)
    return steps.signalled


class _ending:
    """SIGTERM, up to `grace` s while anything is left, SIGKILL, up to `grace` s: an iterator
    that yields at each wait, so the sync and async callers share one sequence."""

    def __init__(self, target: int, grace: float, group: bool):
        self.target, self.grace, self.group = target, grace, group
        self.signalled = False
        """Whether the SIGTERM found anything."""

    def __iter__(self) -> Iterator[None]:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not _send(self.target, signum, self.group):
                return
            self.signalled = True
            deadline = time.monotonic() + self.grace
            while self.alive() and time.monotonic() < deadline:
                yield
            if not self.alive():
                return

    def alive(self) -> bool:
        return _alive(self.target, self.group)


def _alive(target: int, group: bool) -> bool:
    """One process: until its pid is gone (its parent reaped it; callers look pids up
    afterwards). A group: while a member is more than a zombie (orphans wait for PID 1,
    which may reap lazily: about every 2 s in this project's sandbox)."""
    if not _send(target, 0, group):
        return False
    if not group or not os.path.isdir("/proc"):
        return True
    return any(state != "Z" for _, state in group_members(target))


def group_members(pgid: int) -> Iterator[tuple[int, str]]:
    """(pid, state: R, S, Z...) of each process of the group (Linux /proc)."""
    for pid in (name for name in os.listdir("/proc") if name.isdigit()):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            yield int(pid), fields[0]


def _send(target: int, signum: int, group: bool) -> bool:
    """Send `signum` (0: only look); False if no such process (group)."""
    kill: Callable[[int, int], None] = os.killpg if group else os.kill
    try:
        kill(target, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
