"""The campaign's loop: dispatch every job as a flow run, just in time, and settle what each run
ends as, whatever the kind of job (`kinds.py`: episodes, `episodes.py`; batch items,
`flows/batch/kind.py`).

Per pool at most its window of jobs is in flight (`dispatch.py`: for episodes `capacity +
prefetch x servers`); prefetch starts at `prefetch` per server and follows the measured
readiness of episodes up to `max_prefetch` (`prefetch.py`). Crashed/Failed runs are requeued up
to `max_attempts` (`outcomes.py`); the loop honours a pause switch (a Prefect Variable) and
thresholds (counting the work pool's other runs too with `count="pool"`: `thresholds.py`), paces
creations by `submit_interval`, reads rerun requests, and logs a stats line every
`stats_interval` seconds, which says when nothing has polled the jobs' work pool for 30 s. Runs
held by a runner that is gone are handed back, or crashed and requeued (`orphans.py`); a stop
hook (the local stack's runner supervisor) can end it with one line. Flow-run idempotency keys
(campaign, job, attempt) make running it again pick up where it stopped; failed jobs get new
attempts and cancelled ones are left alone (`history.py`). A run that settled a job and is
rerun from outside (the Prefect UI's Retry) is followed again (`settled.py`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

from prefect import get_run_logger
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.variables import Variable

from flows.campaign.dispatch import Dispatchable, Dispatcher, Ticket
from flows.campaign.episodes import Episodes
from flows.campaign.history import ResumePlan, cancel_requested, plan_rerun
from flows.campaign.kinds import JobKind
from flows.campaign.orphans import LIVENESS_SECONDS, OrphanWatch
from flows.campaign.outcomes import Outcome, Tally, classify
from flows.campaign.outputs import stats_line
from flows.campaign.pause import PauseSwitch
from flows.campaign.prefetch import PrefetchTuner
from flows.campaign.rerun_requests import request_tags
from flows.campaign.reruns import Reruns
from flows.campaign.run_feed import (
    EventFeed,
    ReadPacer,
    RunStates,
    campaign_runs_filter,
    concerns,
    state_of_event,
    stop_feeds,
    variable_of_event,
    variables_filter,
)
from flows.campaign.settings import CampaignSettings, DispatchSettings
from flows.campaign.settled import SettledRuns
from flows.campaign.thresholds import others_in_flight, runs_in_flight_on_pool
from flows.naming import (
    WAITING_STATE,
    campaign_plan_variable,
    episode_run_name,
    idempotency_key,
)
from flows.runtime.api_health import API_HEALTH
from flows.runtime.api_retry import retrying
from generate.models import Job, Resources

PROGRESS_HOOKS: list[Callable[[Tally, Dispatcher], None]] = []
"""Called after every tick with the running totals (the CLI's progress bar listens here)."""


@dataclass(frozen=True)
class Stop:
    """Why a stop hook ends the campaign before its work is done."""

    why: str
    asked: bool = False
    """The user asked for it (SIGTERM, Ctrl-C): the invocation ends Completed, saying so; else Failed."""


STOP_HOOKS: list[Callable[[], Stop | None]] = []
"""Called every tick, in the campaign's thread: a `Stop` ends the campaign (the command line's
SIGTERM and Ctrl-C; the local stack's runner that could not be kept alive)."""

POLL_BATCH = 200
DISPATCH_CONCURRENCY = 8
"""Run creations in flight at once within a tick (each is one API call, ~50-500 ms)."""
PAUSE_READ_SECONDS = 5.0
"""How often the pause switch and retry requests are read while no events tell of their changes
or a request waits for its job to settle, and how often runs settled as failed or cancelled are
looked at."""
SWITCHES_READ_SECONDS = 30.0
"""How often the pause switch and retry requests are read while their events come."""


class JobLoop(Reruns):
    """One invocation of a campaign of any kind of job: its dispatcher, tally and runs in flight."""

    def __init__(self, jobs: list[Dispatchable], kind: JobKind, settings: DispatchSettings, client):
        self.jobs = jobs
        self.kind = kind
        self.s = settings
        self.client = client
        self.logger = get_run_logger()
        self.dispatcher = kind.dispatcher(settings.prefetch, settings.max_in_flight, settings.resume_threshold)
        self.tally = Tally(total=len(jobs))
        self.tuner = PrefetchTuner(floor=settings.prefetch, ceiling=max(settings.prefetch, settings.max_prefetch))
        self.in_flight: dict[UUID, Ticket] = {}
        self.dispatched_at: dict[UUID, float] = {}
        """Runs not yet seen ready, with when they were created (monotonic)."""
        self.next_submit = float("-inf")
        """When the next run may be created, with a submit interval (monotonic)."""
        self.pause = PauseSwitch(settings.name, self.logger)
        self.resumed = ResumePlan()
        self.by_id = {job.id: job for job in jobs}
        self.last_attempt: dict[str, int] = {}
        """Job id -> the attempt it settled with (what a retry request continues from)."""
        self.stopped: str | None = None
        """Why the campaign stopped early (a configuration error), None while it goes on."""
        self.settled = SettledRuns()
        """Runs that settled a job as failed or cancelled: followed, should someone rerun them."""
        self.reruns: set[UUID] = set()
        """Runs in flight again after a rerun from outside: their end settles the job, no requeue."""
        self.halted: Stop | None = None
        """Why a stop hook ended it, None while it goes on."""
        self.orphans: OrphanWatch | None = None
        self.work_pool: str | None = None
        """The work pool of the deployment the runs are created from."""
        self.run_feed = EventFeed(campaign_runs_filter(settings.name), "run state", state_of_event)
        self.run_reads = ReadPacer(self.run_feed)
        """Runs are read at every tick only while their events do not come (`run_feed.py`)."""
        self.states = RunStates()
        self.variable_feed = EventFeed(variables_filter(), "variable", variable_of_event)
        self.variable_reads = ReadPacer(self.variable_feed, every=SWITCHES_READ_SECONDS, down_every=PAUSE_READ_SECONDS)

    async def run(self) -> Tally:
        self.run_feed.start()
        self.variable_feed.start()
        try:
            return await self.run_jobs()
        finally:
            await stop_feeds(self.run_feed, self.variable_feed)

    async def run_jobs(self) -> Tally:
        deployment = await self.client.read_deployment_by_name(self.s.deployment)
        self.work_pool = deployment.work_pool_name
        pending = []
        for job in self.jobs:
            if self.kind.done(job):
                self.tally.already_done += 1
            else:
                pending.append(job)
        # -- history (flows/campaign/history.py): failed jobs get fresh attempts, runs in flight are adopted,
        # cancelled ones are left alone unless named with --only.
        self.resumed = await plan_rerun(self.client, self.s.name, pending, self.s.revive_cancelled, self.logger, self.kind)
        for job_id, record in self.resumed.completed.items():
            self.tally.already_done += 1
            self.kind.record_done(self.by_id[job_id], record)
        self.tally.cancelled.update(self.resumed.cancelled)
        self.follow_earlier_cancels()
        self.tally.fresh_attempts = len(self.resumed.fresh)
        for job in pending:
            if job.id not in self.resumed.cancelled and job.id not in self.resumed.completed:
                self.dispatcher.add(job, self.resumed.first_attempt(job.id), front=job.id in self.resumed.adopted)
                self.kind.queued(job)
        await self.read_retry_requests()  # e.g. for jobs cancelled in an earlier invocation
        # -- end history
        self.logger.info("%s %r: %d %s, %d already done, %sdeployment %s", self.kind.title, self.s.name, len(self.jobs), self.kind.noun,
                         self.tally.already_done, f"{described}, " if (described := self.kind.describe()) else "",
                         self.s.deployment)
        await Variable.aset(campaign_plan_variable(self.s.name), self.kind.plan_value(len(self.jobs)), overwrite=True)
        await self.pause.start(self.s.paused)
        if deployment.work_pool_name:
            self.orphans = OrphanWatch(self.client, deployment.work_pool_name, deployment.work_queue_name, self.logger,
                                       lambda run_id: self.kind.done(self.in_flight[run_id].job), self.s.name)
        last_stats, last_settled_read, last_liveness = time.monotonic(), float("-inf"), float("-inf")
        while (self.dispatcher.pending or self.in_flight or await self.follow_settled_runs()) and not self.stopped \
                and not self.halted:
            await retrying(self.collect, forever=True)  # an API outage is waited out (flows/runtime/api_retry.py)
            if self.orphans and time.monotonic() - last_liveness >= LIVENESS_SECONDS:
                last_liveness = time.monotonic()
                await self.orphans.check()
            if concerns(self.variable_feed.take(), {self.pause.name}, request_tags(self.s.name)) or self.variable_reads.due():
                covered = self.variable_reads.begin()
                await retrying(self.pause.read, forever=True)
                waiting = await retrying(self.read_retry_requests, forever=True)
                self.variable_reads.done(covered)
                # a request waiting for its job to settle is looked at again at the 5 s pace
                self.variable_reads.every = PAUSE_READ_SECONDS if waiting else SWITCHES_READ_SECONDS
            if time.monotonic() - last_settled_read >= PAUSE_READ_SECONDS:
                last_settled_read = time.monotonic()
                await self.follow_settled_runs()
            if not self.pause.paused:
                await self.count_others()
                await self.dispatch(deployment.id)
            await self.kind.maintain(self.client, self.in_flight.keys())
            for hook in PROGRESS_HOOKS:
                hook(self.tally, self.dispatcher)
            if time.monotonic() - last_stats >= self.s.stats_interval:
                last_stats = time.monotonic()
                self.logger.info(await retrying(lambda: stats_line(self.client, self.tally, self.dispatcher, self.kind,
                                                                   self.pause.paused, self.orphans.settled_service if self.orphans else None),
                                                forever=True))
            self.halted = next((stop for hook in STOP_HOOKS if (stop := hook())), None)
            if (self.dispatcher.pending or self.in_flight) and not self.stopped and not self.halted:
                await asyncio.sleep(self.tuner.tick(self.s.tick_seconds))
        await self.pause.clear()
        return self.tally

    def ended_early(self):
        """The flow's end state when the loop stopped before its work was done (a stop hook, a
        configuration error), else None."""
        from prefect.states import Completed, Failed

        if self.halted and self.halted.asked:
            return Completed(message=self.halted.why)
        if self.halted:
            return Failed(message=f"campaign stopped: {self.halted.why}")
        if self.stopped:
            self.logger.error("Campaign stopped, configuration error: %s", self.stopped)
            return Failed(message=f"configuration error, campaign stopped: {self.stopped}")
        return None

    async def count_others(self) -> None:
        """With `count="pool"`, the work pool's runs that are not ours, for the thresholds."""
        if self.s.count == "pool" and self.work_pool and self.dispatcher.max_in_flight is not None and self.dispatcher.pending:
            on_pool = await retrying(lambda: runs_in_flight_on_pool(self.client, self.work_pool), forever=True)
            self.dispatcher.others_in_flight = others_in_flight(on_pool, len(self.in_flight))

    async def dispatch(self, deployment_id: UUID) -> None:
        """Create a run for every ticket the windows allow: `DISPATCH_CONCURRENCY` creations at a
        time, so a tick that opens many windows (the start, a resume) costs a few round trips
        rather than one per run; with a submit interval, one run per interval, the loop reading
        its runs meanwhile."""
        if self.s.submit_interval:
            if time.monotonic() >= self.next_submit and (ticket := self.dispatcher.next()) is not None:
                await self.create_run(deployment_id, ticket)
                self.next_submit = time.monotonic() + self.s.submit_interval
            return
        tickets = []
        while (ticket := self.dispatcher.next()) is not None:
            tickets.append(ticket)
        gate = asyncio.Semaphore(DISPATCH_CONCURRENCY)

        async def create(ticket: Ticket) -> None:
            async with gate:
                await self.create_run(deployment_id, ticket)

        await asyncio.gather(*(create(ticket) for ticket in tickets))

    async def create_run(self, deployment_id: UUID, ticket: Ticket) -> None:
        run = await retrying(lambda: self.client.create_flow_run_from_deployment(  # idempotent: safe to repeat
            deployment_id,
            parameters=self.kind.parameters(ticket),
            name=episode_run_name(self.s.name, ticket.job.id, ticket.attempt),
            tags=self.kind.tags(ticket),
            idempotency_key=idempotency_key(self.s.name, ticket.job, ticket.attempt),
            job_variables=self.kind.job_variables(ticket),
        ), forever=True)
        self.in_flight[run.id] = ticket
        self.dispatched_at[run.id] = time.monotonic()

    async def collect(self) -> None:
        """Take the states of the runs in flight from their events, read back those that ended
        (and all of them when the feed may have missed some), and act on them."""
        self.states.add(self.run_feed.take())
        if self.run_reads.due():
            covered = self.run_reads.begin()
            await self.read_in_flight()
            self.run_reads.done(covered)
        apply, read = self.states.sort(self.in_flight, self.kind.takes_as_fed)
        for run_id, state in apply:
            if run_id in self.in_flight:  # not ended by an earlier state of the list
                await self.follow(run_id, state)
        for start in range(0, len(read), POLL_BATCH):
            await self.collect_batch(FlowRunFilter(id=FlowRunFilterId(any_=read[start:start + POLL_BATCH])))

    async def read_in_flight(self) -> None:
        """Read the states of the runs in flight.

        A run already seen ready is not read again while it waits for a server: fifty waiting
        episodes would otherwise be serialized by the API at every tick (most of what waiting
        cost the server, bench/README.md). Any change of its state brings it back."""
        unseen = [run_id for run_id in self.in_flight if run_id in self.dispatched_at]
        seen = [run_id for run_id in self.in_flight if run_id not in self.dispatched_at]
        for ids, state in ((unseen, None), (seen, FlowRunFilterState(name=FlowRunFilterStateName(not_any_=[WAITING_STATE])))):
            for start in range(0, len(ids), POLL_BATCH):
                await self.collect_batch(FlowRunFilter(id=FlowRunFilterId(any_=ids[start:start + POLL_BATCH]), state=state))

    async def collect_batch(self, flow_run_filter: FlowRunFilter) -> None:
        runs = await self.client.read_flow_runs(flow_run_filter=flow_run_filter, sort=FlowRunSort.ID_DESC, limit=POLL_BATCH)
        for run in runs:
            if run.state is not None and run.id in self.in_flight:
                await self.follow(run.id, run.state, run)

    async def follow(self, run_id: UUID, state, run=None) -> None:
        """Act on a run's state: read (`run`), or fed by its event (None: a state the kind takes so)."""
        ticket = self.in_flight[run_id]
        self.take_state(run_id, ticket, state)
        last_attempt = self.resumed.first_attempt(ticket.job.id) + self.s.max_attempts - 1
        if run_id in self.reruns:
            last_attempt = ticket.attempt  # a rerun from outside: its own end settles the job
        outcome = classify(state.type, state.name, ticket.attempt, last_attempt, state.message,
                           run is not None and await cancel_requested(self.client, run))
        if outcome is not None:
            if self.orphans:
                self.orphans.forget(run_id)
            self.states.forget(run_id)
            del self.in_flight[run_id]
            self.dispatched_at.pop(run_id, None)
            self.reruns.discard(run_id)
            self.dispatcher.finished(ticket)
            outcome = self.settle(ticket, outcome, state.name, state.message or "")
            self.settled.note(run_id, ticket, outcome, state.id)
            await self.kind.run_ended(self.client, run, ticket, outcome)

    def take_state(self, run_id: UUID, ticket: Ticket, state) -> None:
        """What a run's state tells, short of its end."""
        self.states.known(run_id, state)
        if self.orphans:
            self.orphans.observe(run_id, state)
        self.note_readiness(run_id, ticket, state.name)
        if slot := self.kind.landed(state):
            self.dispatcher.landed(ticket, *slot)

    def note_readiness(self, run_id: UUID, ticket: Ticket, state_name: str) -> None:
        """The first time a run is seen waiting for (or holding) a server, it was ready."""
        if run_id in self.dispatched_at and state_name in self.kind.ready_states:
            dispatched, now = self.dispatched_at.pop(run_id), time.monotonic()
            self.tuner.ready_after(ticket.pool, now - dispatched - self.unserved_within(ticket.pool, dispatched, now))
            self.retune(ticket.pool)

    def unserved_within(self, pool: str, since: float, until: float) -> float:
        """Seconds of [since, until] in which nothing could serve `pool`'s episodes: no load time
        for the prefetch tuner. The time without a Prefect API, as this process saw it."""
        return API_HEALTH.unavailable_within(since, until)

    def retune(self, pool: str) -> None:
        prefetch = self.tuner.prefetch(pool, self.kind.capacity(pool), len(self.dispatcher.servers[pool]))
        if prefetch != self.dispatcher.prefetch_for(pool):
            self.logger.info("Pool %s: prefetch %d (episodes ready after %.1f s, hold servers %.1f s)", pool,
                             prefetch, self.tuner.ready[pool].value, self.tuner.held[pool].value)
            self.dispatcher.pool_prefetch[pool] = prefetch

    def settle(self, ticket: Ticket, outcome: Outcome, state_name: str, message: str) -> Outcome:
        """Count the run's end in the tally (requeue a retry); the outcome counted."""
        job = ticket.job
        self.last_attempt[job.id] = ticket.attempt
        if outcome in (Outcome.FAILED, Outcome.CANCELLED) and self.kind.done(job):
            outcome = Outcome.DONE  # another run of the job (rerun from outside) wrote its result
        if outcome is not Outcome.RETRY:
            self.kind.settled(job)
        if outcome is Outcome.DONE:
            self.tally.done += 1
            held = self.kind.held_seconds(job)
            self.tally.held_seconds[ticket.pool] = self.tally.held_seconds.get(ticket.pool, 0.0) + held
            self.tuner.held_for(ticket.pool, held)
            self.retune(ticket.pool)
        elif outcome is Outcome.RETRY:
            self.tally.retried += 1
            self.logger.warning("%s attempt %d ended %s (%s); requeued", job.id, ticket.attempt, state_name, message)
            self.dispatcher.add(job, ticket.attempt + 1, front=True)
        elif outcome is Outcome.STOP:
            self.tally.failures[job.id] = f"{state_name}: {message}"
            self.stopped = f"{job.id}: {message}"
        elif outcome is Outcome.CANCELLED:
            self.tally.cancelled[job.id] = f"{state_name}: {message}"
            self.logger.warning("%s attempt %d was cancelled (%s); not requeued", job.id, ticket.attempt, message)
        else:
            self.tally.failures[job.id] = f"{state_name}: {message}"
            self.logger.error("%s failed after %d attempt(s): %s: %s", job.id, ticket.attempt, state_name, message)
        return outcome


class CampaignLoop(JobLoop):
    """The loop of a campaign of episodes (`episodes.py`)."""

    def __init__(self, jobs: list[Job], resources: Resources, settings: CampaignSettings, client):
        super().__init__(jobs, Episodes(resources, settings), settings, client)


