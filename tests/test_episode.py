"""The episode flow against a real Prefect server and real websocket policy servers.

Episodes run in this process (a flow call creates a real flow run on the server); the
campaign tests run them through a real worker.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from prefect import get_client

from flows.episode import evaluate_episode
from flows.naming import NOT_RETRYABLE_STATE, SKIPPED_STATE
from flows.slots.pools import apply_pools
from kit import limit_counts, make_fleet, make_job, pool_params

HERE = Path(__file__).resolve().parent
FAST_SIM = {"load_seconds": 0.05, "steps": 5, "step_seconds": 0.02}


@pytest.fixture
def fleet(prefect_server):
    fleet, resources = make_fleet({"p_1": [1]})

    async def apply():
        async with get_client() as client:
            await apply_pools(client, resources)

    asyncio.run(apply())
    with fleet:
        yield fleet, resources


def episode(job, resources, results: Path, **kwargs):
    params = dict(job=job.model_dump(mode="json"), resources=pool_params(job, resources), results_dir=str(results),
                  evaluator_options=FAST_SIM, campaign="test-episode")
    params.update(kwargs)
    return asyncio.run(evaluate_episode(**params, return_state=True))


def test_episode_writes_metrics_and_releases_its_slot(fleet, tmp_path):
    servers, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 1, ["p_1"])
    state = episode(job, resources, tmp_path / "results")
    assert state.is_completed() and state.name == "Completed"
    document = json.loads(job.metrics_path(tmp_path / "results").read_text())
    assert document["steps"] == 5
    assert document["evalq"]["job_id"] == "alpha/pick/1"
    assert document["evalq"]["server"] == resources.servers("p_1")[0].address
    assert servers.stats()[resources.servers("p_1")[0].address].episodes == 1
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="memory is read from /proc (Linux)")
def test_metrics_record_the_peak_memory_while_the_episode_ran(fleet, tmp_path):
    """An evaluator that holds 150 MiB while it plays: the episode's peak is at least that above
    its start, alone in its process; the next episode does not inherit it (the peak is reset)."""
    servers, resources = fleet
    hungry, plain = make_job(tmp_path, "mem", "pick", 1, ["p_1"]), make_job(tmp_path, "mem", "pick", 2, ["p_1"])
    assert episode(hungry, resources, tmp_path / "results", evaluator="sample_evaluators:HungryEvaluator",
                   evaluator_options={"megabytes": 150}).is_completed()
    assert episode(plain, resources, tmp_path / "results", evaluator="sample_evaluators:ConstantEvaluator",
                   evaluator_options={}).is_completed()
    first = json.loads(hungry.metrics_path(tmp_path / "results").read_text())["evalq"]
    second = json.loads(plain.metrics_path(tmp_path / "results").read_text())["evalq"]
    assert first["peak_rss_mb"] - first["rss_at_start_mb"] >= 150 and first["concurrent_max"] == 1, first
    assert second["peak_rss_mb"] < first["peak_rss_mb"] - 100, (first, second)


def test_existing_metrics_skip_the_episode(fleet, tmp_path):
    servers, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 2, ["p_1"])
    target = job.metrics_path(tmp_path / "results")
    target.parent.mkdir(parents=True)
    target.write_text('{"kept": true}')
    state = episode(job, resources, tmp_path / "results")
    assert state.is_completed() and state.name == SKIPPED_STATE
    assert json.loads(target.read_text()) == {"kept": True}
    assert servers.stats()[resources.servers("p_1")[0].address].episodes == 0


def test_broken_instance_is_not_retryable_and_takes_no_slot(fleet, tmp_path):
    servers, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 3, ["p_1"])
    Path(job.payload.instance_path).write_text("{not json")
    state = episode(job, resources, tmp_path / "results")
    assert state.is_failed() and state.name == NOT_RETRYABLE_STATE
    assert "instance file" in state.message
    assert not job.metrics_path(tmp_path / "results").exists()
    assert servers.stats()[resources.servers("p_1")[0].address].episodes == 0


def test_dead_policy_server_fails_retryably_and_releases(fleet, tmp_path):
    servers, resources = fleet
    address = resources.servers("p_1")[0].address
    servers.kill_server(address)
    job = make_job(tmp_path, "alpha", "pick", 4, ["p_1"])
    state = episode(job, resources, tmp_path / "results", evaluator_options={**FAST_SIM, "connect_timeout": 2},
                    server_wait_seconds=2)  # quarantined, no other server: it waits 2 s for a probe to find it back
    assert state.is_failed() and state.name != NOT_RETRYABLE_STATE
    assert address in state.message
    assert set(asyncio.run(limit_counts(resources)).values()) == {0}


def test_capacity_is_never_exceeded_under_contention(fleet, tmp_path):
    servers, resources = fleet
    jobs = [make_job(tmp_path, "alpha", "pick", 10 + i, ["p_1"]) for i in range(4)]

    async def all_at_once():
        return await asyncio.gather(*(
            evaluate_episode(job=job.model_dump(mode="json"), resources=pool_params(job, resources),
                             results_dir=str(tmp_path / "results"), evaluator_options=FAST_SIM,
                             campaign="test-episode", return_state=True)
            for job in jobs
        ))

    states = asyncio.run(all_at_once())
    assert all(state.is_completed() for state in states)
    stats = servers.stats()[resources.servers("p_1")[0].address]
    assert stats.episodes == 4 and stats.max_active == 1 and stats.violations == 0


@pytest.mark.parametrize("exit_code, expected_name", [(0, "Completed"), (75, "Failed"), (3, NOT_RETRYABLE_STATE)])
def test_command_evaluator_line_protocol(fleet, tmp_path, exit_code, expected_name):
    _, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 20 + exit_code, ["p_1"])
    script = HERE / "evaluators" / "line_protocol_eval.py"
    spec = f"command:{sys.executable} {script} {{metrics_path}} {exit_code}"
    state = episode(job, resources, tmp_path / "results", evaluator=spec, evaluator_options={})
    assert state.name == expected_name
    if exit_code == 0:
        document = json.loads(job.metrics_path(tmp_path / "results").read_text())
        assert document["server_seen"] == resources.servers("p_1")[0].address
    if exit_code == 3:  # the program's own last stderr line next to its exit code, its password masked
        assert state.message == "evaluator exited with code 3: to retry, log in at https://***@policy.example/"


def test_module_evaluator(fleet, tmp_path):
    _, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 30, ["p_1"])
    state = episode(job, resources, tmp_path / "results", evaluator="sample_evaluators:ConstantEvaluator",
                    evaluator_options={"score": 0.5})
    assert state.is_completed()
    assert json.loads(job.metrics_path(tmp_path / "results").read_text())["score"] == 0.5


def test_unknown_evaluator_is_not_retryable(fleet, tmp_path):
    _, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 31, ["p_1"])
    state = episode(job, resources, tmp_path / "results", evaluator="no_such_module:Nope", evaluator_options={})
    assert state.name == NOT_RETRYABLE_STATE and "no_such_module" in state.message


def video_files(results: Path) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file() and "videos" in p.parts)


@pytest.mark.parametrize("exit_code", [0, 3])
def test_command_evaluator_video_is_moved_in_place_and_recorded(fleet, tmp_path, exit_code):
    _, resources = fleet
    job = make_job(tmp_path, "alpha", "pick", 40 + exit_code, ["p_1"])
    script = HERE / "evaluators" / "line_protocol_eval.py"
    spec = f"command:{sys.executable} {script} {{metrics_path}} {exit_code} {{video_path}}"
    results = tmp_path / "results"
    state = episode(job, resources, results, evaluator=spec, evaluator_options={})
    final = job.video_path(results)
    assert final == results / "alpha" / "videos" / "alpha" / f"pick_{40 + exit_code}.mp4"
    if exit_code == 0:
        assert state.is_completed()
        assert final.read_bytes() == b"fake mp4 of " + resources.servers("p_1")[0].url.encode()
        assert json.loads(job.metrics_path(results).read_text())["evalq"]["video"] == str(final)
        assert video_files(results) == [f"alpha/videos/alpha/pick_{40 + exit_code}.mp4"]
    else:  # a failed episode publishes no video and leaves no partial one
        assert state.name == NOT_RETRYABLE_STATE
        assert video_files(results) == []


def test_module_evaluator_video_and_none_without_one(fleet, tmp_path):
    _, resources = fleet
    results = tmp_path / "results"
    job = make_job(tmp_path, "alpha", "pick", 50, ["p_1"])
    assert episode(job, resources, results, evaluator="sample_evaluators:VideoEvaluator", evaluator_options={}).is_completed()
    assert job.video_path(results).read_text() == "video of alpha/pick/50"
    assert json.loads(job.metrics_path(results).read_text())["evalq"]["video"] == str(job.video_path(results))
    plain = make_job(tmp_path, "beta", "pick", 51, ["p_1"])
    assert episode(plain, resources, results).is_completed()  # sim records no video
    assert json.loads(plain.metrics_path(results).read_text())["evalq"]["video"] is None
    assert not (results / "beta" / "videos").exists()
