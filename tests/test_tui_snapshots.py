"""Snapshot tests of every `evaltui` screen, fed fixed snapshots (no server, no clock).

Update after an intended change: `pytest tests/test_tui_snapshots.py --snapshot-update`,
then look at the report before committing the SVGs in tests/__snapshots__/.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

import pytest

from tui import messages as msg
from tui.models import (
    EpisodeDetail,
    EpisodeRow,
    EpisodesPage,
    Holder,
    LogLine,
    PoolsSnapshot,
    PoolStatus,
    QueueSnapshot,
    RowCounts,
    RowsPage,
    ServerStatus,
    StateChange,
)

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=timezone.utc)
TEAMS = ["aurora_lab", "blue_bots", "cmu_grasp", "deepmanip", "eth_rsl", "fair_robotics"]
TASKS = ["pick_cube", "stack_blocks", "open_drawer"]


def run_id(n: int) -> UUID:
    return UUID(int=n)


def queue_snapshot(paused: bool = False) -> QueueSnapshot:
    counts = {"scheduled": 1204, "pending": 12, "loading": 6, "waiting": 9, "running": 8,  # jobs, by their latest run
              "completed": 31250, "failed": 150, "crashed": 9, "cancelled": 2}
    return QueueSnapshot("robo-challenge-2026", counts, runs=32721, dispatched=32650, planned=50000, skipped=250, paused=paused,
                         taken_at=NOW, attempts=32730)


def rows_page() -> RowsPage:
    rows = []
    for i, (team, task) in enumerate((t, k) for t in TEAMS for k in TASKS):
        done, failed, cancelled, running = 610 + 11 * i, (5 * i) % 9, i % 2, i % 3
        dispatched = done + failed + cancelled + running
        rows.append(RowCounts(team, task, 930 + 7 * i, done, running, failed, cancelled, 930 + 7 * i - dispatched,
                              attempts=dispatched + (3 * i) % 7, retries=(3 * i) % 7))
    return RowsPage(rows[:20], 0, 1, 18)


def episodes_page() -> EpisodesPage:
    states = [("COMPLETED", "Completed"), ("COMPLETED", "Skipped"), ("FAILED", "Failed"), ("RUNNING", "Running"),
              ("RUNNING", "WaitingForServer"), ("RUNNING", "Loading"), ("CRASHED", "Crashed"), ("SCHEDULED", "Scheduled")]
    episodes = [
        EpisodeRow(run_id(i + 1), f"robo-challenge-2026:aurora_lab/pick_cube/{i}", "aurora_lab", "pick_cube", t, n, 1 + (i == 2),
                   "gpu_a100", None if t == "SCHEDULED" else NOW - timedelta(minutes=40 - i), job_id=f"aurora_lab/pick_cube/{i}")
        for i, (t, n) in enumerate(states)
    ]
    return EpisodesPage("aurora_lab", "pick_cube", episodes, 0, 117, 930)


def pools_snapshot() -> PoolsSnapshot:
    a = [
        ServerStatus("10.0.0.11:8000", "gpu_a100", 1, 1, [Holder("aurora_lab/pick_cube/3", str(run_id(4)), NOW - timedelta(minutes=4, seconds=10))]),
        ServerStatus("10.0.0.12:8000", "gpu_a100", 2, 2, [Holder("blue_bots/open_drawer/17", "x", NOW - timedelta(minutes=12)),
                                                          Holder("blue_bots/open_drawer/18", "y", NOW - timedelta(minutes=2))]),
        ServerStatus("10.0.0.13:8000", "gpu_a100", 1, 0, [], NOW - timedelta(minutes=2, seconds=5)),
    ]
    b = [ServerStatus("10.0.1.21:8000", "cpu_sim", 4, 1, [Holder("cmu_grasp/stack_blocks/2", "z", NOW - timedelta(seconds=42))])]
    return PoolsSnapshot([PoolStatus("cpu_sim", 4, 1, 0, b), PoolStatus("gpu_a100", 4, 3, 9, a)], NOW)


def log_lines() -> list[LogLine]:
    messages = [
        (20, "aurora_lab/pick_cube/3", "Loading simulator for pick_cube instance 3"),
        (20, "aurora_lab/pick_cube/3", "Simulator ready in 41.2 s; waiting for a server in gpu_a100"),
        (20, "aurora_lab/pick_cube/3", "Leased 10.0.0.11:8000 (lease 5f1c)"),
        (30, "blue_bots/open_drawer/17", "Policy server answered after 9.8 s (slow)"),
        (40, "deepmanip/stack_blocks/44", "Evaluator exited with code 1: instance file is corrupt"),
        (20, "cmu_grasp/stack_blocks/2", "Episode finished: success=1 steps=212"),
        (10, "cmu_grasp/stack_blocks/2", "Metrics written to results/cmu_grasp/metrics/stack_blocks_2.json"),
    ]
    return [
        LogLine(str(i), NOW - timedelta(seconds=30 - 3 * i), level, text, str(run_id(i)), episode, *episode.split("/")[:2])
        for i, (level, episode, text) in enumerate(messages)
    ]


def detail() -> EpisodeDetail:
    run = EpisodeRow(run_id(3), "robo-challenge-2026:aurora_lab/pick_cube/2 (attempt 2)", "aurora_lab", "pick_cube", "COMPLETED", "Completed", 2,
                     "gpu_a100", NOW - timedelta(minutes=9), job_id="aurora_lab/pick_cube/2")
    first = EpisodeRow(run_id(30), "robo-challenge-2026:aurora_lab/pick_cube/2", "aurora_lab", "pick_cube", "CRASHED", "Crashed", 1, "gpu_a100",
                       NOW - timedelta(minutes=50), job_id="aurora_lab/pick_cube/2")
    states = [
        StateChange(NOW - timedelta(minutes=10), "SCHEDULED", "Scheduled"),
        StateChange(NOW - timedelta(minutes=9), "RUNNING", "Loading"),
        StateChange(NOW - timedelta(minutes=8), "RUNNING", "WaitingForServer"),
        StateChange(NOW - timedelta(minutes=7), "RUNNING", "Running"),
        StateChange(NOW - timedelta(minutes=1), "COMPLETED", "Completed", "metrics written"),
    ]
    parameters = {"campaign": "robo-challenge-2026", "results_dir": "results",
                  "job": {"id": "aurora_lab/pick_cube/2", "resource_type": "gpu_a100", "payload": {"team_slug": "aurora_lab", "task": "pick_cube", "instance_id": 2}},
                  "resources": {"gpu_a100": [{"host": f"10.0.0.{11 + i}", "port": 8000, "capacity": 1} for i in range(12)]}}
    return EpisodeDetail(run, parameters, states, [first, run], "10.0.0.11:8000", log_lines()[:3], {"steps": 212, "success": 1, "evalq": {"video": "results/aurora_lab/videos/aurora_lab/pick_cube_2.mp4"}},
                         "results/aurora_lab/metrics/pick_cube_2.json", "http://127.0.0.1:4200/runs/flow-run/00000000-0000-0000-0000-000000000003")


def make_app():
    from tui.app import EvalTui

    app = EvalTui(campaign="robo-challenge-2026", live=False)
    return app


async def feed(pilot, *messages) -> None:
    app = pilot.app
    for sample, done in ((NOW - timedelta(minutes=10), 30900), (NOW, 31250)):
        app.throughput.add(sample, done)
    for step in range(12):  # a utilization history, then the latest snapshot
        for pool in pools_snapshot().pools:
            for server in pool.servers:
                app.history.add(f"server:{server.address}", (step + len(server.address)) % (server.capacity + 1), server.capacity)
            app.history.add(f"pool:{pool.name}", (3 * step) % (pool.capacity + 1), pool.capacity)
    app.post_message(msg.PoolsLoaded(pools_snapshot()))
    if any(isinstance(message, msg.EpisodesLoaded) for message in messages) and app.selected_row is None:
        app.selected_row = ("aurora_lab", "pick_cube")  # the row whose episodes are listed
    for message in messages:
        app.post_message(message)
    await pilot.pause()


def open_detail_then(*keys: str):
    async def run_before(pilot):
        await feed(pilot, *queue_messages())
        pilot.app.open_episode(str(run_id(3)))
        await pilot.pause()
        pilot.app.post_message(msg.DetailLoaded(detail()))
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
            await pilot.pause()

    return run_before


def queue_messages(paused: bool = False):
    return (msg.QueueLoaded(queue_snapshot(paused), rows_page()), msg.EpisodesLoaded(episodes_page()))


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_queue(snap_compare, size):
    async def run_before(pilot):
        await feed(pilot, *queue_messages())

    assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


def test_queue_light_theme_paused(snap_compare):
    async def run_before(pilot):
        pilot.app.theme = "textual-light"
        await feed(pilot, *queue_messages(paused=True))

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=run_before)


def test_pools(snap_compare):
    async def run_before(pilot):
        await feed(pilot, msg.QueueLoaded(queue_snapshot(), rows_page()))
        await pilot.press("2")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_logs(snap_compare):
    async def run_before(pilot):
        await feed(pilot, msg.QueueLoaded(queue_snapshot(), rows_page()), msg.LogsArrived(log_lines()))
        await pilot.press("3")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_episode_detail(snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=open_detail_then())


def test_unreachable_banner(snap_compare):
    async def run_before(pilot):
        await feed(pilot, msg.ApiStatus("Cannot reach the Prefect API at http://prefect.example:4200/api (connection refused or host down)"))

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


class TestKeys:
    """Every key of point 4 of issue 28: a snapshot of what it shows, and a pilot test of what it does."""

    def test_episode_screen_scrolls_by_keyboard_and_shows_logs_before_parameters(self, snap_compare):
        assert snap_compare(make_app(), terminal_size=(80, 24), run_before=open_detail_then("pagedown"))

    def test_l_jumps_to_the_episode_logs(self, snap_compare):
        assert snap_compare(make_app(), terminal_size=(80, 24), run_before=open_detail_then("l"))

    @pytest.mark.anyio
    async def test_episode_screen_keys(self):
        from textual.containers import VerticalScroll

        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await open_detail_then()(pilot)
            page = app.screen.query_one("#detail", VerticalScroll)
            assert app.screen.focused is page and page.scroll_y == 0
            await pilot.press("down", "down", "pagedown")
            assert page.scroll_y > 2
            await pilot.press("home")
            assert page.scroll_y == 0
            await pilot.press("l")
            logs_at = app.screen.query_one("#detail-logs-title").virtual_region.y
            assert page.scroll_y == min(logs_at, page.max_scroll_y) > 0
            assert logs_at < app.screen.query_one("#detail-parameters").virtual_region.y  # logs first

    def test_escape_leaves_the_log_filter_and_keys_work_again(self, snap_compare):
        async def run_before(pilot):
            await feed(pilot, msg.QueueLoaded(queue_snapshot(), rows_page()), msg.LogsArrived(log_lines()))
            await pilot.press("3", "slash", *"beta", "escape", "2")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)

    @pytest.mark.anyio
    async def test_escape_and_enter_leave_any_input(self):
        from textual.widgets import Input, Select

        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await feed(pilot, msg.LogsArrived(log_lines()))
            await pilot.press("3", "slash", *"beta")
            field = app.query_one("#log-filter", Input)
            assert app.focused is field
            await pilot.press("1")  # typed: the field has the keys
            assert field.value == "beta1"
            await pilot.press("backspace", "escape")
            assert app.focused is app.query_one("#log-view") and field.value == "beta"
            await pilot.press("1")
            assert app.active_tab == "queue" and field.value == "beta"
            await pilot.press("3", "slash", "x", "enter")
            assert app.focused is app.query_one("#log-view") and field.value == "x"  # focusing the field selects its text
            app.query_one("#log-level", Select).focus()
            await pilot.press("escape")
            assert app.focused is app.query_one("#log-view")

    def test_switching_campaign_clears_every_per_campaign_view(self, snap_compare):
        async def run_before(pilot):
            await feed(pilot, *queue_messages(), msg.LogsArrived(log_lines()))
            pilot.app.selected_row = ("aurora_lab", "pick_cube")
            pilot.app.switch_campaign("warmup-2026")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)

    @pytest.mark.anyio
    async def test_switching_campaign_drops_the_previous_one_and_its_late_reads(self):
        from textual.widgets import DataTable

        from tui.widgets.detail import EpisodeScreen
        from tui.widgets.logs import LogsPanel

        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            app.selected_row = ("aurora_lab", "pick_cube")
            await feed(pilot, *queue_messages(), msg.LogsArrived(log_lines(), "robo-challenge-2026"))
            app.open_episode(str(run_id(3)))
            await pilot.pause()
            before = app.generation
            app.switch_campaign("warmup-2026")
            await pilot.pause()
            assert not isinstance(app.screen, EpisodeScreen) and app.detail_id is None and app.selected_row is None
            late = [msg.QueueLoaded(queue_snapshot(), rows_page(), before), msg.EpisodesLoaded(episodes_page(), before),
                    msg.LogsArrived(log_lines(), "robo-challenge-2026")]
            for message in late:  # reads begun before the switch, arriving after it
                app.post_message(message)
            await pilot.pause()
            assert app.query_one("#rows", DataTable).row_count == 0 and app.query_one("#episodes", DataTable).row_count == 0
            assert not app.query_one(LogsPanel).lines and app.query_one("#pool-table", DataTable).row_count == 0
            assert app.selected_run() is None  # nothing left for `r` or `c` to act on
            assert "warmup-2026" in app.sub_title and "Loading campaign warmup-2026" in str(app.query_one("#state-counts").render())

    def test_episode_cursor_resets_when_the_selection_changes(self, snap_compare):
        async def run_before(pilot):
            await select_other_row_after_moving_down(pilot)

        assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)

    @pytest.mark.anyio
    async def test_enter_opens_the_episode_of_the_row_picked(self):
        from textual.widgets import DataTable

        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            other = await select_other_row_after_moving_down(pilot)
            table = app.query_one("#episodes", DataTable)
            assert table.cursor_row == 0 and app.selected_run() == str(other.episodes[0].id)
            opened = []
            app.open_episode = lambda run: opened.append(run)
            await pilot.press("enter")
            assert opened == [str(other.episodes[0].id)]

    def test_cancel_asks_for_a_y(self, snap_compare):
        async def run_before(pilot):
            await feed_episodes_focused(pilot)
            await pilot.press("down", "c")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)

    @pytest.mark.anyio
    async def test_cancel_is_sent_on_y_only(self):
        from tui.widgets.confirm import ConfirmScreen

        app = make_app()
        sent = []
        app.send_action = lambda name, *args: sent.append((name, *args))
        async with app.run_test(size=(80, 24)) as pilot:
            await feed_episodes_focused(pilot)
            await pilot.press("down", "c")
            assert isinstance(app.screen, ConfirmScreen) and "aurora_lab/pick_cube/1" in app.screen.question
            await pilot.press("n")
            assert not isinstance(app.screen, ConfirmScreen) and sent == []
            await pilot.press("c", "escape")
            assert not isinstance(app.screen, ConfirmScreen) and sent == []
            await pilot.press("c", "y")
            assert sent == [("cancel", str(run_id(2)))]
            app.open_episode(str(run_id(3)))
            await pilot.pause()
            app.post_message(msg.DetailLoaded(detail()))
            await pilot.pause()
            await pilot.press("c")
            assert "aurora_lab/pick_cube/2?" in app.screen.question
            await pilot.press("y")
            assert sent[-1] == ("cancel", str(run_id(3)))

    @pytest.mark.anyio
    async def test_pools_view_has_a_legend_of_its_marks(self):
        from textual.widgets import Static

        from tui.widgets.pools import LEGEND

        app = make_app()
        async with app.run_test(size=(120, 24)) as pilot:
            await feed(pilot)
            await pilot.press("2")
            legend = str(app.query_one("#pools-legend", Static).render())
            assert legend == LEGEND and all(mark in legend for mark in ("✓", "⚠", "⛔"))
            assert app.query_one("#pools-legend").region.height == 1  # on screen


async def feed_episodes_focused(pilot):
    app = pilot.app
    app.selected_row = ("aurora_lab", "pick_cube")
    await feed(pilot, *queue_messages())
    app.query_one("#episodes").focus()
    await pilot.pause()


async def select_other_row_after_moving_down(pilot) -> EpisodesPage:
    """Episodes of aurora_lab/pick_cube, the cursor moved to the 4th, then blue_bots/open_drawer picked."""
    await feed_episodes_focused(pilot)
    await pilot.press("down", "down", "down")
    assert pilot.app.query_one("#episodes").cursor_row == 3
    pilot.app.post_message(msg.RowSelected("blue_bots", "open_drawer"))
    await pilot.pause()
    other = EpisodesPage("blue_bots", "open_drawer", [EpisodeRow(
        run_id(100 + i), f"robo-challenge-2026:blue_bots/open_drawer/{i}", "blue_bots", "open_drawer", "COMPLETED", "Completed", 1,
        "gpu_a100", NOW - timedelta(minutes=30 - i), job_id=f"blue_bots/open_drawer/{i}") for i in range(5)], 0, 1, 5)
    pilot.app.post_message(msg.EpisodesLoaded(other, pilot.app.generation))
    await pilot.pause()
    return other


@pytest.mark.anyio
async def test_a_finished_campaign_is_not_shown_paused():
    """Its pause variable may still say true (an invocation killed while paused): it has nothing left to pause."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        finished = QueueSnapshot("robo-challenge-2026", {"completed": 3, "failed": 1}, runs=5, dispatched=4, planned=4, paused=True)
        await feed(pilot, msg.QueueLoaded(finished, rows_page()))
        assert app.sub_title == "robo-challenge-2026 · finished"
        await feed(pilot, msg.QueueLoaded(queue_snapshot(paused=True), rows_page()))
        assert app.sub_title == "robo-challenge-2026 · PAUSED"
