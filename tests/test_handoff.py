"""Slot handoff: a release wakes the episodes waiting for that server, without polling, and the
one with the fewest alternatives gets it (real Prefect server, real limits, real events)."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from prefect import get_client

from flows.episode import slot_event
from flows.naming import SLOT_RELEASED
from flows.slots.pools import apply_pools
from flows.slots.leaser import Slot, SlotLeaser
from flows.slots.wakeups import SlotWatch
from generate.models import Job, Resources
from kit import limit_counts, make_job

NO_POLL = 600.0
"""A safety poll so slow that only a release can have woken the waiter."""


def pool_of(*servers: dict) -> Resources:
    resources = Resources.model_validate({"handoff_1": list(servers)})

    async def apply():
        async with get_client() as client:
            await apply_pools(client, resources)

    asyncio.run(apply())
    return resources


def general_and_restricted(tmp_path, port: int, instance: int) -> tuple[Resources, Job, Job]:
    """Pool `handoff_1`: S (port) serves every task, T (port + 1) only `open`; a `pick` job
    (S only) and an `open` one (either)."""
    resources = pool_of({"host": "127.0.0.1", "port": port},
                        {"host": "127.0.0.1", "port": port + 1, "compatible_task": "open"})
    return (resources, make_job(tmp_path, "handoff", "pick", instance, ["handoff_1"]),
            make_job(tmp_path, "handoff", "open", instance, ["handoff_1"]))


async def hold_both(holder: SlotLeaser, resources: Resources, only_s: Job, either: Job) -> tuple[Slot, Slot]:
    """Take S and T, so that both are busy."""
    on_s = await holder.acquire(only_s, resources)
    return on_s, await holder.acquire(either, resources, excluded={on_s.server.address})


def test_a_release_in_this_process_wakes_the_waiter_at_once(prefect_server, tmp_path):
    resources = pool_of({"host": "127.0.0.1", "port": 19101})
    job = make_job(tmp_path, "handoff", "pick", 1, ["handoff_1"])

    async def scenario():
        async with get_client() as client:
            holder, waiter = SlotLeaser(client, poll_seconds=NO_POLL), SlotLeaser(client, poll_seconds=NO_POLL)
            held = await holder.acquire(job, resources)
            waiting = asyncio.create_task(waiter.acquire(job, resources))
            await asyncio.sleep(1.0)
            assert not waiting.done()
            await holder.release(held)
            slot = await asyncio.wait_for(waiting, 20)
            await waiter.release(slot)
            return waiter.reads

    assert asyncio.run(scenario()) == 1  # one look before waiting, none after: woken, it took the slot


def test_a_release_event_from_another_process_wakes_the_waiter(prefect_server, tmp_path):
    """The holder is in another event loop (as in another runner): only the release event,
    through Prefect's events stream, can wake the waiter."""
    resources = pool_of({"host": "127.0.0.1", "port": 19102})
    job = make_job(tmp_path, "handoff", "pick", 2, ["handoff_1"])
    held_here = threading.Event()
    release_now = threading.Event()

    def elsewhere():
        async def hold_then_release():
            async with get_client() as client:
                holder = SlotLeaser(client, poll_seconds=NO_POLL)
                slot = await holder.acquire(job, resources)
                held_here.set()
                await asyncio.get_running_loop().run_in_executor(None, release_now.wait)
                await holder.release(slot)
                slot_event(SLOT_RELEASED, slot, job, "handoff", None)

        asyncio.run(hold_then_release())

    other = threading.Thread(target=contextvars.copy_context().run, args=(elsewhere,))
    other.start()
    assert held_here.wait(60)

    async def scenario():
        async with get_client() as client:
            waiter = SlotLeaser(client, poll_seconds=NO_POLL)
            waiting = asyncio.create_task(waiter.acquire(job, resources))
            await asyncio.sleep(3.0)  # subscribed and waiting
            assert not waiting.done()
            release_now.set()
            slot = await asyncio.wait_for(waiting, 60)
            await waiter.release(slot)
            return waiter.reads

    try:
        assert asyncio.run(scenario()) == 1
    finally:
        release_now.set()
        other.join(30)


def test_the_waiter_with_the_fewest_alternatives_gets_the_released_server(prefect_server, tmp_path):
    """S serves every task, T only `open`: the `pick` episode can use S alone, the `open` one
    either. When S frees up, the `pick` episode gets it; the `open` one waits for T."""
    resources, only_s, either = general_and_restricted(tmp_path, 19103, 3)
    s_address, t_address = (server.address for server in resources.servers("handoff_1"))

    async def scenario():
        async with get_client() as client:
            holder = SlotLeaser(client, poll_seconds=NO_POLL)
            on_s, on_t = await hold_both(holder, resources, only_s, either)
            flexible = asyncio.create_task(SlotLeaser(client, poll_seconds=NO_POLL).acquire(either, resources))
            constrained = asyncio.create_task(SlotLeaser(client, poll_seconds=NO_POLL).acquire(only_s, resources))
            await asyncio.sleep(1.0)
            await holder.release(on_s)
            got = await asyncio.wait_for(constrained, 20)
            await asyncio.sleep(0.5)
            assert not flexible.done()  # it stood back, and S is taken
            await holder.release(on_t)
            other = await asyncio.wait_for(flexible, 20)
            for slot in (got, other):
                await holder.release(slot)
            return got.server.address, other.server.address

    assert asyncio.run(scenario()) == (s_address, t_address)
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_waiters_in_one_loop_share_their_reads_of_a_busy_server(prefect_server, tmp_path):
    """Ten episodes of one runner wait for one held server, each polling every 0.2 s: they look
    often, but the server's limit is read about once a second; the release still hands it on."""
    resources = pool_of({"host": "127.0.0.1", "port": 19105})
    job = make_job(tmp_path, "handoff", "pick", 5, ["handoff_1"])

    async def scenario():
        async with get_client() as client:
            watch = SlotWatch()
            holder = SlotLeaser(client, poll_seconds=NO_POLL, watch=watch)
            held = await holder.acquire(job, resources)
            waiters = [SlotLeaser(client, poll_seconds=0.2, watch=watch) for _ in range(10)]
            waiting = [asyncio.create_task(waiter.acquire(job, resources)) for waiter in waiters]
            await asyncio.sleep(3.0)
            looks, sent = sum(waiter.reads for waiter in waiters), watch.occupancy_reads
            await holder.release(held)
            done, pending = await asyncio.wait(waiting, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(1.0)  # the others' tries are refused and they wait again: none is mid-lease
            for task in pending:
                task.cancel()
            for task in done:
                await holder.release(task.result())
            return looks, sent, len(done)

    looks, sent, handed_on = asyncio.run(scenario())
    assert looks >= 50
    assert sent <= 6, f"{sent} reads for {looks} looks"
    assert handed_on == 1
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_an_episode_meant_for_one_server_leaves_another_to_its_own_episode_for_a_while(prefect_server, tmp_path):
    """S serves every task, T only `open`. An `open` episode meant for S (the campaign's
    choice) does not take T the moment T frees up: T's own episode, still loading, gets it a
    second later. Once T has been free for the patience, the waiter takes it."""
    resources, only_s, either = general_and_restricted(tmp_path, 19106, 6)
    s_address, t_address = (server.address for server in resources.servers("handoff_1"))

    async def scenario():
        async with get_client() as client:
            holder = SlotLeaser(client, poll_seconds=NO_POLL)
            on_s, on_t = await hold_both(holder, resources, only_s, either)
            patient = SlotLeaser(client, poll_seconds=NO_POLL, patience_seconds=3.0)
            meant_for_s = asyncio.create_task(patient.acquire(either, resources, prefer=[s_address, t_address]))
            await asyncio.sleep(0.5)
            await holder.release(on_t)
            await asyncio.sleep(1.0)
            assert not meant_for_s.done()  # T is free, but not for it yet
            own = await SlotLeaser(client, poll_seconds=NO_POLL).acquire(either, resources, prefer=[t_address])
            assert own.server.address == t_address
            await holder.release(own)  # nobody else comes for T this time
            took = await asyncio.wait_for(meant_for_s, 20)
            waited = took.waited_seconds
            for slot in (on_s, took):
                await holder.release(slot)
            return took.server.address, waited

    server, waited = asyncio.run(scenario())
    assert server == t_address
    assert waited >= 1.5 + 3.0 - 0.5  # the second release restarted T's patience
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}
