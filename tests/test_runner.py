"""The warm runner (`evalq runner`, work pool type `evalq-runner`) against a real server.

Each test starts its own runner process on a pool of its own, so it can cancel, stop or
kill that runner without touching the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelling

from flows.campaign.flow import campaign
from flows.runtime.deployments import apply_deployments
from flows.runtime.local_stack import start_worker
from flows.slots.pools import apply_pools
from flows.naming import RUNNING_STATE, campaign_tag, claim_of_message
from flows.runtime.process_groups import terminate_group
from flows.runtime.zombies import HEARTBEAT_SECONDS, heartbeating, install_zombie_automation
from kit import limit_counts, make_fleet, make_job, pool_params, wait_for, write_inputs
from flows.runtime.work_pools import apply_work_pool
from workpools.runner import WORK_POOL_TYPE, base_job_template

POOL = "evalq-runner-test"
DEPLOYMENT = "evaluate-episode/runner-test"
SLOW = {"load_seconds": 0.2, "steps": 12, "step_seconds": 0.25}


@pytest.fixture(scope="module")
def runner_pool(episode_worker):
    """A work pool of type evalq-runner and the episode deployment on it (no runner yet)."""

    async def setup():
        async with get_client() as client:
            await apply_work_pool(client, POOL, WORK_POOL_TYPE, base_job_template(), replace_other_type=True)
            await apply_deployments(client, "local", work_pool=POOL, as_name="runner-test")

    asyncio.run(setup())
    return POOL


def start_runner(tmp_path: Path, slots: int = 6, *extra: str) -> subprocess.Popen:
    log = tmp_path / f"runner-{time.monotonic_ns()}.log"
    if not extra:
        return start_worker(os.environ["PREFECT_API_URL"], slots, log, work_pool=POOL)
    argv = [sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", str(slots), *extra]
    return subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def campaign_state(tmp_path, jobs, resources, name, **settings):
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    params = dict(jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
                  name=name, evaluator_options=SLOW, stats_interval=5.0, deployment=DEPLOYMENT)
    params.update(settings)
    return asyncio.run(campaign(**params, return_state=True))


async def runs_of(name: str):
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(name)])),
            sort=FlowRunSort.ID_DESC, limit=200,
        )


async def claims(run_ids) -> list[str]:
    """The Pending message of each run: which runner claimed it."""
    async with get_client() as client:
        messages = []
        for run_id in run_ids:
            states = await client.read_flow_run_states(run_id)
            messages += [s.message for s in states if s.type.value == "PENDING"]
        return messages


def most_at_once(busy_log: Path) -> int:
    """How many episodes the policy servers served at the same moment, at most."""
    edges = []
    for line in busy_log.read_text().splitlines():
        record = json.loads(line)
        edges += [(record["start"], 1), (record["end"], -1)]
    current = peak = 0
    for _, step in sorted(edges):
        current += step
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def quick_zombie_detection():
    """The session server's zombie automation crashes runs silent for 50 s instead of 90 s (a live
    run still heartbeats every 30 s, 20 s within it: the campaign in this process too, as in
    `evalq campaign run`), then gets its default window back."""
    asyncio.run(install_zombie_automation(timedelta(seconds=HEARTBEAT_SECONDS + 20)))
    try:
        with heartbeating():
            yield
    finally:
        asyncio.run(install_zombie_automation())


def playing(run) -> bool:
    """On its policy server: the Running phase with its server (the engine's first state is a plain Running)."""
    return run.state is not None and run.state.name == RUNNING_STATE and (run.state.message or "").startswith("on ")


def test_one_runner_process_plays_several_episodes_at_once(runner_pool, tmp_path):
    busy = tmp_path / "busy.jsonl"
    fleet, resources = make_fleet({"a_1": [1], "b_1": [1], "c_1": [1]}, log_path=busy)
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in "abc" for i in range(2)]
    runner = start_runner(tmp_path, slots=6)
    try:
        with fleet:
            state = campaign_state(tmp_path, jobs, resources, "side-by-side")
    finally:
        terminate_group(runner)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["done"] == len(jobs) and not summary["failed"]
    assert most_at_once(busy) >= 2  # episodes overlapped...
    messages = asyncio.run(claims([run.id for run in asyncio.run(runs_of("side-by-side"))]))
    assert len(messages) == len(jobs)
    assert {claim_of_message(message)[0] for message in messages} == {f"evalq-local-{os.getpid()}"}  # ...in one runner
    assert all(s.violations == 0 for s in fleet.stats().values())
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


async def create_episode(client, job, resources, results: Path, campaign_name: str):
    deployment = await client.read_deployment_by_name(DEPLOYMENT)
    return await client.create_flow_run_from_deployment(
        deployment.id, name=job.id, tags=[campaign_tag(campaign_name)],
        parameters=dict(job=job.model_dump(mode="json"), resources=pool_params(job, resources),
                        results_dir=str(results), evaluator_options={**SLOW, "steps": 40}, campaign=campaign_name),
    )


async def read_run(run_id):
    async with get_client() as client:
        return await client.read_flow_run(run_id)


async def state_of(run_id):
    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state


def test_a_cancel_stops_that_episode_only_and_frees_its_slot(runner_pool, tmp_path):
    fleet, resources = make_fleet({"x_1": [1], "y_1": [1]})
    victim_job = make_job(tmp_path, "x", "pick", 1, ["x_1"])
    other_job = make_job(tmp_path, "y", "pick", 1, ["y_1"])
    runner = start_runner(tmp_path, slots=4)

    async def create_both():
        async with get_client() as client:
            await apply_pools(client, resources)
            return [await create_episode(client, job, resources, tmp_path / "results", "cancel-one")
                    for job in (victim_job, other_job)]

    try:
        with fleet:
            victim, other = asyncio.run(create_both())
            wait_for(lambda: all(playing(asyncio.run(read_run(r.id))) for r in (victim, other)), 120,
                     "both episodes to play")

            async def cancel():
                async with get_client() as client:
                    await client.set_flow_run_state(victim.id, Cancelling(message="stop this one"))

            asyncio.run(cancel())
            cancelled = wait_for(lambda: (s := asyncio.run(state_of(victim.id))).is_final() and s, 30, "the cancel")
            assert cancelled.type.value == "CANCELLED", cancelled
            busy = asyncio.run(limit_counts(resources))
            assert busy[f"evalq:server:{resources.servers('x_1')[0].address}"] == 0  # released at once
            done = wait_for(lambda: (s := asyncio.run(state_of(other.id))).is_final() and s, 120, "the other episode")
            assert done.is_completed(), done  # its neighbour in the same process played on
    finally:
        terminate_group(runner)
    assert not victim_job.metrics_path(tmp_path / "results").exists()
    assert other_job.metrics_path(tmp_path / "results").exists()
    assert runner.returncode is not None


def test_sigterm_stops_the_runner_without_waiting_for_its_episodes_which_are_requeued(runner_pool, tmp_path):
    """The first SIGTERM (or Ctrl-C) crashes the runs the runner holds, releasing their slots
    on the way out; the campaign requeues them and another runner completes them once."""
    busy = tmp_path / "busy.jsonl"
    fleet, resources = make_fleet({"t_1": [1], "u_1": [1]}, log_path=busy)
    jobs = [make_job(tmp_path, team, "pick", 1, [f"{team}_1"]) for team in "tu"]
    runner = start_runner(tmp_path, slots=4)
    outcome: dict = {}

    def stop_when_both_play():
        wait_for(lambda: sum(map(playing, asyncio.run(runs_of("sigterm")))) == 2, 120, "two episodes playing")
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)  # the stop's speed is a bench figure; its episodes ending early (retried) is asserted
        outcome["busy_after_stop"] = asyncio.run(limit_counts(resources))
        # (not start_worker: its PR_SET_PDEATHSIG would end the runner with this thread)
        outcome["second"] = start_runner(tmp_path, 4, "--name", "second")

    import contextvars
    import threading

    stopper = threading.Thread(target=contextvars.copy_context().run, args=(stop_when_both_play,))
    try:
        with fleet:
            stopper.start()
            state = campaign_state(tmp_path, jobs, resources, "sigterm", evaluator_options={**SLOW, "steps": 40})
            stopper.join()
    finally:
        terminate_group(runner)
        if "second" in outcome:
            terminate_group(outcome["second"])
    assert set(outcome["busy_after_stop"].values()) == {0}  # no lease waits for its expiry
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["done"] == 2 and summary["retried"] == 2 and not summary["failed"]
    finished = [json.loads(line)["episode"] for line in busy.read_text().splitlines()]
    assert sorted(finished).count(jobs[0].id) == 2  # interrupted once, then played to the end once
    assert all(s.violations == 0 for s in fleet.stats().values())


def test_idle_timeout_ends_the_runner(runner_pool, tmp_path):
    runner = start_runner(tmp_path, 2, "--idle-timeout", "3")
    assert runner.wait(60) == 0


def test_a_runner_started_beside_its_server_waits_for_its_pool(runner_pool, tmp_path):
    """`--wait`: the runner started before its pool existed (as the local stack starts it beside
    its server) neither fails nor makes the pool itself; it starts once the pool is applied."""
    pool = f"evalq-runner-wait-{time.monotonic_ns()}"
    log = tmp_path / "runner.log"
    argv = [sys.executable, "-m", "flows.cli", "runner", "--pool", pool, "--slots", "1", "--idle-timeout", "2",
            "--wait", "120", "--preload", "flows.episode:evaluate_episode"]
    runner = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    async def pool_exists() -> bool:
        async with get_client() as client:
            return any(work_pool.name == pool for work_pool in await client.read_work_pools())

    async def apply():
        async with get_client() as client:
            await apply_work_pool(client, pool, WORK_POOL_TYPE, base_job_template())

    try:
        time.sleep(5)
        assert runner.poll() is None and not asyncio.run(pool_exists())
        asyncio.run(apply())
        assert runner.wait(60) == 0
    finally:
        terminate_group(runner)
    output = log.read_text()
    assert f"started: pool '{pool}'" in output and "--preload" not in output


def test_prefect_worker_start_type_evalq_runner(runner_pool, tmp_path):
    """Registered the Prefect way: `prefect worker start --type evalq-runner` runs episodes too."""
    fleet, resources = make_fleet({"p_1": [1]})
    jobs = [make_job(tmp_path, "p", "pick", i, ["p_1"]) for i in range(2)]
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", WORK_POOL_TYPE,
            "--limit", "3", "--name", "prefect-way"]
    worker = subprocess.Popen(argv, stdout=open(tmp_path / "worker.log", "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        with fleet:
            state = campaign_state(tmp_path, jobs, resources, "prefect-way")
    finally:
        terminate_group(worker)
    assert state.is_completed() and state.result()["done"] == 2
    messages = asyncio.run(claims([run.id for run in asyncio.run(runs_of("prefect-way"))]))
    assert all("prefect-way" in message for message in messages)


@pytest.mark.backends
def test_a_killed_runner_loses_no_episode_and_leaks_no_slot(runner_pool, tmp_path):
    """SIGKILL of a runner holding several episodes: their heartbeats stop, the zombie
    automation marks them Crashed, the campaign requeues them, another runner completes
    each exactly once, no server serves beyond its capacity, and every slot comes back."""
    busy = tmp_path / "busy.jsonl"
    fleet, resources = make_fleet({"k_1": [1], "l_1": [1]}, log_path=busy)
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in "kl" for i in range(2)]
    runner = start_runner(tmp_path, 4, "--name", "doomed")
    outcome: dict = {}

    def kill_when_two_play():
        wait_for(lambda: sum(map(playing, asyncio.run(runs_of("sigkill")))) == 2, 180, "two episodes playing")
        runner.kill()
        outcome["killed"] = True
        outcome["second"] = start_runner(tmp_path, 4, "--name", "survivor")

    import contextvars
    import threading

    killer = threading.Thread(target=contextvars.copy_context().run, args=(kill_when_two_play,))
    try:
        with fleet, quick_zombie_detection():
            killer.start()
            state = campaign_state(tmp_path, jobs, resources, "sigkill", evaluator_options={**SLOW, "steps": 40})
            killer.join()
    finally:
        terminate_group(runner)
        if "second" in outcome:
            terminate_group(outcome["second"])
    assert outcome.get("killed")
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["done"] == len(jobs) and summary["retried"] >= 2 and not summary["failed"]
    for job in jobs:
        assert json.loads(job.metrics_path(tmp_path / "results").read_text())["evalq"]["job_id"] == job.id
    assert all(s.violations == 0 and s.max_active <= s.capacity for s in fleet.stats().values())
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_a_runner_stopped_mid_claim_hands_the_run_back(runner_pool, tmp_path):
    """SIGTERM while the runner's claim is granted and not yet answered (held 3 s by the test hook,
    inside the part a stop cannot cut): the runner learns it won the run and gives it back,
    Scheduled, unstarted: nothing is left Pending under a runner that is gone."""
    from workpools.runner.claims import CLAIM_PAUSE_ENV

    fleet, resources = make_fleet({"h_1": [1]})
    job = make_job(tmp_path, "h", "pick", 1, ["h_1"])

    async def create():
        async with get_client() as client:
            return await create_episode(client, job, resources, tmp_path / "results", "hand-back")

    run = asyncio.run(create())
    log = tmp_path / "runner.log"
    runner = subprocess.Popen([sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", "1", "--name", "midclaim"],
                              stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, CLAIM_PAUSE_ENV: "3"})
    try:
        pending = wait_for(lambda: (s := asyncio.run(state_of(run.id))).type.value == "PENDING" and s, 90, "the claim",
                           detail=log.read_text)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0, log.read_text()
    finally:
        terminate_group(runner)
    state = asyncio.run(state_of(run.id))
    assert claim_of_message(pending.message)[0] == "midclaim"
    assert state.type.value == "SCHEDULED" and state.message == "handed back by runner midclaim: it stopped before the run started"

    async def delete():
        async with get_client() as client:
            await client.delete_flow_run(run.id)

    asyncio.run(delete())
