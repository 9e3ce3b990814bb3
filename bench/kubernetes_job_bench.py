"""Benchmark: what following a Kubernetes Job from outside the pod costs in time (issue 24).

    python bench/kubernetes_job_bench.py --runs 5 --poll-seconds 1

An embedded Prefect server with its warm runner (`evalq runner`), prefect.yaml's
`kubernetes-job` deployment on its pool, and the tests' emulated cluster (`tests/kube_cluster.py`:
kmock on loopback plus a scripted Job controller; no API server can run here). Per run:
`evalq k8s submit` of the old GKE tool's documented example (the command's wall time), and
from the command's start until the Job is created and until the pod's lines are in the run's
log (read through the API); once the pod ends, until the run is Completed. Then one cancel: until the Job is deleted and the run
is Cancelled. What the flow adds on top of the cluster's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from cost import write_result  # noqa: E402
from kube_cluster import Cluster, kubeconfig  # noqa: E402

DATA = REPO / "tests" / "data_kubernetes"
LINES = ["INFO loading model", "HELM boolq: 10 instances", "exact_match 0.62"]


def until(predicate, timeout: float = 120.0, every: float = 0.02) -> float:
    """Seconds until `predicate()` holds."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit("timed out")
        time.sleep(every)
    return time.monotonic() - started


async def read_run(run_id: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(run_id)


async def has_line(run_id: str, line: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return any(log.message == line for log in logs)


def submit(block: str, namespace: str, poll_seconds: int, deployment: str, started: float) -> tuple[float, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "k8s", "submit", str(DATA / "example.mlflow.job_config.yml"),
         str(DATA / "pythia_run_specs.conf"), "--config-version", "bench", "--allow-dirty", "--deployment", deployment,
         "--credentials", block, "--namespace", namespace, "--poll-seconds", str(poll_seconds)],
        capture_output=True, text=True, cwd=REPO,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    job_name, url = result.stdout.strip().split("\t")
    return time.monotonic() - started, job_name, url.rstrip("/").rsplit("/", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poll-seconds", type=int, default=1)
    args = parser.parse_args()
    os.environ["EVALQ_SERVER_HOME"] = tempfile.mkdtemp(prefix="evalq-bench-no-user-server-")

    from prefect.states import Cancelling
    from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials

    from flows.runtime.deployments import apply_deployments
    from flows.runtime.local_stack import LocalStack
    from flows.naming import LOCAL_WORK_POOL

    samples: dict[str, list[float]] = {"submit_command": [], "to_job_created": [], "to_last_line_logged": [],
                                       "pod_end_to_completed": []}
    with tempfile.TemporaryDirectory() as home, LocalStack(Path(home), worker_limit=4, ui=False), Cluster(LINES) as cluster:
        from prefect.client.orchestration import get_client

        async def setup():
            async with get_client() as client:
                return await apply_deployments(client, "runner", work_pool=LOCAL_WORK_POOL, as_name="bench")

        asyncio.run(setup())
        block = f"bench-{uuid.uuid4().hex[:8]}"
        KubernetesCredentials(cluster_config=KubernetesClusterConfig(config=kubeconfig(cluster.url), context_name="kmock")).save(block)
        for number in range(args.runs + 1):
            namespace = f"bench-{number}"
            started = time.monotonic()
            took, job_name, run_id = submit(block, namespace, args.poll_seconds, "kubernetes-job/bench", started)
            until(lambda: cluster.started(job_name))
            created = cluster.call(lambda: cluster.emulator.created_at[job_name]) - started
            until(lambda: asyncio.run(has_line(run_id, LINES[-1])), every=0.1)
            logged = time.monotonic() - started
            cluster.finish(namespace, job_name, succeeded=True)
            completed = until(lambda: asyncio.run(read_run(run_id)).state.is_completed(), every=0.05)
            if number == 0:
                continue  # the runner's first load of the flow
            for key, value in zip(samples, (took, created, logged, completed)):
                samples[key].append(round(value, 2))
        took, job_name, run_id = submit(block, "bench-cancel", args.poll_seconds, "kubernetes-job/bench", time.monotonic())
        until(lambda: cluster.started(job_name))

        async def cancel():
            async with get_client() as client:
                await client.set_flow_run_state(run_id, Cancelling(), force=True)

        asyncio.run(cancel())
        deleted = until(lambda: job_name not in cluster.objects("batch/v1/jobs", "bench-cancel"))
        cancelled = until(lambda: asyncio.run(read_run(run_id)).state.is_cancelled(), every=0.05)
    result = {"command": " ".join(["python", "bench/kubernetes_job_bench.py", "--runs", str(args.runs),
                                   "--poll-seconds", str(args.poll_seconds)])}
    for key, values in samples.items():
        result[f"{key}_median_s"] = statistics.median(values)
        result[f"{key}_s"] = values
    result.update(cancel_to_job_deleted_s=round(deleted, 2), then_to_cancelled_s=round(cancelled, 2))
    write_result("kubernetes-job", result)


if __name__ == "__main__":
    main()
