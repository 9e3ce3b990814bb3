"""The `kubernetes-job` flow: the organizers' image runs as it is and Prefect stays outside the pod.

Against a real Prefect server and the session's warm runner (`evalq runner`, the `episode_worker`
fixture), with the Kubernetes API mocked by kmock on loopback (`kube_cluster.py`: no API server
can run here). `evalq k8s submit` queues a run of prefect.yaml's `kubernetes-job` deployment;
the runner runs it; the flow creates the ConfigMap and the Job, streams the pod's lines into the
run's log, ends Completed or Failed with the Job, and deletes the Job when the run is cancelled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("prefect_kubernetes")
pytest.importorskip("kmock")

from flows.cli.root import app  # noqa: E402
from kit import wait_for  # noqa: E402
from kube_cluster import Cluster, kubeconfig  # noqa: E402

DATA = Path(__file__).resolve().parent / "data_kubernetes"
DEPLOYMENT = "kubernetes-job/k8s-job-test"
COMMIT = "10abfb1bf8a0fd1ff65751521daaa0cd76fbc85d"
LINES = ["INFO loading model from /scratch/model/model", "HELM boolq: 10 instances", "exact_match 0.62"]


@pytest.fixture(scope="module")
def job_deployment(episode_worker):
    """prefect.yaml's `kubernetes-job/runner`, on the pool the session's runner serves."""
    from prefect import get_client

    from flows.runtime.deployments import apply_deployments
    from flows.naming import LOCAL_WORK_POOL

    async def apply():
        async with get_client() as client:
            return await apply_deployments(client, "runner", work_pool=LOCAL_WORK_POOL, as_name="k8s-job-test")

    async def runners() -> int:
        from workpools.local.submit import online_workers

        async with get_client() as client:
            return await online_workers(client, LOCAL_WORK_POOL)

    assert DEPLOYMENT in asyncio.run(apply())
    wait_for(lambda: asyncio.run(runners()), 60, "the session's runner to poll its pool")
    return DEPLOYMENT


@pytest.fixture
def cluster(prefect_server):
    """The emulated cluster, and a KubernetesCredentials block (saved on the Prefect server) reaching it."""
    from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials

    with Cluster(LINES) as cluster:
        cluster.block = f"kmock-{uuid.uuid4().hex[:8]}"
        credentials = KubernetesCredentials(cluster_config=KubernetesClusterConfig(config=kubeconfig(cluster.url), context_name="kmock"))
        credentials.save(cluster.block)
        yield cluster


@pytest.fixture
def old_config(tmp_path) -> tuple[Path, Path]:
    """The old GKE tool's documented example config and its run specs, as its users keep them."""
    for name in ("example.mlflow.job_config.yml", "pythia_run_specs.conf"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path / "example.mlflow.job_config.yml", tmp_path / "pythia_run_specs.conf"


def submit(cluster, config: Path, run_specs: Path, namespace: str, *extra: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, [
        "k8s", "submit", str(config), str(run_specs), "--config-version", COMMIT, "--deployment", DEPLOYMENT,
        "--credentials", cluster.block, "--poll-seconds", "1", "--namespace", namespace, *extra,
    ])
    assert result.exit_code == 0, result.output
    # The server it used, and no warning: the session's runner polls the pool.
    assert result.stderr.splitlines() == [f"Prefect server: {os.environ['PREFECT_API_URL']} (PREFECT_API_URL)"]
    job_name, url = result.stdout.strip().split("\t")
    return job_name, url.rstrip("/").rsplit("/", 1)[-1]


def read_run(run_id: str):
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    return asyncio.run(read())


def final_state(run_id: str, timeout: float = 120):
    return wait_for(lambda: (state := read_run(run_id).state) and state.is_final() and state, timeout, f"run {run_id} to end")


def log_messages(run_id: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))

    return [log.message for log in asyncio.run(read())]


def test_a_submitted_run_creates_the_configmap_and_job_and_completes_with_it(job_deployment, cluster, old_config):
    config, run_specs = old_config
    job_name, run_id = submit(cluster, config, run_specs, "eval-ok")
    wait_for(lambda: cluster.started(job_name), 120, "the Job to be created")
    assert read_run(run_id).state.is_running()
    posts = [(path, body) for method, path, body in cluster.requests() if method == "POST"]
    assert [path for path, _ in posts] == ["/api/v1/namespaces/eval-ok/configmaps", "/apis/batch/v1/namespaces/eval-ok/jobs"]
    config_map, job = posts[0][1], posts[1][1]
    assert config_map["data"]["eval_config.yml"] == config.read_text()
    assert config_map["data"]["pythia_run_specs.conf"] == run_specs.read_text()
    assert job["metadata"]["name"] == job_name and job_name.startswith("eval-")
    assert job["metadata"]["labels"]["evalq.io/flow-run-id"] == run_id
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["CONFIG_VERSION"], env["JOB_NAME"]) == (COMMIT, job_name)
    owners = wait_for(lambda: cluster.objects("v1/configmaps", "eval-ok")[f"{job_name}-configs"]["metadata"].get("ownerReferences"),
                      30, "the Job to own its ConfigMap")
    owner = owners[0]
    assert (owner["kind"], owner["name"]) == ("Job", job_name)

    wait_for(lambda: all(line in log_messages(run_id) for line in LINES[:2]), 60, "the pod's lines in the run's log")
    cluster.finish("eval-ok", job_name, succeeded=True)
    state = final_state(run_id)
    assert state.is_completed(), state.message
    assert all(line in log_messages(run_id) for line in LINES)
    run = read_run(run_id)
    assert run.name == job_name
    assert {"experiment:eval-test-debug", "creator:Jasper", "model-run-id:3969f731d3f74fd19cfed62a9aa26d69",
            "accelerator:nvidia-tesla-t4", "image-tag:latest", f"config-commit:{COMMIT[:12]}"} <= set(run.tags)
    assert job_name in cluster.objects("batch/v1/jobs", "eval-ok")  # its TTL removes it, not the flow


def test_a_failed_job_fails_the_run(job_deployment, cluster, old_config):
    config, run_specs = old_config
    job_name, run_id = submit(cluster, config, run_specs, "eval-fail")
    wait_for(lambda: cluster.started(job_name), 120, "the Job to be created")
    cluster.finish("eval-fail", job_name, succeeded=False)
    state = final_state(run_id)
    assert state.is_failed()
    assert "BackoffLimitExceeded" in state.message
    wait_for(lambda: LINES[-1] in log_messages(run_id), 30, "the failed pod's lines in the run's log")


def test_cancelling_the_run_deletes_the_job_and_its_configmap(job_deployment, cluster, old_config):
    from prefect import get_client
    from prefect.states import Cancelling

    config, run_specs = old_config
    job_name, run_id = submit(cluster, config, run_specs, "eval-cancel")
    wait_for(lambda: cluster.started(job_name), 120, "the Job to be created")
    wait_for(lambda: LINES[0] in log_messages(run_id), 60, "the pod's first line")

    async def cancel():
        async with get_client() as client:
            await client.set_flow_run_state(run_id, Cancelling(), force=True)

    asyncio.run(cancel())
    state = final_state(run_id)
    assert state.is_cancelled(), state
    deleted = [path for method, path, _ in cluster.requests() if method == "DELETE"]
    assert f"/apis/batch/v1/namespaces/eval-cancel/jobs/{job_name}" in deleted
    assert job_name not in cluster.objects("batch/v1/jobs", "eval-cancel")
    assert f"{job_name}-configs" not in cluster.objects("v1/configmaps", "eval-cancel")


def test_the_pods_lines_reach_cloud_logging_and_read_back_by_job_name(prefect_server, cluster, old_config, tmp_path, monkeypatch):
    """With EVALQ_CLOUD_LOGGING=1 where the flow runs (here: in this process), the pod's lines also go to
    Cloud Logging labelled with the Job's name, and `evalq k8s logs JOB_NAME` reads them back."""
    import json
    import threading

    from flows.cloudlogging.attach import close_cloud_logging
    from logging_endpoint import LoggingEndpoint
    from workpools.kubernetes.flow import kubernetes_job
    from workpools.kubernetes.submission import JobRequest, read_job_spec

    config, run_specs = old_config
    spec = tmp_path / "spec.yml"
    result = CliRunner().invoke(app, ["k8s", "render", str(config), str(run_specs), "--output", str(spec),
                                      "--namespace", "eval-gcl", "--job-name", "eval-cloud-lines", "--config-version", COMMIT])
    assert result.exit_code == 0, result.output
    job, config_map = read_job_spec(spec)
    request = JobRequest(job=job, config_map=config_map, credentials=cluster.block, poll_seconds=1)

    def end_the_pod():
        wait_for(lambda: cluster.started("eval-cloud-lines"), 60, "the Job")
        cluster.finish("eval-gcl", "eval-cloud-lines", succeeded=True)

    with LoggingEndpoint() as endpoint:
        for name, value in {"EVALQ_LOGGING_ENDPOINT": endpoint.url, "GOOGLE_CLOUD_PROJECT": "evalq-test",
                            "EVALQ_CLOUD_LOGGING": "1", "EVALQ_CLOUD_LOGGING_NAME": "evaluations"}.items():
            monkeypatch.setenv(name, value)
        ender = threading.Thread(target=end_the_pod)
        ender.start()
        try:
            state = asyncio.run(kubernetes_job(request, return_state=True))
        finally:
            ender.join(60)
            close_cloud_logging()
        assert state.is_completed(), state.message
        entries = [e for e in endpoint.entries if (e.get("labels") or {}).get("job_name") == "eval-cloud-lines"]
        assert [line for line in LINES if any(e.get("textPayload") == line for e in entries)] == LINES
        assert {e["logName"] for e in entries} == {"projects/evalq-test/logs/evaluations"}
        output = tmp_path / "logs.json"
        result = CliRunner().invoke(app, ["k8s", "logs", "eval-cloud-lines", "--since", "3d", "--output", str(output)])
        assert result.exit_code == 0, result.output
        assert set(LINES) <= {entry["payload"] for entry in json.loads(output.read_text())}


def test_a_rerun_follows_its_own_job_and_never_takes_another_runs(cluster, old_config, tmp_path):
    """A run whose process died (a runner restarted) runs again: its Job exists already, labelled with
    the run's id, and is followed, not created twice; a Job of the same name from another run is refused."""
    import logging

    from prefect_kubernetes.credentials import KubernetesCredentials
    from prefect_kubernetes.jobs import KubernetesJob

    from workpools.kubernetes.flow import JobExists, labelled, start
    from workpools.kubernetes.submission import read_job_spec

    config, run_specs = old_config
    spec = tmp_path / "spec.yml"
    CliRunner().invoke(app, ["k8s", "render", str(config), str(run_specs), "--output", str(spec), "--namespace", "eval-rerun",
                             "--job-name", "eval-second-try", "--config-version", COMMIT])
    manifest, config_map = read_job_spec(spec)
    credentials = KubernetesCredentials.load(cluster.block)
    logger = logging.getLogger("test.rerun")

    async def attempt(run_id):
        job = KubernetesJob(v1_job=labelled(manifest, run_id), credentials=credentials, namespace="eval-rerun")
        return await start(job, labelled(config_map, run_id), run_id, logger)

    run_id = uuid.uuid4()
    first, again = asyncio.run(attempt(run_id)), asyncio.run(attempt(run_id))
    assert first.v1_job_model["metadata"]["name"] == again.v1_job_model["metadata"]["name"] == "eval-second-try"
    created = [path for method, path, _ in cluster.requests() if method == "POST"]
    assert created.count("/apis/batch/v1/namespaces/eval-rerun/jobs") == 2  # the second POST met the first Job (409)
    assert list(cluster.objects("batch/v1/jobs", "eval-rerun")) == ["eval-second-try"]
    with pytest.raises(JobExists, match="ConfigMap named eval-second-try-configs already exists"):
        asyncio.run(attempt(uuid.uuid4()))


def test_a_run_that_sees_its_own_cancel_deletes_the_job(prefect_server, cluster, old_config, tmp_path):
    """Where nothing cancels the flow's task (Prefect's process worker leaves a running run Cancelling),
    the flow notices the cancel itself, deletes the Job and its ConfigMap, and ends Cancelled."""
    import contextvars
    import threading

    from prefect import get_client
    from prefect.states import Cancelling

    from workpools.kubernetes.flow import RUN_LABEL, kubernetes_job
    from workpools.kubernetes.submission import JobRequest, read_job_spec

    config, run_specs = old_config
    spec = tmp_path / "spec.yml"
    CliRunner().invoke(app, ["k8s", "render", str(config), str(run_specs), "--output", str(spec), "--namespace", "eval-self",
                             "--job-name", "eval-own-cancel", "--config-version", COMMIT])
    job, config_map = read_job_spec(spec)

    def cancel_once_started():
        wait_for(lambda: cluster.started("eval-own-cancel"), 60, "the Job")
        run_id = cluster.objects("batch/v1/jobs", "eval-self")["eval-own-cancel"]["metadata"]["labels"][RUN_LABEL]

        async def cancel():
            async with get_client() as client:
                await client.set_flow_run_state(run_id, Cancelling(), force=True)

        asyncio.run(cancel())

    # Prefect's settings (this server's address) live in the context: the thread runs in a copy of ours
    canceller = threading.Thread(target=contextvars.copy_context().run, args=(cancel_once_started,))
    canceller.start()
    try:
        state = asyncio.run(kubernetes_job(JobRequest(job=job, config_map=config_map, credentials=cluster.block), return_state=True))
    finally:
        canceller.join(60)
    assert state.is_cancelled(), state
    assert "Job eval-own-cancel and its pods were deleted" in state.message
    assert cluster.objects("batch/v1/jobs", "eval-self") == {}
    assert cluster.objects("v1/configmaps", "eval-self") == {}
