"""What `evalq queue kill/remove/clear` do to the queue in Prefect (no terminal output here).

Kill and remove propose Cancelling (not forced): Prefect cancels a job no worker has
started at once; a started job sees it within a second (`stopping.py`), kills its command's
process group, releases its GPUs and ends Cancelled. The job's own step into the Running
phase is a state proposal too, which the server refuses once the cancel is in: a removed
job never starts its command.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from generate.errors import InputError
from workpools.local.entries import (
    QueueEntry,
    Status,
    entry_from_run,
    find_entry,
    read_entries,
)

FINAL_STATE_TYPES = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]
WAIT_POLL_SECONDS = 0.25


async def get_entry(client, queue_id: int) -> QueueEntry:
    entry = await find_entry(client, queue_id)
    if entry is None:
        raise InputError(None, f"no job {queue_id} in the queue (`evalq queue` lists them)")
    return entry


async def request_cancel(client, entry: QueueEntry, why: str) -> None:
    from prefect.states import Cancelling

    await client.set_flow_run_state(entry.run_id, Cancelling(message=why))


async def wait_until_final(client, entry: QueueEntry, seconds: float) -> QueueEntry | None:
    """The job once it ended (or as it is after `seconds`); None if its run was deleted meanwhile."""
    from prefect.exceptions import ObjectNotFound

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            entry = entry_from_run(await client.read_flow_run(entry.run_id))
        except ObjectNotFound:
            return None
        if entry.status.is_final or loop.time() >= deadline:
            return entry
        await asyncio.sleep(WAIT_POLL_SECONDS)


async def kill(client, queue_id: int, wait_seconds: float) -> QueueEntry | None:
    """Cancel a job, queued or running; wait up to `wait_seconds` for it to end."""
    entry = await get_entry(client, queue_id)
    if entry.status.is_final:
        raise InputError(None, f"job {queue_id} already ended ({entry.status.value})")
    await request_cancel(client, entry, "killed with `evalq queue kill`")
    return await wait_until_final(client, entry, wait_seconds)


async def remove(client, queue_id: int, wait_seconds: float) -> QueueEntry:
    """Take a job that has not started its command out of the queue (a finished one is forgotten)."""
    entry = await get_entry(client, queue_id)
    if entry.status in (Status.RUNNING, Status.CANCELLING):
        raise InputError(None, f"job {queue_id} is {entry.status.value}: `evalq queue kill {queue_id}` stops it")
    if not entry.status.is_final:
        await request_cancel(client, entry, "removed with `evalq queue remove`")
        entry = await wait_until_final(client, entry, wait_seconds) or entry
    await forget(client, entry)
    return entry


async def clear(client) -> list[QueueEntry]:
    """Forget every job that ended: its flow run and its captured environment (outputs stay)."""
    ended = await read_entries(client, FINAL_STATE_TYPES)
    for entry in ended:
        await forget(client, entry)
    return ended


async def forget(client, entry: QueueEntry) -> None:
    """Delete the job's flow run and its captured environment."""
    from prefect.exceptions import ObjectNotFound

    try:
        await client.delete_flow_run(entry.run_id)
    except ObjectNotFound:
        pass
    if entry.job and entry.job.env_file:
        Path(entry.job.env_file).unlink(missing_ok=True)
