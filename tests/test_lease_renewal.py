"""The lease engine's orderings pinned with a scripted client (as rq's race tests do): each
reply of the API is chosen by the test, so every ordering runs in milliseconds. Both
policies (an episode's slot, a command's GPUs) go through the same engine; where they used
to differ, the tests below pin the behaviour chosen."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from uuid import UUID, uuid4

import httpx
import pytest

from flows.runtime.lease_engine import LeaseLost, LeasePolicy, Leases, LimitsMissing
from flows.slots.leaser import EPISODE_SLOT, Slot
from generate.models import Server
from workpools.local.leases import GPU_LEASE

SLOT = Slot("p_1", Server(host="127.0.0.1", port=1), uuid4(), time.time(), 0.0)
WHERE = SLOT.server.address


class ScriptedClient:
    """Answers each lease call with its scripted replies in turn, then the last one forever.
    A reply is an HTTP status or an exception class (a transport error)."""

    def __init__(self, *renew: int | type[Exception], release=(204,), take=(200,), missing: tuple[str, ...] = ()):
        self.script = {"renew": list(renew) or [204], "release": list(release), "take": list(take)}
        self.calls = {name: 0 for name in self.script}
        self.missing = missing

    @property
    def renewals(self) -> int:
        return self.calls["renew"]

    def answer(self, call: str, **body) -> httpx.Response:
        replies = self.script[call]
        reply = replies[min(self.calls[call], len(replies) - 1)]
        self.calls[call] += 1
        request = httpx.Request("POST", f"http://api/v2/concurrency_limits/{call}")
        if isinstance(reply, type):
            raise reply("scripted", request=request)
        response = httpx.Response(reply, request=request, json=body or None)
        if reply >= 400:
            raise httpx.HTTPStatusError("scripted", request=request, response=response)
        return response

    async def renew_concurrency_lease(self, lease_id, lease_duration):
        self.answer("renew")

    async def release_concurrency_slots_with_lease(self, lease_id):
        self.answer("release")

    async def increment_concurrency_slots_with_lease(self, names, slots, mode, lease_duration, holder):
        granted = [{"name": name} for name in names if name not in self.missing]
        return self.answer("take", lease_id=str(uuid4()), limits=granted)


def quick(policy: LeasePolicy, lease_seconds: float = 0.3) -> LeasePolicy:
    return replace(policy, lease_seconds=lease_seconds, renew_seconds=lease_seconds / 3)


def renew(client: ScriptedClient, lease_seconds: float = 0.3) -> list[str]:
    """Run `renew_forever` with a short lease; the reasons it reported the lease lost."""
    leases = Leases(client, quick(EPISODE_SLOT, lease_seconds))
    lost: list[str] = []

    async def scenario():
        await asyncio.wait_for(leases.renew_forever(SLOT.lease_id, WHERE, lost.append), 5)

    asyncio.run(scenario())
    return lost


@pytest.mark.parametrize("status", [404, 410])
def test_a_forgotten_lease_is_lost_at_once(status):
    client = ScriptedClient(200, status)
    assert renew(client) == [f"lease {SLOT.lease_id} on 127.0.0.1:1 is gone"]
    assert client.renewals == 2


def test_server_errors_past_the_lease_lose_it():
    # Failed before the fix: a 503 (SQLite locked) or 500 was swallowed without looking at
    # the lease's expiry, so an episode kept playing on a server someone else may hold.
    client = ScriptedClient(503)
    assert renew(client) == ["API answered 503 past the lease on 127.0.0.1:1"]
    assert client.renewals >= 3  # tolerated while the lease still ran


def test_an_unreachable_api_past_the_lease_loses_it():
    client = ScriptedClient(httpx.ConnectError)
    assert renew(client) == ["API unreachable past the lease on 127.0.0.1:1"]


def test_a_brief_error_within_the_lease_is_tolerated():
    client = ScriptedClient(503, 200, 200, 200, 200, 200, 200, 200, 200, 410)
    assert renew(client) == [f"lease {SLOT.lease_id} on 127.0.0.1:1 is gone"]
    assert client.renewals == 10


def hold(policy: LeasePolicy, client: ScriptedClient, seconds: float = 0.6) -> str:
    """Hold a lease under `policy` for a block that sleeps `seconds`; how the block ended."""

    async def scenario():
        async with Leases(client, quick(policy)).holding(SLOT.lease_id, WHERE):
            await asyncio.sleep(seconds)
        return "finished"

    return asyncio.run(scenario())


def test_a_lost_episode_lease_cancels_the_episode():
    client = ScriptedClient(410)
    with pytest.raises(LeaseLost, match="is gone"):
        hold(EPISODE_SLOT, client, seconds=30)
    assert client.calls == {"renew": 1, "release": 0, "take": 0}  # a lost lease is not released


def test_a_lost_gpu_lease_is_logged_once_and_the_command_goes_on(caplog):
    # The GPU queue used to log a warning on every renewal forever, renewing a lease the
    # server had said was gone, and then to fail releasing it.
    client = ScriptedClient(410)
    with caplog.at_level(logging.WARNING, logger="flows.runtime.lease_engine"):
        assert hold(GPU_LEASE, client, seconds=0.6) == "finished"
    assert client.calls == {"renew": 1, "release": 0, "take": 0}
    assert [record.getMessage() for record in caplog.records] == [
        f"lease {SLOT.lease_id} on 127.0.0.1:1 is gone; carrying on without it"
    ]


@pytest.mark.parametrize("policy", [EPISODE_SLOT, GPU_LEASE], ids=["episode", "gpu"])
def test_release_is_retried_across_a_restarting_api(policy):
    # The GPU queue used to release once: a 503 at the end turned a finished command into an error.
    client = ScriptedClient(release=(503, httpx.ConnectError, 204))
    assert hold(policy, client, seconds=0) == "finished"
    assert client.calls["release"] == 3


def test_release_gives_up_at_once_on_a_client_error():
    # The episode's release used to retry any HTTP error 12 times (about 30 s): a 4xx never heals.
    client = ScriptedClient(release=(400, 204))
    assert asyncio.run(Leases(client, GPU_LEASE).release(SLOT.lease_id)) is False
    assert client.calls["release"] == 1


@pytest.mark.parametrize("policy", [EPISODE_SLOT, GPU_LEASE], ids=["episode", "gpu"])
@pytest.mark.parametrize("status", [423, 422])
def test_a_full_or_drained_limit_means_not_now(policy, status):
    # The GPU queue used to raise on 422 (a limit set to 0) instead of waiting.
    client = ScriptedClient(take=(status,))
    assert asyncio.run(Leases(client, policy).take(["a", "b"])) is None


def test_take_retries_a_transient_error():
    # The GPU queue used to fail the command's flow on one 503 while queueing.
    client = ScriptedClient(take=(503, httpx.ConnectError, 200))
    assert isinstance(asyncio.run(Leases(client, GPU_LEASE).take(["gpu-0"])), UUID)
    assert client.calls["take"] == 3


def test_missing_limits_are_named_and_the_partial_lease_given_back():
    client = ScriptedClient(take=(200,), missing=("gpu-1",))
    with pytest.raises(LimitsMissing, match=r"\['gpu-1'\]"):
        asyncio.run(Leases(client, GPU_LEASE).take(["gpu-0", "gpu-1"]))
    assert client.calls["release"] == 1


@pytest.mark.parametrize("granted", [True, False])
def test_a_take_cancelled_while_its_answer_is_on_the_way_leaves_no_lease(granted):
    # An episode cancelled while its lease request was in flight used to leave the slot taken
    # until the lease expired: the server granted it, and nobody learned its id.
    class SlowClient(ScriptedClient):
        async def increment_concurrency_slots_with_lease(self, *args, **kwargs):
            await asyncio.sleep(0.3)  # the request on its way when the take is cancelled
            return await super().increment_concurrency_slots_with_lease(*args, **kwargs)  # granted, or refused

    client = SlowClient(take=(200 if granted else 423,))

    async def cancelled_take():
        take = asyncio.create_task(Leases(client, EPISODE_SLOT).take(["a", "b"]))
        await asyncio.sleep(0.1)
        take.cancel()
        with pytest.raises(asyncio.CancelledError):
            await take

    asyncio.run(cancelled_take())
    assert client.calls["take"] == 1 and client.calls["release"] == (1 if granted else 0)
