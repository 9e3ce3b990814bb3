"""What the campaign decides for its episodes (real worker, server and policy servers):
the episode timeout it passes down, configuration errors that stop it, retry requests."""

from __future__ import annotations

import asyncio
import os
import sys

from flows.campaign.flow import campaign
from generate.models import Resources
from kit import campaign_log, make_fleet, make_job, wait_for, write_inputs
from test_campaign import FAST_SIM, campaign_runs, run_campaign


def test_the_campaigns_episode_timeout_reaches_the_episode(episode_worker, tmp_path):
    # Failed before the fix: the campaign had no `timeout_seconds`, every episode got 3600 s.
    fleet, resources = make_fleet({"slow_1": [1]})
    pid_file = tmp_path / "evaluator.pid"
    program = f"import os,sys,time; open({str(pid_file)!r},'w').write(str(os.getpid())); print('READY',flush=True); sys.stdin.readline(); time.sleep(120)"
    jobs = [make_job(tmp_path, "slow", "pick", 1, ["slow_1"])]
    with fleet:
        summary = run_campaign(tmp_path, jobs, resources, "episode-timeout", max_attempts=1, timeout_seconds=2,
                               evaluator=f'command:{sys.executable} -c "{program}"', evaluator_options={})
    assert list(summary["failed"]) == ["slow/pick/1"]
    assert "exceeded 2 s" in summary["failed"]["slow/pick/1"]
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the evaluator program outlived its episode's timeout"


def test_a_configuration_error_stops_the_campaign_without_retries(episode_worker, tmp_path):
    # Failed before the fix: PoolNotApplied ended the episode as a plain Failed, so each job
    # was tried --max-attempts times and the campaign went on to "complete".
    fleet, resources = make_fleet({"odd_1": [1]})
    server = resources.servers("odd_1")[0].model_dump(mode="json")
    resources = Resources.model_validate({"odd_1": [{**server, "compatible_task": ["open"]}]})  # none serves "pick"
    jobs = [make_job(tmp_path, "odd", "pick", i, ["odd_1"]) for i in range(4)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    with fleet:
        state = asyncio.run(campaign(
            jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
            name="misconfigured", evaluator_options=FAST_SIM, max_attempts=3, tick_seconds=0.2, return_state=True,
        ))
    assert state.is_failed()
    assert state.message.startswith("configuration error, campaign stopped: odd/pick/")
    assert "no compatible server" in state.message
    runs = asyncio.run(campaign_runs("misconfigured"))
    assert runs and all("(attempt" not in run.name for run in runs)  # nothing requeued
    assert len(runs) < len(jobs) * 3


def test_a_retry_from_evaltui_goes_through_the_campaign(episode_worker, tmp_path):
    # Failed before the fix: evaltui forced Scheduled on the settled run, behind the campaign's
    # back, so failed.txt listed a job that the retried run then completed (or raced a requeue).
    import threading

    from prefect import get_client

    from flows.runtime.api import use_api
    from flows.campaign.rerun_requests import pending_requests
    from tui.source import Source

    fleet, resources = make_fleet({"gate_1": [2]})
    jobs = [make_job(tmp_path, "gate", "pick", i, ["gate_1"]) for i in range(2)]
    release = tmp_path / "release"
    options = {"fail_once": str(tmp_path / "failed-once"), "release": str(release)}
    name = "retry-request"

    async def failed_run():
        for _ in range(600):
            runs = [r for r in await campaign_runs(name) if r.name == f"{name}:gate/pick/0" and r.state and r.state.is_failed()]
            if runs:
                return runs[0].id
            await asyncio.sleep(0.2)
        raise AssertionError("gate/pick/0 never failed")

    async def retry_then_release():
        run_id = await failed_run()
        async with Source(name) as source:
            said.append(await source.retry(run_id))
        async with get_client() as client:
            for _ in range(600):  # the campaign took the request: let the other job end
                if not await pending_requests(client, name):
                    break
                await asyncio.sleep(0.2)
        release.touch()

    def helper_thread():
        with use_api(os.environ["PREFECT_API_URL"]):  # Prefect's settings context is per thread
            asyncio.run(retry_then_release())

    said: list[str] = []
    helper = threading.Thread(target=helper_thread)
    with fleet:
        helper.start()
        try:
            summary = run_campaign(tmp_path, jobs, resources, name, max_attempts=1, tick_seconds=0.2,
                                   evaluator="tests.sample_evaluators:GatedEvaluator", evaluator_options=options)
        finally:
            release.touch()
            helper.join(60)
    assert said == [f"gate/pick/0: retry requested from campaign {name}"]
    assert summary["done"] == 2 and summary["failed"] == {}
    assert (tmp_path / "results" / "failed.txt").read_text() == ""
    names = sorted(run.name for run in asyncio.run(campaign_runs(name)))
    assert names == [f"{name}:gate/pick/0", f"{name}:gate/pick/0 (attempt 2)", f"{name}:gate/pick/1"]


async def pause_value(name: str, value: bool | None = None):
    """The campaign's pause variable (set first when `value` is given)."""
    from prefect.variables import Variable

    from flows.naming import pause_variable

    if value is not None:
        await Variable.aset(pause_variable(name), value, overwrite=True)
    return await Variable.aget(pause_variable(name), default=None)


def test_a_pause_belongs_to_its_invocation(episode_worker, tmp_path):
    # Failed before the fix: the second invocation started "Dispatch paused" by the first one's
    # variable, and nothing said why or how to resume.
    import threading
    import time

    from flows.runtime.api import use_api

    fleet, resources = make_fleet({"pause_1": [1]})
    seen: dict = {}

    def resume_later():
        with use_api(os.environ["PREFECT_API_URL"]):
            wait_for(lambda: asyncio.run(pause_value("pause-start")) is True, 60, "the campaign to start paused")
            time.sleep(3)  # a few of its ticks: nothing may be dispatched meanwhile
            seen["runs while paused"] = len(asyncio.run(campaign_runs("pause-start")))
            asyncio.run(pause_value("pause-start", False))

    resumer = threading.Thread(target=resume_later)
    asyncio.run(pause_value("pause-left", True))  # as an earlier invocation (evaltui's `p`) left it
    with fleet:
        left = run_campaign(tmp_path, [make_job(tmp_path, "pause", "pick", 0, ["pause_1"])], resources, "pause-left")
        resumer.start()
        try:  # --paused: this invocation starts paused, and dispatches once resumed
            started = run_campaign(tmp_path, [make_job(tmp_path, "pause", "pick", 1, ["pause_1"])], resources, "pause-start", paused=True)
        finally:
            resumer.join(90)
    assert left["done"] == 1
    assert asyncio.run(pause_value("pause-left")) is False
    wait_for(lambda: any("left dispatch paused: this one starts unpaused" in line for line in asyncio.run(campaign_log("pause-left"))),
             30, "the campaign to say it cleared the old pause")
    assert seen["runs while paused"] == 0 and started["done"] == 1
