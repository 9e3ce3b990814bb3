"""Process groups: is one alive, end one (SIGTERM, a grace period, SIGKILL).

Commands run in a session of their own (`start_new_session=True`), so their children go with
them. Used by the grader (`flows/grader/execution.py`) and the local queue
(`workpools/local/command.py`). No Prefect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

KILL_GRACE_SECONDS = 3.0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


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
