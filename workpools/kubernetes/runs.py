"""The flow runs `evalq k8s submit` queues: a `kubernetes-job` run (the image runs as it is, the
flow follows its Job from outside the pod), or for `prefect_in_pod` a `run-command` run on an
`evalq-kubernetes` pool (the pod runs the flow)."""

from __future__ import annotations

import sys

from generate.errors import InputError

DEFAULT_JOB_DEPLOYMENT = "kubernetes-job/runner"
DEFAULT_COMMAND_DEPLOYMENT = "run-command/kubernetes"
JOB_DEPLOYMENT_HINT = "run `evalq workpools apply --kind runner && prefect deploy --name runner` first, or pass --deployment"


async def create_job_run(deployment_name: str, request, tags: list[str]):
    """A `kubernetes-job` flow run of `deployment_name`, named after its Job."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from workpools.kubernetes.flow import KUBERNETES_JOB_FLOW

    if deployment_name.split("/", 1)[0] != KUBERNETES_JOB_FLOW:
        raise InputError(None, f"--deployment {deployment_name}: an image that runs as it is needs a {KUBERNETES_JOB_FLOW} "
                               "deployment (the config's prefect_in_pod: true runs run-command in the pod)")
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(deployment_name)
        except ObjectNotFound:
            raise InputError(None, f"no deployment {deployment_name}: {JOB_DEPLOYMENT_HINT}") from None
        if request.credentials:
            await check_credentials(request.credentials)
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"request": request.model_dump(mode="json")}, name=request.name, tags=tags,
        )
        await warn_without_workers(client, deployment.work_pool_name)
        return run


async def check_credentials(name: str) -> None:
    """The KubernetesCredentials block the flow will load exists (the flow would fail much later)."""
    from prefect_kubernetes.credentials import KubernetesCredentials

    try:
        await KubernetesCredentials.aload(name)
    except ValueError:
        raise InputError(None, f"--credentials {name}: no KubernetesCredentials block of that name on this Prefect server") from None


async def warn_without_workers(client, pool: str | None) -> None:
    """A run nobody picks up waits silently: say so once, on stderr."""
    from workpools.local.submit import online_workers

    if pool and not await online_workers(client, pool):
        print(f"warning: no runner or worker polls work pool {pool}; the run waits until one does "
              f"(`evalq runner --pool {pool}` where the cluster is reachable)", file=sys.stderr)


async def create_command_run(deployment_name: str, job, values: dict, tags: list[str]):
    """A run-command flow run of `deployment_name` (which must be on an evalq-kubernetes pool) with these job variables."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from workpools.kubernetes import WORK_POOL_TYPE

    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(deployment_name)
        except ObjectNotFound:
            raise InputError(None, f"no deployment {deployment_name}: run `evalq workpools apply --kind kubernetes` first") from None
        pool = await client.read_work_pool(deployment.work_pool_name) if deployment.work_pool_name else None
        if pool is None or pool.type != WORK_POOL_TYPE:
            where = f"pool {pool.name} of type {pool.type}" if pool else "no work pool"
            raise InputError(None, f"--deployment {deployment_name} is on {where}, not an {WORK_POOL_TYPE} pool")
        return await client.create_flow_run_from_deployment(
            deployment.id, parameters={"job": job.model_dump(mode="json")}, name=job.run_name(),
            tags=tags, job_variables=values,
        )


def run_url(run) -> str:
    """The flow run's page in the Prefect UI (its id when no UI address is known)."""
    from prefect.utilities.urls import url_for

    return url_for(run) or str(run.id)
