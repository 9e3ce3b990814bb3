"""The queue's runner on demand, as task-spooler starts its server on first use.

`evalq submit` queues its jobs, then makes sure something runs them: when no queue worker of
this home lives and no live worker or runner polls the pool (`flows/runtime/liveness.py`), it
starts `evalq queue worker` detached (its own session, output in `<home>/worker.log`), which
keeps a runner alive (`keeper.py`) and stops once the pool has had no unfinished run for its
idle timeout. `evalq queue shutdown` (`shutdown.py`) stops it, and the user's server if a queue
command started that.

    <home>/worker.json          the queue worker running now (`WorkerRecord`; written by whoever starts it)
    <home>/started-server.json  the user's `evalq server`, when a queue command started it
    <home>/worker.lock          held while a command decides whether a worker must start or stop

A submit creates its runs before it looks for a worker, and a worker that stops for idleness
gives up its record under the lock after one last look for work: one of them always sees the
other, so no job is left without a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from flows.runtime.host import process_alive
from generate.jsonio import write_atomic

WORKER_FILE = "worker.json"
STARTED_SERVER_FILE = "started-server.json"
LOCK_FILE = "worker.lock"
WORKER_LOG = "worker.log"
DEFAULT_IDLE_TIMEOUT = float(os.environ.get("EVALQ_QUEUE_IDLE_TIMEOUT", "600"))
"""Seconds without an unfinished run in its pool after which a worker `evalq submit` started stops."""
DEFAULT_SLOTS = 32
UNFINISHED = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]


class WorkerRecord(BaseModel):
    """`<home>/worker.json`: the queue worker (`evalq queue worker`) running for this home."""

    pid: int
    api_url: str
    pool: str
    idle_timeout: float | None = None
    log: str | None = None


class StartedServer(BaseModel):
    """`<home>/started-server.json`: the user's `evalq server` a queue command started."""

    api_url: str
    home: str


def read_model(path: Path, model):
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None


def live_worker(home: Path) -> WorkerRecord | None:
    """The record of this home's queue worker, if its process lives."""
    record = read_model(home / WORKER_FILE, WorkerRecord)
    return record if record is not None and record.pid > 0 and process_alive(record.pid) else None


def write_worker(home: Path, record: WorkerRecord) -> None:
    write_atomic(home / WORKER_FILE, record.model_dump_json() + "\n")


def forget_worker_record(home: Path, pid: int) -> None:
    """Remove the record if it is still `pid`'s."""
    record = read_model(home / WORKER_FILE, WorkerRecord)
    if record is not None and record.pid == pid:
        (home / WORKER_FILE).unlink(missing_ok=True)


def remember_started_server(home: Path, found) -> None:
    """A queue command started the user's server (`found`, from the rule): `shutdown` stops it."""
    if found.started:
        from flows.runtime.user_server import server_home

        write_atomic(home / STARTED_SERVER_FILE, StartedServer(api_url=found.api_url, home=str(server_home())).model_dump_json() + "\n")


@contextlib.contextmanager
def worker_lock(home: Path) -> Iterator[None]:
    """One command at a time decides whether this home's worker starts or stops."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def pool_has_work(client, pool: str) -> bool:
    """Whether any run of `pool` has not ended (queued, claimed, running or being cancelled)."""
    from flows.runtime.liveness import pool_has_runs

    return await pool_has_runs(client, pool, UNFINISHED)


def ask(api_url: str, question):
    """`question(client)` on the server at `api_url`, from synchronous code."""
    from prefect.client.orchestration import PrefectClient

    async def asking():
        async with PrefectClient(api=api_url) as client:
            return await question(client)

    return asyncio.run(asking())


def ensure_worker(api_url: str, pool: str, home: Path, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                  slots: int = DEFAULT_SLOTS) -> WorkerRecord | None:
    """Start this home's queue worker unless it runs, or a live worker or runner polls `pool`;
    the record of the one started, None if none was needed."""
    from flows.runtime.liveness import live_workers

    home.mkdir(parents=True, exist_ok=True)
    with worker_lock(home):
        record = live_worker(home)
        if record is not None and (record.api_url, record.pool) == (api_url, pool):
            return None
        if ask(api_url, lambda client: live_workers(client, pool)):
            return None
        record = start_worker(api_url, pool, home, idle_timeout, slots)
        write_worker(home, record)
        return record


def start_worker(api_url: str, pool: str, home: Path, idle_timeout: float, slots: int) -> WorkerRecord:
    """`evalq queue worker` in a session of its own, outliving this command."""
    log = home / WORKER_LOG
    argv = [sys.executable, "-m", "flows.cli", "queue", "worker", "--api", api_url, "--pool", pool, "--home", str(home),
            "--slots", str(slots), "--idle-timeout", f"{idle_timeout:g}"]
    with open(log, "ab") as output:
        process = subprocess.Popen(argv, env={**os.environ, "PREFECT_API_URL": api_url}, stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    # A caller that lives on reaps it once it stops (so its pid reads gone); `evalq submit` leaves it to init.
    threading.Thread(target=process.wait, name="evalq-queue-worker-reaper", daemon=True).start()
    return WorkerRecord(pid=process.pid, api_url=api_url, pool=pool, idle_timeout=idle_timeout, log=str(log))
