"""The queue as Prefect holds it: each `run-command` flow run read back as a `QueueEntry`."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from uuid import UUID

from pydantic import BaseModel, ValidationError

from workpools.local.job import (
    AWAITING_DEPENDENCIES_STATE,
    AWAITING_GPUS_STATE,
    COMMAND_TAG,
    HOST_LABEL,
    STARTED_LABEL,
    CommandJob,
    parse_held_gpus,
    queue_id_from_tags,
    queue_id_tag,
)

PAGE = 200


class Status(str, Enum):
    """What `evalq queue` shows (task-spooler's words where it has them)."""

    QUEUED = "queued"
    """Not picked up by a worker yet."""
    WAITING_DEPENDENCIES = "waiting deps"
    WAITING_GPUS = "waiting GPUs"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def is_waiting(self) -> bool:
        return self in (Status.QUEUED, Status.WAITING_DEPENDENCIES, Status.WAITING_GPUS, Status.STARTING)

    @property
    def is_final(self) -> bool:
        return self in (Status.FINISHED, Status.FAILED, Status.CANCELLED, Status.CRASHED)


class QueueEntry(BaseModel):
    """One queued command and where it stands."""

    run_id: UUID
    queue_id: int | None
    name: str
    job: CommandJob | None
    status: Status
    state_name: str
    message: str | None
    state_since: datetime | None
    host: str | None
    held_gpus: list[int] | None
    submitted: datetime | None
    command_started: datetime | None
    ended: datetime | None

    @property
    def display_id(self) -> str:
        return "-" if self.queue_id is None else str(self.queue_id)


def status_of(state_type: str, state_name: str, held_gpus: list[int] | None) -> Status:
    """A run's state (and whether its command holds GPUs) as a queue status."""
    if state_type in ("SCHEDULED", "PENDING", "PAUSED"):
        return Status.QUEUED
    if state_type == "RUNNING":
        if held_gpus is not None:
            return Status.RUNNING
        return {AWAITING_DEPENDENCIES_STATE: Status.WAITING_DEPENDENCIES, AWAITING_GPUS_STATE: Status.WAITING_GPUS}.get(
            state_name, Status.STARTING
        )
    return {
        "CANCELLING": Status.CANCELLING,
        "COMPLETED": Status.FINISHED,
        "CANCELLED": Status.CANCELLED,
        "CRASHED": Status.CRASHED,
    }.get(state_type, Status.FAILED)


def entry_from_run(run) -> QueueEntry:
    """Read one `run-command` flow run (a job from an older or foreign submit still shows)."""
    try:
        job = CommandJob.model_validate(run.parameters.get("job", {}))
    except ValidationError:
        job = None
    labels = dict(run.labels or {})
    held = parse_held_gpus(labels)
    state_type = run.state.type.value if run.state else "SCHEDULED"
    started = labels.get(STARTED_LABEL)
    return QueueEntry(
        run_id=run.id,
        queue_id=queue_id_from_tags(run.tags),
        name=run.name,
        job=job,
        status=status_of(state_type, run.state.name if run.state else "", held),
        state_name=run.state.name if run.state else "",
        message=run.state.message if run.state else None,
        state_since=run.state.timestamp if run.state else None,
        host=labels.get(HOST_LABEL),
        held_gpus=held,
        submitted=run.created,
        command_started=None if started is None else datetime.fromtimestamp(float(started), timezone.utc),
        ended=run.end_time,
    )


def sort_key(entry: QueueEntry) -> tuple:
    """Queue order: by queue id, runs without one last (by submission)."""
    submitted = entry.submitted.timestamp() if entry.submitted else 0.0
    return (entry.queue_id is None, entry.queue_id or 0, submitted)


async def read_entries(client, state_types: list[str] | None = None, tags: list[str] | None = None) -> list[QueueEntry]:
    """Every `run-command` run (optionally only in these state types), in queue order."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter(tags=FlowRunFilterTags(all_=[COMMAND_TAG, *(tags or [])]))
    if state_types:
        run_filter.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in state_types]))
    runs, offset = [], 0
    while True:
        page = await client.read_flow_runs(flow_run_filter=run_filter, sort=FlowRunSort.ID_DESC, limit=PAGE, offset=offset)
        runs.extend(page)
        if len(page) < PAGE:
            break
        offset += PAGE
    return sorted((entry_from_run(run) for run in runs), key=sort_key)


async def find_entry(client, queue_id: int) -> QueueEntry | None:
    """The job with this queue id, or None."""
    found = await read_entries(client, tags=[queue_id_tag(queue_id)])
    return found[0] if found else None
