"""Why an episode is not playing: the pure explanation, and `evalq campaign status` on a real
Prefect server (real limits, leases, slot events, a real quarantine and real flow runs), and
what evaltui reads of the same."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time

from prefect import get_client
from prefect.states import Running
from prefect.variables import Variable

from flows.campaign.plan import plan_value
from flows.episode import evaluate_episode, slot_event
from flows.naming import LOADING_STATE, SLOT_ACQUIRED, WAITING_STATE, campaign_plan_variable, episode_run_name, episode_tags
from flows.slots.pools import apply_pools
from flows.slots.quarantine import Quarantine
from flows.slots.leaser import SlotLeaser
from flows.slots.waiting import ServerView, Waiter, ahead_of, explain
from generate.models import Resources
from kit import make_job, pool_params
from test_campaign_cli import evalq
from tui.widgets.pools import quarantine_title, server_mark

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def waiter(name: str, servers: list[str], minute: int) -> Waiter:
    return Waiter(run_id=name, job_id=f"team/task/{name}", servers=servers, since=T0 + dt.timedelta(minutes=minute))


class TestExplain:
    servers = {
        "s:1": ServerView(address="s:1", capacity=1, busy=1, holders=["team/pick/0"]),
        "t:2": ServerView(address="t:2", capacity=1, busy=1),
        "q:3": ServerView(address="q:3", capacity=1, busy=0, quarantine="quarantined 2 min (3 failures; probe in 8 s): refused"),
        "f:4": ServerView(address="f:4", capacity=2, busy=1),
    }

    def test_ahead_are_those_sharing_a_server_with_fewer_alternatives_or_waiting_longer(self):
        me = waiter("me", ["s:1", "t:2"], 5)
        others = [waiter("scarce", ["s:1"], 9), waiter("older", ["t:2", "q:3"], 1), waiter("newer", ["s:1", "t:2"], 7),
                  waiter("wider", ["s:1", "t:2", "q:3"], 0), waiter("elsewhere", ["f:4"], 0)]
        assert [w.run_id for w in ahead_of(me, others)] == ["scarce", "older"]

    def test_a_busy_server_names_its_holder_and_the_queue_ahead(self):
        why = explain("me", "team/pick/9", "RUNNING", WAITING_STATE, ["s:1", "q:3"], self.servers,
                      [waiter("a", ["s:1"], 0), waiter("b", ["s:1", "q:3"], 1), waiter("c", ["s:1", "q:3"], 30)], since=T0 + dt.timedelta(minutes=5))
        assert why.reason == "1 of its 2 servers is busy, 1 quarantined; 2 episodes wait ahead of it for them"
        assert why.ahead == ["team/task/a", "team/task/b"]
        assert why.lines()[1:] == ["    s:1: busy 1/1, held by team/pick/0",
                                   "    q:3: quarantined 2 min (3 failures; probe in 8 s): refused",
                                   "    ahead of it: team/task/a, team/task/b"]

    def test_every_server_quarantined_free_slots_and_the_other_phases(self):
        def reason(state_type, state_name, candidates):
            found = explain("me", "j", state_type, state_name, candidates, self.servers, [])
            return found and found.reason

        assert reason("RUNNING", WAITING_STATE, ["q:3"]).startswith("every server it may use (1) is quarantined")
        assert reason("RUNNING", WAITING_STATE, ["s:1", "f:4"]) == "a slot is free on f:4: it takes it at its next look"
        assert reason("RUNNING", WAITING_STATE, ["s:1", "t:2"]) == "all 2 servers it may use are busy; 0 episodes wait ahead of it for them"
        assert reason("RUNNING", WAITING_STATE, ["x:9"]).endswith("run `evalq pools apply`")
        assert reason("RUNNING", LOADING_STATE, ["s:1"]).startswith("loading its simulator")
        assert reason("SCHEDULED", "Late", ["s:1"]).startswith("not started: waiting for a worker")
        assert reason("RUNNING", "Running", ["s:1"]) is None and reason("COMPLETED", "Completed", ["s:1"]) is None
        unknown = explain("me", "j", "RUNNING", WAITING_STATE, ["x:9"], self.servers, [])
        assert unknown.servers[0].line() == "x:9: no concurrency limit (run `evalq pools apply`)"


    def test_a_run_not_started_names_its_pool_who_serves_it_and_who_claimed_it(self):
        from flows.naming import claim_message
        from flows.runtime.liveness import PoolService

        unserved = PoolService(pool="evalq-runner", pool_type="evalq-runner", quiet_seconds=95, ever_polled=True,
                               live_workers=["r1"])
        served = unserved.model_copy(update={"quiet_seconds": 2})

        def reason(state_type, message=None, service=unserved):
            return explain("me", "j", state_type, state_type.title(), ["s:1"], self.servers, [], message=message,
                           service=service).reason

        assert reason("SCHEDULED") == ("not started: work pool evalq-runner: no live worker or runner has polled it for 95 s; "
                                       "start one: `evalq runner --pool evalq-runner` (on SLURM: "
                                       "`evalq workpools slurm-runners --pool evalq-runner --keep N ...`)")
        assert reason("SCHEDULED", service=served) == ("not started: waiting for a worker to take it "
                                                       "(work pool evalq-runner: polled 2 s ago, 1 live worker)")
        assert reason("PENDING", claim_message("r1", "t")) == "claimed by runner r1, starting"
        assert reason("PENDING", claim_message("r0", "t")) == ("claimed by runner r0, which is gone (no heartbeat): "
                                                              "the campaign hands it back")
        assert reason("PENDING", None) == "claimed by a worker, starting"


def test_campaign_status_says_why_a_waiting_episode_waits(prefect_server, tmp_path):
    """S is held, Q quarantined, T serves `open` only and is held: `pick` episodes can use S
    or Q. Two wait for them; the later one has the earlier one ahead of it."""
    resources = Resources.model_validate({"why_1": [
        {"host": "127.0.0.1", "port": 19201},
        {"host": "127.0.0.1", "port": 19202, "compatible_task": "open"},
        {"host": "127.0.0.1", "port": 19203},
    ]})
    s, t, q = resources.servers("why_1")
    holder = make_job(tmp_path, "why", "pick", 100, ["why_1"])
    first, second = (make_job(tmp_path, "why", "pick", i, ["why_1"]) for i in (1, 2))
    loading = make_job(tmp_path, "why", "open", 3, ["why_1"])
    campaign = "why-waiting"

    async def setup():
        async with get_client() as client:
            await apply_pools(client, resources)
            await Quarantine(client).enter(q, "cannot connect: refused")
            leaser = SlotLeaser(client)
            held = await leaser.acquire(holder, resources, excluded={t.address, q.address})
            slot_event(SLOT_ACQUIRED, held, holder, campaign, None)
            other = await leaser.acquire(make_job(tmp_path, "why", "open", 101, ["why_1"]), resources, excluded={s.address})
            await Variable.aset(campaign_plan_variable(campaign), plan_value(3, resources, campaign), overwrite=True)
            runs = {}
            for job, state in ((first, WAITING_STATE), (second, WAITING_STATE), (loading, LOADING_STATE)):
                runs[job.id] = await client.create_flow_run(
                    evaluate_episode, name=episode_run_name(campaign, job.id, 1), tags=episode_tags(job, campaign, "why_1", 1),
                    parameters={"job": job.model_dump(mode="json"), "resources": pool_params(job, resources), "results_dir": str(tmp_path)},
                    state=Running(name=state),
                )
            return [held, other], runs[second.id].id

    async def teardown(slots):
        async with get_client() as client:
            for slot in slots:
                await SlotLeaser(client).release(slot)

    async def evaltui_view(run_id):
        from tui.source import Source

        async with Source(campaign) as source:
            return await source.pools(), await source.detail(run_id)

    slots, second_run = asyncio.run(setup())
    try:
        deadline = time.monotonic() + 30
        while True:  # slot events are stored asynchronously: the holder's name shows up soon
            result = evalq("campaign", "status", campaign, env={"PREFECT_API_URL": prefect_server.api_url})
            assert result.returncode == 0, result.stderr
            if "held by why/pick/100" in result.stdout or time.monotonic() > deadline:
                break
            time.sleep(1)
        as_json = json.loads(evalq("campaign", "status", campaign, "--episode", second.id, "--json").stdout)
        pools, detail = asyncio.run(evaltui_view(second_run))
    finally:
        asyncio.run(teardown(slots))
    text = result.stdout
    assert "3 episodes in flight (1 Loading, 2 WaitingForServer)" in text
    assert f"{q.address}: quarantined" in text and "cannot connect: refused" in text
    second_block = text[text.index(f"{second.id} [WaitingForServer]"):]
    assert second_block.startswith(f"{second.id} [WaitingForServer]: 1 of its 2 servers is busy, 1 quarantined; "
                                   "1 episode waits ahead of it for them")
    assert f"{s.address}: busy 1/1, held by why/pick/100" in second_block
    assert f"ahead of it: {first.id}" in second_block
    assert f"{loading.id} [Loading]: loading its simulator" in text
    assert [e["job_id"] for e in as_json["explanations"]] == [second.id] and as_json["explanations"][0]["ahead"] == [first.id]

    # evaltui: the pools view marks the quarantined server, the episode detail says why it waits
    why_pool = next(p for p in pools.pools if p.name == "why_1")
    servers = {server.address: server for server in why_pool.servers}
    assert servers[q.address].quarantine.reason == "cannot connect: refused" and servers[s.address].quarantine is None
    assert (str(server_mark(servers[q.address])), str(server_mark(servers[s.address]))) == ("⛔", "✓")
    assert quarantine_title(dataclasses.replace(pools, pools=[why_pool])) == ", 1 server(s) quarantined"
    assert detail.waiting.reason == as_json["explanations"][0]["reason"] and detail.waiting.ahead == [first.id]
