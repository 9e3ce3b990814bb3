"""Who serves a work pool, and whether the runner that claimed a run lives (`flows/runtime/liveness.py`):
the pure judgement, then real pools on the session's Prefect server with real runners."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import subprocess
import time

import pytest
from prefect import get_client

from flows.naming import claim_message, claim_of_message, handed_back_message
from flows.runtime.liveness import (
    PoolService,
    UNSERVED_SECONDS,
    forget_worker,
    quiet_seconds,
    read_pool_service,
    start_command,
)
from flows.runtime.process_groups import terminate_group
from flows.runtime.work_pools import apply_work_pool
from kit import wait_for
from workpools.runner import WORK_POOL_TYPE, base_job_template

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


class TestJudgement:
    def test_quiet_counts_from_the_last_poll_or_else_from_creation(self):
        assert quiet_seconds(T0 + dt.timedelta(seconds=5), T0, T0 + dt.timedelta(seconds=40)) == 35
        assert quiet_seconds(None, T0, T0 + dt.timedelta(seconds=40)) == 40
        assert quiet_seconds(None, None, T0) is None

    def test_a_pool_nothing_polled_for_30_s_is_unserved_and_says_how_to_serve_it(self):
        polled = PoolService(pool="p", pool_type=WORK_POOL_TYPE, quiet_seconds=3, ever_polled=True, live_workers=["r1"])
        assert polled.served and polled.note() == "work pool p: polled 3 s ago, 1 live worker"
        quiet = polled.model_copy(update={"quiet_seconds": UNSERVED_SECONDS + 15, "live_workers": []})
        assert not quiet.served
        assert quiet.note() == ("work pool p: no live worker or runner has polled it for 45 s; start one: "
                                "`evalq runner --pool p` (on SLURM: `evalq workpools slurm-runners --pool p --keep N ...`)")
        never = PoolService(pool="k", pool_type="evalq-kubernetes", quiet_seconds=120)
        assert never.note() == ("work pool k: no worker or runner has ever polled it (created 120 s ago); "
                                "start one: `prefect worker start --pool k --type evalq-kubernetes`")
        fresh = PoolService(pool="k", pool_type="process", quiet_seconds=4)
        assert fresh.served and fresh.note() == "work pool k: created 4 s ago, not polled yet"
        assert PoolService(pool="x", exists=False).note().startswith("work pool 'x' does not exist")
        assert start_command("s", "evalq-slurm") == "`prefect worker start --pool s --type evalq-slurm`"

    def test_only_a_runner_that_heartbeats_is_alive(self):
        service = PoolService(pool="p", quiet_seconds=1, live_workers=["a"])
        assert service.alive("a") and not service.alive("b")

    def test_claim_messages_name_the_runner_and_the_claim(self):
        message = claim_message("evalq-runner-41_2", "abc123")
        assert claim_of_message(message) == ("evalq-runner-41_2", "abc123")
        assert claim_of_message("claimed by runner old-runner") == ("old-runner", None)  # before tokens
        assert claim_of_message(None) is None and claim_of_message("Submitting") is None
        assert claim_of_message(handed_back_message("r", "it stopped")) is None


POOL = "evalq-liveness-test"


@pytest.fixture(scope="module")
def liveness_pool(prefect_server):
    async def setup():
        async with get_client() as client:
            await apply_work_pool(client, POOL, WORK_POOL_TYPE, base_job_template(), replace_other_type=True)

    asyncio.run(setup())
    return POOL


async def service(pool: str) -> PoolService:
    async with get_client() as client:
        return await read_pool_service(client, pool)


def test_a_pool_no_worker_ever_polled_then_a_runner_that_stops(liveness_pool, tmp_path):
    """Before any runner: never polled. A runner polls it and reads alive; stopped (SIGTERM) it
    deletes its own row and is gone at once; the queue keeps its last poll time."""
    before = asyncio.run(service(POOL))
    assert before.exists and not before.ever_polled and before.live_workers == []
    assert not asyncio.run(service("evalq-no-such-pool")).exists

    log = tmp_path / "runner.log"
    runner = subprocess.Popen([sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", "1", "--name", "lively"],
                              stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        up = wait_for(lambda: (s := asyncio.run(service(POOL))).alive("lively") and s.ever_polled and s, 90, "the runner's first poll",
                      detail=log.read_text)
        assert up.served and up.quiet_seconds < UNSERVED_SECONDS
        runner.terminate()
        assert runner.wait(60) == 0
        after = asyncio.run(service(POOL))
        assert not after.alive("lively") and after.ever_polled, after
    finally:
        terminate_group(runner)


def test_a_killed_runner_reads_dead_within_three_heartbeats_and_forgetting_it_is_at_once(liveness_pool, tmp_path):
    log = tmp_path / "runner.log"
    runner = subprocess.Popen([sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", "1", "--name", "doomed"],
                              stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: asyncio.run(service(POOL)).alive("doomed"), 90, "the runner's heartbeat", detail=log.read_text)
        runner.kill()  # at Prefect's default heartbeat (30 s) it would read alive for 90 s
        wait_for(lambda: not asyncio.run(service(POOL)).alive("doomed"), 60, "the dead runner to read dead")
    finally:
        terminate_group(runner)

    async def forget_twice():
        async with get_client() as client:
            return await forget_worker(client, POOL, "doomed"), await forget_worker(client, POOL, "doomed")

    assert asyncio.run(forget_twice()) == (True, False)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="runs on Linux")
def test_a_full_runner_keeps_its_pool_polled(liveness_pool, prefect_server, tmp_path):
    """A runner whose one slot is taken still polls (asking for one run, taking none), so a busy
    live runner is not read as no runner: --max-memory below what it uses fills it at once."""
    from flows.runtime.deployments import apply_deployments

    async def scheduled_run():
        async with get_client() as client:
            await apply_deployments(client, "local", work_pool=POOL, as_name="liveness-test")
            deployment = await client.read_deployment_by_name("evaluate-episode/liveness-test")
            return await client.create_flow_run_from_deployment(deployment.id, parameters={})

    run = asyncio.run(scheduled_run())
    log = tmp_path / "runner.log"
    runner = subprocess.Popen([sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", "1", "--name", "full",
                               "--max-memory", "0.01", "--poll-seconds", "1"],
                              stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: asyncio.run(service(POOL)).alive("full"), 90, "the runner", detail=log.read_text)
        first = asyncio.run(service(POOL)).quiet_seconds
        time.sleep(4)
        polled = asyncio.run(service(POOL))
        assert polled.quiet_seconds < 3 and polled.served, (first, polled)

        async def state():
            async with get_client() as client:
                return (await client.read_flow_run(run.id)).state

        assert asyncio.run(state()).type.value == "SCHEDULED"  # never claimed above --max-memory
        assert "above --max-memory" in log.read_text()
    finally:
        terminate_group(runner)

        async def delete():
            async with get_client() as client:
                await client.delete_flow_run(run.id)

        asyncio.run(delete())
