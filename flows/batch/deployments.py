"""What a batch needs on the Prefect server before its first item: its work pool, the deployment
its items' runs are created from, and job variables that pool takes.

With `--command`, the batch applies the `batch-item` flow (`pipeline.py`) as deployment
`batch-item/<pool>` on the chosen work pool (created or updated, as `evalq server` applies
prefect.yaml's), so any pool works without a `prefect deploy`: the warm runners' pools, SLURM,
Kubernetes, the local GPU queue's. With `--deployment FLOW/NAME` the user's deployment is used
as it is, on its own pool. Job variables (`--job-variable`) are checked against the pool's base
job template, so a misspelt one is one line before any run is created. With `--keep-for`, the
`batch-purge` flow (`keep.py`) is applied on the same pool. A problem is a `BatchMisconfigured`.
"""

from __future__ import annotations

from uuid import UUID

from flows.naming import BATCH_ITEM_FLOW, BATCH_PURGE_FLOW
from flows.runtime.zombies import HEARTBEAT_SECONDS

ENTRYPOINTS = {BATCH_ITEM_FLOW: "flows.batch.pipeline:run_item", BATCH_PURGE_FLOW: "flows.batch.keep:purge_batch"}
"""Module paths, so workers and runners import the installed package."""


class BatchMisconfigured(Exception):
    """What the batch is given does not fit the server: one line, before any run exists."""


async def pool_variables(client, pool: str) -> dict:
    """The variables work pool `pool`'s base job template takes (name -> schema)."""
    from prefect.exceptions import ObjectNotFound

    try:
        work_pool = await client.read_work_pool(pool)
    except ObjectNotFound:
        names = sorted(p.name for p in await client.read_work_pools())
        raise BatchMisconfigured(f"--pool {pool}: no such work pool on this Prefect server (its pools: "
                                 f"{', '.join(names) or 'none'}; `evalq workpools apply` creates them)") from None
    return ((work_pool.base_job_template or {}).get("variables") or {}).get("properties") or {}


def check_job_variables(pool: str, variables: dict, job_variables: dict) -> None:
    """`BatchMisconfigured` for a job variable the pool's template does not take."""
    unknown = sorted(set(job_variables) - set(variables))
    if unknown:
        raise BatchMisconfigured(f"--job-variable {unknown[0]}: work pool {pool} takes no such variable "
                                 f"(it takes: {', '.join(sorted(variables)) or 'none'})")


async def apply_flow_deployment(client, flow_name: str, pool: str, variables: dict) -> UUID:
    """Deployment `<flow_name>/<pool>` of one of the batch's flows, on `pool` (its runs heartbeat
    every 30 s where the pool's template takes an environment: the zombie automation)."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.importtools import import_object

    flow = import_object(ENTRYPOINTS[flow_name])
    return await client.create_deployment(
        flow_id=await client.create_flow_from_name(flow_name),
        name=pool,
        entrypoint=ENTRYPOINTS[flow_name],
        work_pool_name=pool,
        tags=["evalq"],
        job_variables={"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}} if "env" in variables else {},
        parameter_openapi_schema=parameter_schema(flow.fn).model_dump_for_openapi(),
        enforce_parameter_schema=False,
        pull_steps=[{"flows.runtime.deployments.use_installed_package": {}}],
        description=(flow.description or "").strip().splitlines()[0] if flow.description else None,
    )


async def user_deployment(client, name: str):
    """The user's deployment `FLOW/NAME`, and its flow's name."""
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = await client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise BatchMisconfigured(f"--deployment {name}: no such deployment on this Prefect server") from None
    if not deployment.work_pool_name:
        raise BatchMisconfigured(f"--deployment {name}: it has no work pool (a served deployment): give one on a work pool")
    return deployment, (await client.read_flow(deployment.flow_id)).name


async def prepare(client, settings) -> tuple[str, UUID | None]:
    """Check and apply what the batch needs (see the module); the name of the flow its items run
    and the id of its purge deployment (None without `--keep-for`)."""
    if settings.command is None:
        deployment, pipeline = await user_deployment(client, settings.deployment)
        settings.pool = settings.pool or deployment.work_pool_name
        if deployment.work_pool_name != settings.pool:
            raise BatchMisconfigured(f"--pool {settings.pool}: deployment {settings.deployment} runs on work pool "
                                     f"{deployment.work_pool_name} (leave --pool out, or give that one)")
    else:
        pipeline = BATCH_ITEM_FLOW
    variables = await pool_variables(client, settings.pool)
    check_job_variables(settings.pool, variables, settings.job_variables)
    if settings.command is not None:
        await apply_flow_deployment(client, BATCH_ITEM_FLOW, settings.pool, variables)
    purge = None
    if settings.keep_for_seconds is not None:
        purge = await apply_flow_deployment(client, BATCH_PURGE_FLOW, settings.pool, variables)
    return pipeline, purge
