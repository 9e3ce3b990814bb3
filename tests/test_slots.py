"""Leasing policy-server slots on Prefect global concurrency limits (real server)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from prefect import get_client

from flows.episode import slot_event
from flows.runtime.api import use_api
from flows.naming import SLOT_ACQUIRED, SLOT_RELEASED, pool_limit, server_limit
from flows.slots.pools import apply_pools, pool_status, wanted_limits
from flows.runtime.embedded_server import EmbeddedServer
from flows.slots.leaser import EPISODE_SLOT, PoolNotApplied, SlotLeaser, by_free_share
from flows.slots.steering import Candidate, candidates
from flows.runtime.lease_engine import LeaseLost
from generate.models import Resources, Server
from kit import limit_counts, make_job

RESOURCES = Resources.model_validate({
    "team_1": [{"host": "127.0.0.1", "port": 19001}, {"host": "127.0.0.1", "port": 19002, "capacity": 2}],
    "team_2": [{"host": "127.0.0.1", "port": 19003, "compatible_task": ["open"]}],
})


async def applied(resources: Resources = RESOURCES):
    async with get_client() as client:
        return await apply_pools(client, resources)


def one_server_pool(tmp_path, team: str, port: int, apply: bool = True) -> tuple[Resources, object]:
    """A pool `<team>_1` with one capacity-1 server (limits applied), and a job for it."""
    resources = Resources.model_validate({f"{team}_1": [{"host": "127.0.0.1", "port": port}]})
    if apply:
        asyncio.run(applied(resources))
    return resources, make_job(tmp_path, team, "pick", 1, [f"{team}_1"])


def test_candidates_follow_pool_order_and_task_filters(tmp_path):
    job = make_job(tmp_path, "team", "pick", 1, ["team_1", "team_2"])
    assert [c.server.port for c in candidates(job, RESOURCES)] == [19001, 19002]
    job = make_job(tmp_path, "team", "open", 1, ["team_2", "team_1"])
    assert [c.server.port for c in candidates(job, RESOURCES)] == [19003, 19001, 19002]


def test_free_share_prefers_the_least_busy_server():
    a, b, c = (Candidate("p", Server(host="h", port=port)) for port in (1, 2, 3))
    assert by_free_share([(a, 1, 1), (b, 1, 2), (c, 0, 1)]) == [c, b]


def test_apply_is_idempotent_and_updates_capacity(prefect_server):
    first = asyncio.run(applied())
    assert set(first) == set(wanted_limits(RESOURCES)) and set(first.values()) <= {"created", "unchanged"}
    assert set(asyncio.run(applied()).values()) == {"unchanged"}
    bigger = Resources.model_validate({**RESOURCES.model_dump(), "team_2": [{"host": "127.0.0.1", "port": 19003, "capacity": 3}]})
    outcome = asyncio.run(applied(bigger))
    assert outcome[server_limit(Server(host="127.0.0.1", port=19003))] == "updated"
    asyncio.run(applied())


def test_apply_reactivates_a_switched_off_limit_and_two_campaigns_can_apply_at_once(prefect_server):
    """A limit someone switched off in the UI is switched on again; two campaigns applying the
    same new pools at once both succeed (one creates, the other updates) with the right limits."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    resources = Resources.model_validate({"twice_1": [{"host": "127.0.0.1", "port": 19041, "capacity": 2}]})
    name = server_limit(resources.servers("twice_1")[0])

    async def scenario():
        async with get_client() as first, get_client() as second:
            outcomes = await asyncio.gather(apply_pools(first, resources), apply_pools(second, resources))
            await first.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=False))
            again = await apply_pools(first, resources)
            return outcomes, again, await first.read_global_concurrency_limit_by_name(name)

    (one, two), again, limit = asyncio.run(scenario())
    assert sorted([one[name], two[name]]) in (["created", "updated"], ["created", "unchanged"])
    assert again[name] == "updated" and limit.active and limit.limit == 2


def test_a_slot_counts_on_server_and_pool_and_is_released(prefect_server, tmp_path):
    asyncio.run(applied())
    job = make_job(tmp_path, "team", "pick", 1, ["team_1"])

    async def scenario():
        async with get_client() as client:
            leaser = SlotLeaser(client)
            first = await leaser.acquire(job, RESOURCES)
            second = await leaser.acquire(job, RESOURCES)
            third = await leaser.acquire(job, RESOURCES)
            busy = await limit_counts(RESOURCES)
            full = await leaser.try_acquire(Candidate("team_1", first.server), None)
            for slot in (first, second, third):
                await leaser.release(slot)
            return [first, second, third], busy, full

    slots, busy, full = asyncio.run(scenario())
    assert sorted(slot.server.port for slot in slots) == [19001, 19002, 19002]
    assert busy[pool_limit("team_1")] == 3
    assert busy[server_limit(Server(host="127.0.0.1", port=19002))] == 2
    assert full is None
    assert set(asyncio.run(limit_counts(RESOURCES)).values()) == {0}


def test_a_waiter_gets_the_slot_once_it_is_released_and_not_before(prefect_server, tmp_path):
    resources, job = one_server_pool(tmp_path, "solo", 19010)

    async def scenario():
        async with get_client() as client:
            leaser = SlotLeaser(client, poll_seconds=0.1)
            held = await leaser.acquire(job, resources)
            waiter = asyncio.create_task(leaser.acquire(job, resources))
            await asyncio.sleep(1.5)
            assert not waiter.done()
            released_at = time.monotonic()
            await leaser.release(held)
            slot = await asyncio.wait_for(waiter, 30)
            gap = time.monotonic() - released_at
            await leaser.release(slot)
            return gap

    assert asyncio.run(scenario()) < 30


def test_holding_releases_when_the_block_fails(prefect_server, tmp_path):
    resources, job = one_server_pool(tmp_path, "err", 19020)

    async def scenario():
        async with get_client() as client:
            leaser = SlotLeaser(client)
            slot = await leaser.acquire(job, resources)
            with pytest.raises(RuntimeError):
                async with leaser.holding(slot):
                    raise RuntimeError("evaluator blew up")

    asyncio.run(scenario())
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_missing_limits_are_reported_not_ignored(prefect_server, tmp_path):
    resources, job = one_server_pool(tmp_path, "ghost", 19030, apply=False)

    async def scenario():
        async with get_client() as client:
            await SlotLeaser(client).acquire(job, resources)

    with pytest.raises(PoolNotApplied, match="evalq pools apply"):
        asyncio.run(scenario())


def test_holders_are_read_back_from_slot_events(prefect_server, tmp_path):
    resources, job = one_server_pool(tmp_path, "seen", 19040)

    async def acquire():
        async with get_client() as client:
            return await SlotLeaser(client).acquire(job, resources)

    slot = asyncio.run(acquire())
    slot_event(SLOT_ACQUIRED, slot, job, "holders-test", None)

    async def status():
        async with get_client() as client:
            return await pool_status(client, resources)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # events are persisted asynchronously
        server = asyncio.run(status())[0].servers[0]
        if server.holders:
            break
        time.sleep(0.5)
    assert server.busy == 1 and [h.job_id for h in server.holders] == ["seen/pick/1"]

    async def release():
        async with get_client() as client:
            await SlotLeaser(client).release(slot)

    asyncio.run(release())
    slot_event(SLOT_RELEASED, slot, job, "holders-test", None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server = asyncio.run(status())[0].servers[0]
        if not server.holders:
            break
        time.sleep(0.5)
    assert server.busy == 0 and server.holders == []


def test_a_crashed_runs_slot_is_given_back_at_once(prefect_server, tmp_path):
    """An episode's lease outlasts an API outage (320 s), so one whose holder died would keep its
    server that long: the campaign gives back what a run that ended Crashed still holds, and
    records it, and a second look finds nothing left to give back."""
    from prefect import flow
    from prefect.states import Crashed

    from flows.slots.events import held_slots, run_slot_events_query
    from flows.slots.reclaim import release_slots_of
    from flows.slots.pools import read_events

    resources, job = one_server_pool(tmp_path, "orphan", 19070)

    @flow(name="orphan-holder")
    def holder():
        pass

    async def lease_as_a_run():
        async with get_client() as client:
            run = await client.create_flow_run(holder, name=job.id)
            return run, await SlotLeaser(client).acquire(job, resources, holder_id=run.id)

    run, slot = asyncio.run(lease_as_a_run())
    assert slot.lease_id and EPISODE_SLOT.lease_seconds >= 300
    slot_event(SLOT_ACQUIRED, slot, job, "orphans-test", run.id)

    async def crash_and_give_back():
        async with get_client() as client:
            await client.set_flow_run_state(run.id, Crashed(message="its runner was SIGKILLed"), force=True)
            crashed = await client.read_flow_run(run.id)
            return await release_slots_of(client, str(crashed.id), "orphans-test", crashed.created)

    deadline = time.monotonic() + 30
    while not (freed := asyncio.run(crash_and_give_back())) and time.monotonic() < deadline:
        time.sleep(0.5)  # events are persisted asynchronously
    assert freed == [slot.server.address]
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}

    async def still_held():
        async with get_client() as client:
            return held_slots(await read_events(client, run_slot_events_query(str(run.id), run.created)))

    deadline = time.monotonic() + 30
    while (held := asyncio.run(still_held())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert held == []  # the release is recorded as the episode would have
    assert asyncio.run(crash_and_give_back()) == []


def test_a_restarted_prefect_server_keeps_leases_and_leaks_no_slot(tmp_path):
    """Leases live on disk (filesystem lease storage): after a restart the holder can
    still renew and release, so the slot count returns to zero."""
    resources = Resources.model_validate({"rs_1": [{"host": "127.0.0.1", "port": 19050}]})
    job = make_job(tmp_path, "rs", "pick", 1, ["rs_1"])
    with EmbeddedServer(tmp_path / "home", ui=False) as server, use_api(server.api_url):
        asyncio.run(applied(resources))

        async def acquire():
            async with get_client() as client:
                return await SlotLeaser(client).acquire(job, resources)

        slot = asyncio.run(acquire())
        server.restart()
        assert asyncio.run(limit_counts(resources))[server_limit(resources.servers("rs_1")[0])] == 1

        async def renew_and_release():
            async with get_client() as client:
                await client.renew_concurrency_lease(slot.lease_id, 60)
                assert await SlotLeaser(client).release(slot)

        asyncio.run(renew_and_release())
        assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_lease_lost_is_raised_when_the_server_forgets_the_lease(prefect_server, tmp_path):
    resources, job = one_server_pool(tmp_path, "lost", 19060)

    async def scenario():
        async with get_client() as client:
            leaser = SlotLeaser(client, policy=replace(EPISODE_SLOT, renew_seconds=0.2))  # renew almost at once
            slot = await leaser.acquire(job, resources)
            await client.release_concurrency_slots_with_lease(slot.lease_id)  # someone else freed it
            with pytest.raises(LeaseLost):
                async with leaser.holding(slot):
                    await asyncio.sleep(10)

    asyncio.run(scenario())


def test_free_servers_are_tried_in_the_campaigns_order_of_preference():
    a, b, c = (Candidate("p", Server(host="h", port=port)) for port in (1, 2, 3))
    options = [(a, 0, 1), (b, 0, 1), (c, 1, 2)]
    assert by_free_share(options) == [a, b, c]
    assert by_free_share(options, prefer=["h:2", "h:1"]) == [b, a, c]  # ties only: c is busier
