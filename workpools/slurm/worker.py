"""The SLURM worker: each flow run becomes one `sbatch` job, followed until it ends.

Start it the Prefect way, `prefect worker start --pool POOL --type evalq-slurm`: Prefect finds
this class through the package's `prefect.collections` entry point. The worker

- renders the batch script (`script.py`) and submits it with the flow run's environment,
- reports the SLURM job id as the flow run's `infrastructure_pid`,
- polls the job; while it runs, a flow run moved to Cancelling in Prefect gets `scancel`ed,
- at the end turns a SLURM failure (TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, CANCELLED, ...) into a
  Crashed flow run whose message names the SLURM state and reason, unless the flow run
  already ended on its own (Completed, Failed, Cancelled).

Stopping the worker (Ctrl-C, SIGTERM) is immediate and leaves its jobs running: their engines
report their own ends, and a job that dies unfollowed is marked Crashed by the zombie
automation once its heartbeats stop, then requeued by the campaign.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional

import anyio
import anyio.abc
from prefect.exceptions import Abort, InfrastructureNotFound
from prefect.states import Cancelled, Crashed
from prefect.utilities.engine import propose_state
from prefect.workers.base import BaseWorker, BaseWorkerResult

from flows.naming import SLURM_POOL_TYPE
from workpools.slurm import commands, script
from workpools.slurm.job import SlurmJob
from workpools.slurm.variables import SlurmJobConfiguration, SlurmVariables

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.logging.loggers import PrefectLogAdapter

WORK_POOL_TYPE = SLURM_POOL_TYPE
SETTLE_SECONDS = 10.0
"""How long after a failed job's end the worker keeps its report of it in place."""


class SlurmWorkerResult(BaseWorkerResult):
    """`identifier` is the SLURM job id; `status_code` is `SlurmJob.status_code`."""


def job_name(name: str | None) -> str:
    """A SLURM job name made of `[A-Za-z0-9._-]` only (the flow run name, others replaced by `-`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name or "prefect-flow-run").strip("-")[:128] or "prefect-flow-run"


def submit_environment(env: Mapping[str, str | None]) -> dict[str, str]:
    """What sbatch runs with, and so what the job gets: the worker's environment without
    SLURM's own variables (a worker may itself run inside a SLURM job), then the flow run's."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SBATCH_"))}
    return {**inherited, **{key: value for key, value in env.items() if value is not None}}


class SlurmWorker(BaseWorker[SlurmJobConfiguration, SlurmVariables, SlurmWorkerResult]):
    """Runs flow runs as SLURM batch jobs through the sbatch command line."""

    type = WORK_POOL_TYPE
    job_configuration = SlurmJobConfiguration
    job_configuration_variables = SlurmVariables

    _description = "Run each flow run as one SLURM batch job (sbatch), followed to its end; scancel on cancellation."
    _display_name = "SLURM (evalq)"

    async def run(
        self,
        flow_run: "FlowRun",
        configuration: SlurmJobConfiguration,
        task_status: Optional[anyio.abc.TaskStatus[str]] = None,
    ) -> SlurmWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        batch_script = script.render(
            configuration,
            configuration.command or "",
            job_name=job_name(configuration.name),
            comment=f"prefect flow run {flow_run.id}",
        )
        job_id = await commands.submit(batch_script, submit_environment(configuration.env))
        logger.info("Submitted flow run %r as SLURM job %s", flow_run.name, job_id)
        if task_status is not None:
            task_status.started(job_id)

        job, cancelled = await self._follow(flow_run, job_id, configuration.poll_seconds, logger)
        if cancelled or not job.succeeded:
            logger.warning(job.describe())
            await self._settle(flow_run, job, cancelled, configuration.poll_seconds)
        return SlurmWorkerResult(identifier=job_id, status_code=job.status_code)

    async def _follow(
        self, flow_run: "FlowRun", job_id: str, poll_seconds: float, logger: "PrefectLogAdapter"
    ) -> tuple[SlurmJob, bool]:
        """Poll the job until it ends; `scancel` it once if the flow run is cancelled in Prefect.
        Returns the ended job and whether this worker cancelled it."""
        cancel_sent = False
        while True:
            try:
                job = await commands.job(job_id)
            except commands.SlurmError as exc:
                logger.warning("Could not read SLURM job %s, will retry: %s", job_id, exc)
            else:
                if job is None:
                    return SlurmJob(job_id, "UNKNOWN", "NotInControllerNorAccounting"), cancel_sent
                if job.finished:
                    return job, cancel_sent
            if not cancel_sent and await self._is_cancelling(flow_run):
                cancel_sent = await self._cancel(flow_run, job_id, logger)
            await anyio.sleep(poll_seconds)

    async def _is_cancelling(self, flow_run: "FlowRun") -> bool:
        try:
            current = await self.client.read_flow_run(flow_run.id)
        except Exception:  # the API being briefly away must not stop the follow loop
            return False
        return current.state is not None and current.state.is_cancelling()

    async def _cancel(self, flow_run: "FlowRun", job_id: str, logger: "PrefectLogAdapter") -> bool:
        """Mark the flow run Cancelled, then `scancel` its job: in this order the engine, killed by
        SIGTERM, cannot report a crash over the cancellation. True if scancel went through."""
        message = f"Cancelled in Prefect: scancel of SLURM job {job_id}"
        logger.info(message)
        try:
            await propose_state(self.client, Cancelled(message=message), flow_run_id=flow_run.id)
        except Abort:
            pass  # already final: scancel anyway, the job has no flow run left to serve
        try:
            await commands.cancel(job_id)
        except commands.SlurmError as exc:
            logger.warning("scancel of SLURM job %s failed: %s", job_id, exc)
            return False
        return True

    async def _settle(self, flow_run: "FlowRun", job: SlurmJob, cancelled: bool, poll_seconds: float) -> None:
        """Report the job's end, and again for `SETTLE_SECONDS`: the engine, killed by SLURM, may
        report its own bare crash a little after SLURM's end (a failed node kills it late)."""
        for check in range(max(3, math.ceil(SETTLE_SECONDS / poll_seconds))):
            if check:
                await anyio.sleep(poll_seconds)
            await self._report_end(flow_run, job, cancelled)

    async def _report_end(self, flow_run: "FlowRun", job: SlurmJob, cancelled: bool) -> None:
        """Give the flow run the state its job's end calls for (idempotent): Cancelled if it was
        cancelled in Prefect, else Crashed naming SLURM's state and reason, unless it already
        ended on its own (Completed, Failed, Cancelled)."""
        message = job.describe()
        state = (await self.client.read_flow_run(flow_run.id)).state
        if cancelled or (state is not None and state.is_cancelling()):
            # Keep a Completed, Failed or Cancelled end; replace the crash of an engine that
            # outran the cancellation.
            if state is None or not state.is_final() or state.is_crashed():
                await self._force(flow_run, Cancelled(message=f"Cancelled in Prefect: {message}"))
        elif state is not None and state.is_crashed():
            if not (state.message or "").startswith(message):
                # The engine saw SLURM's signal and reported a crash without knowing why: say why.
                await self._force(flow_run, Crashed(message=f"{message}. {state.message or ''}".strip()))
        elif state is None or not state.is_final():
            await self._propose_crashed_state(flow_run, message)

    async def _force(self, flow_run: "FlowRun", state: "State") -> None:
        await self.client.set_flow_run_state(flow_run.id, state, force=True)

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: SlurmJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """`scancel` the flow run's SLURM job (the grace period is the cluster's KillWait)."""
        job = await commands.job(infrastructure_pid)
        if job is None or job.finished:
            raise InfrastructureNotFound(f"SLURM job {infrastructure_pid} is not pending or running")
        await commands.cancel(infrastructure_pid)

