"""The campaign's safety net for runs held by a runner that is gone (`flows/campaign/orphans.py`),
and its stats line when nothing serves the pool, against a real server and real runners.

Runs stranded as the issue saw them (Pending "claimed by" a runner that died between its claim
and the start; a cancel of a run whose runner is gone) are forged: a claim with a dead runner's
name is exactly what a pilot cancelled mid-claim left behind. The race itself, with real pilots,
is `tests/test_slurm_runners.py`'s."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prefect import get_client
from prefect.states import Cancelling, Pending

from flows.campaign.orphans import Settle, verdict
from flows.naming import claim_message, episode_run_name, episode_tags, idempotency_key
from flows.runtime.process_groups import terminate_group
from kit import apply_runner_pool, make_fleet, make_job, pool_params, wait_for, write_inputs
from test_campaign_cli import evalq
from prefect.client.schemas.objects import StateType

POOL = "evalq-orphans-test"
DEPLOYMENT = "evaluate-episode/orphans-test"
SIM = {"load_seconds": 0.2, "steps": 4, "step_seconds": 0.1}


def test_verdicts():
    assert verdict(StateType.CANCELLING, False, age=0) is Settle.CANCEL  # at once
    assert verdict(StateType.PENDING, False, age=5) is None  # a claim just made: not yet
    assert verdict(StateType.PENDING, False, age=31) is Settle.HAND_BACK
    assert verdict(StateType.RUNNING, True, age=0) is Settle.COMPLETE
    assert verdict(StateType.RUNNING, False, age=0) is Settle.CRASH
    assert verdict(StateType.SCHEDULED, False, age=999) is None


@pytest.fixture(scope="module")
def orphans_pool(prefect_server):
    asyncio.run(apply_runner_pool(POOL, "local", as_name="orphans-test"))
    return POOL


async def strand(job, resources, results: Path, campaign: str, cancel: bool = False):
    """The campaign's own run of `job` (attempt 1), left Pending under a runner that is gone; with
    `cancel`, a user's cancel then came in."""
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        run = await client.create_flow_run_from_deployment(
            deployment.id, name=episode_run_name(campaign, job.id, 1), tags=episode_tags(job, campaign, job.resource_type, 1),
            idempotency_key=idempotency_key(campaign, job, 1),
            parameters=dict(job=job.model_dump(mode="json"), resources=pool_params(job, resources), results_dir=str(results),
                            evaluator_options=SIM, campaign=campaign),
        )
        await client.set_flow_run_state(run.id, Pending(message=claim_message("evalq-runner-gone_0", "feed")))
        if cancel:
            await client.set_flow_run_state(run.id, Cancelling(message="cancelled from the UI"))
        return run.id


async def state_of(run_id):
    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state


def test_runs_of_a_runner_gone_are_handed_back_or_cancelled_and_the_stats_line_says_nothing_polls(
        orphans_pool, tmp_path, caplog):
    from flows.campaign.flow import campaign

    fleet, resources = make_fleet({"o_1": [1]})
    stranded, cancelled, fresh = (make_job(tmp_path, "o", "pick", i, ["o_1"]) for i in (1, 2, 3))
    jobs_file, resources_file = write_inputs(tmp_path, [stranded, cancelled, fresh], resources)
    results = tmp_path / "results"
    name = "orphans"
    stranded_run = asyncio.run(strand(stranded, resources, results, name))
    cancelled_run = asyncio.run(strand(cancelled, resources, results, name, cancel=True))
    outcome: dict = {}

    def start_a_runner_once_both_are_settled():
        outcome["status"] = evalq("campaign", "status", name, env={"PREFECT_API_URL": os.environ["PREFECT_API_URL"]})
        outcome["handed back"] = wait_for(lambda: (s := asyncio.run(state_of(stranded_run))).type == StateType.SCHEDULED and s,
                                          180, "the stranded run to be handed back")
        outcome["cancelled"] = wait_for(lambda: (s := asyncio.run(state_of(cancelled_run))).is_final() and s, 30,
                                        "the cancel to end")
        wait_for(lambda: "no worker or runner has ever polled it" in caplog.text, 60, "the stats line's warning")
        outcome["runner"] = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "runner", "--pool", POOL, "--slots", "2", "--name", "orphans-runner"],
            stdout=open(tmp_path / "runner.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ},
        )

    helper = threading.Thread(target=contextvars.copy_context().run, args=(start_a_runner_once_both_are_settled,))
    caplog.set_level(logging.INFO)
    try:
        with fleet:
            helper.start()
            state = asyncio.run(campaign(jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(results),
                                         name=name, deployment=DEPLOYMENT, stats_interval=5.0, evaluator_options=SIM,
                                         return_state=True))
            helper.join()
    finally:
        if "runner" in outcome:
            terminate_group(outcome["runner"])
    assert outcome["handed back"].message == "handed back by the campaign: its runner evalq-runner-gone_0 is gone (no heartbeat)"
    assert outcome["cancelled"].type == StateType.CANCELLED
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["done"] == 2 and list(summary["cancelled"]) == [cancelled.id] and not summary["retried"]
    assert "`evalq runner --pool evalq-orphans-test`" in caplog.text  # the stats line says what serves it
    status = outcome["status"].stdout
    assert f"{stranded.id} [Pending]: claimed by runner evalq-runner-gone_0, which is gone (no heartbeat)" in status, status
    assert "work pool evalq-orphans-test: " in status.splitlines()[1], status
    assert asyncio.run(state_of(stranded_run)).is_completed()  # the same run, no attempt charged
