"""Grading jobs in Prefect: create, read, list and cancel `grade-solution` flow runs.

A job id is its flow run's id; its node is the run's work queue; its owner and parameters are
in the run. Nothing here keeps state of its own.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling

from flows.grader.models import GradingJob, Status
from flows.grader.placement import ActiveJob
from flows.grader.store import user_slug
from flows.naming import (
    GRADER_DEPLOYMENT,
    GRADER_TAG,
    NODE_ID_TAG_KEY,
    competition_tag,
    node_id_tag,
    node_tag,
    tag_value,
    user_tag,
)

STATE_TYPES: dict[str, list[StateType]] = {
    "pending": [StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED],
    "running": [StateType.RUNNING],
    "completed": [StateType.COMPLETED],
    "failed": [StateType.FAILED, StateType.CRASHED],
    "cancelled": [StateType.CANCELLED, StateType.CANCELLING],
}
ACTIVE_TYPES = STATE_TYPES["pending"] + STATE_TYPES["running"]
PAGE = 200


def status_of(state: State | None) -> Status:
    if state is None:
        return "pending"
    return next(status for status, types in STATE_TYPES.items() if state.type in types)


def job_of(run: FlowRun) -> GradingJob:
    return GradingJob.model_validate(run.parameters["job"])


def node_id_of(run: FlowRun, ids_by_name: dict[str, int] | None = None) -> int | None:
    """The id of the node the job was placed on: kept in its tags (jobs of an older evalq: its
    node's current id, from `ids_by_name`)."""
    tagged = tag_value(run.tags, NODE_ID_TAG_KEY)
    if tagged is not None and tagged.isdigit():
        return int(tagged)
    return (ids_by_name or {}).get(run.work_queue_name or "")


def lacks_node_id(run: FlowRun) -> bool:
    return tag_value(run.tags, NODE_ID_TAG_KEY) is None


async def create_job(client, job: GradingJob, node: str, node_id: int) -> FlowRun:
    """A scheduled `grade-solution` run on `node`'s work queue."""
    deployment = await client.read_deployment_by_name(GRADER_DEPLOYMENT)
    slug = user_slug(job.user_id)
    return await client.create_flow_run_from_deployment(
        deployment.id,
        parameters={"job": job.model_dump(mode="json")},
        name=f"{slug}/{job.competition_id}",
        tags=[GRADER_TAG, user_tag(slug), node_tag(node), node_id_tag(node_id), competition_tag(job.competition_id)],
        work_queue_name=node,
    )


async def read_job(client, job_id: str) -> FlowRun | None:
    """The grading run with this id, or None (also for ids that are no UUID or not a grading run)."""
    try:
        run = await client.read_flow_run(UUID(job_id))
    except (ValueError, ObjectNotFound):
        return None
    return run if GRADER_TAG in run.tags else None


async def _read_runs(client, tags: list[str], types: list[StateType] | None, limit: int | None) -> list[FlowRun]:
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types)) if types else None
    runs: list[FlowRun] = []
    while limit is None or len(runs) < limit:
        page = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags), state=state),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,  # set at creation: newest first
            limit=PAGE if limit is None else min(PAGE, limit - len(runs)), offset=len(runs),
        )
        runs.extend(page)
        if len(page) < PAGE:
            break
    return runs


async def active_jobs(client) -> list[ActiveJob]:
    """Every queued or running grading job, for placement and queue positions."""
    return [
        ActiveJob(
            job_id=str(run.id), node=run.work_queue_name or "", expected_time=job_of(run).expected_time,
            created_at=run.created or run.expected_start_time, pending=status_of(run.state) == "pending",
        )
        for run in await _read_runs(client, [GRADER_TAG], ACTIVE_TYPES, None)
    ]


async def list_jobs(client, user_id: str | None, status: Status | None, limit: int) -> list[FlowRun]:
    """Recent grading runs, newest first, optionally of one user and one status."""
    tags = [GRADER_TAG] + ([user_tag(user_slug(user_id))] if user_id else [])
    runs = await _read_runs(client, tags, STATE_TYPES[status] if status else None, limit)
    return [run for run in runs if user_id is None or job_of(run).user_id == user_id]


async def cancel_job(client, run: FlowRun) -> Status:
    """Ask Prefect to cancel: a pending run goes straight to Cancelled, a running one to Cancelling
    (its flow sees that and kills the command). Returns the status the job has afterwards."""
    if status_of(run.state) == "pending":
        proposed = Cancelled(message="cancelled by its owner before it started")
    else:
        proposed = Cancelling(message="cancelled by its owner")
    await client.set_flow_run_state(run.id, proposed)
    return status_of((await client.read_flow_run(run.id)).state)
