"""A campaign outlives its dispatcher: SIGKILL of `evalq campaign run` in the middle of a
campaign, then the same campaign again. What the killed dispatcher had in flight is adopted
(never dispatched twice), what it had not dispatched yet is, every episode is played exactly
once and no slot leaks. (The killed campaign flow run itself is left to the zombie automation.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

from flows.campaign.flow import campaign
from flows.naming import CAMPAIGN_FLOW, campaign_tag
from kit import limit_counts, make_fleet, make_job, wait_for, write_inputs

pytestmark = pytest.mark.backends

NAME = "outlives-dispatcher"
SIM = {"load_seconds": 0.2, "steps": 12, "step_seconds": 0.25}


async def episode_runs():
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(NAME)])),
            sort=FlowRunSort.ID_DESC, limit=200,
        )


async def campaign_flow_runs():
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[CAMPAIGN_FLOW])),
                                           sort=FlowRunSort.ID_DESC, limit=200)
    return [run for run in runs if (run.parameters or {}).get("name") == NAME]


def test_a_killed_campaign_run_again_adopts_its_episodes(episode_worker, tmp_path):
    busy = tmp_path / "busy.jsonl"
    fleet, resources = make_fleet({"kc_1": [1], "kd_1": [1]}, log_path=busy)
    jobs = [make_job(tmp_path, team, "pick", i, [f"{team}_1"]) for team in ("kc", "kd") for i in range(5)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "flows.cli", "campaign", "run", "--jobs", str(jobs_file), "--resources",
            str(resources_file), "--results-dir", str(results), "--name", NAME, "--stats-interval", "5",
            *(arg for key, value in SIM.items() for arg in ("--evaluator-option", f"{key}={value}"))]

    def mid_campaign():
        """An episode done, others dispatched and not ended, some jobs not dispatched yet."""
        runs = asyncio.run(episode_runs())
        open_runs = [run for run in runs if not run.state.is_final()]
        done = list(results.rglob("*.json"))
        return done and len(open_runs) >= 2 and len(runs) < len(jobs) and open_runs

    with fleet:
        with open(tmp_path / "first.log", "ab") as log:
            first = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            in_flight = wait_for(mid_campaign, 240, "the campaign to be under way")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        assert {run.state.type for run in in_flight} <= {StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING}
        state = asyncio.run(campaign(
            jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(results), name=NAME,
            evaluator_options=SIM, stats_interval=5.0, return_state=True,
        ))
        stats = fleet.stats()

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["done"] + summary["already_done"] == len(jobs) and not summary["failed"], summary
    runs = asyncio.run(episode_runs())
    assert sorted(run.name for run in runs) == sorted(f"{NAME}:{job.id}" for job in jobs)  # one run per job: none twice
    assert all(run.state.type == StateType.COMPLETED for run in runs)
    assert {run.id for run in in_flight} <= {run.id for run in runs}  # adopted, not replaced
    played = [json.loads(line)["episode"] for line in busy.read_text().splitlines()]
    assert sorted(played) == sorted(job.id for job in jobs)  # each played exactly once
    for job in jobs:
        assert json.loads(job.metrics_path(results).read_text())["evalq"]["job_id"] == job.id
    assert all(s.violations == 0 and s.max_active <= s.capacity for s in stats.values())
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}

    # The killed dispatcher's own flow run stays Running until the zombie automation crashes it,
    # 6 min after its last heartbeat (tests/test_runner.py covers the automation for episodes).
    killed = [run for run in asyncio.run(campaign_flow_runs()) if run.id != state.state_details.flow_run_id]
    assert len(killed) == 1 and killed[0].state.type in (StateType.RUNNING, StateType.CRASHED), killed


def test_the_campaign_process_heartbeats_well_within_the_zombie_window(prefect_server):
    """`evalq campaign run` runs the campaign flow in its own process (`heartbeating()`): at
    Prefect's default frequency (180 s) the zombie automation would crash a live campaign after
    an API outage shorter than the one it waits out."""
    from prefect import flow
    from prefect.settings import get_current_settings

    from flows.runtime.api_health import OUTAGE_BUDGET_SECONDS
    from flows.runtime.zombies import heartbeating, zombie_automation

    @flow
    def frequency_seen_by_the_engine() -> int:
        return get_current_settings().flows.heartbeat_frequency

    window = zombie_automation().trigger.within.total_seconds()
    # A live run's last delivered heartbeat may be one interval older than the outage's start.
    assert window - get_current_settings().flows.heartbeat_frequency < OUTAGE_BUDGET_SECONDS  # why the context is needed
    with heartbeating():
        assert window - frequency_seen_by_the_engine() > OUTAGE_BUDGET_SECONDS
