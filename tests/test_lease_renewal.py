"""Lease renewal orderings pinned with a scripted client (as rq's race tests do): each
reply of the API is chosen by the test, so every ordering runs in milliseconds."""

from __future__ import annotations

import asyncio
import time
from uuid import uuid4

import httpx
import pytest

from flows.slots import Slot, SlotLeaser
from generate.models import Server

SLOT = Slot("p_1", Server(host="127.0.0.1", port=1), uuid4(), time.time(), 0.0)


class ScriptedClient:
    """Answers `renew_concurrency_lease` with the scripted replies in turn, then the last forever."""

    def __init__(self, *replies: int | type[Exception]):
        self.replies = list(replies)
        self.renewals = 0

    async def renew_concurrency_lease(self, lease_id, lease_duration):
        reply = self.replies[min(self.renewals, len(self.replies) - 1)]
        self.renewals += 1
        request = httpx.Request("POST", "http://api/v2/concurrency_limits/leases/renew")
        if isinstance(reply, type):
            raise reply("scripted", request=request)
        if reply >= 400:
            raise httpx.HTTPStatusError("scripted", request=request, response=httpx.Response(reply, request=request))


def renew(client: ScriptedClient, lease_seconds: float = 0.3) -> list[str]:
    """Run `renew_forever` with a short lease; the reasons it reported the lease lost."""
    leaser = SlotLeaser(client)
    leaser.lease_seconds, leaser.renew_seconds = lease_seconds, lease_seconds / 3
    lost: list[str] = []

    async def scenario():
        await asyncio.wait_for(leaser.renew_forever(SLOT, lost.append), 5)

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
