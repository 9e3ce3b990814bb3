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
    """The real client, with `set_flow_run_state` answering `delay` s after the server did
    (`before=True`: sent only after the delay)."""

    def __init__(self, client, delay: float, before: bool = False):
        self.client, self.delay, self.before = client, delay, before

    def __getattr__(self, name):
        return getattr(self.client, name)

    async def set_flow_run_state(self, *args, **kwargs):
        if self.before:
            await asyncio.sleep(self.delay)
        result = await self.client.set_flow_run_state(*args, **kwargs)
        await asyncio.sleep(self.delay)
        return result


@pytest.fixture
def short_claims(monkeypatch):
    monkeypatch.setattr(claims, "CLAIM_SECONDS", 0.5)
    monkeypatch.setattr(claims, "LATE_ANSWER_SECONDS", 0.5)


async def scheduled_run(client):
    return await client.create_flow_run(claimed_flow, state=Scheduled())


def test_a_claim_granted_after_its_time_is_still_the_runners(prefect_server, short_claims):
    async def scenario():
        async with get_client() as client:
            run = await scheduled_run(client)
            won = await claims.claim(LateAnswers(client, delay=2.0), run, "late-runner")
            current = (await client.read_flow_run(run.id)).state
            return won, run.state, current

    won, kept, current = asyncio.run(scenario())
    assert won, "the server granted the claim: the runner must play the run, or it stays Pending under it forever"
    assert current.type == StateType.PENDING and claim_of_message(current.message)[0] == "late-runner"
    assert kept.id == current.id  # the engine starts from the claim the server holds


def test_a_claim_that_never_reached_the_server_leaves_the_run_to_others(prefect_server, short_claims):
    async def scenario():
        async with get_client() as client:
            run = await scheduled_run(client)
            late = LateAnswers(client, delay=30.0, before=True)
            won = await claims.claim(late, run, "cut-off-runner")
            state = (await client.read_flow_run(run.id)).state
            again = await claims.claim(client, run, "next-runner")
            return won, state, again

    won, state, again = asyncio.run(scenario())
    assert not won and state.type == StateType.SCHEDULED
    assert again  # still claimable by any runner
