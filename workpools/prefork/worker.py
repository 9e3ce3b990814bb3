"""`PreforkWorker`: Prefect's process job configuration, runs forked from a warm forkserver.

Stopping the worker (Ctrl-C, SIGTERM: `prefect worker start` turns both into a cancellation)
stops the runs it started: SIGTERM, `STOP_GRACE_SECONDS` for their engines to report the crash
and release their policy-server slots, then SIGKILL, and any run left unfinished is marked
Crashed, which the campaign requeues. Without this the worker would wait, after saying it
stopped, for every run in flight to finish (multiprocessing joins its children at exit).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.exceptions import InfrastructureNotFound
from prefect.workers.base import BaseWorker, BaseWorkerResult
from prefect.workers.process import ProcessJobConfiguration, ProcessVariables

from flows.runtime.process_groups import terminate_async

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

from flows.naming import PREFORK_LEAVE_RUNS, PREFORK_POOL_TYPE

PRELOAD = ["prefect", "prefect.engine", "prefect.flow_engine", "flows.episode", "flows.campaign.flow", "flows.grader.flow"]
_context: multiprocessing.context.BaseContext | None = None


def forkserver() -> multiprocessing.context.BaseContext:
    """The forkserver context, preloading Prefect and the flows (started on first use)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def run_flow_run(flow_run_id: str, env: dict[str, str], cwd: str | None) -> None:
    """In the forked child: take the run's environment, then run Prefect's own engine entry."""
    import runpy
    import sys
    import warnings

    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()  # settings were read in the forkserver, before `env`
    sys.argv = ["prefect.engine", flow_run_id]
    # runpy notes that the preloaded `prefect.engine` is already imported; that is the point.
    warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


LEAVE_RUNS = PREFORK_LEAVE_RUNS
STOP_GRACE_SECONDS = 5.0
"""When the worker stops: how long its runs get after SIGTERM before SIGKILL."""
SELF_CANCEL_SECONDS = 15.0
"""On a grading node, how long a cancelled run gets to stop its command itself before its process is killed."""


class PreforkWorkerResult(BaseWorkerResult):
    """Exit status of a forked flow run (negative: killed by that signal)."""


class PreforkWorker(BaseWorker[ProcessJobConfiguration, ProcessVariables, PreforkWorkerResult]):
    type = PREFORK_POOL_TYPE
    job_configuration = ProcessJobConfiguration
    job_configuration_variables = ProcessVariables
    _description = "Local flow runs forked from a process with Prefect and the evalq flows preloaded."
    _display_name = "evalq prefork"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: dict[UUID, tuple["FlowRun", multiprocessing.process.BaseProcess]] = {}
        """Runs whose process this worker started and has not seen end."""

    async def run(
        self,
        flow_run: Any,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> PreforkWorkerResult:
        env = {key: str(value) for key, value in (configuration.env or {}).items() if value is not None}
        env["PREFECT__FLOW_RUN_ID"] = str(flow_run.id)
        cwd = str(configuration.working_dir) if configuration.working_dir else None
        process = forkserver().Process(target=run_flow_run, args=(str(flow_run.id), env, cwd), daemon=False)
        await anyio.to_thread.run_sync(process.start)
        self._in_flight[flow_run.id] = (flow_run, process)
        if task_status is not None:
            task_status.started(process.pid)
        await anyio.to_thread.run_sync(process.join, abandon_on_cancel=True)
        self._in_flight.pop(flow_run.id, None)  # not on cancellation: `teardown` stops it
        return PreforkWorkerResult(status_code=process.exitcode or 0, identifier=str(process.pid))

    async def teardown(self, *exc_info: Any) -> None:
        """Stop the runs still in flight (the worker is stopping), then Prefect's teardown.

        With `EVALQ_PREFORK_LEAVE_RUNS=1` in the worker's environment the runs are left to
        finish in their own processes instead (the grading service's nodes: a job outlives a
        restart of the service)."""
        if os.environ.get(LEAVE_RUNS) != "1":
            await self.stop_runs_in_flight()
        await super().teardown(*exc_info)

    async def stop_runs_in_flight(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every run process still alive, SIGKILL it after `grace_seconds`, and mark
        Crashed any of those runs that did not reach a final state (the campaign requeues it)."""
        runs = [(flow_run, process) for flow_run, process in self._in_flight.values() if process.is_alive()]
        self._in_flight.clear()
        if not runs:
            return
        self._logger.warning("Stopping: ending %d flow run(s) in flight; they end Crashed and are requeued", len(runs))
        # one by one: a run shares its group with the forkserver and the other runs
        await asyncio.gather(*(terminate_async(process.pid, grace_seconds, group=False) for _, process in runs))
        for flow_run, process in runs:
            await anyio.to_thread.run_sync(process.join, 5)
            await self._propose_crashed_state(flow_run, f"The {self.type} worker {self.name!r} stopped while this run was in flight")

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: ProcessJobConfiguration, grace_seconds: int = 30
    ) -> None:
        pid = int(str(infrastructure_pid).rsplit(":", 1)[-1])
        if os.environ.get(LEAVE_RUNS) == "1" and await self._ends_by_itself(pid):
            return
        if not await terminate_async(pid, grace_seconds, group=False):
            raise InfrastructureNotFound(f"no process {pid}")

    async def _ends_by_itself(self, pid: int) -> bool:
        """A grading node's run watches its own state: on a cancel it kills its command and
        ends Cancelled within about a second. Killing its process first would end it Crashed
        (a cancelled job reported "failed"), so it gets `SELF_CANCEL_SECONDS` to do so."""
        process = next((process for _, process in self._in_flight.values() if process.pid == pid), None)
        if process is None:
            return False
        await anyio.to_thread.run_sync(process.join, SELF_CANCEL_SECONDS)
        return not process.is_alive()
