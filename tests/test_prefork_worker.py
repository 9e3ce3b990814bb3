"""The prefork worker stops on the first Ctrl-C or SIGTERM with a run in flight: a real
`prefect worker start --type evalq-prefork` subprocess on the session's Prefect server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flows.campaign.outcomes import Outcome, classify
from flows.runtime.process_groups import terminate_group

SLEEPY_FLOW = '''
import os, sys, time
from prefect import flow

@flow(name="sleepy")
def sleepy(pid_file: str, seconds: float = 600) -> None:
    """Say which process runs it, then stay busy far longer than any test waits."""
    with open(pid_file, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(seconds)
'''


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def flow_run_state(run_id):
    from prefect import get_client

    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sleepy_deployment(prefect_server, tmp_path):
    """A prefork work pool of its own and a deployment of a flow that sleeps 10 minutes."""
    from prefect import get_client

    from flows.runtime.provisioning import ensure_local_pool

    pool = f"prefork-stop-{tmp_path.name}"[:60]
    (tmp_path / "sleepy.py").write_text(SLEEPY_FLOW)

    async def create():
        async with get_client() as client:
            await ensure_local_pool(client, pool, kind="prefork")
            return await client.create_deployment(
                flow_id=await client.create_flow_from_name("sleepy"), name="sleepy", work_pool_name=pool,
                entrypoint="sleepy.py:sleepy", enforce_parameter_schema=False,
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(tmp_path)}}],
            )

    return pool, asyncio.run(create())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_stops_the_worker_and_its_run_ends_crashed(prefect_server, sleepy_deployment, tmp_path, signum):
    from prefect import get_client

    from flows.runtime.local_stack import start_worker

    pool, deployment_id = sleepy_deployment
    pid_file = tmp_path / "run.pid"

    async def create_run():
        async with get_client() as client:
            return (await client.create_flow_run_from_deployment(deployment_id, parameters={"pid_file": str(pid_file)})).id

    run_id = asyncio.run(create_run())
    worker = start_worker(prefect_server.api_url, limit=2, log_path=tmp_path / "worker.log", work_pool=pool, kind="prefork")
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 120, "the run to start")
        run_pid = int(pid_file.read_text())
        wait_for(lambda: asyncio.run(flow_run_state(run_id)).is_running(), 60, "the run to be Running")
        worker.send_signal(signum)
        try:
            worker.wait(60)  # the run sleeps 600 s: a worker that waits for it does not exit here
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {signum!r}:\n{Path(tmp_path / 'worker.log').read_text()[-3000:]}") from None
        assert not alive(run_pid), "the run's process outlived its worker"
        state = wait_for(lambda: (s := asyncio.run(flow_run_state(run_id))).is_final() and s, 30, "a final state")
        assert state.is_crashed(), (state.name, state.message)
        assert classify(state.type, state.name, attempt=1, max_attempts=3) is Outcome.RETRY  # the campaign requeues it
    finally:
        terminate_group(worker)
