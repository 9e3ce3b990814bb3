"""`PreforkWorker`: Prefect's process job configuration, runs forked from a warm forkserver."""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import anyio
import anyio.abc
from prefect.exceptions import InfrastructureNotFound
from prefect.workers.base import BaseWorker, BaseWorkerResult
from prefect.workers.process import ProcessJobConfiguration, ProcessVariables

PRELOAD = ["prefect", "prefect.engine", "prefect.flow_engine", "flows.episode", "flows.campaign", "flows.grading"]
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


class PreforkWorkerResult(BaseWorkerResult):
    """Exit status of a forked flow run (negative: killed by that signal)."""


class PreforkWorker(BaseWorker[ProcessJobConfiguration, ProcessVariables, PreforkWorkerResult]):
    type = "evalq-prefork"
    job_configuration = ProcessJobConfiguration
    job_configuration_variables = ProcessVariables
    _description = "Local flow runs forked from a process with Prefect and the evalq flows preloaded."
    _display_name = "evalq prefork"

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
        if task_status is not None:
            task_status.started(process.pid)
        await anyio.to_thread.run_sync(process.join, abandon_on_cancel=True)
        return PreforkWorkerResult(status_code=process.exitcode or 0, identifier=str(process.pid))

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: ProcessJobConfiguration, grace_seconds: int = 30
    ) -> None:
        pid = int(str(infrastructure_pid).rsplit(":", 1)[-1])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            raise InfrastructureNotFound(f"no process {pid}") from None
        with anyio.move_on_after(grace_seconds):
            while _alive(pid):
                await anyio.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
