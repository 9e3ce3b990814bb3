"""Pure placement: which node gets a job, and where a pending job stands in its node's queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ActiveJob:
    """A queued or running job as placement sees it."""

    job_id: str
    node: str
    expected_time: float
    created_at: datetime
    pending: bool


@dataclass(frozen=True)
class NodeLoad:
    queue_length: int
    total_wait_time: float


def node_loads(nodes: list[str], active: list[ActiveJob]) -> dict[str, NodeLoad]:
    """Per node: how many jobs are queued or running there, and their summed expected_time."""
    loads = {}
    for node in nodes:
        mine = [job for job in active if job.node == node]
        loads[node] = NodeLoad(len(mine), sum(job.expected_time for job in mine))
    return loads


def choose_node(loads: dict[str, NodeLoad]) -> str:
    """The node with the least expected work queued; ties go to the shorter queue, then the first."""
    if not loads:
        raise ValueError("no nodes to place the job on")
    order = list(loads)
    return min(order, key=lambda node: (loads[node].total_wait_time, loads[node].queue_length, order.index(node)))


def queue_position(job_id: str, node: str, active: list[ActiveJob]) -> int | None:
    """1 for the next pending job to start on `node`; None when the job is not pending there."""
    waiting = sorted((job for job in active if job.node == node and job.pending), key=lambda job: job.created_at)
    for position, job in enumerate(waiting, start=1):
        if job.job_id == job_id:
            return position
    return None
