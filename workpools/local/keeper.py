"""`evalq queue worker`: the GPU queue's runner, kept alive, as task-spooler keeps its server.

It runs in the foreground (under `nohup`, tmux or a user service), or detached when `evalq
submit` found nothing serving the queue (`service.py`), and starts one warm runner (`evalq
runner`) on the queue's pool; when that runner dies (the OOM killer, a SIGKILL) it starts
another after a back-off, under a new name, and deletes the dead one's worker row
(`flows/runtime/supervisor.py`, as the campaign's local stack does). After 5 deaths in 10
minutes it stops with one line naming the last exit and the log. SIGINT or SIGTERM stops it and
its runner. With an idle timeout it stops once its pool has had no unfinished run that long
(a Prefect API it cannot reach neither starts nor ends that wait). Queued jobs wait in Prefect
meanwhile: a runner that starts takes them up. It records itself in `<home>/worker.json`.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from flows.naming import LOCAL_WORK_POOL
from generate.errors import InputError
from workpools.local.service import (
    WORKER_FILE,
    WorkerRecord,
    ask,
    forget_worker_record,
    live_worker,
    pool_has_work,
    worker_lock,
    write_worker,
)

IDLE_CHECK_SECONDS = 5.0


def runner_name(start: int) -> str:
    """One name per start: the campaign's safety net tells a dead runner's runs by it."""
    return f"evalq-queue-{socket.gethostname()}-{os.getpid()}" + (f"-{start}" if start else "")


class IdleClock:
    """How long the pool has had no unfinished run, from looks at it (pure but for the clock)."""

    def __init__(self, timeout: float | None, now=time.monotonic):
        self.timeout, self.now = timeout, now
        self.idle_since: float | None = None

    def saw(self, has_work: bool | None) -> None:
        """One look: work, none, or None (the API did not answer: nothing changes)."""
        if has_work:
            self.idle_since = None
        elif has_work is False and self.idle_since is None:
            self.idle_since = self.now()

    @property
    def expired(self) -> bool:
        return self.timeout is not None and self.idle_since is not None and self.now() - self.idle_since >= self.timeout


def look_for_work(api_url: str, pool: str) -> bool | None:
    try:
        return ask(api_url, lambda client: pool_has_work(client, pool))
    except Exception:  # noqa: BLE001 - an API away: the wait neither starts nor ends
        return None


def keep_queue_runner(api_url: str, slots: int, home: Path, pool: str = LOCAL_WORK_POOL,
                      idle_timeout: float | None = None) -> int:
    """Run the queue's runner until SIGINT or SIGTERM or idleness (0), or until it cannot be kept alive (1)."""
    from flows.runtime.local_stack import forget_local_worker, start_worker, warn
    from flows.runtime.supervisor import Supervisor

    log_path = home / "runner.log"
    with worker_lock(home):
        other = live_worker(home)
        if other is not None and other.pid != os.getpid():
            raise InputError(home / WORKER_FILE, f"the queue's worker already runs (pid {other.pid}, {other.api_url}); "
                                                 "`evalq queue shutdown` stops it")
        write_worker(home, WorkerRecord(pid=os.getpid(), api_url=api_url, pool=pool, idle_timeout=idle_timeout,
                                        log=str(home / "worker.log")))
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    keeper = Supervisor("the queue's runner",
                        lambda n: start_worker(api_url, slots, log_path, work_pool=pool, name=runner_name(n)),
                        log_path, on_death=lambda n: forget_local_worker(api_url, pool, runner_name(n)), report=warn).start()
    idle = f", stops after {idle_timeout:g} s without jobs" if idle_timeout is not None else " (Ctrl-C stops)"
    print(f"evalq queue worker: runner {runner_name(0)} on pool {pool!r}, {slots} slots{idle}; log: {log_path}",
          file=sys.stderr, flush=True)

    def stop_runner() -> None:
        keeper.stop(grace=10)
        try:  # its own stop deletes its worker row; this covers one that could not
            forget_local_worker(api_url, pool, runner_name(keeper.starts))
        except Exception:  # noqa: BLE001 - the API away: the row goes OFFLINE by itself within 30 s
            pass

    clock, looked, idled = IdleClock(idle_timeout), 0.0, False
    try:
        while not stop.wait(0.5) and keeper.failure is None:
            if idle_timeout is None or time.monotonic() - looked < IDLE_CHECK_SECONDS:
                continue
            looked = time.monotonic()
            clock.saw(look_for_work(api_url, pool))
            if clock.expired and (idled := give_up_record_if_idle(api_url, pool, home, stop_runner)):
                break
    finally:
        keeper.stop(grace=10)  # once: after the idle stop, nothing
        forget_worker_record(home, os.getpid())
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if keeper.failure is not None:
        print(f"error: {keeper.failure}", file=sys.stderr, flush=True)
        return 1
    print(f"evalq queue worker stopped{f' (no job for {idle_timeout:g} s)' if idled else ''}", file=sys.stderr, flush=True)
    return 0


def give_up_record_if_idle(api_url: str, pool: str, home: Path, stop_runner: Callable[[], None]) -> bool:
    """One last look under the lock (a submit may have queued a job just now): still idle, the
    runner stops and the record goes before the lock is let go, so a submit waiting for it finds
    neither and starts a new worker (had the runner stopped after, such a submit could have seen
    it still ONLINE and started none, and its job would wait for the next submit)."""
    with worker_lock(home):
        if look_for_work(api_url, pool) is not False:
            return False
        stop_runner()
        forget_worker_record(home, os.getpid())
        return True
