"""`evalq queue worker`: the GPU queue's runner, kept alive, as task-spooler keeps its server.

It runs in the foreground (under `nohup`, tmux or a user service) and starts one warm runner
(`evalq runner`) on the queue's pool; when that runner dies (the OOM killer, a SIGKILL) it starts
another after a back-off, under a new name, and deletes the dead one's worker row
(`flows/runtime/supervisor.py`, as the campaign's local stack does). After 5 deaths in 10
minutes it stops with one line naming the last exit and the log. SIGINT or SIGTERM stops it and
its runner. Queued jobs wait in Prefect meanwhile: a runner that starts takes them up.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path

from flows.naming import LOCAL_WORK_POOL


def runner_name(start: int) -> str:
    """One name per start: the campaign's safety net tells a dead runner's runs by it."""
    return f"evalq-queue-{socket.gethostname()}-{os.getpid()}" + (f"-{start}" if start else "")


def keep_queue_runner(api_url: str, slots: int, log_path: Path, pool: str = LOCAL_WORK_POOL) -> int:
    """Run the queue's runner until SIGINT or SIGTERM (0), or until it cannot be kept alive (1)."""
    from flows.runtime.local_stack import forget_local_worker, start_worker, warn
    from flows.runtime.supervisor import Supervisor

    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    keeper = Supervisor("the queue's runner",
                        lambda n: start_worker(api_url, slots, log_path, work_pool=pool, name=runner_name(n)),
                        log_path, on_death=lambda n: forget_local_worker(api_url, pool, runner_name(n)), report=warn).start()
    print(f"evalq queue worker: runner {runner_name(0)} on pool {pool!r}, {slots} slots; log: {log_path} (Ctrl-C stops)",
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5) and keeper.failure is None:
            pass
    finally:
        keeper.stop(grace=10)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if keeper.failure is not None:
        print(f"error: {keeper.failure}", file=sys.stderr, flush=True)
        return 1
    print("evalq queue worker stopped", file=sys.stderr, flush=True)
    return 0
