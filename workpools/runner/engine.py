"""Running one flow run in this process with Prefect's own async flow engine.

The engine is Prefect's (`AsyncFlowRunEngine`: Running, context, logs, heartbeats, final
state); this module adds what a shared process needs: a cancellation that the runner asked
for ends the run Cancelled (a bare task cancellation would read as a crash), its state changes
wait out an API outage (`retrying`: the run plays on, its end is recorded once the API is back),
flows are loaded once per entrypoint, not imported per run, and a run just claimed costs no API call
the claim already answered (`ClaimedRuns`). A flow may name its first Running state
(`first_running_state`, e.g. the episode's Loading), which saves it proposing that phase itself.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from anyio import CancelScope
from prefect._flow_run_suspension import register_flow_run_suspension_request
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.flow_engine import AsyncFlowRunEngine, _flow_parameters
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.states import Cancelled, Crashed, Running, State

from flows.runtime.api_retry import retrying

CANCELLED_MESSAGE = "Cancelled while running on an evalq runner."
FIRST_RUNNING_STATE = "first_running_state"
"""A flow attribute: the name of the Running state the engine proposes when the run starts."""


class ClaimedRuns:
    """Runs this runner has just claimed, whose flows have no retries.

    Prefect's engine, starting a run, writes the flow's version and retry policy to it and
    then reads it back. For a run just claimed both are known already: the write is skipped
    (no retries to enforce; the version is cosmetic) and the first read is answered with the
    engine's own copy, which the claim and the engine's state changes keep current. Two API
    calls of the ~20 an episode makes. Installed on the client the runner's runs share.
    """

    def __init__(self) -> None:
        self._unread: dict[UUID, FlowRun] = {}
        self._unwritten: set[UUID] = set()

    def add(self, flow_run: FlowRun) -> None:
        self._unread[flow_run.id] = flow_run
        self._unwritten.add(flow_run.id)

    def discard(self, flow_run_id: UUID) -> None:
        self._unread.pop(flow_run_id, None)
        self._unwritten.discard(flow_run_id)

    def install(self, client) -> None:
        read, update = client.read_flow_run, client.update_flow_run

        async def read_flow_run(flow_run_id: UUID) -> FlowRun:
            known = self._unread.pop(flow_run_id, None)
            return known if known is not None else await read(flow_run_id)

        async def update_flow_run(flow_run_id: UUID, **fields):
            if flow_run_id in self._unwritten and set(fields) <= {"flow_version", "empirical_policy"}:
                self._unwritten.discard(flow_run_id)
                return None
            return await update(flow_run_id, **fields)

        client.read_flow_run, client.update_flow_run = read_flow_run, update_flow_run


@dataclass
class InProcessEngine(AsyncFlowRunEngine):
    cancel_requested: bool = False
    """Set by the runner before it cancels the run's task: the user cancelled it."""
    stopping: str | None = None
    """Set by the runner before it cancels the run's task because the runner stops: why."""
    first_running_name: str | None = None
    """The name of the first Running state (the flow's `first_running_state`), if it has one."""
    claimed: ClaimedRuns | None = None

    @contextmanager
    def setup_flow_run_suspension_request(self):
        """Prefect's, without its observer: that starts a thread, an event loop, a client and an
        events subscription for every run, to notice a Suspend from the UI. An episode is never
        suspended (a cancel stops it, through the runner's one observer), and per run that cost
        more CPU than the rest of the engine's start."""
        request = self._get_flow_run_suspension_request()
        with register_flow_run_suspension_request(self.flow_run.id, request):
            request.raise_if_requested()
            yield request

    async def set_state(self, state: State, force: bool = False) -> State:
        if self.first_running_name and state.type == StateType.RUNNING and state.name == "Running":
            state, self.first_running_name = Running(name=self.first_running_name, message=state.message), None
        propose = super().set_state  # across an API outage: proposing the same state twice is accepted
        return await retrying(lambda: propose(state, force))

    async def handle_crash(self, exc: BaseException) -> None:
        if self.cancel_requested:
            with CancelScope(shield=True):
                self.logger.info("Flow run was cancelled.")
                await self.set_state(Cancelled(message=CANCELLED_MESSAGE), force=True)
                await self._keep_cancelled()
                self._raised = exc
        elif self.stopping:  # not a cancel: the run is to be requeued, and must not read as one
            with CancelScope(shield=True):
                self.logger.warning("Crashed: %s", self.stopping)
                await self.set_state(Crashed(message=self.stopping), force=True)
                self._raised = exc
        else:
            await super().handle_crash(exc)

    async def _keep_cancelled(self, settle_seconds: float = 1.0) -> None:
        """Prefect lets a Running proposal re-open a Cancelled run: a phase request of the flow
        that was still on its way when the task was cancelled can land after our Cancelled.
        Look again once such requests have landed, and put the cancel back if one did."""
        await asyncio.sleep(settle_seconds)
        if self.claimed is not None:
            self.claimed.discard(self.flow_run.id)  # a fresh read, not the claim's copy
        state = (await self.client.read_flow_run(self.flow_run.id)).state
        if state is not None and not state.is_final():
            await self.set_state(Cancelled(message=CANCELLED_MESSAGE), force=True)


@functools.lru_cache(maxsize=64)
def load_flow(entrypoint: str) -> Flow:
    """The flow object behind a deployment's entrypoint (`module:flow` or `path.py:flow`), cached.

    A flow that persists no results and names no result storage gets the local one: otherwise
    Prefect's engine asks the server for its default storage at every run, through a new
    blocking client (a stall of the loop that every run here shares).
    """
    flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    if flow.result_storage is None and flow.persist_result is False:
        from prefect.settings import get_current_settings

        local = Path(get_current_settings().results.local_storage_path).expanduser()
        local.mkdir(parents=True, exist_ok=True)
        first_running = getattr(flow, FIRST_RUNNING_STATE, None)
        flow = flow.with_options(result_storage=local)
        setattr(flow, FIRST_RUNNING_STATE, first_running)
    return flow


def new_engine(flow: Flow, flow_run: FlowRun, claimed: ClaimedRuns | None = None) -> InProcessEngine:
    """An engine for a run this runner claimed (`claimed`: the registry to enter it in)."""
    if flow.isasync is False:
        raise TypeError(f"flow {flow.name!r} is not async: the runner executes async flows only")
    if claimed is not None and not flow.retries:
        claimed.add(flow_run)
    return InProcessEngine(flow=flow, flow_run=flow_run, parameters=_flow_parameters(flow, flow_run, None),
                           first_running_name=getattr(flow, FIRST_RUNNING_STATE, None), claimed=claimed)


async def execute(engine: InProcessEngine) -> State:
    """Drive `engine` to a final state, as Prefect's `run_flow_async` does."""
    async with engine.start():
        while engine.is_running():
            async with engine.run_context():
                await engine.call_flow_fn()
    return engine.state
