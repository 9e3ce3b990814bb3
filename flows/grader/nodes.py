"""Grading nodes: work queues of the `evalq-grader` pool, each served by one runner.

`start_node_runner` is the one place that starts a node's runner; swap it for another runner
(e.g. the warm `evalq runner`) without touching anything else.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

from prefect.client.schemas.objects import WorkQueue
from prefect.exceptions import ObjectAlreadyExists

from flows.naming import (
    GRADE_FLOW,
    GRADER_DEPLOYMENT_NAME,
    GRADER_ENTRYPOINT,
    GRADER_POOL,
    PREFORK_LEAVE_RUNS,
    PREFORK_POOL_TYPE,
    TAG,
    grader_worker_name,
    node_name,
)
from flows.runtime.host import die_with_parent
from flows.runtime.local_stack import worker_environment
from flows.runtime.provisioning import ensure_local_pool

LOCAL_IP = "127.0.0.1"
STATUS = {"READY": "online", "NOT_READY": "offline", "PAUSED": "paused"}


async def apply_grader_deployment(client) -> None:
    """The `evalq-grader` pool and the `grade-solution/grader` deployment on it."""
    from prefect.utilities.callables import parameter_schema

    from flows.grader.flow import grade_solution

    await ensure_local_pool(client, GRADER_POOL)
    flow_id = await client.create_flow_from_name(GRADE_FLOW)
    await client.create_deployment(
        flow_id=flow_id, name=GRADER_DEPLOYMENT_NAME, work_pool_name=GRADER_POOL, entrypoint=GRADER_ENTRYPOINT,
        parameter_openapi_schema=parameter_schema(grade_solution).model_dump_for_openapi(),
        tags=[TAG], description="Solutions submitted to the grading API, one run each.",
    )


async def register_node(client, name: str, ip: str | None) -> None:
    """The node's work queue; its description holds the node's address (shown by /api/nodes)."""
    try:
        await client.create_work_queue(name=name, work_pool_name=GRADER_POOL, description=ip or "")
    except ObjectAlreadyExists:
        queue = await client.read_work_queue_by_name(name, work_pool_name=GRADER_POOL)
        if ip is not None and queue.description != ip:
            await client.update_work_queue(queue.id, description=ip)


async def ensure_local_nodes(client, count: int) -> list[str]:
    """Work queues node-0 .. node-(count-1) for runners on this machine."""
    names = [node_name(index) for index in range(count)]
    for name in names:
        await register_node(client, name, LOCAL_IP)
    return names


async def read_nodes(client) -> list[WorkQueue]:
    """Every node (the pool's queues but its `default` one), in name order."""
    queues = await client.read_work_queues(work_pool_name=GRADER_POOL)
    return sorted((queue for queue in queues if queue.name != "default"), key=lambda queue: queue.name)


def node_status(queue: WorkQueue) -> str:
    status = getattr(queue.status, "value", queue.status)
    return "paused" if queue.is_paused else STATUS.get(str(status), "offline")


def node_ip(queue: WorkQueue) -> str | None:
    try:
        return str(ipaddress.ip_address((queue.description or "").strip()))
    except ValueError:
        return None


def start_node_runner(api_url: str, node: str, slots: int, log_path: Path) -> subprocess.Popen:
    """Start the runner of one node: it runs up to `slots` grading jobs from the node's queue."""
    argv = [
        sys.executable, "-m", "prefect", "worker", "start", "--pool", GRADER_POOL, "--work-queue", node,
        "--type", PREFORK_POOL_TYPE, "--limit", str(slots), "--name", grader_worker_name(node, os.getpid()),
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(  # a running job finishes in its own process when the node stops
            argv, env={**worker_environment(api_url), PREFORK_LEAVE_RUNS: "1"}, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        )


def stop_node_runner(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a runner: it takes no more jobs; the job it is running finishes in its own process."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
