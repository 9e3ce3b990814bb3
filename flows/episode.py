"""The `evaluate-episode` flow: one flow run per (team, task, instance).

1. skip if the metrics file exists     2. load the simulator (`prepare`, state Loading)
3. lease a slot on a compatible server (state WaitingForServer)
4. play the episode, lease renewed (state Running)   5. write metrics atomically
6. release the slot, on every way out

Failures: an unreachable policy server is quarantined (`flows/slots/quarantine.py`) and the episode
leases another compatible server, or waits for one, in the same run (no attempt is charged);
after `MAX_FAULTS_PER_RUN` failing servers it raises (Failed: the campaign retries it). A broken
evaluator or instance ends in Failed named NotRetryable; pools that do not fit the job (no
concurrency limit, no compatible server) in Failed named Misconfigured (the campaign stops).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, Running, State

from flows.cloudlogging.attach import attach_cloud_logging
from flows.evaluators import (
    EvaluationError,
    Metrics,
    ServerUnavailable,
    call,
    load_evaluator,
)
from flows.naming import (
    EPISODE_FLOW,
    LOADING_STATE,
    MISCONFIGURED_STATE,
    NOT_RETRYABLE_STATE,
    RERUN_TAG,
    RUNNING_STATE,
    SERVER_UNREACHABLE,
    SKIPPED_STATE,
    SLOT_ACQUIRED,
    SLOT_RELEASED,
    WAITING_STATE,
    running_message,
)
from flows.results.metrics_files import EpisodeProvenance, metrics_document
from flows.results.videos import EpisodeVideo
from flows.runtime.api_retry import retrying
from flows.runtime.memory import PEAKS, EpisodeMemory
from flows.runtime.outages import handle_api_outages
from flows.slots.events import SlotEvent
from flows.slots.leaser import (
    EPISODE_LEASE_SECONDS,
    SAFETY_POLL_SECONDS,
    PoolNotApplied,
    Slot,
    SlotLeaser,
)
from flows.slots.quarantine import quarantine_server
from flows.slots.quarantine_policy import NoLiveServer, ServerFaults
from flows.slots.steering import candidates
from generate.jsonio import dump_json, write_atomic, write_new_atomic
from generate.models import Job, Resources


def slot_event(name: str, slot: Slot, job: Job, campaign: str, run_id: UUID | None, waited_seconds: float | None = None) -> None:
    """Record who holds which server: the only holder list Prefect will have (`flows/slots/events.py`)."""
    emit_event(**SlotEvent(
        name=name, address=slot.server.address, pool=slot.pool, job_id=job.id, lease_id=str(slot.lease_id),
        campaign=campaign, flow_run_id=str(run_id) if run_id else None, waited_seconds=waited_seconds,
    ).emit_arguments())


async def set_phase(client, run_id: UUID | None, name: str, message: str | None = None) -> None:
    """Show the episode's phase as a named Running state (countable, visible in the UI).

    Proposed, not forced: a run being cancelled stays Cancelling (its runner stops it). Proposed
    again across an API outage (the same Running state twice is accepted): the episode plays on.
    """
    if run_id is not None:
        await retrying(lambda: client.set_flow_run_state(run_id, Running(name=name, message=message)))


async def mark_rerun(client, run_id: UUID | None) -> None:
    """Tag the run `evalq-rerun` when it ran before: the Prefect UI's Retry (`prefect flow-run
    retry`) started it again after it had ended. Prefect counts every start in `run_count`
    (read before this one), and reports read the state history of runs so tagged."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    known = context.flow_run if context else None
    if run_id is None or known is None or not known.run_count or RERUN_TAG in known.tags:
        return
    await client.update_flow_run(run_id, tags=[*known.tags, RERUN_TAG])


def started_as(state_name: str) -> bool:
    """Whether this flow run's current state is `state_name` (as its engine last set it)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.state_name == state_name)


def episode_document(
    metrics: dict, job: Job, slot: Slot, campaign: str, run_id: UUID | None, evaluator: str, held: float,
    video: str | None = None, memory: EpisodeMemory | None = None,
) -> dict:
    """The metrics file: the evaluator's metrics plus where and how they were produced."""
    return metrics_document(metrics, EpisodeProvenance(
        job_id=job.id,
        team=job.payload.team,
        team_slug=job.payload.team_slug,
        track=job.payload.track,
        task=job.payload.task,
        instance_id=job.payload.instance_id,
        pool=slot.pool,
        server=slot.server.address,
        campaign=campaign,
        flow_run_id=str(run_id) if run_id else None,
        evaluator=evaluator.split(" ")[0],
        waited_seconds=round(slot.waited_seconds, 3),
        held_seconds=round(held, 3),
        finished_at=time.time(),
        video=video,
        **(vars(memory) if memory else {}),
    ))


@flow(name=EPISODE_FLOW, persist_result=False)
async def evaluate_episode(
    job: dict,
    resources: dict,
    results_dir: str,
    evaluator: str = "sim",
    evaluator_options: dict | None = None,
    campaign: str = "adhoc",
    force: bool = False,
    lease_seconds: float = EPISODE_LEASE_SECONDS,
    poll_seconds: float = SAFETY_POLL_SECONDS,
    timeout_seconds: float = 3600.0,
    prefer: list[str] | None = None,
    server_wait_seconds: float | None = None,
):
    """Evaluate one episode: load, lease a policy-server slot, run, write metrics, release."""
    logger = get_run_logger()
    handle_api_outages()
    episode = Job.model_validate(job)
    attach_cloud_logging(campaign=campaign, team=episode.payload.team_slug, task=episode.payload.task, instance=episode.payload.instance_id)
    target = episode.metrics_path(results_dir)
    if target.exists() and not force:
        logger.info("Metrics already exist at %s; nothing to do", target)
        return Completed(name=SKIPPED_STATE, message=f"metrics exist: {target}")
    run_id = flow_run.get_id()
    run_id = UUID(run_id) if run_id else None
    video = EpisodeVideo.for_job(episode, results_dir)
    with PEAKS.tracking() as memory_key:  # this process's peak memory while it runs, for its metrics
        async with get_client() as client:
            if not started_as(LOADING_STATE):  # a warm runner's engine starts it as Loading already
                await set_phase(client, run_id, LOADING_STATE)
            await mark_rerun(client, run_id)
            try:
                runner = load_evaluator(evaluator, evaluator_options, logger)
                video.offer_to(runner)
                await call(runner.prepare, episode)
            except EvaluationError as exc:
                logger.error("Not retryable: %s", exc)
                return Failed(name=NOT_RETRYABLE_STATE, message=str(exc))
            episode_run = EpisodeRun(
                client, episode, Resources.model_validate(resources), runner, target, force, campaign, run_id,
                evaluator, lease_seconds, poll_seconds, timeout_seconds, prefer or [], video,
                server_wait_seconds=server_wait_seconds, memory_key=memory_key,
            )
            try:
                return await episode_run.lease_and_run_elsewhere_on_fault()
            finally:
                if hasattr(runner, "kill"):
                    await runner.kill()
                video.discard()


@dataclass
class EpisodeRun:
    """A loaded episode from the moment it needs a server: lease, play, write, release."""

    client: Any
    job: Job
    resources: Resources
    runner: Any
    target: Path
    force: bool
    campaign: str
    run_id: UUID | None
    evaluator: str
    lease_seconds: float
    poll_seconds: float
    timeout_seconds: float
    prefer: list[str]
    """Server addresses to try first when several are free (the campaign's steering)."""
    video: EpisodeVideo | None = None
    excluded: set[str] = field(default_factory=set)
    """Servers that failed this run, while it has others to try."""
    server_wait_seconds: float | None = None
    """How long to wait while every compatible server is quarantined, then fail; None: forever."""
    memory_key: object = None
    """The episode's key in this process's memory sampler (`flows/runtime/memory.py`)."""

    async def lease_and_run_elsewhere_on_fault(self):
        """`lease_and_run`; when the server fails (it is quarantined by then), again on another
        compatible server, or on the same one once a probe finds it back."""
        faults = ServerFaults()
        while True:
            try:
                return await self.lease_and_run()
            except NoLiveServer:
                raise
            except ServerUnavailable as exc:
                if not faults.add(exc.server.address):
                    raise
                get_run_logger().warning("%s; trying another server (%d/%d)", exc, len(faults.failed), faults.most)
            self.excluded = faults.excluded(c.server.address for c in candidates(self.job, self.resources))
            if not getattr(self.runner, "replayable", False):
                try:
                    await call(self.runner.prepare, self.job)
                except EvaluationError as exc:
                    get_run_logger().error("Not retryable: %s", exc)
                    return Failed(name=NOT_RETRYABLE_STATE, message=str(exc))

    async def lease_and_run(self):
        """Wait for a slot, play on it, give it back at once, then write the metrics."""
        await set_phase(self.client, self.run_id, WAITING_STATE)
        leaser = SlotLeaser(self.client, lease_seconds=self.lease_seconds, poll_seconds=self.poll_seconds,
                            give_up_seconds=self.server_wait_seconds)
        try:
            slot = await leaser.acquire(self.job, self.resources, holder_id=self.run_id, prefer=self.prefer,
                                        excluded=self.excluded)
        except PoolNotApplied as exc:  # a configuration error: no retry can help
            get_run_logger().error("Misconfigured: %s", exc)
            return Failed(name=MISCONFIGURED_STATE, message=str(exc))
        slot_event(SLOT_ACQUIRED, slot, self.job, self.campaign, self.run_id, waited_seconds=round(slot.waited_seconds, 3))
        get_run_logger().info("Leased %s (pool %s) after %.2f s", slot.server.address, slot.pool, slot.waited_seconds)
        try:
            async with leaser.holding(slot):
                # Shown while the episode already connects: the phase is not worth a handoff delay.
                shown = asyncio.ensure_future(
                    set_phase(self.client, self.run_id, RUNNING_STATE, running_message(slot.server.address, slot.pool))
                )
                try:
                    outcome = await self.play(slot)
                finally:
                    await shown
            held = time.time() - slot.acquired_at
        finally:
            slot_event(SLOT_RELEASED, slot, self.job, self.campaign, self.run_id)
        if isinstance(outcome, State):
            return outcome
        return self.write(outcome, slot, held)

    async def play(self, slot: Slot) -> Metrics | State:
        """Run the evaluator on the leased server: its metrics, or the end state if it failed."""
        try:
            return await asyncio.wait_for(call(self.runner.run, self.job, slot.server), self.timeout_seconds)
        except asyncio.TimeoutError:
            return Failed(message=f"episode exceeded {self.timeout_seconds:.0f} s on {slot.server.address}")
        except ServerUnavailable as exc:
            emit_event(**SlotEvent(name=SERVER_UNREACHABLE, address=exc.server.address, job_id=self.job.id, reason=exc.reason).emit_arguments())
            await quarantine_server(self.client, exc.server, exc.reason, slot.lease_id)  # before waiters are woken
            raise
        except EvaluationError as exc:
            get_run_logger().error("Not retryable: %s", exc)
            return Failed(name=NOT_RETRYABLE_STATE, message=str(exc))

    def write(self, metrics: Metrics, slot: Slot, held: float) -> State:
        """Write the metrics file atomically, never over another run's; the end state."""
        logger = get_run_logger()
        video = self.video.publish(replace=self.force) if self.video else None
        text = dump_json(episode_document(metrics, self.job, slot, self.campaign, self.run_id, self.evaluator, held,
                                          video, PEAKS.finish(self.memory_key)))
        if self.force:
            write_atomic(self.target, text)
        elif not write_new_atomic(self.target, text):
            logger.warning("Metrics at %s were written by another run meanwhile; kept theirs", self.target)
            return Completed(name=SKIPPED_STATE, message=f"metrics written meanwhile: {self.target}")
        logger.info("Metrics written to %s", self.target)
        return Completed(message=f"metrics: {self.target}")


evaluate_episode.first_running_state = LOADING_STATE  # the warm runner's engine starts it so (workpools/runner/engine.py)
