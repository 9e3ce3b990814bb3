"""A campaign's past episode runs, and what a new invocation does with them.

Running a campaign again must retry what failed, adopt what still runs and leave alone what a
user cancelled. The idempotency keys (campaign, job, attempt) alone would hand back the old
failed runs, so a new invocation starts each failed job at the attempt after its highest one,
with a fresh budget. `resume_plan` decides (pure); `read_episode_records` reads the runs, and
the state histories where a run may have ended more than once (`run_history.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from prefect.client.schemas.objects import StateType

from flows.campaign.outcomes import is_cancelled
from flows.campaign.run_history import (
    FAILED_TYPES,
    FINAL_TYPES,
    AttemptEnd,
    attempt_ends,
    cancel_in_last_attempt,
)
from flows.naming import (
    EPISODE_TAG,
    RERUN_TAG,
    attempt_of,
    campaign_tag,
    job_id_of_run_name,
    tag_value,
)
from generate.models import metrics_path

PAGE = 200
"""Prefect's largest page of flow runs."""


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode flow run of a campaign, as much of it as reports and reruns need."""

    run_id: str
    job_id: str
    attempt: int
    pool: str
    state_type: StateType | None
    state_name: str
    message: str
    created: dt.datetime | None = None
    end_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    """When it (last) started running."""
    results_dir: str | None = None
    """The `results_dir` the run was given."""
    cancel_requested: bool = False
    """It went through Cancelling (checked for the latest failed attempts only)."""
    metrics_parts: tuple[str, str, int] | None = None
    """(team slug, task, instance id) of its metrics file, from the run's job parameter."""
    state_id: str | None = None
    rerun_in_place: bool = False
    """It started again after it had ended (the Prefect UI's Retry, `prefect flow-run retry`):
    tagged `evalq-rerun` by the episode."""
    ends: tuple[AttemptEnd, ...] = ()
    """Each time it ended, from its state history (read for failed and rerun runs only)."""

    def metrics_path(self, results_dir: str | None = None) -> Path | None:
        """Where the job's metrics file lives, under `results_dir` or the run's own."""
        folder = results_dir or self.results_dir
        return metrics_path(folder, *self.metrics_parts) if folder and self.metrics_parts else None

    @property
    def final(self) -> bool:
        return self.state_type in FINAL_TYPES

    @property
    def cancelled(self) -> bool:
        return self.state_type is not None and is_cancelled(self.state_type, self.message, self.cancel_requested)

    @property
    def reason(self) -> str:
        """`<state name>: <message>`, what a failure is grouped by."""
        return f"{self.state_name}: {self.message}" if self.message else self.state_name

    @property
    def failures(self) -> list[AttemptEnd]:
        """Its failed attempts: every failed end of its history when read, else its own state."""
        if self.ends:
            return [end for end in self.ends if end.failed]
        if self.state_type in FAILED_TYPES and not self.cancelled:
            return [AttemptEnd(self.state_type, self.state_name, self.message, self.end_time or self.created)]
        return []

    @property
    def attempts(self) -> int:
        """How often it ran: once, or once per end when rerun in place (and once more if it runs now)."""
        if not self.ends:
            return 1
        return len(self.ends) + (not self.final)


def record_of(run) -> EpisodeRecord:
    """A Prefect `FlowRun` of an episode as a record."""
    state = run.state
    parameters = run.parameters or {}
    return EpisodeRecord(
        run_id=str(run.id),
        job_id=job_id_of_run_name(run.name),
        attempt=attempt_of(run.tags),
        pool=tag_value(run.tags, "pool") or "",
        state_type=state.type if state else None,
        state_name=state.name if state else "",
        message=(state.message or "") if state else "",
        created=run.created,
        end_time=run.end_time,
        start_time=run.start_time,
        results_dir=parameters.get("results_dir"),
        metrics_parts=metrics_parts_of(parameters.get("job")),
        state_id=str(state.id) if state else None,
        rerun_in_place=RERUN_TAG in run.tags,
    )


def metrics_parts_of(job: object) -> tuple[str, str, int] | None:
    """(team slug, task, instance id) from an episode's `job` parameter, if it has them."""
    payload = job.get("payload") if isinstance(job, dict) else None
    try:
        return str(payload["team_slug"]), str(payload["task"]), int(payload["instance_id"])
    except (TypeError, KeyError, ValueError):
        return None


def latest_attempts(records: Iterable[EpisodeRecord]) -> dict[str, EpisodeRecord]:
    """Per job, its run with the highest attempt number (the newest one on a tie)."""
    latest: dict[str, EpisodeRecord] = {}
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    for record in records:
        seen = latest.get(record.job_id)
        if seen is None or (record.attempt, record.created or oldest) > (seen.attempt, seen.created or oldest):
            latest[record.job_id] = record
    return latest


@dataclass
class ResumePlan:
    """What a new invocation does with the jobs that have no metrics yet."""

    start_attempt: dict[str, int] = field(default_factory=dict)
    """Job id -> the attempt to dispatch first (jobs never run are absent: attempt 1); for a
    cancelled job, the attempt a retry request would start at."""
    adopted: list[str] = field(default_factory=list)
    """In flight from an earlier invocation: dispatched first under their own attempt, which the
    idempotency key resolves to the running run (never a duplicate)."""
    fresh: list[str] = field(default_factory=list)
    """Ended without metrics (failed, crashed): a new attempt with a fresh budget."""
    cancelled: dict[str, str] = field(default_factory=dict)
    """Job id -> why: cancelled by a user, not run again (unless asked for by name)."""
    cancelled_runs: dict[str, EpisodeRecord] = field(default_factory=dict)
    """Job id -> the run it was cancelled in: followed, should someone rerun it from outside."""
    completed: dict[str, EpisodeRecord] = field(default_factory=dict)
    """Job id -> its latest run, which completed: done, for kinds whose completed run is the result."""

    def first_attempt(self, job_id: str) -> int:
        return self.start_attempt.get(job_id, 1)

    def summary(self, noun: str = "episodes", rerun_cancelled: str = "rerun them with --only") -> str | None:
        parts = []
        if self.fresh:
            parts.append(f"{len(self.fresh)} failed {noun} get new attempts")
        if self.adopted:
            parts.append(f"{len(self.adopted)} still in flight from an earlier run are adopted")
        if self.completed:
            parts.append(f"{len(self.completed)} completed in an earlier run are done")
        if self.cancelled:
            parts.append(f"{len(self.cancelled)} cancelled {noun} are left alone ({rerun_cancelled})")
        return "; ".join(parts) or None


def resume_plan(records: Iterable[EpisodeRecord], pending: Iterable[str], revive_cancelled: bool = False,
                completed_is_done: bool = False) -> ResumePlan:
    """For each pending job id (no result), from the campaign's past runs:
    never run -> attempt 1; latest run not final -> adopt it; latest cancelled -> leave it
    (unless `revive_cancelled`); latest completed and `completed_is_done` -> done; latest ended
    otherwise -> attempt N+1 with a fresh budget."""
    latest = latest_attempts(records)
    plan = ResumePlan()
    for job_id in pending:
        record = latest.get(job_id)
        if record is None:
            continue
        if completed_is_done and record.state_type == StateType.COMPLETED:
            plan.completed[job_id] = record
        elif not record.final:
            plan.start_attempt[job_id] = record.attempt
            plan.adopted.append(job_id)
        elif record.cancelled and not revive_cancelled:
            plan.cancelled[job_id] = record.reason
            plan.cancelled_runs[job_id] = record
            plan.start_attempt[job_id] = record.attempt + 1  # should a retry request revive it
        else:
            plan.start_attempt[job_id] = record.attempt + 1
            plan.fresh.append(job_id)
    return plan


CONCURRENT_READS = 8


async def went_through_cancelling(client, run_id) -> bool:
    """Whether someone asked to cancel the run's last attempt: a Cancelling state in its history
    since it last left a final state."""
    return cancel_in_last_attempt(await client.read_flow_run_states(run_id))


async def cancel_requested(client, run) -> bool:
    """Whether a Failed or Crashed run was asked to cancel (no call for other states)."""
    if run.state is None or run.state.type not in FAILED_TYPES:
        return False
    return await went_through_cancelling(client, run.id)


async def read_histories(client, records: list[EpisodeRecord], every_attempt: bool = False) -> list[EpisodeRecord]:
    """The records, with the state history read where it matters: the latest failed attempt of
    each job checked for a cancel request; with `every_attempt`, also every failed run, every
    run rerun in place and every run in flight (one may wait to be rerun), their ends recorded
    (`EpisodeRecord.ends`)."""
    import asyncio
    from dataclasses import replace
    from uuid import UUID

    latest = {r.run_id for r in latest_attempts(records).values() if r.state_type in FAILED_TYPES}
    wanted = [r for r in records if r.run_id in latest
              or (every_attempt and (r.state_type in FAILED_TYPES or r.rerun_in_place or not r.final))]
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def read(record: EpisodeRecord) -> EpisodeRecord:
        async with gate:
            states = await client.read_flow_run_states(UUID(record.run_id))
        ends = tuple(attempt_ends(states)) if every_attempt else ()
        return replace(record, cancel_requested=cancel_in_last_attempt(states), ends=ends)

    read_again = {r.run_id: r for r in await asyncio.gather(*(read(r) for r in wanted))}
    return [read_again.get(r.run_id, r) for r in records]


async def read_campaign_runs(client, campaign: str, sort: str = "ID_DESC", **criteria) -> list:
    """The campaign's episode runs (by its tag) matching `criteria` (`FlowRunFilter` fields as
    JSON, e.g. `state={"type": {"any_": ["FAILED"]}}`), page by page."""
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.sorting import FlowRunSort

    run_filter = FlowRunFilter.model_validate({"tags": {"all_": [EPISODE_TAG, campaign_tag(campaign)]}, **criteria})
    runs, offset = [], 0
    while True:
        page = await client.read_flow_runs(flow_run_filter=run_filter, sort=FlowRunSort[sort], limit=PAGE, offset=offset)
        runs += page
        if len(page) < PAGE:
            return runs
        offset += PAGE


async def read_episode_records(client, campaign: str, every_attempt: bool = False) -> list[EpisodeRecord]:
    """Every episode run of the campaign, histories as `read_histories` reads them."""
    records = [record_of(run) for run in await read_campaign_runs(client, campaign)]
    return await read_histories(client, records, every_attempt)


async def plan_rerun(client, campaign: str, pending: list, revive_cancelled: bool, logger, kind=None) -> ResumePlan:
    """The resume plan of `pending` jobs from the campaign's past runs, said in the log (in the
    words of the jobs' `kind`, a `flows.campaign.kinds.JobKind`: episodes by default)."""
    if not pending:
        return ResumePlan()
    records = await read_episode_records(client, campaign)
    plan = resume_plan(records, [job.id for job in pending], revive_cancelled, kind is not None and kind.completed_is_done)
    words = (kind.noun, kind.rerun_cancelled) if kind is not None else ()
    if summary := plan.summary(*words):
        logger.warning("%s %r ran before: %s", kind.title if kind is not None else "Campaign", campaign, summary)
    return plan
