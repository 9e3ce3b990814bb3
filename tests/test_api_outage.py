"""An API outage of 45 s in the middle of a campaign costs nothing (issue 22, item 4).

`evalq campaign run` against the test's own Prefect server (with `--backend postgres` its own
database, which the restarted server finds again), episodes on a warm runner (`evalq runner`).
Mid-campaign the server stops for 45 s and starts again (about a minute without an API).
Episodes load, wait, play and end through it: no attempt is lost (each job has exactly one flow
run, played once), the campaign and the runner each say so once (one WARNING when the API goes
away, one INFO when it is back) and print no error or traceback. A long episode outside the
campaign holds its slot across the outage (its lease outlasts it), and a cancel of it issued
once the server is back is obeyed (its "Finished in state Cancelled" is Prefect's ERROR line).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from kit import limit_counts, make_fleet, make_job, pool_params, wait_for, write_inputs
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelling

from flows.naming import EPISODE_DEPLOYMENT, RUNNING_STATE, WAITING_STATE, campaign_tag, episode_run_name
from flows.runtime.api import use_api
from flows.runtime.api_health import AWAY_MESSAGE, BACK_MESSAGE
from flows.runtime.embedded_server import EmbeddedServer
from flows.runtime.local_stack import start_worker
from flows.runtime.process_groups import terminate_group
from flows.runtime.provisioning import prepare_api
from flows.slots.pools import apply_pools

pytestmark = pytest.mark.backends

NAME = "outage"
OUTAGE_SECONDS = 45
SIM = {"load_seconds": 0.5, "steps": 40, "step_seconds": 0.25}
"""About 10 s per episode: episodes load, wait, play and end during the outage."""
CANCEL_OBEYED_SECONDS = 30
"""The bound asserted (generous on a loaded box); the goal, 10 s, is measured in the test's output."""


async def runs_tagged(name: str):
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(name)])),
            sort=FlowRunSort.ID_DESC, limit=200,
        )


async def start_probe(job, resources, results) -> object:
    """An episode outside the campaign that plays until cancelled, on a server of its own."""
    async with get_client() as client:
        await apply_pools(client, resources)
        deployment = await client.read_deployment_by_name(EPISODE_DEPLOYMENT)
        return await client.create_flow_run_from_deployment(
            deployment.id, name=job.id, tags=[campaign_tag("outage-probe")],
            parameters=dict(job=job.model_dump(mode="json"), resources=pool_params(job, resources),
                            results_dir=str(results), evaluator_options={**SIM, "steps": 4000}, campaign="outage-probe"),
        )


async def logged(run_ids, text: str) -> int:
    """How many of these runs' logs on the server say `text`."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(run_ids))), limit=200)
    return sum(text in log.message for log in logs)


async def state_of(run_id):
    async with get_client() as client:
        return (await client.read_flow_run(run_id)).state


async def cancel(run_id) -> None:
    async with get_client() as client:
        await client.set_flow_run_state(run_id, Cancelling(message="cancelled after the outage"))


def lines(text: str, *words: str) -> list[str]:
    """The lines with any of `words`, but the probe's (its cancel is logged at ERROR by Prefect)."""
    return [line for line in text.splitlines() if any(word in line for word in words) and "'probe/" not in line]


def test_a_45_s_api_outage_costs_no_attempt_and_no_cancel(tmp_path, new_database):
    busy = tmp_path / "busy.jsonl"
    fleet, resources = make_fleet({"ao_1": [1], "ao_2": [1], "probe_1": [1]}, log_path=busy)
    jobs = [make_job(tmp_path, "ao", "pick", i, ["ao_1", "ao_2"]) for i in range(8)]
    probe_job = make_job(tmp_path, "probe", "pick", 1, ["probe_1"])
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    results, runner_log = tmp_path / "results", tmp_path / "runner.log"
    argv = [sys.executable, "-m", "flows.cli", "campaign", "run", "--jobs", str(jobs_file), "--resources",
            str(resources_file), "--results-dir", str(results), "--name", NAME,
            "--max-attempts", "1", "--stats-interval", "10",
            *(arg for key, value in SIM.items() for arg in ("--evaluator-option", f"{key}={value}"))]
    with EmbeddedServer(tmp_path / "prefect", ui=False, extra_env=new_database()) as server, use_api(server.api_url), fleet:
        asyncio.run(prepare_api())
        runner = start_worker(server.api_url, limit=6, log_path=runner_log)
        output = tmp_path / "campaign.log"
        with open(output, "wb") as log:
            command = subprocess.Popen(argv, env={**os.environ, "PREFECT_API_URL": server.api_url}, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: asyncio.run(runs_tagged(NAME)), 180, "the first episode", detail=lambda: output.read_text()[-2000:])
            probe = asyncio.run(start_probe(probe_job, resources, results))
            playing = lambda: (s := asyncio.run(state_of(probe.id))).name == RUNNING_STATE and "on " in (s.message or "")  # noqa: E731
            waiting = lambda: any(run.state_name == WAITING_STATE for run in asyncio.run(runs_tagged(NAME)))  # noqa: E731
            wait_for(lambda: playing() and list(results.rglob("*.json")) and waiting(), 180,
                     "the probe playing, an episode done and one waiting", detail=lambda: output.read_text()[-2000:])
            server.stop()
            time.sleep(OUTAGE_SECONDS)
            server.start()
            asyncio.run(cancel(probe.id))
            asked = time.monotonic()
            ended = wait_for(lambda: (s := asyncio.run(state_of(probe.id))).is_final() and s, 120, "the probe to stop",
                             interval=0.2)
            obeyed = time.monotonic() - asked
            print(f"cancel obeyed {obeyed:.1f} s after it was issued (goal: 10 s)")
            command.wait(600)
        finally:
            if command.poll() is None:
                command.kill()
            terminate_group(runner)
        runs = asyncio.run(runs_tagged(NAME))
        busy_slots = asyncio.run(limit_counts(resources))
        # No log line lost: those written during the outage were sent after it.
        wait_for(lambda: asyncio.run(logged([run.id for run in runs], "Metrics written")) == len(jobs), 30,
                 "every episode's last log line on the server")
    text, runner_text = output.read_text(), runner_log.read_text()
    assert command.returncode == 0, text[-3000:]
    assert ended.type == StateType.CANCELLED, ended
    assert obeyed < CANCEL_OBEYED_SECONDS, obeyed
    assert sorted(run.name for run in runs) == sorted(episode_run_name(NAME, job.id) for job in jobs)  # one run per job: no attempt lost
    assert all(run.state.type == StateType.COMPLETED for run in runs), [(run.name, run.state) for run in runs]
    played = [json.loads(line)["episode"] for line in busy.read_text().splitlines()]
    assert sorted(played) == sorted([job.id for job in jobs] + [probe_job.id])  # each played exactly once
    assert all(s.violations == 0 and s.max_active <= s.capacity for s in fleet.stats().values())
    assert set(busy_slots.values()) == {0}, busy_slots
    for where, log in (("campaign", text), ("runner", runner_text)):
        assert not lines(log, "ERROR", "Traceback", "CRITICAL", "Error logging to API"), f"{where}: {log[-4000:]}"
        assert len(lines(log, "WARNING")) == 1 and AWAY_MESSAGE in lines(log, "WARNING")[0], f"{where}: {log[-4000:]}"
        assert len(lines(log, BACK_MESSAGE)) == 1, f"{where}: {log[-4000:]}"
