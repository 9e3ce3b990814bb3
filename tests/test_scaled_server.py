"""The README's scaled setup, run as written: PostgreSQL, Redis (Debian's redis-server), `evalq
server migrate`, `evalq server services`, two API replicas (`evalq server start --no-services
--redis URL`) started together behind haproxy (`evalq server haproxy-config`'s configuration).
A campaign and two warm runners talk to the balancer; one replica is SIGKILLed mid-campaign.

Every episode completes exactly once, no slot leaks, and slot releases reach waiters through
Redis whichever replica they are connected to. Run by CI's own pass: `pytest --scaled -m scaled`.

The kill comes as an episode ends, so often while a lease is being taken: if the dead replica had
granted it, Prefect's client takes it again through the other one and the first lease, which no
one knows, holds that server until it expires (the test's campaign leases for 60 s, not the
320 s default; then the services' repossessor, then the waiters' safety poll): the test then takes
~1.5 min longer, and still no slot stays taken.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from importlib.util import find_spec

import httpx
import pytest
from kit import limit_counts, make_fleet, make_job, wait_for, write_inputs

from flows.demo.busy import by_server
from flows.naming import SLOT_RELEASED, WAITING_STATE, campaign_tag, claim_of_message, job_id_of_run_name
from flows.runtime.local_stack import start_worker
from flows.runtime.process_groups import terminate_group

pytestmark = pytest.mark.scaled

NAME = "scaled"
SIM = {"load_seconds": 0.2, "steps": 4, "step_seconds": 0.25}
SAFETY_POLL = 30.0
"""Waiters' safety poll in this campaign: a waiter woken within seconds heard the release event."""
WOKEN_WITHIN = 10.0
VICTIM, SURVIVOR = 0, 1
RECONNECTED = 3.0
"""Seconds after the kill by which haproxy has marked the replica down (~1.5 s) and the runners'
events subscriptions have reconnected (~10 ms): a waiter that starts waiting later hears releases live."""
LEASE_SECONDS = 60.0
"""The campaign's episode leases: the shortest allowed (the default, 320 s, outlasts an API outage)."""
LEASE_BACK = 100.0
"""Seconds a lease nobody holds may take to come back: the 60 s lease + the repossessor's 15 s loop + slack."""
RUNNER_SLOTS = 3
"""Each runner's: the two together hold 3 playing and 3 waiting episodes, so both runners take
work and a server often passes from one runner's episode to the other's."""


@pytest.fixture
def scaled_stack(request, tmp_path):
    if not request.config.getoption("--scaled"):
        pytest.skip("the scaled setup runs in its own pass: pytest --scaled -m scaled")
    missing = [tool for tool in ("redis-server", "haproxy") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs Debian's {' and '.join(missing)} (apt-get install redis-server haproxy)")
    if find_spec("prefect_redis") is None:
        pytest.skip("needs prefect-redis: pip install -e '.[scale]'")
    from flows.runtime.scaled_stack import ScaledStack

    with ScaledStack(tmp_path / "stack", replicas=2, ui=True) as stack:
        yield stack


class ReleaseListener(threading.Thread):
    """Subscribes to `evalq.slot.released` on one replica directly (not through the balancer):
    the flow runs whose release it heard, until the replica dies or `stop()`."""

    def __init__(self, api_url: str):
        super().__init__(daemon=True)
        self.api_url = api_url
        self.released: dict[str, float] = {}
        self.subscribed = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None

    def run(self) -> None:
        self.task = self.loop.create_task(self.listen())
        try:
            self.loop.run_until_complete(self.task)
        except BaseException:  # noqa: BLE001 - stopped, or its replica died
            pass

    async def listen(self) -> None:
        from prefect.events.clients import PrefectEventSubscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        async with PrefectEventSubscriber(api_url=self.api_url, reconnection_attempts=0,
                                          filter=EventFilter(event=EventNameFilter(name=[SLOT_RELEASED]))) as events:
            self.subscribed.set()
            async for event in events:
                run = next((r.id for r in event.related if r.role == "flow-run"), None)
                if run:
                    self.released.setdefault(run.removeprefix("prefect.flow-run."), time.time())

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.join(10)


async def episode_histories() -> dict[str, dict]:
    """Run id -> its job, name, final state, runner (from the claim) and when it began waiting for a server."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(NAME)])),
                                           limit=200)
        histories = {}
        for run in runs:
            states = await client.read_flow_run_states(run.id)
            claims = [claim[0] for s in states if s.type.value == "PENDING" and (claim := claim_of_message(s.message))]
            waiting = [s.timestamp.timestamp() for s in states if s.name == WAITING_STATE]
            histories[str(run.id)] = {"job": job_id_of_run_name(run.name), "name": run.name, "state": run.state.type.value,
                                      "runner": claims[-1] if claims else None, "waiting_since": min(waiting) if waiting else None}
    return histories


def handoffs(intervals: list[dict], histories: dict[str, dict]) -> list[dict]:
    """Consecutive episodes on one server where the next one was already waiting when the first ended."""
    by_job = {history["job"]: history for history in histories.values()}
    found = []
    for items in by_server(intervals).values():
        for prev, nxt in zip(items, items[1:]):
            before, after = by_job[prev["episode"]], by_job[nxt["episode"]]
            if after["waiting_since"] is not None and after["waiting_since"] < prev["end"]:
                found.append({"released": prev["end"], "gap": nxt["start"] - prev["end"], "waiting_since": after["waiting_since"],
                              "cross_runner": before["runner"] != after["runner"]})
    return found


def test_a_replica_killed_mid_campaign_loses_no_episode_and_no_slot(scaled_stack, tmp_path):
    from flows.campaign.flow import campaign
    from flows.runtime.api import use_api
    from flows.runtime.zombies import AUTOMATION_NAME

    stack = scaled_stack
    api = stack.api_url
    # The recipe's pieces: the UI asks the balancer, not its replica; the two replicas prepared the
    # API at the same moment and left one zombie automation.
    assert httpx.get(api.removesuffix("/api") + "/ui-settings").json()["api_url"] == api
    automations = httpx.post(f"{api}/automations/filter", json={}).json()
    assert [a["name"] for a in automations].count(AUTOMATION_NAME) == 1

    busy = tmp_path / "busy.jsonl"
    fleet, resources = make_fleet({"sa_1": [1], "sb_1": [1], "sc_1": [1]}, log_path=busy)
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in ("sa", "sb", "sc") for i in range(12)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    results = tmp_path / "results"
    listeners = [ReleaseListener(stack.replica_url(i)) for i in (VICTIM, SURVIVOR)]
    for listener in listeners:
        listener.start()
        assert listener.subscribed.wait(30), "no events subscription on a replica"
    runner_logs = [tmp_path / f"runner-{i}.log" for i in (1, 2)]
    runners = [start_worker(api, RUNNER_SLOTS, log, name=f"scaled-r{i}") for i, log in enumerate(runner_logs, 1)]
    wait_for(lambda: all("started" in log.read_text() for log in runner_logs), 120, "both runners")
    killed_at: list[float] = []

    def kill_mid_campaign() -> None:
        done = lambda: len(list(results.rglob("*.json"))) >= len(jobs) // 3  # noqa: E731
        wait_for(done, 300, "a third of the episodes")
        killed_at.append(time.time())
        stack.kill_replica(VICTIM)

    killer = threading.Thread(target=kill_mid_campaign, daemon=True)
    try:
        with fleet, use_api(api):
            killer.start()
            state = asyncio.run(campaign(
                jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(results), name=NAME,
                evaluator_options=SIM, stats_interval=10.0, poll_seconds=SAFETY_POLL, lease_seconds=LEASE_SECONDS,
                return_state=True,
            ))
            stats = fleet.stats()
            killer.join(5)
            assert killed_at, "the replica was not killed: the campaign ended first"
            assert state.is_completed(), state.message
            summary = state.result()
            # Every episode exactly once: one run per job, each Completed, each played once, no server over capacity.
            histories = asyncio.run(episode_histories())
            assert sorted(h["name"] for h in histories.values()) == sorted(f"{NAME}:{job.id}" for job in jobs)
            assert {h["state"] for h in histories.values()} == {"COMPLETED"}, summary
            intervals = [json.loads(line) for line in busy.read_text().splitlines()]
            assert sorted(i["episode"] for i in intervals) == sorted(job.id for job in jobs)
            assert all(s.violations == 0 and s.max_active <= s.capacity for s in stats.values())
            # No slot leaks: every limit back to 0, read through the balancer (the survivor). A lease
            # the dead replica granted as it died and the client took again would come back when it
            # expires (60 s lease, then the services' repossessor): wait that long, no longer.
            freed = time.monotonic()
            wait_for(lambda: set(asyncio.run(limit_counts(resources)).values()) == {0}, LEASE_BACK, "every slot back",
                     detail=lambda: asyncio.run(limit_counts(resources)))
            freed = time.monotonic() - freed
    finally:
        for runner in runners:
            terminate_group(runner, grace=10)
        for listener in listeners:
            listener.stop()

    # Releases reach every replica through Redis: the survivor heard every episode's, the victim
    # every one released while it lived, whichever replica the releasing runner was connected to.
    victim, survivor = (listener.released for listener in listeners)
    assert set(survivor) == set(histories)
    assert {run for run, at in survivor.items() if at < killed_at[0] - 3} <= set(victim)
    # ...and reach the waiters: a waiter in the other runner took the server within seconds, not
    # at its 30 s safety poll, before the kill and once the clients had reconnected after it.
    moves = [h for h in handoffs(intervals, histories) if h["cross_runner"]]
    before = [h["gap"] for h in moves if h["released"] < killed_at[0] - 3]
    after = [h["gap"] for h in moves if h["waiting_since"] > killed_at[0] + RECONNECTED]
    assert before and after, f"no handoff between the runners before or after the kill: {handoffs(intervals, histories)}"
    assert max(before + after) < WOKEN_WITHIN, (before, after)
    print(f"slots all free {freed:.1f} s after the campaign; handoffs between runners: before the kill "
          f"{sorted(before)}, after {sorted(after)}; "
          f"all handoffs {[(round(h['released'] - killed_at[0], 1), round(h['gap'], 2), h['cross_runner']) for h in handoffs(intervals, histories)]}")
