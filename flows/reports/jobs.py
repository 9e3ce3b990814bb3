"""A campaign's episodes counted as jobs, not runs, in a few queries: `evalq campaign list`
and evaltui's first refreshes (before its run index is built).

A job counts by its latest run (the highest attempt): done when any of its runs completed,
else failed, cancelled (Cancelled, or Failed/Crashed after a cancel request, as the campaign
and the report read it) or in flight by that run's state; waiting when planned and not
dispatched yet. Attempts (runs, one more per run rerun in place, tagged `evalq-rerun`) and
retries (attempts beyond each job's first) are counted apart.

Reads: the runs by state (one count query over all of them), the runs of retried jobs (few:
their names carry ` (attempt N)`), and the failed runs that are a job's latest (their state
history: was a cancel asked for?). `jobs_by_state` is the pure part.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Iterable

from pydantic import BaseModel

from flows.campaign.history import PAGE, latest_attempts, read_campaign_runs, record_of
from flows.naming import (
    ATTEMPT_SUFFIX,
    EPISODE_TAG,
    RERUN_TAG,
    campaign_tag,
    episode_run_name,
)

StateKey = tuple[str, str]
"""(state type, state name) of a run, e.g. ("RUNNING", "WaitingForServer")."""
CANCELLED_KEY: StateKey = ("CANCELLED", "Cancelled")
FAILED_TYPES = ("FAILED", "CRASHED")
ACTIVE_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")
CONCURRENT_READS = 8


class JobCounts(BaseModel):
    """A campaign's jobs by their latest run, attempts and retries apart."""

    by_state: dict[StateKey, int] = {}
    """Jobs by the (state type, state name) they count in (done: a completed state)."""
    runs: int = 0
    attempts: int = 0
    retries: int = 0
    planned: int | None = None

    def of_types(self, *types: str) -> int:
        return sum(n for (kind, _), n in self.by_state.items() if kind in types)

    @property
    def jobs(self) -> int:
        """Jobs with at least one run."""
        return sum(self.by_state.values())

    @property
    def done(self) -> int:
        return self.of_types("COMPLETED")

    @property
    def failed(self) -> int:
        return self.of_types(*FAILED_TYPES)

    @property
    def cancelled(self) -> int:
        return self.of_types("CANCELLED")

    @property
    def in_flight(self) -> int:
        return self.of_types(*ACTIVE_TYPES)

    @property
    def waiting(self) -> int | None:
        """Planned jobs with no run yet (None without a plan)."""
        return None if self.planned is None else max(0, self.planned - self.jobs)


def job_key(runs: Iterable[tuple[int, StateKey]]) -> StateKey:
    """What a job counts as from its runs (attempt, state): completed if any run completed,
    else its latest run's state."""
    runs = sorted(runs)
    completed = [state for _, state in runs if state[0] == "COMPLETED"]
    return completed[-1] if completed else runs[-1][1]


def jobs_by_state(run_counts: Counter, retried_jobs: dict[str, list[tuple[int, StateKey]]], asked_to_cancel: Counter) -> Counter:
    """Jobs by state from the runs counted by state: each retried job's runs are taken out and
    the job put back once (`job_key`); the latest runs that failed after a cancel request
    (`asked_to_cancel`, by their state) count as cancelled. Pure."""
    jobs = Counter(run_counts)
    for runs in retried_jobs.values():
        for _, state in runs:
            jobs[state] -= 1
        jobs[job_key(runs)] += 1
    for state, n in asked_to_cancel.items():
        jobs[state] -= n
        jobs[CANCELLED_KEY] += n
    return Counter({state: n for state, n in jobs.items() if n > 0})


async def runs_by_state(client, tags: list[str]) -> Counter:
    """Runs with all `tags` by (state type, state name), in one query (the run-history endpoint
    over one interval spanning all time)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    body = {
        "history_start": "2000-01-01T00:00:00Z",
        "history_end": "2100-01-01T00:00:00Z",
        "history_interval_seconds": 100 * 366 * 86400.0,
        "flow_runs": FlowRunFilter(tags=FlowRunFilterTags(all_=tags)).model_dump(mode="json", exclude_unset=True),
    }
    response = await client.request("POST", "/flow_runs/history", json=body)
    counts: Counter = Counter()
    for interval in response.json():
        for state in interval["states"]:
            counts[(state["state_type"], state["state_name"] or "")] += state["count_runs"]
    return counts


async def retried_job_runs(client, campaign: str) -> dict[str, list]:
    """Job id -> every run of the jobs that have more than one attempt."""
    later = [record_of(run) for run in await read_campaign_runs(client, campaign, name={"like_": ATTEMPT_SUFFIX.strip()})]
    later = [record for record in later if record.attempt > 1]
    most = {}
    for record in later:
        most[record.job_id] = max(most.get(record.job_id, 1), record.attempt)
    names = [name for job_id, top in most.items() for attempt in range(1, top)
             for name in (episode_run_name(campaign, job_id, attempt), job_id if attempt == 1 else f"{job_id}{ATTEMPT_SUFFIX}{attempt})")]
    earlier = []
    for start in range(0, len(names), PAGE):
        earlier += [record_of(run) for run in await read_campaign_runs(client, campaign, name={"any_": names[start:start + PAGE]})]
    runs: dict[str, dict[str, object]] = {}
    for record in later + earlier:  # a later attempt below the highest is among both: once
        runs.setdefault(record.job_id, {})[record.run_id] = record
    return {job_id: list(by_run.values()) for job_id, by_run in runs.items()}


async def cancel_asked(client, runs: list) -> Counter:
    """Of these failed runs, those asked to cancel in their last attempt, by state."""
    from flows.campaign.history import went_through_cancelling

    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def check(run) -> bool:
        async with gate:
            return await went_through_cancelling(client, run.id)

    flags = await asyncio.gather(*(check(run) for run in runs))
    return Counter((run.state.type.value, run.state.name or "") for run, asked in zip(runs, flags) if asked)


async def count_jobs(client, campaign: str, planned: int | None = None, check_cancels: bool = True) -> JobCounts:
    """The campaign's jobs by state, attempts and retries (see the module's docstring)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    tags = [EPISODE_TAG, campaign_tag(campaign)]
    run_counts, retried, reruns = await asyncio.gather(
        runs_by_state(client, tags), retried_job_runs(client, campaign),
        client.count_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[*tags, RERUN_TAG]))))
    by_job = {job_id: [(r.attempt, (r.state_type.value if r.state_type else "PENDING", r.state_name)) for r in runs]
              for job_id, runs in retried.items()}
    latest = latest_attempts(r for runs in retried.values() for r in runs)
    not_latest = {r.run_id for runs in retried.values() for r in runs} - {r.run_id for r in latest.values()}
    not_latest |= {latest[job_id].run_id for job_id, runs in by_job.items() if job_key(runs)[0] == "COMPLETED"}  # done after all
    asked: Counter = Counter()
    if check_cancels and any(kind in FAILED_TYPES for kind, _ in run_counts):
        failed = await read_campaign_runs(client, campaign, state={"type": {"any_": list(FAILED_TYPES)}})
        asked = await cancel_asked(client, [run for run in failed if str(run.id) not in not_latest])
    jobs = jobs_by_state(run_counts, by_job, asked)
    runs = sum(run_counts.values())
    attempts = runs + reruns
    return JobCounts(by_state=dict(jobs), runs=runs, attempts=attempts, retries=attempts - sum(jobs.values()), planned=planned)

