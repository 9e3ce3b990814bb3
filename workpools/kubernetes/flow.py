"""The `kubernetes-job` flow: an organizer's image runs unchanged; Prefect stays outside the pod.

A run (on a warm runner or any worker, in or outside the cluster) creates the evaluation's
ConfigMap and Job through prefect-kubernetes' job API (`KubernetesJob`, whose
`KubernetesJobRun` follows the Job and streams its pods' lines), writes each line to the run's
log (and to Cloud Logging with `EVALQ_CLOUD_LOGGING=1`, labelled `job_name`), and ends as the
Job does: Completed, or Failed with the Job's reason. A cancel (Prefect UI, `evalq queue
kill`) deletes the Job, its pods and the ConfigMap. prefect-kubernetes' `run_namespaced_job`
flow would do the middle part only: it creates no ConfigMap and leaves the Job on a cancel.

The run labels its Job with its own id. A run whose process died (a runner restarted) and that
runs again finds its Job by name and follows it instead of starting the evaluation twice.
"""

from __future__ import annotations

import asyncio
import copy
import json
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import Abort
from prefect.states import Cancelled, Failed, State

from flows.cloudlogging.attach import attach_cloud_logging
from workpools.kubernetes.submission import JobRequest
from workpools.local.stopping import stop_reason, watch_run

KUBERNETES_JOB_FLOW = "kubernetes-job"
RUN_LABEL = "evalq.io/flow-run-id"
WATCH_SECONDS = 2.0
"""How often the run reads its own state, to see a cancel."""


class JobExists(RuntimeError):
    """The Job's name is taken by a Job this run did not create."""


@flow(name=KUBERNETES_JOB_FLOW)
async def kubernetes_job(request: JobRequest) -> dict | State:
    """Create the ConfigMap and the Job, follow the Job to its end with its pods' lines in this
    run's log; fail when the Job fails; delete what was created when the run is cancelled."""
    from prefect_kubernetes.jobs import KubernetesJob

    logger = get_run_logger()
    context = FlowRunContext.get()
    run_id = context.flow_run.id if context and context.flow_run else None
    attach_cloud_logging(job_name=request.name, namespace=request.namespace)
    job = KubernetesJob(
        v1_job=labelled(request.job, run_id), credentials=await load_credentials(request.credentials),
        namespace=request.namespace, interval_seconds=request.poll_seconds, delete_after_completion=False,
    )
    config_map = labelled(request.config_map, run_id) if request.config_map else None
    async with get_client() as client:
        try:
            job_run = await start(job, config_map, run_id, logger)
            stopped = await follow_unless_stopped(client, job_run, run_id, logger)
            if stopped is not None:
                await delete_created(job, config_map, logger)
        except RuntimeError as exc:  # the API refused, or prefect-kubernetes' word for a failed Job (its reasons)
            return Failed(message=str(exc))
        except asyncio.CancelledError:  # a runner cancels the run's task: clean up if the run was cancelled
            await delete_if_cancelled(client, job, config_map, run_id, logger)
            raise
    if stopped is None:
        logger.info("Job %s completed", request.name)
        return {"job": request.name, "namespace": request.namespace, "pods": sorted(job_run.pod_logs or {})}
    if stopped.deleted:
        raise Abort(f"flow run {run_id} was deleted; its Job {request.name} was deleted too")
    message = f"Stopped because {stopped.describe()}: Job {request.name} and its pods were deleted"
    logger.info(message)
    return Cancelled(message=message)


async def load_credentials(name: str | None):
    from prefect_kubernetes.credentials import KubernetesCredentials

    return await KubernetesCredentials.aload(name) if name else KubernetesCredentials()


def labelled(manifest: dict, run_id: UUID | None) -> dict:
    """A copy of `manifest` labelled with the flow run that creates it."""
    manifest = copy.deepcopy(manifest)
    if run_id is not None:
        manifest["metadata"].setdefault("labels", {})[RUN_LABEL] = str(run_id)
    return manifest


def api_problem(exc) -> str:
    """The API server's message of an `ApiException`."""
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc)


async def start(job, config_map: dict | None, run_id: UUID | None, logger):
    """The ConfigMap, then the Job (or this run's Job from an earlier attempt); the Job owns the ConfigMap."""
    from kubernetes_asyncio.client.exceptions import ApiException
    from prefect_kubernetes.jobs import KubernetesJobRun, read_namespaced_job

    name = job.v1_job["metadata"]["name"]
    if config_map is not None:
        await create_config_map(job, config_map, run_id)
    try:
        job_run = await job.atrigger()
        logger.info("created Job %s in namespace %s", name, job.namespace)
    except ApiException as exc:
        if exc.status != 409:
            await delete_config_map(job, config_map)
            raise RuntimeError(f"creating Job {name} in namespace {job.namespace}: {api_problem(exc)}") from None
        job_run = None
    created = await read_namespaced_job.fn(kubernetes_credentials=job.credentials, job_name=name, namespace=job.namespace)
    if job_run is None:
        if run_id is None or (created.metadata.labels or {}).get(RUN_LABEL) != str(run_id):
            raise JobExists(f"a Job named {name} already exists in namespace {job.namespace} (not this run's): "
                            "choose another --job-name, or delete it")
        logger.info("following Job %s, which an earlier attempt of this run created", name)
        job_run = KubernetesJobRun(kubernetes_job=job, v1_job_model=job.v1_job)
    if config_map is not None:
        await own_config_map(job, config_map, created, logger)
    return job_run


async def create_config_map(job, config_map: dict, run_id: UUID | None) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    name = config_map["metadata"]["name"]
    async with job.credentials.get_client("core") as core:
        try:
            await core.create_namespaced_config_map(job.namespace, config_map)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise RuntimeError(f"creating ConfigMap {name} in namespace {job.namespace}: {api_problem(exc)}") from None
        existing = await core.read_namespaced_config_map(name, job.namespace)
    if run_id is None or (existing.metadata.labels or {}).get(RUN_LABEL) != str(run_id):
        raise JobExists(f"a ConfigMap named {name} already exists in namespace {job.namespace} (not this run's)")


async def own_config_map(job, config_map: dict, created, logger) -> None:
    """Makes the Job the ConfigMap's owner, so Kubernetes deletes it with the Job (its TTL included)."""
    from workpools.kubernetes.configmap import owner_reference

    name = config_map["metadata"]["name"]
    patch = {"metadata": {"ownerReferences": [owner_reference(created.metadata.name, created.metadata.uid)]}}
    try:
        async with job.credentials.get_client("core") as core:
            await core.patch_namespaced_config_map(name, job.namespace, patch)
    except Exception as exc:  # noqa: BLE001 - the Job runs anyway; only cleanup is at stake
        logger.warning("ConfigMap %s keeps no owner (%s): delete it with the Job", name, exc)


async def follow_unless_stopped(client, job_run, run_id: UUID | None, logger):
    """None once the Job completed (its failure raises), or why the run must stop first (a cancel)."""
    import anyio

    follow = asyncio.ensure_future(job_run.await_for_completion(print_func=lambda line: logger.info(line.rstrip("\n"))))
    waiters = [follow] + ([asyncio.ensure_future(watch_run(client, run_id, WATCH_SECONDS))] if run_id else [])
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if follow.done():
            follow.result()
            return None
        return waiters[1].result()
    finally:
        with anyio.CancelScope(shield=True):
            await stop(waiters)


async def delete_if_cancelled(client, job, config_map: dict | None, run_id: UUID | None, logger) -> None:
    """Delete the Job when the run was cancelled or deleted; a runner that stops for another reason
    leaves it running, for the run's next attempt to follow."""
    import anyio

    with anyio.CancelScope(shield=True):
        if run_id is not None and await stop_reason(client, run_id) is not None:
            await delete_created(job, config_map, logger)


async def stop(tasks: list[asyncio.Future]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def delete_created(job, config_map: dict | None, logger) -> None:
    """Delete the Job with its pods (foreground) and the ConfigMap; one already gone is fine."""
    from kubernetes_asyncio.client import V1DeleteOptions
    from kubernetes_asyncio.client.exceptions import ApiException
    from prefect_kubernetes.jobs import delete_namespaced_job

    name = job.v1_job["metadata"]["name"]
    try:
        await delete_namespaced_job.fn(
            kubernetes_credentials=job.credentials, job_name=name, namespace=job.namespace,
            delete_options=V1DeleteOptions(propagation_policy="Foreground"),
        )
        logger.info("deleted Job %s", name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    await delete_config_map(job, config_map)


async def delete_config_map(job, config_map: dict | None) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    if config_map is None:
        return
    async with job.credentials.get_client("core") as core:
        try:
            await core.delete_namespaced_config_map(config_map["metadata"]["name"], job.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
