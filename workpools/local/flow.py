"""The `run-command` flow: wait for dependencies, wait for its turn and GPUs, run the command, release.

Deployed on the local process pool (`evalq workpools apply --kind local`); `evalq submit`
creates its flow runs. The job watches its own flow run the whole time (`stopping.py`): a
cancel (`evalq queue kill`, the Prefect UI) kills the command's process group, releases
the GPUs and ends the run Cancelled; a deleted run ends quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import Abort
from prefect.states import Cancelled, Running, State

from flows.runtime.lease_engine import Leases
from workpools.local import leases
from workpools.local.command import KILL_GRACE_SECONDS, Outcome, run_argv
from workpools.local.entries import QueueEntry, Status, read_entries
from workpools.local.environment import EnvironmentFileError, load_environment
from workpools.local.gpus import Gpu, query_gpus
from workpools.local.job import (
    AWAITING_DEPENDENCIES_STATE,
    AWAITING_GPUS_STATE,
    COMMAND_STATE,
    GPUS_LABEL,
    HOST_LABEL,
    RUN_COMMAND_FLOW,
    STARTED_LABEL,
    CommandJob,
    format_indices,
    gpu_limit,
    slots_limit,
)
from workpools.local.output import LogForwarder
from workpools.local.scheduling import Holding, Waiting, plan_starts
from workpools.local.slots import read_slots
from workpools.local.stopping import (
    Stopped,
    StopRequested,
    run_unless_stopped,
    stop_reason,
)
from workpools.local.threshold import read_threshold

POLL_SECONDS = float(os.environ.get("EVALQ_POLL_SECONDS", "1.0"))
"""How often a job checks its own flow run, its dependencies and its turn."""
LOG_FORWARD_SECONDS = 0.5
STARTUP_GRACE_SECONDS = 60.0
"""A job a worker is starting keeps its place in line this long (a stuck start must not block the queue)."""


class DependencyFailed(RuntimeError):
    """A job this one depends on did not complete successfully."""


class CommandFailed(RuntimeError):
    """The command exited non-zero or timed out."""


@flow(name=RUN_COMMAND_FLOW, log_prints=True)
async def run_command(job: CommandJob) -> int | State:
    """Run one queued command on this machine; fails if it exits non-zero or times out."""
    logger = get_run_logger()
    run_id = current_run_id()
    async with get_client() as client:
        result = await run_unless_stopped(client, run_id, run_job(client, job, run_id, logger), POLL_SECONDS)
        if not isinstance(result, Stopped) and run_id is not None:
            with contextlib.suppress(Exception):  # a cancel that came just as the command ended
                result = await stop_reason(client, run_id) or result
    if isinstance(result, Stopped):
        if result.deleted:
            raise Abort(f"flow run {run_id} was deleted; its command was stopped and its GPUs released")
        message = f"Stopped because {result.describe()}: its command was killed, its GPUs released"
        logger.info(message)
        return Cancelled(message=message)
    if result.timed_out:
        raise CommandFailed(f"timed out after {job.timeout:g} s and was killed")
    if result.returncode != 0:
        raise CommandFailed(f"exited with code {result.returncode}")
    return result.returncode


def current_run_id() -> UUID | None:
    context = FlowRunContext.get()
    return context.flow_run.id if context and context.flow_run else None


async def run_job(client, job: CommandJob, run_id: UUID | None, logger) -> Outcome:
    """Dependencies, then the GPU queue, then the command with its output in files and logs."""
    if job.waits_for:
        await set_phase(client, run_id, AWAITING_DEPENDENCIES_STATE)
        await wait_for_dependencies(client, job.depends_on, job.after)
    try:
        env = {**(load_environment(job.env_file) if job.env_file else os.environ), **job.env}
    except EnvironmentFileError as exc:
        raise CommandFailed(str(exc)) from None
    async with gpu_turn(client, job, run_id) as indices:
        if "CUDA_VISIBLE_DEVICES" not in job.env:  # the command's own CUDA_VISIBLE_DEVICES=... word wins
            env["CUDA_VISIBLE_DEVICES"] = format_indices(indices)
        logger.info("running %s on GPUs [%s]", job.argv, env["CUDA_VISIBLE_DEVICES"])
        return await run_with_output(job, env, logger)


async def set_phase(client, run_id: UUID | None, name: str, message: str | None = None) -> bool:
    """Show the job's phase as a named Running state; False if the server refused (a cancel won)."""
    from prefect.client.schemas.responses import SetStateStatus

    if run_id is None:
        return True
    result = await client.set_flow_run_state(run_id, Running(name=name, message=message))
    return result.status == SetStateStatus.ACCEPT


async def wait_for_dependencies(client, strict: list[UUID], after: list[UUID] = ()) -> None:
    """Return once every run in `strict` completed (raise if one ended otherwise: `--after-success`)
    and every run in `after` ended, however it ended (`-D`, task-spooler's meaning; a run deleted
    meanwhile counts as ended)."""
    from prefect.exceptions import ObjectNotFound

    pending = {run_id: True for run_id in after} | {run_id: False for run_id in strict}
    while pending:
        for run_id, any_end in list(pending.items()):
            try:
                state = (await client.read_flow_run(run_id)).state
            except ObjectNotFound:
                if any_end:
                    del pending[run_id]
                    continue
                raise DependencyFailed(f"dependency {run_id} was deleted") from None
            if state is None or not state.is_final():
                continue
            if not any_end and not state.is_completed():
                raise DependencyFailed(f"dependency {run_id} ended {state.name}")
            del pending[run_id]
        if pending:
            await asyncio.sleep(POLL_SECONDS)


@asynccontextmanager
async def gpu_turn(client, job: CommandJob, run_id: UUID | None) -> AsyncIterator[list[int]]:
    """Queue for this machine's GPUs until the plan says go and the lease is ours; release on exit."""
    host = socket.gethostname()
    # nvidia-smi in a thread: a blocked event loop would stall lease renewal and the command's timeout
    names = {gpu.index: gpu_limit(host, gpu.index) for gpu in await asyncio.to_thread(query_gpus)}
    usable = [index for index in names if job.visible_gpus is None or index in job.visible_gpus]
    unknown = set(job.gpu_indices or []) - set(usable)
    if unknown or len(usable) < job.gpus:
        visible = "" if job.visible_gpus is None else f", of which {sorted(usable)} visible to the job"
        raise ValueError(f"this machine has GPUs {sorted(names)}{visible}; the job asks for {job.gpu_indices or job.gpus}")
    await leases.ensure_limits(client, list(names.values()))
    await read_slots(client, host)  # creates the slot limit on first use
    if run_id is not None:
        await client.update_flow_run_labels(run_id, {HOST_LABEL: host})
    await set_phase(client, run_id, AWAITING_GPUS_STATE)
    gpu_leases = Leases(client, leases.GPU_LEASE)
    while True:
        chosen = await my_turn(client, job, run_id, host, names)
        if chosen is not None:
            limits = [names[index] for index in chosen] + [slots_limit(host)]
            lease_id = await gpu_leases.take(limits, run_id)
            if lease_id is not None:
                async with gpu_leases.holding(lease_id, f"GPUs {format_indices(chosen)} of {host}"):
                    await commit_start(client, run_id, chosen)
                    yield chosen
                return
        await asyncio.sleep(POLL_SECONDS)


async def my_turn(client, job: CommandJob, run_id: UUID | None, host: str, names: dict[int, str]) -> list[int] | None:
    """The GPUs this job may lease now according to the queue's plan, or None: not its turn."""
    me = str(run_id)
    entries = await read_entries(client, ["PENDING", "RUNNING", "CANCELLING"])
    threshold = await read_threshold(client, host)
    queue = [waiting(entry, threshold) for entry in entries if in_gpu_queue(entry, host, time.time())]
    if me not in {item.key for item in queue}:  # not visible yet (or run in-process without a run id)
        queue.append(waiting_job(me, job, threshold))
    holding = [held(entry) for entry in entries if entry.host == host and entry.held_gpus is not None]
    busy = await leases.busy_limits(client, list(names.values()))
    leased = {index for index, name in names.items() if name in busy}
    slots = await read_slots(client, host)
    gpus: list[Gpu] = await asyncio.to_thread(query_gpus)
    return plan_starts(queue, holding, gpus, leased, slots.free, time.time()).get(me)


def in_gpu_queue(entry: QueueEntry, host: str, now: float) -> bool:
    """Waiting for this machine's GPUs, or about to (a worker is starting it, it needs no
    dependency): such a job keeps its place in line, unless its start seems stuck."""
    if entry.job is None:
        return False
    if entry.status == Status.WAITING_GPUS:
        return entry.host == host
    starting = entry.status in (Status.QUEUED, Status.STARTING)  # read as Pending, or Running before a phase
    recent = entry.state_since is not None and now - entry.state_since.timestamp() < STARTUP_GRACE_SECONDS
    return starting and recent and not entry.job.waits_for and entry.host in (None, host)


def waiting_job(key: str, job: CommandJob, host_threshold: float) -> Waiting:
    """The job as the plan sees it; `host_threshold` for a job without a threshold of its own."""
    pinned = tuple(job.gpu_indices) if job.gpu_indices else None
    threshold = host_threshold if job.gpu_free_threshold is None else job.gpu_free_threshold
    visible = tuple(job.visible_gpus) if job.visible_gpus is not None else None
    return Waiting(key, job.gpus, pinned, job.timeout, threshold, visible)


def waiting(entry: QueueEntry, host_threshold: float) -> Waiting:
    return waiting_job(str(entry.run_id), entry.job, host_threshold)


def held(entry: QueueEntry) -> Holding:
    timeout = entry.job.timeout if entry.job else None
    if timeout is None or entry.command_started is None:
        return Holding(tuple(entry.held_gpus or ()), None)
    return Holding(tuple(entry.held_gpus or ()), entry.command_started.timestamp() + timeout + KILL_GRACE_SECONDS)


async def commit_start(client, run_id: UUID | None, indices: list[int]) -> None:
    """Enter the Running phase: the server refuses it if a cancel came first, then nothing starts."""
    if not await set_phase(client, run_id, COMMAND_STATE, f"on GPUs [{format_indices(indices)}]"):
        reason = await stop_reason(client, run_id)
        raise StopRequested(reason or Stopped("refused"))
    if run_id is not None:
        await client.update_flow_run_labels(run_id, {GPUS_LABEL: format_indices(indices), STARTED_LABEL: time.time()})


async def run_with_output(job: CommandJob, env: dict[str, str], logger) -> Outcome:
    """Run the command with stdout/stderr in the job's files, forwarded to the run's logs as they grow."""
    with contextlib.ExitStack() as files:
        stdout, stderr = (files.enter_context(open_output(path)) if path else None for path in (job.stdout_path, job.stderr_path))
        forwarder = LogForwarder(logger, job.stdout_path, job.stderr_path)
        pump = asyncio.create_task(forward_forever(forwarder))
        try:
            return await run_argv(job.argv, env, cwd=job.cwd, timeout=job.timeout, stdout=stdout, stderr=stderr)
        finally:
            pump.cancel()
            forwarder.forward(final=True)


def open_output(path: str):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")


async def forward_forever(forwarder: LogForwarder) -> None:
    while True:
        await asyncio.sleep(LOG_FORWARD_SECONDS)
        forwarder.forward()
