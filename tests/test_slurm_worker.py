"""The SLURM worker end to end: a real single-node cluster (`.ci/slurm-up`), the session's real
Prefect server, a work pool of type `evalq-slurm` and a `prefect worker start --type evalq-slurm`
subprocess. Every flow run below is one SLURM job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import UUID

import pytest

from flows.runtime.process_groups import terminate_group
from workpools.slurm import WORK_POOL_TYPE, base_job_template, commands
from workpools.slurm.variables import SlurmJobConfiguration
from workpools.slurm.worker import SETTLE_SECONDS, SlurmWorker


def cluster_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed here: run `.ci/slurm-up` as root first"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: the SLURM controller is not answering (run `.ci/slurm-up`)"
    states = result.stdout.split()
    if result.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
        return f"SLURM cluster is down (sinfo: {result.stderr.strip() or states}); run `.ci/slurm-up`"
    return None


PROBLEM = cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]

POOL = "evalq-slurm-test"
PROBE_FLOW = '''
import json, os, time
from prefect import flow

@flow(name="slurm-probe")
def probe(out: str, sleep: float = 0.0) -> None:
    """Write what the job's environment says, then stay busy for `sleep` seconds."""
    keys = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "PREFECT_API_URL")
    with open(out, "w") as handle:
        json.dump({key: os.environ.get(key) for key in keys}, handle)
    time.sleep(sleep)
'''


class Cluster:
    """The deployment on the SLURM pool, and helpers to start and watch its flow runs."""

    def __init__(self, home: Path, deployment_id: UUID, worker: subprocess.Popen, worker_log: Path):
        self.home = home
        self.deployment_id = deployment_id
        self.worker = worker
        self.worker_log = worker_log

    def start(self, name: str, sleep: float = 0.0, **job_variables) -> UUID:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                self.deployment_id, name=name, parameters={"out": str(self.out(name)), "sleep": sleep},
                job_variables=job_variables,
            )
        return run.id

    def out(self, name: str) -> Path:
        return self.home / f"{name}.json"

    def environment(self, name: str) -> dict:
        return json.loads(self.out(name).read_text())

    def wait(self, run_id: UUID, until, timeout: float = 60.0, what: str = "a final state"):
        """Poll the flow run until `until(run)`; fail with its state and the worker's log."""
        from prefect import get_client

        deadline = time.monotonic() + timeout
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(run_id)
                if until(run):
                    return run
                if time.monotonic() > deadline:
                    state = run.state and (run.state.name, run.state.message)
                    log = self.worker_log.read_text()[-4000:]
                    raise AssertionError(f"flow run {run.name} not at {what} after {timeout:.0f} s: {state}\n{log}")
                time.sleep(0.5)

    def wait_final(self, run_id: UUID, timeout: float = 60.0):
        return self.wait(run_id, lambda run: run.state is not None and run.state.is_final(), timeout)

    def wait_slurm_end(self, run_id: UUID, timeout: float = 60.0):
        """Until the worker has reported how the SLURM job ended (the engine may report a bare
        crash on SIGTERM first; the worker then names the SLURM state and reason)."""
        return self.wait(run_id, lambda run: run.state is not None and run.state.is_final()
                         and "SLURM job" in (run.state.message or ""), timeout, "a final state naming SLURM's end")

    def wait_running(self, run_id: UUID, timeout: float = 60.0):
        return self.wait(run_id, lambda run: run.state is not None and run.state.is_running() and run.infrastructure_pid,
                         timeout, "Running")


def slurm_state(job_id: str, expected: str | None = None, timeout: float = 30.0) -> str:
    """The job's SLURM state; with `expected`, once it is that (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        job = asyncio.run(commands.job(job_id))
        state = job.state if job else "UNKNOWN"
        if expected is None or state == expected or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


@contextlib.contextmanager
def slurm_cluster(prefect_server, home: Path, pool: str, worker_name: str):
    """A work pool `pool` of type evalq-slurm, the probe deployment on it and a worker for it."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    (home / "probe_flow.py").write_text(PROBE_FLOW)
    template = base_job_template()
    defaults = {"poll_seconds": 1, "partition": "debug", "output": str(home / "slurm-%j.out")}
    for key, value in defaults.items():
        template["variables"]["properties"][key]["default"] = value
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type=WORK_POOL_TYPE, base_job_template=template))
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("slurm-probe"), name=pool, work_pool_name=pool,
            entrypoint="probe_flow.py:probe", enforce_parameter_schema=False,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(home)}}],
        )

    worker_log = home / "worker.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    argv = [sys.executable, "-m", "prefect", "worker", "start",
            "--pool", pool, "--type", WORK_POOL_TYPE, "--name", worker_name]
    with open(worker_log, "ab") as log:
        worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        yield Cluster(home, deployment_id, worker, worker_log)
    finally:
        terminate_group(worker)


@pytest.fixture(scope="module")
def cluster(prefect_server, tmp_path_factory):
    with slurm_cluster(prefect_server, tmp_path_factory.mktemp("slurm"), POOL, "slurm-test") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def timed_out_run(cluster) -> UUID:
    """A flow run over its one-minute time limit, started early so the limit runs out while
    the other tests run (SLURM counts limits in minutes and checks them every 30 s)."""
    return cluster.start("over-time", sleep=600, time_limit="1")


def test_flow_run_completes_through_slurm(cluster, timed_out_run, prefect_server):
    run_id = cluster.start("hello")
    run = cluster.wait_final(run_id, timeout=90)
    assert run.state.is_completed(), run.state
    seen = cluster.environment("hello")
    assert seen["SLURM_JOB_ID"] == run.infrastructure_pid
    assert seen["PREFECT_API_URL"] == prefect_server.api_url
    assert seen["CUDA_VISIBLE_DEVICES"] is None
    assert slurm_state(run.infrastructure_pid, "COMPLETED") == "COMPLETED"


def test_gpu_request_sets_cuda_visible_devices(cluster):
    run = cluster.wait_final(cluster.start("one-gpu", gpus=1))
    assert run.state.is_completed(), run.state
    devices = cluster.environment("one-gpu")["CUDA_VISIBLE_DEVICES"]
    assert devices is not None and len(devices.split(",")) == 1 and devices.isdigit()


def test_scancel_crashes_the_flow_run_with_the_reason(cluster):
    run = cluster.wait_running(cluster.start("scancelled", sleep=600))
    subprocess.run(["scancel", run.infrastructure_pid], check=True)
    run = cluster.wait_slurm_end(run.id)
    assert run.state.is_crashed(), run.state
    assert f"SLURM job {run.infrastructure_pid} ended CANCELLED" in run.state.message


def assert_cancelling_scancels(cluster: Cluster, run_id: UUID) -> None:
    """Cancel the flow run in Prefect: it ends Cancelled and its SLURM job CANCELLED."""
    from prefect import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling())
    run = cluster.wait_final(run_id)
    assert slurm_state(run.infrastructure_pid, "CANCELLED") == "CANCELLED"
    # Once the job is gone: the engine, SIGTERMed by scancel, may have forced a bare Crashed over
    # the worker's Cancelled, which the worker replaces while it settles the job's end.
    run = cluster.wait(run_id, lambda run: run.state is not None and run.state.is_cancelled(),
                       timeout=SETTLE_SECONDS + 20, what="Cancelled")
    assert run.state.is_cancelled(), run.state


def test_cancelling_in_prefect_scancels_the_job(cluster):
    run = cluster.wait_running(cluster.start("cancelled-in-prefect", sleep=600))
    assert_cancelling_scancels(cluster, run.id)


def test_cancelling_a_job_still_queued_in_slurm(cluster):
    run_id = cluster.start("held", extra_sbatch=["--hold"])
    run = cluster.wait(run_id, lambda run: bool(run.infrastructure_pid), what="submitted")
    assert slurm_state(run.infrastructure_pid) == "PENDING"
    assert_cancelling_scancels(cluster, run_id)


def test_rejected_submission_crashes_the_flow_run(cluster):
    run = cluster.wait_final(cluster.start("bad-partition", partition="no-such-partition"))
    assert run.state.is_crashed(), run.state
    assert "invalid partition" in run.state.message.lower()


def test_kill_infrastructure_scancels_and_knows_finished_jobs():
    from prefect.exceptions import InfrastructureNotFound

    async def scenario():
        job_id = await commands.submit("#!/bin/bash\n#SBATCH --hold\ntrue\n", dict(os.environ))
        worker = SlurmWorker(work_pool_name=POOL)
        await worker.kill_infrastructure(job_id, SlurmJobConfiguration())
        assert (await commands.job(job_id)).state == "CANCELLED"
        with pytest.raises(InfrastructureNotFound):
            await worker.kill_infrastructure(job_id, SlurmJobConfiguration())

    asyncio.run(scenario())


def test_campaign_runs_through_slurm_and_requeues_a_scancelled_episode(cluster, tmp_path):
    """A whole campaign whose episodes are SLURM jobs (prefect.yaml's `slurm` deployment, one GPU
    each, on the test pool); one is scancelled while it loads its simulator (before it holds a
    policy server), ends Crashed and is requeued by the campaign."""
    import yaml
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.campaign.flow import campaign
    from flows.runtime.deployments import apply_deployments, load_specs
    from flows.naming import LOADING_STATE, campaign_tag
    from kit import make_fleet, make_job, write_inputs

    # The project's own definition, renamed so the session's `evaluate-episode/slurm` stays as it is.
    spec = next(s for s in load_specs() if s["name"] == "slurm" and s["entrypoint"].endswith(":evaluate_episode"))
    spec_file = tmp_path / "prefect.yaml"
    spec_file.write_text(yaml.safe_dump({"deployments": [{**spec, "name": "slurm-test"}]}))

    async def deploy_and_list(name: str | None = None):
        async with get_client() as client:
            if name is None:
                return await apply_deployments(client, "slurm-test", path=spec_file, work_pool=POOL)
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[campaign_tag(name)])),
                sort=FlowRunSort.ID_DESC, limit=100,  # this server rejects a null sort or limit
            )

    asyncio.run(deploy_and_list())
    fleet, resources = make_fleet({"slurm_1": [1, 1]})
    jobs = [make_job(tmp_path, "team", "pick", i, ["slurm_1"]) for i in range(3)]
    jobs_file, resources_file = write_inputs(tmp_path, jobs, resources)
    scancelled: dict = {}

    def scancel_one_while_loading():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not scancelled:
            for run in asyncio.run(deploy_and_list("via-slurm")):
                if run.state and run.state.name == LOADING_STATE and run.infrastructure_pid:
                    subprocess.run(["scancel", run.infrastructure_pid], check=True)
                    scancelled["name"] = run.name
                    return
            time.sleep(0.3)

    # The copied context carries the session's Prefect settings (they live in a context variable).
    killer = threading.Thread(target=contextvars.copy_context().run, args=(scancel_one_while_loading,))
    with fleet:
        killer.start()
        state = asyncio.run(campaign(
            jobs_file=str(jobs_file), resources_file=str(resources_file), results_dir=str(tmp_path / "results"),
            name="via-slurm", deployment="evaluate-episode/slurm-test", stats_interval=5.0,
            evaluator_options={"load_seconds": 3.0, "steps": 4, "step_seconds": 0.05}, return_state=True,
        ))
        killer.join()
    assert state.is_completed(), state.message
    summary = state.result()
    assert scancelled, "no episode was seen loading"
    assert summary["done"] == len(jobs) and summary["retried"] >= 1 and not summary["failed"], summary
    runs = asyncio.run(deploy_and_list("via-slurm"))
    assert f"{scancelled['name']} (attempt 2)" in {run.name for run in runs}
    assert all(run.infrastructure_pid for run in runs)  # every episode was a SLURM job
    for job in jobs:
        assert json.loads(job.metrics_path(tmp_path / "results").read_text())["evalq"]["job_id"] == job.id


def test_first_ctrl_c_stops_the_worker_and_leaves_the_job_to_finish(prefect_server, tmp_path):
    """The worker only follows its jobs: stopped, it exits at once, and a job in flight runs on
    (its engine reports its own end; a job that dies later is the zombie automation's)."""
    with slurm_cluster(prefect_server, tmp_path, f"{POOL}-stop", "slurm-stop") as own:
        run = own.wait_running(own.start("outlives-its-worker", sleep=40))
        own.worker.send_signal(signal.SIGINT)
        try:
            own.worker.wait(25)  # a worker waiting for its job would still be here (the job runs 40 s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after SIGINT:\n{own.worker_log.read_text()[-3000:]}") from None
        assert slurm_state(run.infrastructure_pid) in ("RUNNING", "COMPLETING", "COMPLETED")
        assert own.wait_final(run.id, timeout=120).state.is_completed()
        assert slurm_state(run.infrastructure_pid, "COMPLETED", timeout=60) == "COMPLETED"  # while the API listens


def test_time_limit_crashes_the_flow_run_with_timeout(cluster, timed_out_run):
    run = cluster.wait_slurm_end(timed_out_run, timeout=180)
    assert run.state.is_crashed(), run.state
    assert f"SLURM job {run.infrastructure_pid} ended TIMEOUT" in run.state.message
    assert "TimeLimit" in run.state.message


def test_node_failure_crashes_the_flow_run_and_slurm_does_not_rerun_it(cluster):
    """Last, as it takes the node down for a moment (only on the test cluster of `.ci/slurm-up`)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    if "ClusterName             = evalq" not in config:
        pytest.skip("not the .ci/slurm-up test cluster: will not take a node down")
    run = cluster.wait_running(cluster.start("node-failure", sleep=600))
    squeue = ["squeue", "-h", "-j", run.infrastructure_pid, "-o", "%N"]
    node = subprocess.run(squeue, capture_output=True, text=True).stdout.strip()
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=evalq-test"], check=True)
    try:
        run = cluster.wait_slurm_end(run.id)
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)  # may be back already
        deadline = time.monotonic() + 30
        while cluster_problem() is not None and time.monotonic() < deadline:
            time.sleep(0.5)
    assert run.state.is_crashed(), run.state
    assert f"SLURM job {run.infrastructure_pid} ended NODE_FAIL" in run.state.message and "NodeDown" in run.state.message
    assert slurm_state(run.infrastructure_pid) == "NODE_FAIL"  # --no-requeue: not pending again
    assert cluster_problem() is None, "the node did not come back"
