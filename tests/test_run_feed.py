"""The campaign follows its runs and its switches by Prefect's events (`flows/campaign/run_feed.py`):
the events a real server sends carry what the loop needs, stale or foreign ones are dropped, and
the loop reads for itself whenever the feed may have missed something."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from types import SimpleNamespace
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import StateType

from flows.campaign.run_feed import (
    SAFETY_READ_SECONDS,
    EventFeed,
    FedState,
    ReadPacer,
    RunStates,
    campaign_runs_filter,
    concerns,
    newer,
    variables_filter,
)
from flows.naming import campaign_tag, pause_variable

pytestmark = pytest.mark.anyio


async def until(predicate, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the feed delivered nothing in time"
        await asyncio.sleep(0.05)


async def test_a_runs_state_changes_come_from_its_events_and_only_its_campaigns(prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    @flow(name="feed-probe")
    def probe():
        pass

    feed = EventFeed(campaign_runs_filter("feed-a"), "run state")
    feed.start()
    states = RunStates()
    try:
        await until(lambda: feed.live)
        async with get_client() as client:
            ours = await client.create_flow_run(probe, tags=[campaign_tag("feed-a")])
            theirs = await client.create_flow_run(probe, tags=[campaign_tag("feed-b")])
            await client.set_flow_run_state(theirs.id, Running(name="Loading"), force=True)
            running = (await client.set_flow_run_state(ours.id, Running(name="Running", message="on 127.0.0.1:9 (pool a)"),
                                                        force=True)).state
            seen = []
            await until(lambda: seen.extend(feed.take()) or any(e.resource.get("prefect.state-name") == "Running" for e in seen))
            apply, read = states.sort(seen, {ours.id: None})
            assert (ours.id, running.id) in [(run_id, state.id) for run_id, state in apply]
            fed = dict(apply)[ours.id]
            assert (fed.type, fed.name, fed.message) == (StateType.RUNNING, "Running", "on 127.0.0.1:9 (pool a)")
            assert read == [] and theirs.id not in dict(apply)

            states.known(ours.id, fed)
            await client.set_flow_run_state(ours.id, Completed(), force=True)
            seen = []
            await until(lambda: seen.extend(feed.take()) or any(e.event == "prefect.flow-run.Completed" for e in seen))
            assert states.sort(seen, {ours.id: None}) == ([], [ours.id])  # a final state is read back
    finally:
        await feed.stop()
    assert not feed.live and feed.subscriptions == 1


async def test_a_pause_switch_or_a_retry_request_is_told_by_its_variable_event(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    from flows.campaign.rerun_requests import RetryRequest, request_retry, request_tags

    feed = EventFeed(variables_filter(), "variable")
    feed.start()
    try:
        await until(lambda: feed.live)
        ours = ({pause_variable("feed-v")}, request_tags("feed-v"))
        await Variable.aset("feed_unrelated", 1, overwrite=True)
        await Variable.aset(pause_variable("feed-other"), True, overwrite=True)
        seen = []
        await until(lambda: seen.extend(feed.take()) or len(seen) >= 2)
        assert not concerns(seen, *ours)
        await Variable.aset(pause_variable("feed-v"), True, overwrite=True)
        await until(lambda: seen.extend(feed.take()) or len(seen) >= 3)
        assert concerns(seen[2:], *ours)
        async with get_client() as client:
            await request_retry(client, RetryRequest(campaign="feed-v", job_id="j1"))
        await until(lambda: seen.extend(feed.take()) or len(seen) >= 4)
        assert concerns(seen[3:], *ours)
    finally:
        await feed.stop()


def fed(state_type=StateType.RUNNING, name="Running", at=0.0) -> FedState:
    stamp = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=at)
    return FedState(id=uuid4(), type=state_type, name=name, message=None, timestamp=stamp)


def as_event(run_id, state: FedState):
    resource = {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.state-type": state.type.value,
                "prefect.state-name": state.name, "prefect.state-timestamp": state.timestamp.isoformat()}
    return SimpleNamespace(id=state.id, event=f"prefect.flow-run.{state.name}",
                           resource=SimpleNamespace(id=resource["prefect.resource.id"], get=resource.get))


def test_an_older_state_never_overrides_a_newer_one_and_the_same_state_is_not_news():
    first, later = fed(at=1), fed(at=2)
    assert newer(later, first) and not newer(first, later)
    assert newer(first, None) and not newer(first, first)


def test_states_of_runs_not_yet_in_flight_wait_for_them_and_stale_ones_are_dropped():
    run_id, states = uuid4(), RunStates()
    loading, waiting = fed(name="Loading", at=1), fed(name="WaitingForServer", at=2)
    assert states.sort([as_event(run_id, waiting), as_event(run_id, loading)], {}) == ([], [])  # its creation still answers
    apply, read = states.sort([as_event(run_id, loading)], {run_id: None})  # repeated by a backfill
    assert [(r, s.name) for r, s in apply] == [(run_id, "Loading"), (run_id, "WaitingForServer")] and read == []
    states.known(run_id, fed(name="Running", at=3))  # a read saw it later than an event still coming
    assert states.sort([as_event(run_id, waiting)], {run_id: None}) == ([], [])
    crashed, completed = fed(StateType.CRASHED, "Crashed", at=4), fed(StateType.COMPLETED, "Completed", at=4)
    assert states.sort([as_event(run_id, crashed)], {run_id: None}) == ([], [run_id])
    apply, read = states.sort([as_event(run_id, completed)], {run_id: None}, lambda s: s.type == StateType.COMPLETED)
    assert (apply, read) == ([(run_id, completed)], [])


def test_the_loop_reads_for_itself_while_the_feed_is_down_after_each_subscription_and_at_its_safety_pace():
    feed = SimpleNamespace(live=False, subscriptions=0)
    pacer = ReadPacer(feed, every=SAFETY_READ_SECONDS, down_every=0.0)
    pacer.mark()
    assert pacer.due()  # down: every tick
    feed.live, feed.subscriptions = True, 1
    assert pacer.due()  # a new subscription may have missed events
    pacer.mark()
    assert not pacer.due()
    pacer.read_at -= SAFETY_READ_SECONDS
    assert pacer.due()
    pacer.mark()
    feed.subscriptions = 2  # it broke and came back
    assert pacer.due()
