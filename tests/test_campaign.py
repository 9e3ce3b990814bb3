"""Whole campaigns through a real process worker, real Prefect server, real policy servers."""

from __future__ import annotations

import asyncio
import json

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort

from flows.campaign.flow import campaign
from flows.naming import campaign_tag
from kit import limit_counts, make_fleet, make_job, write_inputs

FAST_SIM = {"load_seconds": 0.2, "steps": 4, "step_seconds": 0.05}


def run_campaign(tmp_path, jobs, resources, name, **settings):
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    params = dict(jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
                  name=name, evaluator_options=FAST_SIM, stats_interval=5.0)
    params.update(settings)
    state = asyncio.run(campaign(**params, return_state=True))
    assert state.is_completed(), state.message
    return state.result()


async def campaign_runs(name: str):
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(name)])),
            sort=FlowRunSort.ID_DESC, limit=200,
        )


async def artifact_description(key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifacts[0].description


async def planned(name: str) -> dict:
    from flows.campaign.plan import read_plan

    async with get_client() as client:
        return await read_plan(client, name)


@pytest.mark.backends
def test_campaign_evaluates_every_episode_once_within_capacity(episode_worker, tmp_path):
    fleet, resources = make_fleet({"alpha_1": [1], "beta_1": [1, 2]})
    jobs = [make_job(tmp_path, "alpha", "pick", i, ["alpha_1"]) for i in range(3)]
    jobs += [make_job(tmp_path, "beta", task, i, ["beta_1"]) for task in ("pick", "open") for i in range(2)]
    with fleet:
        summary = run_campaign(tmp_path, jobs, resources, "complete")
        stats = fleet.stats()
    assert summary["done"] == len(jobs) and not summary["failed"]
    for job in jobs:
        document = json.loads(job.metrics_path(tmp_path / "results").read_text())
        assert document["evalq"]["job_id"] == job.id
    assert sum(s.episodes for s in stats.values()) == len(jobs)  # each played exactly once
    assert all(s.violations == 0 and s.max_active <= s.capacity for s in stats.values())
    assert (tmp_path / "results" / "failed.txt").read_text() == ""
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}
    assert summary["table"] == [
        {"team": "alpha", "task": "pick", "done": 3, "failed": 0, "cancelled": 0, "total": 3},
        {"team": "beta", "task": "open", "done": 2, "failed": 0, "cancelled": 0, "total": 2},
        {"team": "beta", "task": "pick", "done": 2, "failed": 0, "cancelled": 0, "total": 2},
    ]
    assert asyncio.run(artifact_description("evalq-complete")).startswith("Campaign complete: 7/7 done")
    assert asyncio.run(planned("complete")) == {("alpha", "pick"): 3, ("beta", "open"): 2, ("beta", "pick"): 2}
    runs = asyncio.run(campaign_runs("complete"))
    assert len(runs) == len(jobs)
    assert {run.name for run in runs} == {f"complete:{job.id}" for job in jobs}  # the campaign, then the job

    # Running the finished campaign again dispatches nothing.
    with fleet.__class__([]):
        again = run_campaign(tmp_path, jobs, resources, "complete")
    assert again["already_done"] == len(jobs) and again["done"] == 0
    assert len(asyncio.run(campaign_runs("complete"))) == len(jobs)


def test_dead_policy_server_is_retried_then_reported(episode_worker, tmp_path):
    fleet, resources = make_fleet({"dead_1": [1]})  # never started: nothing listens
    jobs = [make_job(tmp_path, "dead", "pick", 1, ["dead_1"])]
    summary = run_campaign(tmp_path, jobs, resources, "dead-server", max_attempts=2, server_wait_seconds=2,
                           evaluator_options={**FAST_SIM, "connect_timeout": 2})  # it waits 2 s for the quarantine to lift
    assert list(summary["failed"]) == ["dead/pick/1"]
    assert resources.servers("dead_1")[0].address in summary["failed"]["dead/pick/1"]
    assert (tmp_path / "results" / "failed.txt").read_text() == "dead/pick/1\n"
    runs = asyncio.run(campaign_runs("dead-server"))
    assert sorted(run.name for run in runs) == ["dead-server:dead/pick/1", "dead-server:dead/pick/1 (attempt 2)"]
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}
