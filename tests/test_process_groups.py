"""Ending process groups (`flows/runtime/process_groups.py`) with real processes: the whole group
goes, not only its leader; one process alone leaves its group be; zombies do not count."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flows.runtime.process_groups import group_alive, terminate, terminate_async, terminate_group

STUBBORN_CHILD = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open({pid_file!r}, 'w').write(str(os.getpid())); time.sleep(120)"
)
"""A child that ignores SIGTERM and writes its pid once it does."""
LEADER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(120)"
"""A leader (dies of SIGTERM) that starts one stubborn child in its group."""


def leader_argv(pid_file: Path) -> list[str]:
    return [sys.executable, "-c", LEADER.format(child=STUBBORN_CHILD.format(pid_file=str(pid_file)))]


def child_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return int(pid_file.read_text())


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_the_whole_group_goes_not_only_its_leader(tmp_path):
    # Waiting on the leader alone (as the embedded server's stop used to) would return as soon
    # as it died of SIGTERM and leave the stubborn child running.
    process = subprocess.Popen(leader_argv(tmp_path / "child.pid"), start_new_session=True)
    child = child_pid(tmp_path / "child.pid")
    assert terminate_group(process, grace=0.5) == -signal.SIGTERM
    assert not running(child) and not group_alive(process.pid)


def test_the_async_variant_ends_an_asyncio_childs_group(tmp_path):
    async def scenario():
        process = await asyncio.create_subprocess_exec(*leader_argv(tmp_path / "child.pid"), start_new_session=True)
        child = await asyncio.to_thread(child_pid, tmp_path / "child.pid")
        assert await terminate_async(process.pid, 0.5)
        return child, await process.wait(), process.pid

    child, returncode, pgid = asyncio.run(scenario())
    assert returncode == -signal.SIGTERM
    assert not running(child) and not group_alive(pgid)


def test_one_process_alone_leaves_its_group_be(tmp_path):
    process = subprocess.Popen(leader_argv(tmp_path / "child.pid"), start_new_session=True)
    try:
        child = child_pid(tmp_path / "child.pid")
        assert terminate(child, grace=0.3, group=False)  # SIGTERM ignored: SIGKILL after the grace
        assert not running(child)
        assert process.poll() is None, "the leader was signalled too"
    finally:
        terminate_group(process, grace=0.5)


def test_nothing_to_signal_says_so():
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    assert not terminate(process.pid, grace=0.1)
    assert not asyncio.run(terminate_async(process.pid, 0.1, group=False))


def test_zombies_do_not_keep_a_group_alive():
    # A zombie still answers kill(0): counted as alive, an orphan waiting for PID 1 (which
    # reaps lazily, about every 2 s in this sandbox) would hold up every stop.
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the process never exited"
            time.sleep(0.05)
        os.killpg(process.pid, 0)  # the kernel still counts the group
        assert not group_alive(process.pid)
    finally:
        process.wait()
