"""A runner's claim whose answer is late (`workpools/runner/claims.py`), against a real server.

The server is real; what cannot be timed by hand is the network: a wrapper around the real
client makes the server's answer (or the proposal itself) arrive after `CLAIM_SECONDS`, as it
does when the API goes away with the proposal on the wire (found in CI: the run stayed Pending
under a live runner that never played it, and its campaign waited forever).
"""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow, get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Scheduled

from flows.naming import claim_of_message
from workpools.runner import claims


@flow
def claimed_flow() -> None:
    """Never run: its runs only give the claims something to claim."""


class LateAnswers:
    """The real client, with `set_flow_run_state` sent `before` s late and answered `after` s
    after the server did; the request goes on even when the caller gives up on it."""

    def __init__(self, client, before: float = 0.0, after: float = 0.0):
        self.client, self.before, self.after = client, before, after
        self.sent: list[asyncio.Task] = []

    def __getattr__(self, name):
        return getattr(self.client, name)

    async def set_flow_run_state(self, *args, **kwargs):
        async def send():
            await asyncio.sleep(self.before)
            return await self.client.set_flow_run_state(*args, **kwargs)

        request = asyncio.ensure_future(send())  # a request on the wire lands whether or not its caller waits
        self.sent.append(request)
        result = await asyncio.shield(request)
        await asyncio.sleep(self.after)
        return result


@pytest.fixture
def short_claims(monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_SECONDS", 0.5)


async def scheduled_run(client):
    return await client.create_flow_run(claimed_flow, state=Scheduled())


async def state_of(client, run_id):
    return (await client.read_flow_run(run_id)).state


def test_a_claim_granted_after_its_time_is_handed_back_not_left_pending(prefect_server, short_claims):
    async def scenario():
        async with get_client() as client:
            run = await scheduled_run(client)
            unanswered = claims.UnansweredClaims()
            won = await claims.claim(LateAnswers(client, after=2.0), run, "late-runner", unanswered)
            granted = await state_of(client, run.id)
            await unanswered.settle(client, "late-runner")
            return won, granted, await state_of(client, run.id), len(unanswered)

    won, granted, settled, left = asyncio.run(scenario())
    assert not won  # no answer in time: the runner did not start it...
    assert granted.type == StateType.PENDING and claim_of_message(granted.message)[0] == "late-runner"  # ...yet it was granted
    assert settled.type == StateType.SCHEDULED and "late-runner" in settled.message  # handed back: any runner takes it
    assert left == 0


def test_a_claim_that_lands_after_the_first_read_back_is_still_settled(prefect_server, short_claims):
    """The proposal held up longer than the claim and the first read back (a database outage)."""

    async def scenario():
        async with get_client() as client:
            run = await scheduled_run(client)
            unanswered = claims.UnansweredClaims()
            late = LateAnswers(client, before=1.5)
            won = await claims.claim(late, run, "slow-runner", unanswered)
            await unanswered.settle(client, "slow-runner")
            first = await state_of(client, run.id), len(unanswered)
            await asyncio.gather(*late.sent)  # now the proposal lands
            landed = await state_of(client, run.id)
            await unanswered.settle(client, "slow-runner")
            return won, first, landed, await state_of(client, run.id), len(unanswered)

    won, (first, kept), landed, settled, left = asyncio.run(scenario())
    assert not won and first.type == StateType.SCHEDULED and kept == 1  # still Scheduled: watched
    assert landed.type == StateType.PENDING and claim_of_message(landed.message)[0] == "slow-runner"
    assert settled.type == StateType.SCHEDULED and left == 0


def test_a_claim_that_never_reached_the_server_leaves_the_run_to_others(prefect_server, short_claims):
    async def scenario():
        async with get_client() as client:
            run = await scheduled_run(client)
            unanswered = claims.UnansweredClaims()
            late = LateAnswers(client, before=30.0)
            won = await claims.claim(late, run, "cut-off-runner", unanswered)
            again = await claims.claim(client, run, "next-runner")
            await unanswered.settle(client, "cut-off-runner")
            for request in late.sent:
                request.cancel()
            return won, again, await state_of(client, run.id), len(unanswered)

    won, again, state, left = asyncio.run(scenario())
    assert not won and again  # still claimable by any runner
    assert state.type == StateType.PENDING and claim_of_message(state.message)[0] == "next-runner"  # not taken back
    assert left == 0  # another runner's now: forgotten
