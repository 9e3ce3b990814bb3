"""`RunnerWorker`: claims scheduled flow runs of its work pool and runs them in this process.

Per run it makes one API call of its own (the Pending proposal that claims the run,
`claims.py`); the rest is Prefect's engine. It wakes when a run is scheduled in its pool
(Prefect's `prefect.flow-run.Scheduled` events over the events websocket) and polls slowly as
a safety net, so pick-up takes well under a second without hammering the API; while full (its
slots, or `max_memory_mb`) the safety poll still asks for one run, so the pool reads as served.
A cancel from the Prefect UI or evaltui cancels that run's task only, and the run ends
Cancelled; stopping the runner crashes the runs it still holds (their slots are released on
the way out) so the campaign requeues them, hands back the runs it claimed but did not start
(one the server granted after the stop began included), and deletes its worker row, so it
reads gone at once. It heartbeats every `RUNNER_HEARTBEAT_SECONDS`: a runner killed outright
reads OFFLINE within 30 s (`flows/runtime/liveness.py`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY
from prefect.states import Failed
from prefect.utilities.engine import propose_state
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)

from flows.naming import RUNNER_POOL_TYPE
from flows.runtime.api_retry import is_transient, retrying
from flows.runtime.liveness import RUNNER_HEARTBEAT_SECONDS, RUNNER_POLL_SECONDS, forget_worker
from flows.runtime.memory import rss_mb
from flows.runtime.outages import handle_api_outages
from workpools.runner.cancels import PatientCancellingObserver
from workpools.runner.claims import UnansweredClaims, claim, hand_back
from workpools.runner.engine import ClaimedRuns, execute, load_flow, new_engine
from workpools.runner.loop import RunLoop

STOP_GRACE_SECONDS = 15
"""A stopping runner waits this long for each crashed run to record its state and release its slot."""
EVENTS_DOWN_POLL_SECONDS = 5.0
"""The safety poll at most while the events stream is down: it is the only way runs are found."""
CANCEL_POLL_SECONDS = 5
"""How often cancels are polled for when the events websocket is down (jittered by 30%): a
cancel issued as the API comes back from an outage is obeyed within 10 s, before the stream is."""
HEARTBEAT_SECONDS = 30
"""Prefect's lowest heartbeat frequency: the zombie automation's window (`flows/runtime/zombies.py`) counts on it."""
PICK_UP_BATCH_SECONDS = 0.05
"""Woken by a scheduled run, wait this long before reading: a campaign's burst is one read."""
SCHEDULED_PAGE = 200
"""The most scheduled runs one read returns (Prefect's default limit)."""
MEMORY_RESUME_SHARE = 0.9
"""Above `max_memory_mb` a runner claims nothing until its memory is back below this share of it."""


class RunnerJobConfiguration(BaseJobConfiguration):
    """Runs execute inside the runner: its environment and settings are theirs.

    The base fields (`env`, `command`, `labels`, `name`) are accepted for compatibility
    with Prefect's job templates and not applied per run.
    """


class RunnerVariables(BaseVariables):
    pass


class RunnerResult(BaseWorkerResult):
    """The final state of a run executed in-process (status 0 unless it crashed)."""


class RunnerWorker(BaseWorker[RunnerJobConfiguration, RunnerVariables, RunnerResult]):
    type = RUNNER_POOL_TYPE
    job_configuration = RunnerJobConfiguration
    job_configuration_variables = RunnerVariables
    _description = "Flow runs executed inside one long-lived process per node, several at once."
    _display_name = "evalq runner"

    def __init__(self, *args: Any, idle_timeout: float | None = None, poll_seconds: float = RUNNER_POLL_SECONDS,
                 max_memory_mb: float | None = None, **kwargs: Any):
        kwargs.setdefault("name", f"evalq-runner-{socket.gethostname()}-{os.getpid()}")
        if not os.environ.get("PREFECT_WORKER_HEARTBEAT_SECONDS"):  # `prefect worker start` passes Prefect's 30 s
            kwargs["heartbeat_interval_seconds"] = RUNNER_HEARTBEAT_SECONDS
        super().__init__(*args, **kwargs)
        self.idle_timeout = idle_timeout
        self.poll_seconds = poll_seconds
        self.max_memory_mb = max_memory_mb
        self._memory_full = False
        self._last_poll = float("-inf")
        self._events_live = False  # whether the Scheduled-run events stream is up (then the safety poll slows down)
        self._stopping = False
        """Set when the runner begins to stop: it claims nothing more and hands back what it wins."""
        self.log = logging.getLogger("evalq.runner")
        self._runs: RunLoop | None = None
        self._engines: dict[UUID, Any] = {}
        self._claiming: set[UUID] = set()
        self._cancelled_before_start: set[UUID] = set()
        self._entrypoints: dict[UUID, str] = {}
        self._claimed = ClaimedRuns()
        self._unanswered = UnansweredClaims()  # claims without an answer, read back each pick-up round
        self._wake: asyncio.Event | None = None
        self._saturated = False  # the last pick-up left scheduled runs for want of a slot: a freed slot looks again
        self._last_busy = time.monotonic()
        self.completed = 0

    @property
    def in_flight(self) -> int:
        return len(self._claiming)

    async def start(self, run_once: bool = False, with_healthcheck: bool = False, printer=print) -> None:
        """Claim and run flow runs until stopped (or idle for `idle_timeout` seconds)."""
        handle_api_outages()
        heartbeat = int(os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") or HEARTBEAT_SECONDS)
        self._runs = RunLoop({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat}, on_client=self._claimed.install).start()
        self._wake = asyncio.Event()
        try:
            async with self:
                if run_once:  # Prefect's `--run-once`: what is scheduled now, then exit
                    await self._pick_up_once()
                    while self.in_flight:
                        await anyio.sleep(0.2)
                    return
                try:
                    async with anyio.create_task_group() as loops:
                        loops.start_soon(self._pick_up)
                        loops.start_soon(self._listen_for_scheduled_runs)
                        loops.start_soon(self._keep_synced)
                        if self.idle_timeout is not None:
                            loops.start_soon(self._stop_when_idle, loops.cancel_scope)
                        printer(f"Runner {self.name!r} started: pool {self._work_pool_name!r}, {self._limit or 'unlimited'} slots")
                finally:
                    self._stopping = True
                    await self._unanswered.settle_last(self.client, self.name)  # granted late: handed back
        finally:
            self._stopping = True
            self._runs.stop()
            with anyio.CancelScope(shield=True):
                await self._forget_me()
        printer(f"Runner {self.name!r} stopped after {self.completed} flow runs")

    async def run(self, flow_run: FlowRun, configuration: RunnerJobConfiguration, task_status=None) -> RunnerResult:
        """Prefect's entry point for one run: execute it here and wait for its final state."""
        flow = await self._flow_for(flow_run)
        if task_status is not None:
            task_status.started(os.getpid())
        state = await self._execute(flow, flow_run)
        return RunnerResult(identifier=str(flow_run.id), status_code=0 if state and not state.is_crashed() else 1)

    # -- pick-up ---------------------------------------------------------------------------

    async def _pick_up(self) -> None:
        """Claim scheduled runs while slots are free; sleep until woken or the safety poll."""
        while True:
            await self._pick_up_once()
            with anyio.move_on_after(self.safety_poll_seconds):
                await self._wake.wait()
                await anyio.sleep(PICK_UP_BATCH_SECONDS)  # a burst of new runs: one read for all

    async def _pick_up_once(self) -> None:
        self._wake.clear()  # before the read: a run scheduled meanwhile wakes the next round
        self._saturated = self._limiter is not None and self._limiter.available_tokens < 1  # no --limit: no limit
        if self._saturated or self._over_memory():
            if time.monotonic() - self._last_poll >= self.safety_poll_seconds:  # not at every wake-up: at the safety poll's pace
                await self._poll_while_full()
        elif not self._stopping:
            self._last_poll = time.monotonic()
            try:
                await self._unanswered.settle(self.client, self.name)  # no claim without an answer: no call
                scheduled = await self._scheduled_runs()
                self._saturated = len(scheduled) >= SCHEDULED_PAGE  # more may wait beyond this page
                for flow_run in scheduled:
                    if flow_run.id in self._claiming:
                        continue
                    try:
                        if self._limiter is not None:
                            self._limiter.acquire_on_behalf_of_nowait(flow_run.id)
                    except anyio.WouldBlock:
                        self._saturated = True
                        break
                    self._claiming.add(flow_run.id)
                    self._runs_task_group.start_soon(self._claim_and_run, flow_run)
            except Exception as exc:  # the API is away: try again at the next round
                if not is_transient(exc):
                    raise
                self.log.debug("Prefect API unavailable while picking up runs (%s); retrying", exc)  # said once: API_HEALTH
                await anyio.sleep(1.0)
        self._last_polled_time = _now()

    @property
    def safety_poll_seconds(self) -> float:
        """`poll_seconds` while the events stream is up, at most `EVENTS_DOWN_POLL_SECONDS` while it is down."""
        return self.poll_seconds if self._events_live else min(self.poll_seconds, EVENTS_DOWN_POLL_SECONDS)

    def _over_memory(self) -> bool:
        """Above `max_memory_mb` (this process and its children): claim nothing until below 90% of it."""
        if self.max_memory_mb is None or (used := rss_mb()) is None:
            return False
        full = used > self.max_memory_mb * (MEMORY_RESUME_SHARE if self._memory_full else 1.0)
        if full != self._memory_full:
            self._memory_full = full
            self.log.warning("Memory %.0f MiB %s --max-memory %.0f MiB: %s", used, "above" if full else "back under",
                             self.max_memory_mb, "claiming nothing more for now" if full else "claiming again")
        return full

    async def _poll_while_full(self) -> None:
        """Ask for one scheduled run and take none: the pool's queue reads as polled, so a busy
        runner is not mistaken for no runner at all (`flows/runtime/liveness.py`)."""
        self._last_poll = time.monotonic()
        try:
            await self.client.request(
                "POST", "/work_pools/{name}/get_scheduled_flow_runs", path_params={"name": self._work_pool_name},
                json={"work_queue_names": list(self._work_queues) or None, "scheduled_before": _now().isoformat(), "limit": 1},
            )
        except Exception as exc:  # the next round asks again
            self.log.debug("Poll while full failed: %s", exc)

    async def _scheduled_runs(self) -> list[FlowRun]:
        try:
            responses = await retrying(lambda: self.client.get_scheduled_flow_runs_for_work_pool(
                work_pool_name=self._work_pool_name,
                work_queue_names=list(self._work_queues) or None,
                scheduled_before=_now(),
            ), deadline=time.monotonic() + self.poll_seconds)  # then the next round tries again
        except ObjectNotFound:
            return []
        return [response.flow_run for response in responses]

    async def _listen_for_scheduled_runs(self) -> None:
        """Wake the pick-up loop when a run is scheduled in this pool (or a slot frees up)."""
        while self._work_pool is None:
            await anyio.sleep(0.2)
        event_filter = EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
            any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{self._work_pool.id}"]),
        )
        while True:
            try:
                # no reconnection inside: a broken stream must read as down (polls every 5 s at most)
                async with get_events_subscriber(filter=event_filter, reconnection_attempts=0) as subscriber:
                    self._events_live = True
                    async for _ in subscriber:
                        self._wake.set()
            except Exception as exc:  # the stream is down: the safety poll still finds runs
                self.log.debug("Scheduled-run events unavailable (%s); polling every %.0f s", exc, self.safety_poll_seconds)
            self._events_live = False
            self._wake.set()  # look now, and at the faster pace until it is back
            await anyio.sleep(self.safety_poll_seconds)  # also after a clean close: never a tight loop

    async def _keep_synced(self) -> None:
        """The worker heartbeat that keeps the pool Ready in Prefect's UI."""
        while True:
            await anyio.sleep(self.heartbeat_interval_seconds)
            try:
                await self._sync_and_initialize()
            except Exception as exc:
                self.log.debug("Worker heartbeat failed: %s", exc)

    async def _stop_when_idle(self, scope: anyio.CancelScope) -> None:
        idle_timeout = self.idle_timeout
        while True:
            await anyio.sleep(min(1.0, max(idle_timeout, 0.1)))
            if self.in_flight:
                self._last_busy = time.monotonic()
            elif time.monotonic() - self._last_busy >= idle_timeout:
                self.log.info("No work for %.0f s: stopping", idle_timeout)
                scope.cancel()
                return

    # -- one run ---------------------------------------------------------------------------

    async def _claim_and_run(self, flow_run: FlowRun) -> None:
        self._last_busy = time.monotonic()
        if self._cancelling_observer is not None:
            self._cancelling_observer.add_in_flight_flow_run_id(flow_run.id)
        claimed = executing = False
        try:
            claimed = await claim(self.client, flow_run, self.name, self._unanswered)  # shielded: a stop lands just after it
            await anyio.lowlevel.checkpoint()
            if claimed and self._stopping:  # granted after the stop began
                with anyio.CancelScope(shield=True):
                    await hand_back(self.client, flow_run, self.name, "it was stopping")
                return
            if claimed:
                try:
                    flow = await self._flow_for(flow_run)
                except Exception as exc:
                    await self._fail(flow_run, f"cannot load the flow: {type(exc).__name__}: {exc}")
                    return
                if flow_run.id in self._cancelled_before_start:
                    return  # a cancel came between claim and start; `_cancel_run` recorded it
                executing = True
                await self._execute(flow, flow_run)
                self.completed += 1
        except asyncio.CancelledError:
            if claimed and not executing:  # stopped between claim and start: not Pending under a runner gone
                with anyio.CancelScope(shield=True):
                    await hand_back(self.client, flow_run, self.name, "it stopped before the run started")
            raise
        finally:
            self._claiming.discard(flow_run.id)
            self._cancelled_before_start.discard(flow_run.id)
            self._release_limit_slot(flow_run.id)
            if self._cancelling_observer is not None:
                self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)
            self._last_busy = time.monotonic()
            if self._saturated:  # a slot is free and runs were left waiting: look again
                self._wake.set()

    async def _flow_for(self, flow_run: FlowRun):
        if flow_run.deployment_id is None:
            raise ValueError("the run has no deployment: nothing tells which flow it runs")
        entrypoint = self._entrypoints.get(flow_run.deployment_id)
        if entrypoint is None:
            deployment = await self.client.read_deployment(flow_run.deployment_id)
            entrypoint = self._entrypoints[flow_run.deployment_id] = deployment.entrypoint
        return await anyio.to_thread.run_sync(load_flow, entrypoint)

    async def _execute(self, flow, flow_run: FlowRun):
        """Run it on the run loop; if this runner is stopped meanwhile, crash it there and wait."""
        engine = new_engine(flow, flow_run, self._claimed)
        self._engines[flow_run.id] = engine
        outcome = self._runs.submit(flow_run.id, lambda: execute(engine))
        try:
            return await asyncio.wrap_future(outcome)
        except asyncio.CancelledError:  # this runner is stopping: crash the run there, let it record that
            engine.stopping = f"the evalq runner {self.name} stopped while the run was in flight"
            self._runs.cancel(flow_run.id)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(concurrent.futures.wait, [outcome], STOP_GRACE_SECONDS)
            raise
        except BaseException as exc:  # Abort, SystemExit...: the run's end, never the runner's
            self.log.debug("Flow run %s ended with %r", flow_run.id, exc)
            return engine.state
        finally:
            self._engines.pop(flow_run.id, None)
            self._claimed.discard(flow_run.id)

    async def _forget_me(self) -> None:
        """Delete this runner's worker row once it stopped heartbeating: it reads gone at once."""
        from prefect import get_client

        try:
            async with get_client() as client:
                await forget_worker(client, self._work_pool_name, self.name)
        except Exception as exc:  # it reads OFFLINE three heartbeats later anyway
            self.log.debug("Could not delete worker row %s: %s", self.name, exc)

    async def _fail(self, flow_run: FlowRun, message: str) -> None:
        self.log.error("Flow run %s: %s", flow_run.id, message)
        try:
            await propose_state(self.client, Failed(message=message), flow_run_id=flow_run.id)
        except Exception as exc:
            self.log.warning("Could not mark flow run %s Failed: %s", flow_run.id, exc)

    async def _setup_cancellation_observer(self) -> None:
        """Always watch for cancels of this pool's runs: Prefect's own switch
        (`PREFECT_WORKER_ENABLE_CANCELLATION`, off by default) covers pending runs only."""
        if self._cancelling_observer is not None or self._work_pool is None:
            return
        self._cancelling_observer = await self._exit_stack.enter_async_context(
            PatientCancellingObserver(
                on_cancelling=lambda flow_run_id: self._runs_task_group.start_soon(self._cancel_run, flow_run_id),
                polling_interval=CANCEL_POLL_SECONDS,
                event_filter=EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.Cancelling"]),
                    any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{self._work_pool.id}"]),
                ),
            )
        )

    async def _cancel_run(self, flow_run_id: UUID) -> None:
        """A cancel from the UI, evaltui or the CLI: stop that run only; it ends Cancelled."""
        engine = self._engines.get(flow_run_id)
        if engine is None:
            if flow_run_id in self._claiming:  # claimed, not started: it must not start
                self._cancelled_before_start.add(flow_run_id)
            return await super()._cancel_run(flow_run_id)
        engine.cancel_requested = True
        self._runs.cancel(flow_run_id)


def _now():
    from prefect.types._datetime import now

    return now("UTC")
