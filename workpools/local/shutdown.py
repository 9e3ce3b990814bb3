"""`evalq queue shutdown` (task-spooler's `tsp -K`): stop the queue and what `evalq submit` started.

In order: cancel every job of the queue that has not ended (their commands' process groups are
killed by their runner, their GPUs freed, their runs end Cancelled; finished jobs stay listed
until `evalq queue clear`), stop this home's queue worker and its runner, then stop the user's
`evalq server` if a queue command started it (`service.py`'s `started-server.json`); a server
that was up before, or named by `--api` / PREFECT_API_URL, stays up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from flows.runtime.process_groups import terminate
from workpools.local.entries import QueueEntry, Status, read_entries
from workpools.local.service import (
    STARTED_SERVER_FILE,
    UNFINISHED,
    StartedServer,
    WorkerRecord,
    forget_worker_record,
    live_worker,
    read_model,
    worker_lock,
)

WORKER_STOP_SECONDS = 30.0
REASON = "the queue was shut down (`evalq queue shutdown`)"


@dataclass
class Shutdown:
    """What a shutdown did."""

    cancelled: list[QueueEntry] = field(default_factory=list)
    still_ending: list[QueueEntry] = field(default_factory=list)
    worker: WorkerRecord | None = None
    stopped_server: str | None = None
    server_left_up: str | None = None

    def lines(self) -> list[str]:
        running = sum(1 for entry in self.cancelled if entry.status == Status.RUNNING)
        lines = [f"cancelled {len(self.cancelled)} job{'s' if len(self.cancelled) != 1 else ''}"
                 + (f" ({running} running)" if running else "")]
        if self.still_ending:
            lines.append(f"{len(self.still_ending)} cancelled job(s) had not ended yet: "
                         + ", ".join(entry.display_id for entry in self.still_ending))
        lines.append(f"stopped the queue's worker (pid {self.worker.pid})" if self.worker else "no queue worker was running")
        if self.stopped_server:
            lines.append(f"stopped the Prefect server a queue command had started ({self.stopped_server})")
        elif self.server_left_up:
            lines.append(f"the Prefect server at {self.server_left_up} stays up: no queue command started it")
        return lines


async def cancel_unfinished(client, wait_seconds: float) -> tuple[list[QueueEntry], list[QueueEntry]]:
    """Cancel every job that has not ended; (those cancelled, those not ended after `wait_seconds`)."""
    from workpools.local.manage import request_cancel, wait_until_final

    entries = await read_entries(client, UNFINISHED)
    for entry in entries:
        if entry.status != Status.CANCELLING:
            await request_cancel(client, entry, REASON)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    ending = []
    for entry in entries:
        ended = await wait_until_final(client, entry, max(0.0, deadline - loop.time()))
        if ended is not None and not ended.status.is_final:
            ending.append(ended)
    return entries, ending


def stop_worker(home: Path) -> WorkerRecord | None:
    """SIGTERM this home's queue worker (it stops its runner) and wait until it is gone."""
    with worker_lock(home):
        record = live_worker(home)
        if record is None:
            return None
        terminate(record.pid, WORKER_STOP_SECONDS, group=False)  # its group may be a shell's: it ends its runner itself
        forget_worker_record(home, record.pid)
        return record


def stop_started_server(home: Path) -> str | None:
    """Stop the user's server if a queue command started it and it still runs; its URL."""
    from flows.runtime.user_server import running_server, stop_server

    started = read_model(home / STARTED_SERVER_FILE, StartedServer)
    (home / STARTED_SERVER_FILE).unlink(missing_ok=True)
    if started is None:
        return None
    running = running_server(Path(started.home))
    if running is None or running.api_url != started.api_url:
        return None
    stop_server(Path(started.home))
    return started.api_url
