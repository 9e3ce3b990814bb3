"""Register the `run-command/local` deployment on the local process pool."""

from __future__ import annotations

from uuid import UUID

from workpools.local.job import RUN_COMMAND_DEPLOYMENT_NAME, RUN_COMMAND_FLOW

ENTRYPOINT = "workpools.local.flow.run_command"
"""A module path (no `file.py:`), so the worker imports the installed package and downloads nothing."""


async def apply_run_command_deployment(client, work_pool_name: str, name: str = RUN_COMMAND_DEPLOYMENT_NAME) -> UUID:
    """Create or update the deployment a pool's worker runs queued commands from (`evalq submit`,
    `evalq k8s submit`)."""
    from prefect.utilities.callables import parameter_schema

    from workpools.local.flow import run_command

    flow_id = await client.create_flow_from_name(RUN_COMMAND_FLOW)
    return await client.create_deployment(
        flow_id=flow_id,
        name=name,
        work_pool_name=work_pool_name,
        entrypoint=ENTRYPOINT,
        parameter_openapi_schema=parameter_schema(run_command).model_dump_for_openapi(),
        tags=["evalq"],
        description="Queued commands from `evalq submit` or `evalq k8s submit` (timeouts, dependencies, GPU leases).",
    )
