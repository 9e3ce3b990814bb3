"""A run rerun from outside the campaign, as the Prefect UI's Retry and `prefect flow-run retry`
do it (the same run set Scheduled again), against a real server, worker and policy servers:
the campaign follows it while it runs, and `evalq campaign report --write-failed` after it ended."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading

from prefect import get_client
from prefect.states import Scheduled

from flows.runtime.api import use_api
from kit import campaign_log, make_fleet, make_job, wait_for
from test_campaign import campaign_runs, run_campaign
from test_campaign_cli import evalq

GATED = "tests.sample_evaluators:GatedEvaluator"


def api_env() -> dict:
    return {"PREFECT_API_URL": os.environ["PREFECT_API_URL"]}


async def run_of(campaign: str, job_id: str):
    return next((run for run in await campaign_runs(campaign) if run.name == f"{campaign}:{job_id}"), None)


def state_of(campaign: str, job_id: str) -> str | None:
    run = asyncio.run(run_of(campaign, job_id))
    return run.state.type.value if run is not None and run.state is not None else None


def test_a_failed_episode_rerun_from_the_prefect_ui_while_the_campaign_runs_ends_done(episode_worker, tmp_path):
    """gate/pick/0 fails (not retryable, one attempt); gate/pick/1 plays until released. The
    failed run is set Scheduled as the UI's Retry does; the campaign waits for it and counts it done."""
    fleet, resources = make_fleet({"gate_1": [2]})
    jobs = [make_job(tmp_path, "gate", "pick", i, ["gate_1"]) for i in range(2)]
    release = tmp_path / "release"
    options = {"fail_once": str(tmp_path / "failed-once"), "release": str(release)}
    name = "rerun-live"
    seen: dict = {}

    async def retry_from_the_ui():
        for _ in range(600):
            run = await run_of(name, "gate/pick/0")
            if run is not None and run.state is not None and run.state.is_failed():
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("gate/pick/0 never failed")
        await asyncio.sleep(1.5)  # the campaign settles it as failed first
        async with get_client() as client:  # what the UI's Retry button sends
            await client.set_flow_run_state(run.id, Scheduled(name="AwaitingRetry", message="Retry from the UI"), force=True)
        seen["run"] = run.id
        for _ in range(600):
            again = await run_of(name, "gate/pick/0")
            if again.state.is_completed():
                break
            await asyncio.sleep(0.2)
        release.touch()

    def helper():
        with use_api(os.environ["PREFECT_API_URL"]):  # Prefect's settings context is per thread
            asyncio.run(retry_from_the_ui())

    thread = threading.Thread(target=helper)
    with fleet:
        thread.start()
        try:
            summary = run_campaign(tmp_path, jobs, resources, name, max_attempts=1, tick_seconds=0.2,
                                   evaluator=GATED, evaluator_options=options)
        finally:
            release.touch()
            thread.join(60)
    assert summary["done"] == 2 and summary["failed"] == {}, summary
    assert (tmp_path / "results" / "failed.txt").read_text() == ""
    assert summary["table"] == [{"team": "gate", "task": "pick", "done": 2, "failed": 0, "cancelled": 0, "total": 2}]
    board = {(r["team"], r["task"]): r for r in summary["leaderboard"]["rows"]}
    assert board["gate", "pick"]["episodes"] == 2
    runs = asyncio.run(campaign_runs(name))
    assert sorted(run.name for run in runs) == [f"{name}:gate/pick/0", f"{name}:gate/pick/1"]  # the same run, rerun
    assert seen["run"] in {run.id for run in runs}

    wait_for(lambda: any("gate/pick/0: its run" in line and "from outside the campaign" in line
                         for line in asyncio.run(campaign_log(name))), 30, "the campaign to say it follows the rerun")
    report = json.loads(evalq("campaign", "report", name, "--json", env=api_env()).stdout)
    assert (report["done"], report["failed"], report["runs"], report["attempts"], report["retries"]) == (2, 0, 2, 3, 1)
    assert [(p["name"], p["failed_attempts"]) for p in report["pools"]] == [("gate_1", 1)]  # the first attempt stays counted
    listed = next(c for c in json.loads(evalq("campaign", "list", "--json", env=api_env()).stdout) if c["name"] == name)
    assert (listed["done"], listed["failed"], listed["in_flight"], listed["waiting"], listed["attempts"], listed["retries"]) == (2, 0, 0, 0, 3, 1)


def test_a_failed_episode_rerun_after_the_campaign_ended_is_written_off_failed_txt(episode_worker, tmp_path):
    """After the campaign: `prefect flow-run retry` (Prefect 3.9) reruns the failed run on the
    pool's worker; `evalq campaign report --write-failed` then rewrites failed.txt."""
    fleet, resources = make_fleet({"late_1": [1]})
    jobs = [make_job(tmp_path, "late", "pick", i, ["late_1"]) for i in range(2)]
    options = {"fail_once": str(tmp_path / "failed-once"), "release": str(tmp_path)}  # instance 1 is not held
    name = "rerun-after"
    with fleet:
        summary = run_campaign(tmp_path, jobs, resources, name, max_attempts=1, evaluator=GATED, evaluator_options=options)
        failed_file = tmp_path / "results" / "failed.txt"
        assert list(summary["failed"]) == ["late/pick/0"] and failed_file.read_text() == "late/pick/0\n"

        run = asyncio.run(run_of(name, "late/pick/0"))
        retried = subprocess.run([str(os.path.join(os.path.dirname(sys.executable), "prefect")), "flow-run", "retry", str(run.id)],
                                 capture_output=True, text=True, env={**os.environ, **api_env()}, timeout=120)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        wait_for(lambda: state_of(name, "late/pick/0") == "COMPLETED", 120, "the rerun to complete")

    stale = json.loads(evalq("campaign", "report", name, "--json", env=api_env()).stdout)
    assert failed_file.read_text() == "late/pick/0\n"  # a report alone writes nothing
    assert (stale["done"], stale["failed"], stale["resubmit"]) == (2, 0, [])
    written = evalq("campaign", "report", name, "--write-failed", env=api_env())
    assert written.returncode == 0, written.stderr
    assert f"Wrote 0 failed job ids to {failed_file}" in written.stderr
    assert failed_file.read_text() == ""
    assert "1 of them reruns in place" in written.stdout
    assert "late_1: 1 failed attempts, 1 jobs" in written.stdout  # the first attempt of the rerun run
