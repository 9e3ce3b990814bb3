"""Builders shared by the core's tests: jobs, resources, policy-server fleets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from flows.demo.policy_server import PolicyServer, PolicyServerFleet
from flows.runtime.host import free_port
from generate.models import Job, Resources


def make_job(tmp: Path, team: str, task: str, instance_id: int, pools: list[str], instance: object = None) -> Job:
    """A job with a real instance file under `tmp/instances`."""
    path = tmp / "instances" / task / f"{task}_{instance_id}_template-tro_state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(instance if instance is not None else {"seed": instance_id}))
    payload = dict(team=team, team_slug=team, track="standard", task=task, instance_id=instance_id,
                   instance_basename=path.name, instance_path=str(path))
    return Job(id=Job.make_id(team, task, instance_id), payload=payload, resource_type=pools[0], resource_types=pools)


def make_fleet(capacities: dict[str, list[int]], log_path: Path | None = None) -> tuple[PolicyServerFleet, Resources]:
    """Demo servers on free loopback ports: pool -> capacities of its servers (busy intervals to `log_path`)."""
    servers, pools = [], {}
    for pool, caps in capacities.items():
        pools[pool] = []
        for capacity in caps:
            server = PolicyServer("127.0.0.1", free_port(), capacity, log_path)
            servers.append(server)
            pools[pool].append({"host": server.host, "port": server.port, "capacity": capacity})
    return PolicyServerFleet(servers), Resources.model_validate(pools)


def write_inputs(tmp: Path, jobs: list[Job], resources: Resources) -> tuple[Path, Path]:
    jobs_file, resources_file = tmp / "jobs.json", tmp / "resources.json"
    jobs_file.write_text(json.dumps([job.model_dump(mode="json") for job in jobs]))
    resources_file.write_text(resources.model_dump_json())
    return jobs_file, resources_file


def pool_params(job: Job, resources: Resources) -> dict:
    return {pool: [s.model_dump(mode="json") for s in resources.servers(pool)] for pool in job.resource_types}


def run(coroutine):
    return asyncio.run(coroutine)


async def limit_counts(resources: Resources) -> dict[str, int]:
    """Busy slots of every pool and server limit."""
    from prefect import get_client

    from flows.slots.pools import wanted_limits

    async with get_client() as client:
        return {
            name: (await client.read_global_concurrency_limit_by_name(name)).active_slots
            for name in wanted_limits(resources)
        }


async def apply_runner_pool(pool: str, spec: str, as_name: str) -> None:
    """A work pool of type evalq-runner and prefect.yaml's `spec` deployments on it, renamed `as_name`."""
    from prefect import get_client

    from flows.runtime.deployments import apply_deployments
    from flows.runtime.work_pools import apply_work_pool
    from workpools.runner import WORK_POOL_TYPE, base_job_template

    async with get_client() as client:
        await apply_work_pool(client, pool, WORK_POOL_TYPE, base_job_template(), replace_other_type=True)
        await apply_deployments(client, spec, work_pool=pool, as_name=as_name)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3, detail=None):
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout` seconds,
    with `detail()` (e.g. a log tail) in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f"; {detail()}" if detail else ""))


async def campaign_log(campaign: str) -> list[str]:
    """The log lines of the campaign's own flow run(s), as the server has them."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.reports.runs import campaign_flow_runs

    async with get_client() as client:
        ids = [run.id for run in await campaign_flow_runs(client, campaign)]
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200)
    return [log.message for log in logs]
