"""Grading nodes: work queues of the `evalq-grader` pool, each served by one runner.

A node's stable integer id and its address live in its queue's description (`node_ids.py`);
`read_nodes` gives the API each node with its id, address and state.

`start_node_runner` is the one place that starts a node's runner; swap it for another runner
(e.g. the warm `evalq runner`) without touching anything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect.client.schemas.objects import WorkQueue
from prefect.exceptions import ObjectAlreadyExists

from flows.grader.node_ids import (
    Claim,
    NodeDescription,
    keeps_id,
    next_id,
    parse_description,
    valid_ip,
)
from flows.naming import (
    GRADE_FLOW,
    GRADER_DEPLOYMENT_NAME,
    GRADER_ENTRYPOINT,
    GRADER_NODE_ID_VARIABLE,
    GRADER_POOL,
    PREFORK_LEAVE_RUNS,
    PREFORK_POOL_TYPE,
    TAG,
    grader_worker_name,
    node_name,
)
from flows.runtime.host import die_with_parent
from flows.runtime.local_stack import worker_environment
from flows.runtime.process_groups import group_members
from flows.runtime.provisioning import ensure_local_pool

LOCAL_IP = "127.0.0.1"
STATE = {"READY": "online", "NOT_READY": "offline", "PAUSED": "paused"}
ID_TRIES = 20


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


@dataclass(frozen=True)
class Node:
    """A grading node as the API shows it."""

    name: str
    node_id: int
    ip: str | None
    state: str
    """online (a runner polls it), offline or paused."""

    @property
    def active(self) -> bool:
        """It takes jobs: a runner polls it and it is not paused."""
        return self.state == "online"


async def _node_queues(client) -> list[WorkQueue]:
    queues = await client.read_work_queues(work_pool_name=GRADER_POOL)
    return sorted((queue for queue in queues if queue.name != "default"), key=lambda queue: queue.name)


def _claims(queues: list[WorkQueue]) -> list[Claim]:
    return [Claim(queue.name, parse_description(queue.description)[0], queue.created) for queue in queues]


async def register_node(client, name: str, ip: str | None) -> int:
    """The node's work queue, with its stable id (kept when it registers again) and address in
    its description (shown by /api/nodes); its id."""
    try:
        await client.create_work_queue(name=name, work_pool_name=GRADER_POOL, description="")
    except ObjectAlreadyExists:
        pass
    for _ in range(ID_TRIES):
        queues = await _node_queues(client)
        mine = next(queue for queue in queues if queue.name == name)
        node_id, known_ip = parse_description(mine.description)
        claims = _claims(queues)
        me = next(claim for claim in claims if claim.name == name)
        if node_id is not None and keeps_id(me, claims):
            if ip is not None and valid_ip(ip) != known_ip:
                await client.update_work_queue(mine.id, description=NodeDescription(node_id=node_id, ip=valid_ip(ip)).text())
            return node_id
        taken = {claim.node_id for claim in claims if claim.node_id is not None and claim.name != name}
        node_id = next_id(name, taken, await _highest_id(client))
        await client.update_work_queue(mine.id, description=NodeDescription(node_id=node_id, ip=valid_ip(ip) or known_ip).text())
        await _record_id(client, node_id)
    raise RuntimeError(f"grading node {name}: no free node id after {ID_TRIES} tries")


async def _highest_id(client) -> int:
    variable = await client.read_variable_by_name(GRADER_NODE_ID_VARIABLE)
    return variable.value if variable is not None and isinstance(variable.value, int) else -1


async def _record_id(client, node_id: int) -> None:
    """Raise the highest id handed out to `node_id` (never lower it)."""
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    if await _highest_id(client) >= node_id:
        return
    try:
        await client.create_variable(VariableCreate(name=GRADER_NODE_ID_VARIABLE, value=node_id, tags=[TAG]))
    except ObjectAlreadyExists:
        await client.update_variable(VariableUpdate(name=GRADER_NODE_ID_VARIABLE, value=node_id))


async def ensure_local_nodes(client, count: int) -> list[str]:
    """Work queues node-0 .. node-(count-1) for runners on this machine."""
    names = [node_name(index) for index in range(count)]
    for name in names:
        await register_node(client, name, LOCAL_IP)
    return names


async def read_nodes(client) -> list[Node]:
    """Every node (the pool's queues but its `default` one), by id; a queue an older evalq made
    gets its id here, once."""
    queues = await _node_queues(client)
    for queue in queues:
        if parse_description(queue.description)[0] is None:
            await register_node(client, queue.name, None)
    if any(parse_description(queue.description)[0] is None for queue in queues):
        queues = await _node_queues(client)
    nodes = []
    for queue in queues:
        node_id, ip = parse_description(queue.description)
        nodes.append(Node(queue.name, node_id if node_id is not None else -1, ip, node_state(queue)))
    return sorted(nodes, key=lambda node: (node.node_id, node.name))


def node_state(queue: WorkQueue) -> str:
    status = getattr(queue.status, "value", queue.status)
    return "paused" if queue.is_paused else STATE.get(str(status), "offline")


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
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    end_forkserver(process.pid)


def end_forkserver(pgid: int) -> None:
    """SIGTERM the forkserver a stopped runner leaves in its group (`pgid`). It should end when the
    runner's pipe to it closes, and under load was seen outliving it by minutes; the jobs it forked
    run on (they need it no more), and multiprocessing's resource tracker ends after the last."""
    for pid, _ in group_members(pgid):
        try:
            if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        except OSError:  # gone meanwhile
            continue
