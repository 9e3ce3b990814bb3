"""Operating batches against the session's real Prefect server and warm runners: the same name
again, `--count pool`, `--keep-for`, a deployment of the user's, job variables, `--timeout`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from prefect import get_client

from batch_kit import item_list, pipeline, runs_of
from flows.runtime.process_groups import terminate_group
from kit import apply_runner_pool, wait_for
from test_campaign_cli import evalq


def api_env() -> dict:
    return {"PREFECT_API_URL": os.environ["PREFECT_API_URL"]}


def batch(tmp, name: str, items: list[str], *args: str):
    return evalq("batch", "run", "--name", name, "--items", str(item_list(tmp, items, f"{name}.txt")), "--results-dir",
                 str(tmp / "results"), "--stats-interval", "2", *args, env=api_env(), cwd=tmp)


def test_the_same_name_again_retries_what_failed_and_leaves_what_completed(episode_worker, tmp_path):
    items = ["scene-00", "scene-01", "scene-02", "scene-03"]
    command, broken = pipeline(tmp_path, ["scene-02"])
    first = batch(tmp_path, "again", items, "--command", command, "--max-attempts", "3")
    assert first.returncode == 1, first.stderr[-3000:]
    assert "scene-02 failed after 3 attempt(s): Failed: exited with code 3" in first.stderr

    listed = json.loads(evalq("campaign", "list", "--json", env=api_env()).stdout)
    mine = next(c for c in listed if c["name"] == "again")
    assert (mine["planned"], mine["done"], mine["failed"], mine["attempts"], mine["retries"]) == (4, 3, 1, 6, 2)

    broken.write_text("")
    second = batch(tmp_path, "again", items, "--command", command)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Batch 'again' ran before: 1 failed items get new attempts" in second.stderr
    assert "Batch 'again': 4 items, 3 already done" in second.stderr
    names = sorted(run.name for run in runs_of("again"))
    assert names == ["again:scene-00", "again:scene-01", "again:scene-02", "again:scene-02 (attempt 2)",
                     "again:scene-02 (attempt 3)", "again:scene-02 (attempt 4)", "again:scene-03"]  # nothing ran twice
    assert (tmp_path / "results" / "failed_items.txt").read_text() == ""


POOL = "evalq-batch-count-test"


@pytest.fixture(scope="module")
def counted_pool(prefect_server, tmp_path_factory):
    """A warm-runner pool of its own with a runner, so only this test's runs are on it."""
    asyncio.run(apply_runner_pool(POOL, "runner", as_name="batch-count-test"))
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    runner = subprocess.Popen([sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", "8", "--name", "count-runner"],
                              stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        yield POOL
    finally:
        terminate_group(runner)


async def others_on_pool(count: int) -> list:
    """`count` runs of someone else on the pool, Running (no runner takes them)."""
    from prefect.states import Running

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("evaluate-episode/batch-count-test")
        return [await client.create_flow_run_from_deployment(deployment.id, state=Running(), name=f"someone-else-{i}", tags=["other"])
                for i in range(count)]


async def end(runs: list) -> None:
    from prefect.states import Completed

    async with get_client() as client:
        for run in runs:
            await client.set_flow_run_state(run.id, Completed(), force=True)


def test_count_pool_counts_every_run_in_flight_on_the_work_pool(counted_pool, tmp_path):
    """Three runs of someone else hold the pool: at most 4 in flight and resuming at 1, the batch
    runs one item, then waits until the others have ended."""
    import contextvars
    import threading

    others = asyncio.run(others_on_pool(3))
    released: dict = {}

    def release_later():  # once the batch's first item is done, and it has waited a while
        wait_for(lambda: any(run.state and run.state.is_final() for run in runs_of("counted")), 90, "a first item")
        time.sleep(5)
        released["at"] = time.time()
        asyncio.run(end(others))

    helper = threading.Thread(target=contextvars.copy_context().run, args=(release_later,))  # with this Prefect server
    command, _ = pipeline(tmp_path, [])
    helper.start()
    try:
        result = batch(tmp_path, "counted", [f"cell-{i}" for i in range(6)], "--command", command, "--pool", counted_pool,
                       "--count", "pool", "--max-in-flight", "4", "--resume-at", "1")
    finally:
        helper.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 more on the pool" in result.stderr  # the stats line
    runs = runs_of("counted")
    before = [run for run in runs if run.created.timestamp() < released["at"]]
    assert len(before) == 1 and len(runs) == 6, [(run.name, run.created) for run in runs]


def test_keep_for_drops_finished_runs_by_itself_and_never_the_results(episode_worker, tmp_path):
    items = [f"day-{i}" for i in range(8)]
    command, _ = pipeline(tmp_path, [])
    result = batch(tmp_path, "kept", items, "--command", command, "--max-in-flight", "2", "--keep-for", "3s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "runs that ended more than 3 s ago (--keep-for)" in result.stderr  # dropped while it ran
    assert "Its finished runs are dropped at" in result.stderr
    wait_for(lambda: runs_of("kept") == [], 90, "the scheduled batch-purge run to drop the rest",
             detail=lambda: [(run.name, run.state_name) for run in runs_of("kept")])
    assert all((tmp_path / "results" / item / "output.txt").exists() for item in items)

    async def purge_runs():
        from flows.reports.purge import purge_runs_of

        async with get_client() as client:
            return await purge_runs_of(client, "kept")

    # It has deleted the runs; it may not have said it is done yet.
    (purge,) = wait_for(lambda: (runs := asyncio.run(purge_runs())) and runs[0].state.is_final() and runs, 60,
                        "the batch-purge run to end")
    assert purge.state.is_completed() and "pool:" not in " ".join(purge.tags)


USER_FLOW = '''
from pathlib import Path
from prefect import flow

@flow(name="touch-item")
async def touch_item(item: str, out: str, copies: int = 1) -> None:  # the warm runner runs async flows
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "touched.txt").write_text(f"{item} x{copies}")
'''


def test_a_deployment_of_the_users_runs_once_per_item_with_its_parameters(episode_worker, tmp_path):
    (tmp_path / "user_flow.py").write_text(USER_FLOW)

    async def deploy():
        async with get_client() as client:
            await client.create_deployment(flow_id=await client.create_flow_from_name("touch-item"), name="batch-test",
                                           work_pool_name="evalq-local", entrypoint=f"{tmp_path}/user_flow.py:touch_item",
                                           enforce_parameter_schema=False)

    asyncio.run(deploy())
    items = ["0007", "0042"]
    refused = batch(tmp_path, "touched", items, "--deployment", "touch-item/batch-test", "--parameter", "item={item}",
                    "--job-variable", "memory=16G")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith("error: --job-variable memory: work pool evalq-local takes no such variable")
    assert runs_of("touched") == []
    result = batch(tmp_path, "touched", items, "--deployment", "touch-item/batch-test", "--parameter", "item={item}",
                   "--parameter", "out={item_dir}", "--parameter", "copies=2")
    assert result.returncode == 0, result.stderr[-3000:]
    for item in items:  # `0007` stays a string
        assert (tmp_path / "results" / item / "touched.txt").read_text() == f"{item} x2"
        assert json.loads((tmp_path / "results" / item / "evalq-item.json").read_text())["state"] == "Completed"
    assert sorted(run.name for run in runs_of("touched")) == ["touched:0007", "touched:0042"]


SLOW = '''
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
'''


def test_timeout_kills_the_commands_whole_process_group_and_fails_the_attempt(episode_worker, tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    pid_file = tmp_path / "child.pid"
    result = batch(tmp_path, "slow", ["only"], "--command", f"{sys.executable} {tmp_path / 'slow.py'} {pid_file}",
                   "--timeout", "2", "--max-attempts", "1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "only failed after 1 attempt(s): Failed: timed out after 2 s; its process group was killed" in result.stderr
    child = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
