"""Running one flow run in this process with Prefect's own async flow engine.

The engine is Prefect's (`AsyncFlowRunEngine`: Running, context, logs, heartbeats, final
state); this module adds what a shared process needs: a cancellation that the runner asked
for ends the run Cancelled (a bare task cancellation would read as a crash), and flows are
loaded once per entrypoint, not imported per run.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from dataclasses import dataclass

from anyio import CancelScope
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import AsyncFlowRunEngine, _flow_parameters
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.states import Cancelled, Crashed, State


CANCELLED_MESSAGE = "Cancelled while running on an evalq runner."


@dataclass
class InProcessEngine(AsyncFlowRunEngine):
    cancel_requested: bool = False
    """Set by the runner before it cancels the run's task: the user cancelled it."""
    stopping: str | None = None
    """Set by the runner before it cancels the run's task because the runner stops: why."""

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
        flow = flow.with_options(result_storage=local)
    return flow


def new_engine(flow: Flow, flow_run: FlowRun) -> InProcessEngine:
    if flow.isasync is False:
        raise TypeError(f"flow {flow.name!r} is not async: the runner executes async flows only")
    return InProcessEngine(flow=flow, flow_run=flow_run, parameters=_flow_parameters(flow, flow_run, None))


async def execute(engine: InProcessEngine) -> State:
    """Drive `engine` to a final state, as Prefect's `run_flow_async` does."""
    async with engine.start():
        while engine.is_running():
            async with engine.run_context():
                await engine.call_flow_fn()
    return engine.state
