"""Sick policy servers: quarantined, probed, lifted; their episodes go elsewhere or wait, and
are never charged an attempt (real Prefect server, real policy servers, real worker)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags, LogFilter, LogFilterFlowRunId

from flows.campaign.flow import campaign
from flows.naming import CAMPAIGN_FLOW, campaign_tag, server_limit
from flows.slots.pools import apply_pools, pool_status, quarantine_warnings
from flows.slots.quarantine_policy import (
    Backoff,
    NoLiveServer,
    QuarantineRecord,
    ServerFaults,
    pool_warnings,
)
from flows.slots.quarantine import Quarantine, read_record
from flows.slots.steering import Candidate
from flows.slots.leaser import SlotLeaser
from generate.models import Resources
from kit import limit_counts, make_fleet, make_job, write_inputs
from test_campaign_cli import evalq

FAST_SIM = {"load_seconds": 0.2, "steps": 4, "step_seconds": 0.05, "connect_timeout": 2}


# -- the policy, on a fake clock ---------------------------------------------------------------
def test_the_back_off_doubles_while_the_server_stays_sick_up_to_its_cap():
    policy = Backoff(first=5, factor=2, cap=60)
    record = policy.enter(None, "h:1", "refused", now=1000.0)
    assert (record.failures, record.until, record.active) == (1, 1005.0, True)
    assert not record.probe_due(1004.9) and record.probe_due(1005.0)
    delays = []
    now = 1005.0
    for _ in range(6):
        record = policy.probe_failed(record, "still refused", now)
        delays.append(record.until - now)
        now = record.until
    assert delays == [10, 20, 40, 60, 60, 60]
    assert record.reason == "still refused" and record.since == 1000.0


def test_a_second_failure_while_quarantined_does_not_grow_the_back_off():
    policy = Backoff()
    record = policy.enter(None, "h:1", "refused", now=0.0)
    assert policy.enter(record, "h:1", "dropped", now=1.0) == record


def test_a_lifted_server_that_relapses_soon_resumes_its_back_off_and_later_starts_over():
    policy = Backoff(first=5, factor=2, cap=120, memory=600)
    record = policy.probe_failed(policy.enter(None, "h:1", "refused", 0.0), "refused", 5.0)  # 2 failures
    lifted = policy.lifted(record, now=20.0)
    assert not lifted.active and lifted.lifted_at == 20.0
    relapse = policy.enter(lifted, "h:1", "dropped", now=100.0)
    assert (relapse.failures, relapse.until - 100.0) == (3, 20.0)
    fresh = policy.enter(lifted, "h:1", "dropped", now=20.0 + 601)
    assert (fresh.failures, fresh.until - fresh.since) == (1, 5.0)


def test_a_run_avoids_its_failed_servers_unless_they_are_all_it_has():
    faults = ServerFaults(most=3)
    assert faults.add("dead:1") and faults.excluded(["dead:1", "live:2"]) == {"dead:1"}
    assert faults.excluded(["dead:1"]) == set()  # nothing else: wait for it
    assert faults.add("live:2") and faults.excluded(["dead:1", "live:2"]) == set()
    assert not faults.add("dead:1")  # the third failing server: give up


def test_pool_warnings_say_which_pools_have_no_live_server():
    resources = Resources.model_validate({
        "a_1": [{"host": "h", "port": 1}, {"host": "h", "port": 2}],
        "b_1": [{"host": "h", "port": 3}],
        "c_1": [{"host": "h", "port": 4}],
    })
    record = QuarantineRecord(address="h:3", failures=2, since=0.0, until=50.0, reason="cannot connect")
    lines = pool_warnings(resources, {"h:1": None, "h:3": record}, now=40.0)
    assert lines == [
        "pool a_1: 1/2 servers quarantined (h:1 quarantined)",
        "pool b_1: all 1 servers quarantined, its episodes wait (h:3 quarantined 40 s (2 failures; probe in 10 s): cannot connect)",
    ]


# -- on a real Prefect server ------------------------------------------------------------------
def applied_pool(name: str, servers: int = 1):
    """A pool of `servers` demo servers (not started), its limits applied."""
    fleet, resources = make_fleet({name: [1] * servers})

    async def apply():
        async with get_client() as client:
            await apply_pools(client, resources)

    asyncio.run(apply())
    return fleet, resources


def dead_pool(name: str, servers: int = 1):
    """`applied_pool`, the fleet started, every server then killed."""
    fleet, resources = applied_pool(name, servers)
    fleet.start()
    for address in fleet.servers:
        fleet.kill_server(address)
    return fleet, resources


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_quarantine_refuses_leases_grows_while_probes_fail_and_lifts_when_one_answers(prefect_server, tmp_path):
    fleet, resources = dead_pool("qreal_1")
    server = resources.servers("qreal_1")[0]
    job = make_job(tmp_path, "qreal", "pick", 1, ["qreal_1"])
    clock = FakeClock()

    async def scenario():
        async with get_client() as client:
            quarantine = Quarantine(client, clock=clock)
            entered = await quarantine.enter(server, "cannot connect")
            limit = await client.read_global_concurrency_limit_by_name(server_limit(server))
            refused = await SlotLeaser(client).try_acquire(Candidate("qreal_1", server), None)
            early = await quarantine.check([server])  # back-off not over: no probe
            clock.now += 5
            failed = await quarantine.check([server])  # probe refused: the back-off doubles
            stored = await read_record(client, server.address)
            clock.now += 10
            await asyncio.get_running_loop().run_in_executor(None, fleet.start_server, server.address)
            lifted = await quarantine.check([server])
            after = await client.read_global_concurrency_limit_by_name(server_limit(server))
            slot = await SlotLeaser(client).acquire(job, resources)
            await SlotLeaser(client).release(slot)
            return entered, limit, refused, early, failed, stored, lifted, after, await read_record(client, server.address)

    try:
        entered, limit, refused, early, failed, stored, lifted, after, final = asyncio.run(scenario())
    finally:
        fleet.stop()
    assert entered.failures == 1 and limit.limit == 0 and refused is None
    assert early == ([], 5.0)
    assert failed == ([], 10.0) and stored.failures == 2 and "probe" in stored.reason
    assert [s.address for s in lifted[0]] == [server.address] and after.limit == server.capacity
    assert not final.active and final.failures == 2


def test_a_holder_whose_server_another_holder_closed_still_gives_its_slot_back(prefect_server, tmp_path):
    """Two episodes hold a slot each on a dead server: the first to fail closes it (limit 0), and
    Prefect cannot release a slot of a closed limit; the second's slot still comes back."""
    resources = Resources.model_validate({"qtwo_1": [{"host": "127.0.0.1", "port": 19121, "capacity": 2}]})
    server = resources.servers("qtwo_1")[0]
    job = make_job(tmp_path, "qtwo", "pick", 1, ["qtwo_1"])

    async def scenario():
        async with get_client() as client:
            await apply_pools(client, resources)
            first, second = SlotLeaser(client), SlotLeaser(client)
            held = [await first.acquire(job, resources), await second.acquire(job, resources)]
            for slot in held:
                await Quarantine(client).enter(server, "cannot connect", slot.lease_id)
            return await client.read_global_concurrency_limit_by_name(server_limit(server))

    closed = asyncio.run(scenario())
    assert closed.limit == 0
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_the_quarantine_outlives_the_campaign_and_its_clients(prefect_server, tmp_path):
    """Applying the pools again (what a restarted campaign does) keeps the quarantine; a new
    client and leaser read it from the Prefect server and stay off the server."""
    fleet, resources = dead_pool("qkeep_1")
    server = resources.servers("qkeep_1")[0]
    job = make_job(tmp_path, "qkeep", "pick", 1, ["qkeep_1"])

    async def quarantine():
        async with get_client() as client:
            await Quarantine(client).enter(server, "connection lost")

    async def restart():
        async with get_client() as client:
            outcome = await apply_pools(client, resources)
            status = await pool_status(client, resources, with_holders=False)
            record = await read_record(client, server.address)
            leaser = SlotLeaser(client, poll_seconds=0.5, give_up_seconds=1.0)
            with pytest.raises(NoLiveServer, match=server.address):
                await leaser.acquire(job, resources)
            return outcome, status, record, await quarantine_warnings(client, resources)

    try:
        asyncio.run(quarantine())
        outcome, status, record, warnings = asyncio.run(restart())
    finally:
        fleet.stop()
    assert outcome[server_limit(server)] == "quarantined"
    assert record.active and record.reason == "connection lost"
    assert status[0].all_quarantined and status[0].servers[0].quarantine.failures == record.failures
    assert warnings and warnings[0].startswith("pool qkeep_1: all 1 servers quarantined, its episodes wait")
    _, resources_file = write_inputs(tmp_path, [job], resources)
    shown = evalq("pools", "status", str(resources_file))
    assert shown.returncode == 0, shown.stderr
    assert server.address in shown.stdout and "no live server" in shown.stdout  # (the leaser's last probe renewed the reason)
    assert "WARNING: pool qkeep_1: all 1 servers quarantined" in shown.stdout


# -- whole campaigns ---------------------------------------------------------------------------
def campaign_params(tmp_path, jobs, resources, name: str, **settings) -> dict:
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    return dict(jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
                name=name, evaluator_options=FAST_SIM, stats_interval=2.0, max_attempts=1, **settings)


async def episode_runs(name: str):
    async with get_client() as client:
        return await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(name)])), limit=200)


def test_a_dead_server_in_a_two_server_pool_costs_no_episode_anything(episode_worker, tmp_path):
    fleet, resources = make_fleet({"half_1": [1, 1]})
    dead, live = list(fleet.servers)
    jobs = [make_job(tmp_path, "half", "pick", i, ["half_1"]) for i in range(6)]
    with fleet:
        fleet.kill_server(dead)
        state = asyncio.run(campaign(**campaign_params(tmp_path, jobs, resources, "half-dead"), return_state=True))
        stats = fleet.stats()
    summary = state.result()
    assert summary["done"] == len(jobs) and not summary["failed"] and summary["retried"] == 0
    servers = {json.loads(job.metrics_path(tmp_path / "results").read_text())["evalq"]["server"] for job in jobs}
    assert servers == {live} and stats[live].episodes == len(jobs) and stats[live].violations == 0
    runs = asyncio.run(episode_runs("half-dead"))
    assert sorted(run.name for run in runs) == sorted(f"half-dead:{job.id}" for job in jobs)  # one run each: no attempt charged
    counts = asyncio.run(limit_counts(resources))
    assert set(counts.values()) == {0}, (counts, "dead", dead)  # the failing holder gave its slot back

    async def record():
        async with get_client() as client:
            return await read_record(client, dead)

    assert asyncio.run(record()).active


def test_a_pool_without_a_live_server_waits_says_so_and_completes_when_one_comes_back(episode_worker, tmp_path):
    fleet, resources = dead_pool("down_1")
    address = resources.servers("down_1")[0].address
    jobs = [make_job(tmp_path, "down", "pick", i, ["down_1"]) for i in range(3)]
    params = campaign_params(tmp_path, jobs, resources, "all-down")
    outcome: dict = {}

    def run_campaign():
        outcome["state"] = asyncio.run(campaign(**params, return_state=True))

    runner = threading.Thread(target=contextvars.copy_context().run, args=(run_campaign,))  # on this test's API
    try:
        runner.start()

        async def warnings():
            async with get_client() as client:
                return await quarantine_warnings(client, resources)

        deadline = time.monotonic() + 120
        while not (seen := asyncio.run(warnings())) and time.monotonic() < deadline:
            time.sleep(1)
        assert seen and "all 1 servers quarantined, its episodes wait" in seen[0]
        time.sleep(4)  # a stats line or two while it waits
        assert runner.is_alive() and not any(job.metrics_path(tmp_path / "results").exists() for job in jobs)
        fleet.start_server(address)
        runner.join(300)
        assert not runner.is_alive()
    finally:
        fleet.stop()
    summary = outcome["state"].result()
    assert summary["done"] == len(jobs) and not summary["failed"] and summary["retried"] == 0
    assert sorted(run.name for run in asyncio.run(episode_runs("all-down"))) == sorted(f"all-down:{job.id}" for job in jobs)
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}
    assert any("WARNING pool down_1: all 1 servers quarantined" in line for line in asyncio.run(campaign_log("all-down")))


async def campaign_log(name: str) -> list[str]:
    """The campaign flow run's log messages."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.logging.handlers import APILogWorker

    await asyncio.to_thread(APILogWorker.drain_all, timeout=5)  # in a thread: in a loop it returns a coroutine
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[CAMPAIGN_FLOW])), limit=200)
        run = next(r for r in runs if (r.parameters or {}).get("name") == name)
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), limit=200)
        return [log.message for log in logs]


def test_the_happy_path_makes_no_quarantine_call(prefect_server, tmp_path, monkeypatch):
    """Every HTTP request of a healthy episode, counted: none reads or writes a quarantine
    record or a limit (the leaser's limit reads, which existed before, carry the flag)."""
    import collections

    import httpx

    from flows.episode import evaluate_episode
    from kit import pool_params

    fleet, resources = applied_pool("happy_1")
    job = make_job(tmp_path, "happy", "pick", 1, ["happy_1"])
    requests: collections.Counter = collections.Counter()
    send = httpx.AsyncClient.send

    async def counted(self, request, *args, **kwargs):
        requests[f"{request.method} {request.url.path.split('/api', 1)[-1]}"] += 1
        return await send(self, request, *args, **kwargs)

    with fleet:
        monkeypatch.setattr(httpx.AsyncClient, "send", counted)
        state = asyncio.run(evaluate_episode(job=job.model_dump(mode="json"), resources=pool_params(job, resources),
                                             results_dir=str(tmp_path / "results"), evaluator_options=FAST_SIM,
                                             campaign="happy", return_state=True))
        monkeypatch.undo()
    assert state.is_completed(), state.message
    print(f"{sum(requests.values())} requests: {dict(requests)}")
    assert not [path for path in requests if "/variables" in path or path.startswith("PATCH /v2/concurrency_limits")]
