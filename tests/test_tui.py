"""`evaltui` against a real Prefect server with episodes in known states.

One campaign is seeded once per module through the API (flow runs named and tagged
per `flows.naming`, pool limits, slot events, logs, a metrics file); the data layer
and every panel and action are checked against it. Actions use their own campaign.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flows import naming
from flows.slots.events import holders_from_events
from tui import aggregate, seed
from tui.models import LogLine

CAMPAIGN = "tui-known"
POOL_A, POOL_B = "tui_pool_a", "tui_pool_b"
SERVER_A1, SERVER_A2, SERVER_B1 = "10.91.0.1:9000", "10.91.0.2:9000", "10.92.0.1:9000"
STATES = {
    ("alpha", "pick", 0): "completed", ("alpha", "pick", 1): "skipped", ("alpha", "pick", 2): "failed",
    ("alpha", "place", 0): "running", ("alpha", "place", 1): "waiting", ("alpha", "place", 2): "loading",
    ("beta", "pick", 0): "crashed", ("beta", "pick", 1): "scheduled", ("beta", "pick", 2): "pending",
    ("beta", "place", 0): "cancelled", ("beta", "place", 1): "not_retryable", ("beta", "place", 2): "completed",
}
EXPECTED_COUNTS = {  # jobs by their latest run: alpha/pick/2 failed once, then completed
    "scheduled": 1, "pending": 1, "loading": 1, "waiting": 1, "running": 1,
    "completed": 4, "failed": 1, "crashed": 1, "cancelled": 1,
}


def client():
    from prefect.client.orchestration import get_client

    return get_client()


async def until(predicate, timeout: float = 30.0, pilot=None, what: str = "condition"):
    """Poll `predicate` (sync or async) until truthy; pause the pilot between tries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await (pilot.pause(0.1) if pilot is not None else asyncio.sleep(0.2))
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def known(prefect_server, tmp_path_factory):
    """The seeded campaign: flow-run ids by job id, results dir."""
    results = tmp_path_factory.mktemp("results")
    metrics = results / "alpha" / "metrics" / "pick_0.json"
    metrics.parent.mkdir(parents=True)
    video = results / "alpha" / "videos" / "alpha" / "pick_0.mp4"
    metrics.write_text(json.dumps({"success": 1, "steps": 42, "evalq": {"video": str(video)}}))

    async def build():
        from prefect.client.schemas.sorting import FlowRunSort

        from tui.gateway import run_filter
        from tui.source import Source

        episodes = [seed.SeedEpisode(team, task, i, state, POOL_A if team == "alpha" else POOL_B) for (team, task, i), state in STATES.items()]
        episodes.append(seed.SeedEpisode("alpha", "pick", 2, "completed", POOL_A, attempt=2))
        async with client() as c:
            ids = (await seed.seed_episodes(c, CAMPAIGN, episodes, str(results))).ids
            first_try = await c.read_flow_runs(
                flow_run_filter=run_filter([naming.campaign_tag(CAMPAIGN)], like="alpha/pick/2"), limit=5, sort=FlowRunSort.NAME_ASC)
            ids["alpha/pick/2#1"] = next(r.id for r in first_try if r.name == naming.episode_run_name(CAMPAIGN, "alpha/pick/2"))
            other = await seed.seed_episodes(c, "tui-other", [seed.SeedEpisode("zeta", "pick", 0, "running")])
            await seed.seed_limits(c, [
                seed.SeedServer(SERVER_A1, POOL_A, 1, 1), seed.SeedServer(SERVER_A2, POOL_A, 2, 0), seed.SeedServer(SERVER_B1, POOL_B, 1, 1),
            ])
            await c.request("POST", "/variables/", json={
                "name": naming.campaign_plan_variable(CAMPAIGN),
                "value": {"total": 20, "pools": {POOL_A: [SERVER_A1, SERVER_A2], POOL_B: [SERVER_B1]}},
            })
            now = datetime.now(timezone.utc)
            running = ids["alpha/place/0"]
            await seed.emit_events(c, [
                seed.slot_event(naming.SLOT_ACQUIRED, SERVER_A1, POOL_A, running, "alpha/place/0", now - timedelta(minutes=3), "lease-a1"),
                seed.slot_event(naming.SLOT_ACQUIRED, SERVER_B1, POOL_B, ids["beta/pick/0"], "beta/pick/0", now - timedelta(minutes=20), "lease-b1"),
                seed.slot_event(naming.SLOT_RELEASED, SERVER_B1, POOL_B, ids["beta/pick/0"], "beta/pick/0", now - timedelta(minutes=10), "lease-b1"),
                seed.slot_event(naming.SLOT_ACQUIRED, SERVER_B1, POOL_B, ids["beta/place/2"], "beta/place/2", now - timedelta(minutes=5), "lease-b2"),
                seed.slot_event(naming.SERVER_UNREACHABLE, SERVER_A2, POOL_A, running, "alpha/place/0", now - timedelta(minutes=1)),
            ])
            await seed.write_logs(c, running, [(20, "loaded simulator"), (30, "slow policy server"), (40, "step timeout")], now - timedelta(minutes=2))
            await seed.write_logs(c, ids["beta/pick/0"], [(20, "beta starting")], now - timedelta(minutes=2))
            # More of another campaign's lines than a page of logs, and newer than this campaign's.
            await seed.write_logs(c, other.ids["zeta/pick/0"], [(20, "another campaign")] * 250, now - timedelta(minutes=1))
            async with Source(CAMPAIGN) as source:
                await until(lambda: _holders_seen(source), what="slot events persisted")
        return ids

    return {"ids": asyncio.run(build()), "results": results, "video": video}


async def _holders_seen(source) -> bool:
    snapshot = await source.pools()
    servers = {s.address: s for p in snapshot.pools for s in p.servers}
    return bool(servers.get(SERVER_B1) and servers[SERVER_B1].holders and servers.get(SERVER_A2) and servers[SERVER_A2].unreachable_since)


# -- pure aggregation ------------------------------------------------------------------
class TestAggregate:
    def test_bucket_of_running_phases(self):
        assert aggregate.bucket_of("RUNNING", naming.WAITING_STATE) == "waiting"
        assert aggregate.bucket_of("RUNNING", naming.LOADING_STATE) == "loading"
        assert aggregate.bucket_of("RUNNING", "Running") == "running"
        assert aggregate.bucket_of("CANCELLING", "Cancelling") == "cancelled"
        assert aggregate.bucket_of("COMPLETED", naming.SKIPPED_STATE) == "completed"

    def test_holders_from_events_keeps_unreleased_leases(self):
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        events = [
            seed.slot_event(naming.SLOT_ACQUIRED, "h:1", "p", "r1", "a/b/1", now, "l1"),
            seed.slot_event(naming.SLOT_RELEASED, "h:1", "p", "r1", "a/b/1", now + timedelta(seconds=5), "l1"),
            seed.slot_event(naming.SLOT_ACQUIRED, "h:1", "p", "r2", "a/b/2", now + timedelta(seconds=6), "l2"),
        ]
        holders = holders_from_events(events)  # the one reconstruction, shared with `evalq pools status`
        assert [(h.job_id, h.flow_run_id, h.lease_id) for h in holders] == [("a/b/2", "r2", "l2")]

    def test_throughput_rate_and_eta(self):
        rate = aggregate.Throughput()
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        assert rate.per_minute() is None and rate.eta(10) is None
        rate.add(t0, 100)
        rate.add(t0 + timedelta(minutes=2), 120)
        assert rate.per_minute() == pytest.approx(10.0)
        assert rate.eta(30) == timedelta(minutes=3)
        assert rate.eta(0) == timedelta(0)

    def test_sparkline_and_history(self):
        history = aggregate.History(length=3)
        for busy in (0, 1, 2, 2):
            history.add("p", busy, 2)
        assert history.get("p") == [0.5, 1.0, 1.0]
        assert aggregate.sparkline(history.get("p"), 5) == "  ▅██"

    def test_log_query(self):
        line = LogLine("1", datetime(2026, 1, 1, tzinfo=timezone.utc), 30, "Slow server", "r", "alpha/pick/3", "alpha", "pick")
        assert aggregate.LogQuery(30, "team:alpha slow").matches(line)
        assert not aggregate.LogQuery(40).matches(line)
        assert not aggregate.LogQuery(0, "task:place").matches(line)
        assert aggregate.LogQuery(0, "episode:pick/3").matches(line)

    def test_duration(self):
        assert aggregate.duration(timedelta(seconds=75)) == "1m 15s"
        assert aggregate.duration(timedelta(hours=26)) == "1d 02h"
        assert aggregate.duration(None) == "-"


# -- data layer against the server -------------------------------------------------------
@pytest.mark.backends  # on PostgreSQL too: the queries behind every panel
class TestSource:
    @pytest.mark.anyio
    async def test_queue_counts_by_state(self, known):
        from tui.source import Source

        async with Source(CAMPAIGN) as source:
            snapshot = await source.queue()
        assert snapshot.counts == EXPECTED_COUNTS
        assert (snapshot.runs, snapshot.dispatched, snapshot.planned, snapshot.skipped) == (13, 12, 20, 1)
        assert (snapshot.attempts, snapshot.retries, snapshot.to_dispatch, snapshot.finished) == (13, 1, 8, 7)
        assert snapshot.total == 20 and not snapshot.paused

    @pytest.mark.anyio
    async def test_auth_string_is_sent(self, monkeypatch):
        import base64

        from tui.source import Source

        monkeypatch.setenv("PREFECT_API_AUTH_STRING", "organizer:secret")
        async with Source("any") as source:
            headers = (await source.client())._client.headers
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"organizer:secret").decode()

    @pytest.mark.anyio
    async def test_rows_by_team_and_task(self, known):
        from tui.source import Source

        async with Source(CAMPAIGN, rows_page_size=3) as source:
            await source.sync_index()
            first, second = await source.rows(0), await source.rows(1)
        assert (first.total_rows, first.pages) == (4, 2)
        got = {(r.team, r.task): (r.done, r.running, r.failed, r.cancelled, r.total, r.attempts, r.retries) for r in first.rows + second.rows}
        assert got == {  # jobs; attempts and retries apart (alpha/pick/2 failed once, then completed)
            ("alpha", "pick"): (3, 0, 0, 0, 3, 4, 1), ("alpha", "place"): (0, 3, 0, 0, 3, 3, 0),
            ("beta", "pick"): (0, 2, 1, 0, 3, 3, 0), ("beta", "place"): (1, 0, 1, 1, 3, 3, 0),
        }

    @pytest.mark.anyio
    async def test_rows_follow_new_runs_and_state_changes(self, prefect_server):
        from prefect.states import Completed, Running

        from tui.source import Source

        campaign = "tui-index"
        async with client() as c, Source(campaign) as source:
            ids = (await seed.seed_episodes(c, campaign, [seed.SeedEpisode("delta", "pick", 0, "running"), seed.SeedEpisode("delta", "pick", 1, "scheduled")])).ids
            await source.sync_index()
            assert [(r.done, r.running, r.total) for r in (await source.rows()).rows] == [(0, 2, 2)]  # in flight: scheduled too
            await c.set_flow_run_state(ids["delta/pick/0"], Completed(), force=True)
            await c.set_flow_run_state(ids["delta/pick/1"], Running(), force=True)
            await seed.seed_episodes(c, campaign, [seed.SeedEpisode("delta", "place", 0, "failed")])
            rows = (await source.rows()).rows
        assert [(r.task, r.done, r.running, r.failed, r.total) for r in rows] == [("pick", 1, 1, 0, 2), ("place", 0, 0, 1, 1)]

    @pytest.mark.anyio
    async def test_rows_show_the_plan_before_any_run(self, prefect_server):
        from flows.campaign.plan import publish_plan
        from tui.source import Source

        campaign = "tui-plan"
        async with client() as c, Source(campaign) as source:
            await publish_plan(c, campaign, {("gamma", "pick"): 5, ("gamma", "place"): 3})
            before = (await source.rows()).rows
            await seed.seed_episodes(c, campaign, [seed.SeedEpisode("gamma", "pick", 0, "completed"), seed.SeedEpisode("gamma", "pick", 1, "failed")])
            await source.sync_index()
            after = (await source.rows()).rows
        assert [(r.task, r.done, r.failed, r.waiting, r.total) for r in before] == [("pick", 0, 0, 5, 5), ("place", 0, 0, 3, 3)]
        assert [(r.task, r.done, r.failed, r.waiting, r.total) for r in after] == [("pick", 1, 1, 3, 5), ("place", 0, 0, 3, 3)]

    @pytest.mark.anyio
    async def test_refresh_reads_only_changed_runs(self, prefect_server):
        """Once indexed, a refresh reads new, started, ended and still-active runs only (a state
        name change inside Running included), and counts the queue from the index."""
        from prefect.states import Completed, State

        from tui.source import Source

        class CountingSource(Source):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.requests, self.read = 0, []

            async def read_runs(self, *args, **kwargs):
                runs = await super().read_runs(*args, **kwargs)
                self.requests += 1
                self.read += [str(run.id) for run in runs]
                return runs

        campaign = "tui-incremental"
        async with client() as c, CountingSource(campaign, sync_margin=timedelta(0)) as source:
            ids = (await seed.seed_episodes(c, campaign, [
                seed.SeedEpisode("eta", "pick", 0, "completed"), seed.SeedEpisode("eta", "pick", 1, "loading"),
                seed.SeedEpisode("eta", "pick", 2, "running"),
            ])).ids
            unchanged, loading, running = (str(ids[f"eta/pick/{i}"]) for i in range(3))
            await source.sync_index()
            assert source.index.scanned and source.index.active == {loading, running}
            await c.set_flow_run_state(ids["eta/pick/2"], Completed(), force=True)
            await c.set_flow_run_state(ids["eta/pick/1"], State(type="RUNNING", name=naming.WAITING_STATE), force=True)
            source.requests, source.read = 0, []
            snapshot = await source.queue()
            rows = (await source.rows()).rows
            async with Source(campaign) as fresh:
                from_server = await fresh.queue()
        assert unchanged not in source.read and {loading, running} <= set(source.read)
        assert source.requests <= 4  # new runs, started since, ended since, active ones
        assert (snapshot.counts["completed"], snapshot.counts["waiting"], snapshot.counts["loading"]) == (2, 1, 0)
        assert (snapshot.counts, snapshot.runs, snapshot.dispatched) == (from_server.counts, from_server.runs, from_server.dispatched)
        assert [(r.done, r.running, r.total) for r in rows] == [(2, 1, 3)]

    @pytest.mark.anyio
    async def test_counts_are_jobs_with_attempts_apart_and_follow_a_rerun(self, prefect_server):
        """Counts of a campaign with retried episodes: one per job by its latest run, the same
        from the server (before the index) and from the index, as `evalq campaign list` counts
        them; a failed run set Scheduled again (the UI's Retry) counts in flight at the next
        refresh, and a run that failed after a cancel request counts cancelled."""
        from prefect.states import Crashed, Running, Scheduled, State

        from flows.campaign.plan import publish_plan
        from flows.reports.jobs import count_jobs
        from tui.source import Source

        campaign = "tui-jobs"
        E = seed.SeedEpisode
        async with client() as c, Source(campaign) as source:
            await c.request("POST", "/variables/", json={"name": naming.campaign_plan_variable(campaign), "value": {"total": 6}})
            await publish_plan(c, campaign, {("kappa", "pick"): 6})
            ids = (await seed.seed_episodes(c, campaign, [
                E("kappa", "pick", 0, "failed"), E("kappa", "pick", 0, "completed", attempt=2),  # retried, then done
                E("kappa", "pick", 1, "failed"), E("kappa", "pick", 1, "crashed", attempt=2),  # failed twice
                E("kappa", "pick", 2, "running"), E("kappa", "pick", 3, "failed"),
            ])).ids
            from_server = await source.queue()
            await source.sync_index()
            from_index = await source.queue()
            for snapshot in (from_server, from_index):
                assert {k: v for k, v in snapshot.counts.items() if v} == {"completed": 1, "failed": 1, "crashed": 1, "running": 1}
                assert (snapshot.dispatched, snapshot.to_dispatch, snapshot.runs, snapshot.attempts, snapshot.retries) == (4, 2, 6, 6, 2)

            await c.set_flow_run_state(ids["kappa/pick/2"], State(type="CANCELLING", name="Cancelling"), force=True)
            await c.set_flow_run_state(ids["kappa/pick/2"], Crashed(message="Execution was cancelled by the runtime environment."), force=True)
            await c.set_flow_run_state(ids["kappa/pick/3"], Scheduled(name="AwaitingRetry", message="Retry from the UI"), force=True)
            after = await source.queue()
            rows = (await source.rows()).rows
            listed = await count_jobs(await source.client(), campaign, 6)
            await c.set_flow_run_state(ids["kappa/pick/3"], Running(), force=True)
            running = await source.queue()
        assert {k: v for k, v in after.counts.items() if v} == {"completed": 1, "crashed": 1, "cancelled": 1, "scheduled": 1}
        assert after.finished == 3 and after.in_flight == 1
        assert [(r.done, r.failed, r.cancelled, r.running, r.waiting, r.attempts, r.retries, r.total) for r in rows] == [(1, 1, 1, 1, 2, 6, 2, 6)]
        assert (listed.done, listed.failed, listed.cancelled, listed.in_flight, listed.waiting, listed.retries) == (1, 1, 1, 1, 2, 2)
        assert running.counts["running"] == 1 and running.counts["scheduled"] == 0

    @pytest.mark.anyio
    async def test_pools_holders_waiting_and_unreachable(self, known):
        from tui.source import Source

        async with Source(CAMPAIGN) as source:
            snapshot = await source.pools()
        pools = {p.name: p for p in snapshot.pools}
        a, b = pools[POOL_A], pools[POOL_B]
        assert (a.capacity, a.busy, a.waiting, b.capacity, b.busy, b.waiting) == (3, 1, 1, 1, 1, 0)
        servers = {s.address: s for s in a.servers + b.servers}
        assert [h.job_id for h in servers[SERVER_A1].holders] == ["alpha/place/0"]
        assert [h.job_id for h in servers[SERVER_B1].holders] == ["beta/place/2"]
        assert servers[SERVER_A2].unreachable_since is not None and servers[SERVER_A1].unreachable_since is None

    @pytest.mark.anyio
    async def test_detail_has_attempts_server_logs_metrics(self, known):
        from tui.source import Source

        async with Source(CAMPAIGN) as source:
            done = await source.detail(known["ids"]["alpha/pick/0"])
            retried = await source.detail(known["ids"]["alpha/pick/2"])
            running = await source.detail(known["ids"]["alpha/place/0"])
        assert done.metrics == {"success": 1, "steps": 42, "evalq": {"video": str(known["video"])}}
        assert done.video == str(known["video"]) and retried.video is None
        assert done.parameters["job"]["id"] == "alpha/pick/0" and done.states[-1].type == "COMPLETED"
        assert [(a.name, a.state_type) for a in retried.attempts] == [("tui-known:alpha/pick/2", "FAILED"), ("tui-known:alpha/pick/2 (attempt 2)", "COMPLETED")]
        assert running.server == SERVER_A1
        assert [line.message for line in running.logs] == ["loaded simulator", "slow policy server", "step timeout"]
        assert running.metrics is None and running.ui_url.endswith(f"/runs/flow-run/{known['ids']['alpha/place/0']}")

    @pytest.mark.anyio
    async def test_log_backfill_keeps_only_this_campaign(self, known):
        from tui.source import Source

        async with Source(CAMPAIGN) as source:
            lines = await source.backfill_logs()
        assert "another campaign" not in [line.message for line in lines]
        assert {line.episode for line in lines} == {"alpha/place/0", "beta/pick/0"}


# -- panels, driven with the pilot ------------------------------------------------------
def cells(table) -> list[list[str]]:
    return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.mark.backends
class TestPanels:
    @pytest.mark.anyio
    async def test_queue_rows_episodes_and_detail(self, known):
        from textual.widgets import DataTable, Static

        from tui.app import EvalTui
        from tui.widgets.detail import EpisodeScreen

        app = EvalTui(campaign=CAMPAIGN, refresh_seconds=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            rows = app.query_one("#rows", DataTable)
            await until(lambda: rows.row_count == 4, pilot=pilot, what="rows")
            counts = str(app.query_one("#state-counts", Static).render())
            assert "4 done" in counts and "1 waiting for server" in counts and "2 failed" in counts and "8 to dispatch" in counts
            assert "13 attempts (1 retries, 1 crashed, 1 skipped)" in counts
            assert "4/20 done" in str(app.query_one("#progress-label", Static).render())
            assert cells(rows)[0] == ["alpha", "pick", "3", "0", "0", "0", "0", "3", "100%", "4", "1"]
            await pilot.press("enter")
            episodes = app.query_one("#episodes", DataTable)
            await until(lambda: episodes.row_count == 4, pilot=pilot, what="episodes")
            assert [row[:3] for row in cells(episodes)] == [["alpha/pick/0", "Completed", "1"], ["alpha/pick/1", "Skipped", "1"],
                                                            ["alpha/pick/2", "Failed", "1"], ["alpha/pick/2", "Completed", "2"]]
            await pilot.press("enter")
            await until(lambda: isinstance(app.screen, EpisodeScreen) and app.screen.detail is not None, pilot=pilot, what="detail")
            assert '"steps": 42' in str(app.screen.query_one("#detail-metrics", Static).render())
            assert f"video {known['video']}" in str(app.screen.query_one("#detail-summary", Static).render())
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert app.detail_id is None and not isinstance(app.screen, EpisodeScreen)

    @pytest.mark.anyio
    async def test_pools_panel(self, known):
        from textual.widgets import DataTable, Static

        from tui.app import EvalTui

        app = EvalTui(campaign=CAMPAIGN, refresh_seconds=0.5)
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.press("2")
            table = app.query_one("#pool-table", DataTable)
            await until(lambda: any(SERVER_A1 in r[1] for r in cells(table)), pilot=pilot, what="pools table")
            rows = {r[1].strip(): r for r in cells(table)}
            assert rows[POOL_A][3] == "1" and "1/3" in rows[POOL_A][2]
            assert rows[SERVER_A1][5].startswith("alpha/place/0 · ") and rows[SERVER_B1][5].startswith("beta/place/2 · ")
            assert "unreachable" in rows[SERVER_A2][5] and (rows[SERVER_A2][0], rows[SERVER_A1][0]) == ("⚠", "✓")
            assert "failing connections" in str(app.query_one("#pools-title", Static).render())

    @pytest.mark.anyio
    async def test_logs_backfill_live_tail_and_filters(self, known):
        from textual.widgets import Input, RichLog, Select

        from tui.app import EvalTui
        from tui.widgets.logs import LogsPanel

        app = EvalTui(campaign=CAMPAIGN, refresh_seconds=0.5)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("3")
            panel = app.query_one(LogsPanel)
            view = app.query_one("#log-view", RichLog)
            await until(lambda: len(panel.lines) >= 4, pilot=pilot, what="backfill")
            async with client() as c:
                await seed.write_logs(c, known["ids"]["beta/pick/0"], [(40, "live line from beta")])
            await until(lambda: any(line.message == "live line from beta" for line in panel.lines), pilot=pilot, what="live tail")
            app.query_one("#log-filter", Input).value = "team:beta"
            await pilot.pause(0.2)
            text = "\n".join(strip.text for strip in view.lines)
            assert "live line from beta" in text and "slow policy server" not in text
            app.query_one("#log-filter", Input).value = ""
            app.query_one("#log-level", Select).value = 40
            await pilot.pause(0.2)
            text = "\n".join(strip.text for strip in view.lines)
            assert "step timeout" in text and "loaded simulator" not in text and "another campaign" not in text

    @pytest.mark.anyio
    async def test_unreachable_api_shows_banner_and_keeps_running(self, monkeypatch):
        from flows.runtime.host import free_port
        from tui.app import EvalTui
        from tui.widgets.banner import Banner

        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
        app = EvalTui(campaign="nowhere", refresh_seconds=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            banner = app.query_one(Banner)
            await until(lambda: banner.display, pilot=pilot, what="banner", timeout=15)
            assert "Cannot reach the Prefect API" in str(banner.render())
            refreshes = app.refreshes
            await until(lambda: app.refreshes > refreshes + 1, pilot=pilot, what="retries", timeout=15)
            assert app.is_running


# -- which API: the rule of flows/runtime/discovery.py ----------------------------------------
def write_server_record(home: Path, api_url: str, pid: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "server.json").write_text(json.dumps({"api_url": api_url, "pid": pid}))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def no_api_configured(monkeypatch):
    """Neither the environment nor Prefect's settings name an API (the session server's are set aside)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


class TestDiscovery:
    def test_local_server_only_when_its_process_lives_and_it_answers(self, prefect_server, tmp_path):
        from flows.runtime.discovery import folder_server
        from flows.runtime.host import free_port

        def local_server_url(home):
            found = folder_server(home)
            return found and found.api_url

        home = tmp_path / ".evalq"
        assert local_server_url(home) is None
        home.mkdir()
        (home / "server.json").write_text("{not json")
        assert local_server_url(home) is None
        write_server_record(home, prefect_server.api_url, dead_pid())
        assert local_server_url(home) is None
        write_server_record(home, f"http://127.0.0.1:{free_port()}/api", prefect_server.process.pid)
        assert local_server_url(home) is None
        write_server_record(home, prefect_server.api_url, prefect_server.process.pid)
        assert local_server_url(home) == prefect_server.api_url

    @pytest.mark.anyio
    async def test_without_an_api_it_says_how_to_set_one_then_finds_the_local_server(self, known, prefect_server, no_api_configured, tmp_path):
        from textual.widgets import DataTable

        from tui.app import EvalTui
        from tui.widgets.banner import Banner

        home = tmp_path / ".evalq"
        write_server_record(home, prefect_server.api_url, dead_pid())  # a server that has since stopped
        app = EvalTui(campaign=CAMPAIGN, refresh_seconds=0.3, home=home)
        async with app.run_test(size=(120, 30)) as pilot:
            banner = app.query_one(Banner)
            await until(lambda: banner.display, pilot=pilot, what="banner", timeout=15)
            text = str(banner.render())
            assert "no Prefect server found: pass --api URL, set PREFECT_API_URL" in text and "evalq server start" in text
            assert f"no campaign has run in this folder ({home}/ holds no embedded database)" in text
            assert "no Prefect API" in app.sub_title and "dispatching" not in app.sub_title
            write_server_record(home, prefect_server.api_url, prefect_server.process.pid)
            rows = app.query_one("#rows", DataTable)
            await until(lambda: rows.row_count == 4, pilot=pilot, what="rows from the local server", timeout=30)
            await until(lambda: not banner.display, pilot=pilot, what="banner gone")
            assert os.environ["PREFECT_API_URL"] == prefect_server.api_url
            assert "no Prefect API" not in app.sub_title


# -- actions ----------------------------------------------------------------------------------
@pytest.mark.backends
class TestActions:
    @pytest.mark.anyio
    async def test_retry_cancel_open_pause(self, prefect_server):
        from textual.widgets import DataTable

        from tui.app import EvalTui

        campaign = "tui-actions"
        async with client() as c:
            ids = (await seed.seed_episodes(c, campaign, [
                seed.SeedEpisode("gamma", "pick", 0, "failed"), seed.SeedEpisode("gamma", "pick", 1, "running"),
                seed.SeedEpisode("gamma", "pick", 2, "scheduled"),  # the campaign is not finished: a pause shows
            ])).ids

        async def state(job: str) -> str:
            async with client() as c:
                return (await c.read_flow_run(ids[job])).state.type.value

        async def paused() -> object:
            async with client() as c:
                variable = await c.read_variable_by_name(naming.pause_variable(campaign))
                return None if variable is None else variable.value

        async def requested() -> list[str]:
            from flows.campaign.rerun_requests import pending_requests

            async with client() as c:
                return [request.job_id for _, request in await pending_requests(c, campaign)]

        app = EvalTui(campaign=campaign, refresh_seconds=0.5)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(lambda: app.query_one("#rows", DataTable).row_count == 1, pilot=pilot, what="rows")
            await pilot.press("enter")
            await until(lambda: app.query_one("#episodes", DataTable).row_count == 3, pilot=pilot, what="episodes")
            await pilot.press("r")
            await until(lambda: _eq(requested(), ["gamma/pick/0"]), pilot=pilot, what="retry request")
            assert any("campaign tui-actions is not running" in n.message for n in app._notifications)
            assert await state("gamma/pick/0") == "FAILED"  # the campaign retries it, not evaltui
            await pilot.press("down", "r")
            await until(lambda: any("only failed" in n.message for n in app._notifications), pilot=pilot, what="refusal")
            await pilot.press("c", "y")  # a cancel is never retried: it asks first
            await until(lambda: _eq(state("gamma/pick/1"), "CANCELLING"), pilot=pilot, what="cancel")
            await pilot.press("o")
            assert app.opened_urls[-1].endswith(f"/runs/flow-run/{ids['gamma/pick/1']}")
            await pilot.press("p")
            await until(lambda: _eq(paused(), True), pilot=pilot, what="pause")
            await until(lambda: app.paused, pilot=pilot, what="paused shown")
            assert "PAUSED" in app.sub_title
            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*"Resume dispatch")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(lambda: _eq(paused(), False), pilot=pilot, what="resume from the command palette")


async def _eq(coro, expected) -> bool:
    return (await coro) == expected


# -- end to end in a real terminal ---------------------------------------------------------
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_evaltui_in_tmux(known, prefect_server):
    """`evaltui` in an 80x24 tmux pane: keys switch panels, the screen shows the campaign, `q` quits."""
    socket = f"evaltui-test-{os.getpid()}"
    tmux = ["tmux", "-L", socket]
    command = f"{shlex.quote(sys.executable)} -m tui.app --campaign {CAMPAIGN} --refresh 0.5"
    subprocess.run([*tmux, "new-session", "-d", "-s", "tui", "-x", "80", "-y", "24",
                    "-e", f"PREFECT_API_URL={prefect_server.api_url}", "-e", "TERM=xterm-256color", command],
                   cwd=Path(__file__).resolve().parent.parent, check=True)

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "tui"], capture_output=True, text=True).stdout

    def wait_for(text: str, timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = pane()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared; last screen:\n{pane()}")

    try:
        assert "tui-known" in wait_for("4/20")
        wait_for("alpha")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "2"], check=True)
        wait_for("failing connections")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "3"], check=True)
        wait_for("step timeout")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "1"], check=True)
        subprocess.run([*tmux, "send-keys", "-t", "tui", "q"], check=True)
        deadline = time.monotonic() + 15
        while subprocess.run([*tmux, "has-session", "-t", "tui"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, f"evaltui did not quit:\n{pane()}"
            time.sleep(0.2)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_a_campaign_is_settled_only_when_everything_dispatched_has_ended():
    from tui.models import QueueSnapshot

    def snapshot(counts, dispatched, planned):
        return QueueSnapshot(campaign="c", counts=counts, runs=sum(counts.values()), dispatched=dispatched, planned=planned)

    assert snapshot({"completed": 3, "failed": 1}, 4, 4).settled
    assert not snapshot({"completed": 3, "waiting": 1}, 4, 4).settled
    assert not snapshot({"completed": 3}, 3, 4).settled  # one job not dispatched yet
    assert not snapshot({}, 0, None).settled


def test_the_run_index_counts_jobs_as_their_runs_change():
    """Each add recounts only its job: retried, rerun, cancelled-after-failure, by (team, task)."""
    from tui.run_index import RunIndex

    index = RunIndex()
    index.add("a1", "t", "pick", "failed", 1, job_id="t/pick/0", state_id="s1")
    index.add("a2", "t", "pick", "completed", 2, job_id="t/pick/0", state_id="s2")  # retried, then done
    index.add("b1", "t", "pick", "crashed", 1, job_id="t/pick/1", state_id="s3")
    index.add("c1", "t", "open", "running", 1, active=True, job_id="t/open/0", rerun=True, state_id="s4")
    buckets, runs, attempts, jobs, skipped = index.counts()
    assert ({k: v for k, v in buckets.items() if v}, runs, attempts, jobs) == ({"completed": 1, "crashed": 1, "running": 1}, 4, 5, 3)
    assert index.unchecked_failures() == ["b1"]
    index.record_cancel("b1", "s3", True)  # it went through Cancelling: the user's cancel
    assert index.counts()[0]["cancelled"] == 1 and index.counts()[0]["crashed"] == 0 and not index.unchecked_failures()
    index.add("b1", "t", "pick", "scheduled", 1, active=True, job_id="t/pick/1", state_id="s5")  # rerun from the UI
    assert index.counts()[0]["cancelled"] == 0 and index.counts()[0]["scheduled"] == 1
    rows = {(r.task): (r.done, r.failed, r.cancelled, r.running, r.waiting, r.attempts, r.retries, r.total)
            for r in index.rows({("t", "pick"): 3, ("t", "open"): 1, ("t", "place"): 2})}
    assert rows == {"pick": (1, 0, 0, 1, 1, 3, 1, 3), "open": (0, 0, 0, 1, 0, 2, 1, 1), "place": (0, 0, 0, 0, 2, 0, 0, 2)}
