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
    state_of_event,
    stop_feeds,
    variable_of_event,
    variables_filter,
)
from flows.naming import campaign_tag, pause_variable

pytestmark = pytest.mark.anyio


async def until(predicate, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the feed delivered nothing in time"
        await asyncio.sleep(0.05)


async def listening(feed: EventFeed, probe, heard) -> list:
    """Once `feed` is live, `probe()` until `heard(items)`: the server may register a subscription
    a moment after it answered it. The items taken meanwhile."""
    await until(lambda: feed.live)
    taken: list = []
    deadline = time.monotonic() + 20
    while not heard(taken):
        assert time.monotonic() < deadline, "the feed heard no probe"
        await probe()
        await asyncio.sleep(0.3)
        taken += feed.take()
    return taken


async def test_a_runs_state_changes_come_from_its_events_and_only_its_campaigns(prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    @flow(name="feed-probe")
    def probe():
        pass

    campaign = f"feed-{uuid4().hex[:8]}"
    feed = EventFeed(campaign_runs_filter(campaign), "run state", state_of_event)
    feed.start()
    states = RunStates()
    try:
        async with get_client() as client:
            async def create_probe():
                await client.create_flow_run(probe, tags=[campaign_tag(campaign)])

            await listening(feed, create_probe, lambda taken: bool(taken))
            ours = await client.create_flow_run(probe, tags=[campaign_tag(campaign)])
            theirs = await client.create_flow_run(probe, tags=[campaign_tag(campaign + "-b")])
            await client.set_flow_run_state(theirs.id, Running(name="Loading"), force=True)
            running = (await client.set_flow_run_state(ours.id, Running(name="Running", message="on 127.0.0.1:9 (pool a)"),
                                                        force=True)).state
            seen: list = []
            await until(lambda: seen.extend(feed.take()) or any(state.id == running.id for _, state in seen))
            assert theirs.id not in {run_id for run_id, _ in seen}
            states.add(seen)
            apply, read = states.sort({ours.id: None})
            fed = dict(apply)[ours.id]
            assert (fed.id, fed.type, fed.name, fed.message) == (running.id, StateType.RUNNING, "Running", "on 127.0.0.1:9 (pool a)")
            assert read == []

            states.known(ours.id, fed)
            await client.set_flow_run_state(ours.id, Completed(), force=True)
            seen = []
            await until(lambda: seen.extend(feed.take()) or any(state.type == StateType.COMPLETED for _, state in seen))
            states.add(seen)
            assert states.sort({ours.id: None}) == ([], [ours.id])  # a final state is read back
            assert states.sort({ours.id: None}) == ([], [ours.id])  # and asked for again until a read settles it
    finally:
        await stop_feeds(feed)
    assert not feed.live and feed.subscriptions == 1


async def test_a_pause_switch_or_a_retry_request_is_told_by_its_variable_event(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    from flows.campaign.rerun_requests import RetryRequest, request_retry, request_tags

    campaign = f"feed-{uuid4().hex[:8]}"
    feed = EventFeed(variables_filter(), "variable", variable_of_event)
    feed.start()
    ours = ({pause_variable(campaign)}, request_tags(campaign))
    try:
        probe_name = f"feed_probe_{uuid4().hex[:8]}"

        async def touch_probe():
            await Variable.aset(probe_name, time.time(), overwrite=True)

        await listening(feed, touch_probe, lambda taken: any(name == probe_name for name, _ in taken))
        await Variable.aset(pause_variable(campaign + "-other"), True, overwrite=True)
        seen: list = []
        await until(lambda: seen.extend(feed.take()) or any(name == pause_variable(campaign + "-other") for name, _ in seen))
        assert not concerns(seen, *ours)
        await Variable.aset(pause_variable(campaign), True, overwrite=True)
        seen = []
        await until(lambda: seen.extend(feed.take()) or any(name == pause_variable(campaign) for name, _ in seen))
        assert concerns(seen, *ours)
        async with get_client() as client:
            name = await request_retry(client, RetryRequest(campaign=campaign, job_id="j1"))
        seen = []
        await until(lambda: seen.extend(feed.take()) or any(found == name for found, _ in seen))
        assert concerns([item for item in seen if item[0] == name], *ours)
    finally:
        await stop_feeds(feed)


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
    states.add([(run_id, waiting), (run_id, loading)])
    assert states.sort({}) == ([], [])  # its creation still answers
    states.add([(run_id, loading)])  # repeated by a reconnection
    apply, read = states.sort({run_id: None})
    assert [(r, s.name) for r, s in apply] == [(run_id, "Loading"), (run_id, "WaitingForServer")] and read == []
    states.known(run_id, fed(name="Running", at=3))  # a read saw it later than an event still coming
    states.add([(run_id, waiting)])
    assert states.sort({run_id: None}) == ([], [])
    crashed, completed = fed(StateType.CRASHED, "Crashed", at=4), fed(StateType.COMPLETED, "Completed", at=4)
    states.add([(run_id, crashed)])
    assert states.sort({run_id: None}) == ([], [run_id])
    states.known(run_id, crashed)  # the read settled it
    assert states.sort({run_id: None}) == ([], [])
    states.add([(run_id, completed)])
    assert states.sort({run_id: None}, lambda s: s.type == StateType.COMPLETED) == ([(run_id, completed)], [])


def test_a_feed_parses_real_event_shapes():
    run_id, state = uuid4(), fed(name="Running", at=1)
    assert state_of_event(as_event(run_id, state)) == (run_id, state)
    variable = SimpleNamespace(event="prefect.variable.updated", payload={"name": "x", "value": 1, "tags": ["a", "b"]},
                               resource=SimpleNamespace(get={"prefect.resource.name": "x"}.get))
    assert variable_of_event(variable) == ("x", frozenset({"a", "b"}))
    assert concerns([("x", frozenset({"a", "b"}))], set(), ["a", "b"]) and not concerns([("x", frozenset({"a"}))], {"y"}, ["a", "b"])


def test_the_loop_reads_for_itself_while_the_feed_is_down_after_each_subscription_at_its_safety_pace_and_when_owed():
    feed = SimpleNamespace(live=False, subscriptions=0)
    pacer = ReadPacer(feed, every=SAFETY_READ_SECONDS, down_every=0.0)
    pacer.done(pacer.begin())
    assert pacer.due()  # down: every tick
    feed.live, feed.subscriptions = True, 1
    assert pacer.due()  # a new subscription may have missed events
    covered = pacer.begin()
    assert pacer.due()  # the read failed: not done, still due
    pacer.done(covered)
    assert not pacer.due()
    pacer.read_at -= SAFETY_READ_SECONDS
    assert pacer.due()
    pacer.done(pacer.begin())
    feed.subscriptions = 2  # it broke and came back
    assert pacer.due()
    pacer.done(pacer.begin())
    pacer.owe()
    assert pacer.due()
