"""`evalq k8s render` and `evalq k8s submit`: organizers' evaluation configs as Kubernetes Jobs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from flows.runtime.discovery import API_HELP
from generate.errors import InputError, exit_on_input_error

app = typer.Typer(no_args_is_help=True, help="Kubernetes evaluation jobs from organizers' configs.")

DEFAULT_DEPLOYMENT = "run-command/kubernetes"
CONFIG = typer.Argument(..., help="The evaluation config (YAML).")
FILES = typer.Argument(None, help="Config files, mounted under /etc/configs.")
PLACEHOLDER_NOTE = "# Rendered offline by `evalq k8s render`: the flow run id and name are placeholders.\n"
VERSIONS = typer.Option(["1.30", "1.33"], "--kubernetes-version", help="Validate against this Kubernetes schema (repeatable).")


@app.callback()
def k8s() -> None:
    """Kubernetes evaluation jobs from organizers' configs."""


def require_prefect_kubernetes() -> None:
    try:
        import kubernetes_validate  # noqa: F401
        import prefect_kubernetes  # noqa: F401
    except ModuleNotFoundError as exc:
        raise InputError(None, f"{exc.name} is not installed: pip install 'eval-jobqueue[kubernetes]'") from None


def checked_manifests(config_path: Path, values: dict, name: str, tags: list[str], versions: list[str]) -> list[dict]:
    """The ConfigMap and Job for `values`, strictly valid for `versions`, else `InputError` on the config."""
    from workpools.kubernetes.render import render_manifests, validate_manifests

    require_prefect_kubernetes()
    manifests = render_manifests(values, name, tags)
    problem = validate_manifests(manifests, versions)
    if problem:
        raise InputError(config_path, problem)
    return manifests


def load(config_path: Path, files: list[Path] | None, git_commit: str | None):
    """Config, its Kubernetes mapping and job variables (with the config files)."""
    from workpools.kubernetes.config import load_config, read_config_files
    from workpools.kubernetes.evaluation import job_variables

    config = load_config(config_path)
    config_files = read_config_files(list(files or []))
    evaluation = config.evaluation(git_commit)
    values = job_variables(evaluation)
    if config_files:
        values["config_files"] = config_files
    return config, evaluation, values


@app.command("render")
@exit_on_input_error
def render(
    config: Path = CONFIG,
    files: Optional[List[Path]] = FILES,
    output: Optional[Path] = typer.Option(None, "--output", help="Write the manifests here (YAML), else print them."),
    kubernetes_version: List[str] = VERSIONS,
) -> None:
    """The ConfigMap and Job a submitted CONFIG would create, validated strictly."""
    import yaml

    from generate.jsonio import write_atomic
    from workpools.kubernetes.evaluation import flow_run_tags

    _, evaluation, values = load(config, files, git_commit=None)
    manifests = checked_manifests(config, values, "evaluation", flow_run_tags(evaluation), kubernetes_version)
    text = PLACEHOLDER_NOTE + yaml.safe_dump_all(manifests, sort_keys=False)
    if output is None:
        print(text, end="")
        return
    write_atomic(output, text)
    print(f"{len(manifests)} manifests ({', '.join(m['kind'] for m in manifests)}) -> {output}")


@app.command("submit")
@exit_on_input_error
def submit(
    config: Path = CONFIG,
    files: Optional[List[Path]] = FILES,
    config_version: Optional[str] = typer.Option(None, "--config-version", help="Commit to record (default: the config's git HEAD)."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Submit although the config's git tree has uncommitted changes."),
    deployment: str = typer.Option(DEFAULT_DEPLOYMENT, "--deployment", help="flow/deployment on the evalq-kubernetes pool."),
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Queue CONFIG as a flow run on the Kubernetes pool, tagged with its provenance; print its URL."""
    from workpools.cli import with_prefect_api
    from workpools.kubernetes.evaluation import flow_run_tags
    from workpools.kubernetes.provenance import DIRTY_TAG
    from workpools.kubernetes.provenance import config_version as find_version
    from workpools.local.job import CommandJob

    version = find_version(config, config_version, allow_dirty)
    settings, evaluation, values = load(config, files, version.commit)
    tags = flow_run_tags(evaluation) + (["evalq"] + ([DIRTY_TAG] if version.dirty else []))
    checked_manifests(config, values, "evaluation", tags, ["1.33"])
    job = CommandJob(argv=settings.args, label=f"{settings.image.rsplit('/', 1)[-1]}:{settings.image_tag}")
    run = with_prefect_api(create_run(deployment, job, values, tags), api)
    print(run_url(run))


async def create_run(deployment_name: str, job, values: dict, tags: list[str]):
    """A flow run of `deployment_name` (which must be on an evalq-kubernetes pool) with these job variables."""
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


RUNNER_OPTIONS = {"work_queues": "--work-queue", "node_selector": "--node-selector", "tolerations": "--toleration",
                  "service_account_name": "--service-account", "cpu_request": "--cpu", "memory_request": "--memory"}


def runner_job(**values):
    """A `RunnerJob`, or `InputError` naming the first bad option."""
    from pydantic import ValidationError

    from generate.errors import option_error
    from workpools.kubernetes.runners import RunnerJob, Toleration

    for index, text in enumerate(values.get("tolerations") or []):
        try:
            values["tolerations"][index] = Toleration.parse(text)
        except ValidationError as exc:
            raise InputError(None, f"--toleration {text}: {option_error(exc)}") from None
    try:
        return RunnerJob(**{key: value for key, value in values.items() if value is not None})
    except ValidationError as exc:
        raise option_error(exc, RUNNER_OPTIONS) from None


def key_values(pairs: list[str], option: str) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InputError(None, f"{option}: expected KEY=VALUE, got {pair!r}")
        found[key] = value
    return found


@app.command("runners")
@exit_on_input_error
def runners(
    image: str = typer.Option(..., "--image", help="Image with eval-jobqueue installed (repo:tag or repo@sha256:...)."),
    pool: str = typer.Option(..., "--pool", help="Work pool of type evalq-runner."),
    replicas: int = typer.Option(..., "--replicas", help="Runner pods (one per GPU node with --gpus of a node)."),
    slots: int = typer.Option(..., "--slots", help="Flow runs per runner at once."),
    idle_timeout: float = typer.Option(300.0, "--idle-timeout", help="A runner exits 0 (its pod completes) after this many idle seconds."),
    work_queue: List[str] = typer.Option([], "--work-queue", help="Only these queues of the pool (repeatable)."),
    gpus: int = typer.Option(1, "--gpus", help="nvidia.com/gpu per pod."),
    node_selector: List[str] = typer.Option([], "--node-selector", help="KEY=VALUE, e.g. cloud.google.com/gke-accelerator=nvidia-l4 (repeatable)."),
    toleration: Optional[List[str]] = typer.Option(None, "--toleration", help="KEY[=VALUE][:EFFECT] (repeatable; default nvidia.com/gpu:NoSchedule)."),
    api_url_secret: Optional[str] = typer.Option(None, "--api-url-secret", help="PREFECT_API_URL from this Secret: NAME or NAME:KEY."),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="PREFECT_API_URL as a plain value instead (default: the server found, see --api)."),
    api: Optional[str] = typer.Option(None, "--api", help="Where to check --pool (default: --api-url, else PREFECT_API_URL, else your `evalq server`)."),
    allow_loopback: bool = typer.Option(False, "--allow-loopback", help="Let the pods use a loopback API URL."),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (default evalq-runners)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Default evalq."),
    service_account: Optional[str] = typer.Option(None, "--service-account"),
    cpu: Optional[str] = typer.Option(None, "--cpu", help="CPU request per pod (default 4)."),
    memory: Optional[str] = typer.Option(None, "--memory", help="Memory request per pod (default 16Gi)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the manifest here (YAML), else print it."),
    kubernetes_version: List[str] = VERSIONS,
) -> None:
    """Warm runners on GPU nodes as one Indexed Job, validated strictly; `kubectl apply -f` it.
    The pool is checked on the Prefect server first (and a loopback URL for the pods refused)."""
    import yaml

    from generate.jsonio import write_atomic
    from workpools.kubernetes.render import validate_manifests
    from workpools.kubernetes.runners import manifest
    from workpools.runner.checks import checked_runner_server

    try:
        import kubernetes_validate  # noqa: F401
    except ModuleNotFoundError:
        raise InputError(None, "kubernetes-validate is not installed: pip install 'eval-jobqueue[kubernetes]'") from None
    if api_url and api_url_secret:
        raise InputError(None, "give the Prefect API URL either as a value or as a Secret, exactly one")
    found = checked_runner_server(api or api_url, pool, allow_loopback or bool(api_url_secret), runner_url=api_url)
    if not api_url_secret:
        api_url = api_url or found.for_other_nodes
    job = runner_job(
        image=image, pool=pool, replicas=replicas, slots=slots, idle_timeout=idle_timeout, work_queues=work_queue,
        gpus=gpus, node_selector=key_values(node_selector, "--node-selector"), tolerations=toleration,
        api_url_secret=api_url_secret, api_url=api_url, name=name, namespace=namespace,
        service_account_name=service_account, cpu_request=cpu, memory_request=memory,
    )
    rendered = manifest(job)
    problem = validate_manifests([rendered], kubernetes_version)
    if problem:
        raise InputError(None, problem)
    text = yaml.safe_dump(rendered, sort_keys=False)
    found.announce()
    if output is None:
        print(text, end="")
        return
    write_atomic(output, text)
    print(f"Job {job.name} ({job.replicas} runner pods on pool {job.pool!r}) -> {output}")
