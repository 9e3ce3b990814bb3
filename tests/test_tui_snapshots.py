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
    counts = {"scheduled": 1204, "pending": 12, "loading": 6, "waiting": 9, "running": 8,
              "completed": 31250, "failed": 212, "crashed": 17, "cancelled": 3}
    return QueueSnapshot("robo-challenge-2026", counts, runs=32721, dispatched=32650, planned=50000, skipped=250, paused=paused, taken_at=NOW)


def rows_page() -> RowsPage:
    rows = [RowCounts(team, task, 930 + 7 * i, 610 + 11 * i, i % 3, (5 * i) % 9) for i, (team, task) in enumerate((t, k) for t in TEAMS for k in TASKS)]
    return RowsPage(rows[:20], 0, 1, 18)


def episodes_page() -> EpisodesPage:
    states = [("COMPLETED", "Completed"), ("COMPLETED", "Skipped"), ("FAILED", "Failed"), ("RUNNING", "Running"),
              ("RUNNING", "WaitingForServer"), ("RUNNING", "Loading"), ("CRASHED", "Crashed"), ("SCHEDULED", "Scheduled")]
    episodes = [
        EpisodeRow(run_id(i + 1), f"aurora_lab/pick_cube/{i}", "aurora_lab", "pick_cube", t, n, 1 + (i == 2), "gpu_a100",
                   None if t == "SCHEDULED" else NOW - timedelta(minutes=40 - i))
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
    run = EpisodeRow(run_id(3), "aurora_lab/pick_cube/2 (attempt 2)", "aurora_lab", "pick_cube", "COMPLETED", "Completed", 2, "gpu_a100", NOW - timedelta(minutes=9))
    first = EpisodeRow(run_id(30), "aurora_lab/pick_cube/2", "aurora_lab", "pick_cube", "CRASHED", "Crashed", 1, "gpu_a100", NOW - timedelta(minutes=50))
    states = [
        StateChange(NOW - timedelta(minutes=10), "SCHEDULED", "Scheduled"),
        StateChange(NOW - timedelta(minutes=9), "RUNNING", "Loading"),
        StateChange(NOW - timedelta(minutes=8), "RUNNING", "WaitingForServer"),
        StateChange(NOW - timedelta(minutes=7), "RUNNING", "Running"),
        StateChange(NOW - timedelta(minutes=1), "COMPLETED", "Completed", "metrics written"),
    ]
    parameters = {"campaign": "robo-challenge-2026", "results_dir": "results",
                  "job": {"id": "aurora_lab/pick_cube/2", "resource_type": "gpu_a100", "payload": {"team_slug": "aurora_lab", "task": "pick_cube", "instance_id": 2}}}
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
    for message in messages:
        app.post_message(message)
    await pilot.pause()


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
    async def run_before(pilot):
        await feed(pilot, *queue_messages())
        pilot.app.open_episode(str(run_id(3)))
        await pilot.pause()
        pilot.app.post_message(msg.DetailLoaded(detail()))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_unreachable_banner(snap_compare):
    async def run_before(pilot):
        await feed(pilot, msg.ApiStatus("Cannot reach the Prefect API at http://prefect.example:4200/api (connection refused or host down)"))

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
