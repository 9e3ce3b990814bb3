"""`evalq k8s render|submit|logs|runners`: organizers' evaluation configs as Kubernetes Jobs.

The image runs as it is (its own command; Prefect outside the pod, in the `kubernetes-job`
flow); a config with `prefect_in_pod: true` keeps the path where the pod runs the
`run-command` flow. The old GKE tool's habits work: `render CONFIG RUN_SPECS OUTPUT`,
`submit --job-spec PATH --config-version SHA`, `logs JOB_NAME --since 3d --output FILE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from flows.runtime.discovery import API_HELP
from generate.errors import InputError, exit_on_input_error
from workpools.kubernetes.jobspec import (
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_SCRATCH_CLASS,
    DEFAULT_TTL_SECONDS,
)

app = typer.Typer(no_args_is_help=True, help="Kubernetes evaluation jobs from organizers' configs.")

CONFIG = typer.Argument(..., help="The evaluation config (YAML), in evalq's or the old GKE tool's format.")
FILES = typer.Argument(None, help="Companion files, mounted under /etc/configs (with a helm section the first is the run specs).")
PLACEHOLDER_NOTE = "# Rendered offline by `evalq k8s render`: the flow run id and name are placeholders.\n"
VERSIONS = typer.Option(["1.30", "1.33"], "--kubernetes-version", help="Validate against this Kubernetes schema (repeatable).")
CONFIG_VERSION = typer.Option(None, "--config-version", help="The commit to record in CONFIG_VERSION (default: the config's git HEAD).")
# The Job's settings: unset, they come from the config, else the old GKE tool's values.
JOB_NAME = typer.Option(None, "--job-name", help="Default eval-<adjective>-<animal>; also the flow run's name.")
NAMESPACE = typer.Option(None, "--namespace", help="Default: the config's namespace, else `default`.")
SERVICE_ACCOUNT = typer.Option(None, "--service-account", help="Default: the config's, else `kubernetes`.")
TTL = typer.Option(DEFAULT_TTL_SECONDS, "--ttl", min=0, help="ttlSecondsAfterFinished of the Job.")
BACKOFF_LIMIT = typer.Option(DEFAULT_BACKOFF_LIMIT, "--backoff-limit", min=0, help="Retries of a failed pod before the Job fails.")
SCRATCH_SIZE = typer.Option(None, "--scratch-size", help="Size of /scratch (default: compute_config.scratch, 50Gi).")
SCRATCH_CLASS = typer.Option(DEFAULT_SCRATCH_CLASS, "--scratch-class", help="Storage class of the /scratch ephemeral claim.")
SCRATCH_EMPTY_DIR = typer.Option(False, "--scratch-empty-dir", help="/scratch as an emptyDir instead of a claim.")
MLFLOW_IMAGE = typer.Option(None, "--mlflow-image", help="Image of the init container for model_config.mlflow_artifact (default: the old tool's mlflow-skinny-gcp).")
GCS_IMAGE = typer.Option(None, "--gcs-image", help="Image of the init container for model_config.gs_uri (default: google-cloud-cli:slim).")
JOB_OPTIONS = {"job_name": "--job-name", "ttl_seconds_after_finished": "--ttl", "scratch_class": "--scratch-class"}


@app.callback()
def k8s() -> None:
    """Kubernetes evaluation jobs from organizers' configs."""


def job_options(job_name, namespace, service_account, ttl, backoff_limit, scratch_size, scratch_class,
                scratch_empty_dir, mlflow_image, gcs_image):
    """A `JobOptions` from the command line (unset ones keep their defaults), or `InputError` naming the first bad option."""
    from pydantic import ValidationError

    from generate.errors import option_error
    from workpools.kubernetes.jobspec import JobOptions, new_job_name

    optional = {"namespace": namespace, "service_account": service_account, "scratch_size": scratch_size,
                "mlflow_image": mlflow_image, "gcs_image": gcs_image}
    try:
        return JobOptions(
            job_name=job_name or new_job_name(), ttl_seconds_after_finished=ttl, backoff_limit=backoff_limit,
            scratch_class=None if scratch_empty_dir else scratch_class,
            **{key: value for key, value in optional.items() if value is not None},
        )
    except ValidationError as exc:
        raise option_error(exc, JOB_OPTIONS) from None


@app.command("render")
@exit_on_input_error
def render(
    config: Path = CONFIG,
    files: Optional[List[Path]] = FILES,
    output: Optional[Path] = typer.Option(None, "--output", help="Write the manifests here (YAML), else print them."),
    kubernetes_version: List[str] = VERSIONS,
    config_version: Optional[str] = CONFIG_VERSION,
    job_name: Optional[str] = JOB_NAME,
    namespace: Optional[str] = NAMESPACE,
    service_account: Optional[str] = SERVICE_ACCOUNT,
    ttl: int = TTL,
    backoff_limit: int = BACKOFF_LIMIT,
    scratch_size: Optional[str] = SCRATCH_SIZE,
    scratch_class: str = SCRATCH_CLASS,
    scratch_empty_dir: bool = SCRATCH_EMPTY_DIR,
    mlflow_image: Optional[str] = MLFLOW_IMAGE,
    gcs_image: Optional[str] = GCS_IMAGE,
) -> None:
    """The ConfigMap and Job a submitted CONFIG would create, validated strictly.

    The old tool's `render CONFIG RUN_SPECS OUTPUT.yml` works too (a new OUTPUT.yml)."""
    from generate.jsonio import read_text, write_atomic
    from workpools.kubernetes.config import parse_config
    from workpools.kubernetes.prepare import (
        RENDER_NOTE,
        checked,
        dump_manifests,
        image_job,
        split_output,
    )
    from workpools.kubernetes.provenance import head_commit

    files, output = split_output(list(files or []), output)
    text = read_text(config)
    settings = parse_config(text, config)
    if settings.prefect_in_pod:
        manifests = command_manifests(config, settings, files, "evaluation", None, kubernetes_version)
        note = PLACEHOLDER_NOTE
    else:
        options = job_options(job_name, namespace, service_account, ttl, backoff_limit, scratch_size, scratch_class,
                              scratch_empty_dir, mlflow_image, gcs_image)
        version = config_version or head_commit(config) or "unversioned"
        manifests = checked(image_job(config, settings, text, files, options, version), kubernetes_version, config)
        note = RENDER_NOTE.format(config=config, version=version, output=output or "JOB_SPEC.yml")
    rendered = note + dump_manifests(manifests)
    if output is None:
        print(rendered, end="")
        return
    write_atomic(output, rendered)
    print(f"{len(manifests)} manifests ({', '.join(m['kind'] for m in manifests)}) -> {output}")


def command_manifests(config_path: Path, settings, files: list[Path], name: str, commit: str | None,
                      versions: list[str], tags: list[str] | None = None) -> list[dict]:
    """prefect_in_pod: what the evalq-kubernetes worker creates for a run-command run (its template)."""
    from workpools.kubernetes.evaluation import flow_run_tags
    from workpools.kubernetes.prepare import checked, require_prefect_kubernetes
    from workpools.kubernetes.render import render_manifests

    require_prefect_kubernetes()
    values = command_job_variables(settings, files, commit)
    return checked(render_manifests(values, name, tags or flow_run_tags(settings.evaluation(commit))), versions, config_path)


def command_job_variables(settings, files: list[Path], commit: str | None) -> dict:
    from workpools.kubernetes.config import read_config_files
    from workpools.kubernetes.evaluation import job_variables

    values = job_variables(settings.evaluation(commit))
    config_files = read_config_files(files)
    if config_files:
        values["config_files"] = config_files
    return values


@app.command("submit")
@exit_on_input_error
def submit(
    config: Optional[Path] = typer.Argument(None, help="The evaluation config (YAML); or --job-spec."),
    files: Optional[List[Path]] = FILES,
    job_spec: Optional[Path] = typer.Option(None, "--job-spec", help="A spec `evalq k8s render` wrote earlier, submitted as it is."),
    config_version: Optional[str] = CONFIG_VERSION,
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Submit although the git tree has uncommitted changes."),
    deployment: Optional[str] = typer.Option(
        None, "--deployment", help="flow/deployment: kubernetes-job/runner, or run-command/kubernetes with prefect_in_pod."),
    credentials: Optional[str] = typer.Option(
        None, "--credentials", help="KubernetesCredentials block the flow uses (default: in-cluster account, else kubeconfig)."),
    poll_seconds: int = typer.Option(5, "--poll-seconds", min=1, help="How often the flow reads the Job's status."),
    job_name: Optional[str] = JOB_NAME,
    namespace: Optional[str] = NAMESPACE,
    service_account: Optional[str] = SERVICE_ACCOUNT,
    ttl: int = TTL,
    backoff_limit: int = BACKOFF_LIMIT,
    scratch_size: Optional[str] = SCRATCH_SIZE,
    scratch_class: str = SCRATCH_CLASS,
    scratch_empty_dir: bool = SCRATCH_EMPTY_DIR,
    mlflow_image: Optional[str] = MLFLOW_IMAGE,
    gcs_image: Optional[str] = GCS_IMAGE,
    api: Optional[str] = typer.Option(None, "--api", help=API_HELP),
) -> None:
    """Queue CONFIG (or --job-spec) as a flow run tagged with its provenance; print the Job's name and the run's URL."""
    from generate.jsonio import read_text
    from workpools.cli import with_prefect_api
    from workpools.kubernetes.config import parse_config
    from workpools.kubernetes.prepare import checked, image_job, run_tags
    from workpools.kubernetes.provenance import config_version as find_version
    from workpools.kubernetes.runs import (
        DEFAULT_JOB_DEPLOYMENT,
        create_job_run,
        run_url,
    )
    from workpools.kubernetes.submission import (
        JobRequest,
        read_job_spec,
        spec_config,
        with_config_version,
    )

    if (config is None) == (job_spec is None):
        raise InputError(None, "give CONFIG [FILES]... or --job-spec PATH (one of them)")
    if job_spec is not None:
        if files:
            raise InputError(None, "--job-spec carries its config files already: give no FILES")
        changed = {"--job-name": job_name, "--namespace": namespace, "--service-account": service_account,
                   "--ttl": ttl != DEFAULT_TTL_SECONDS, "--backoff-limit": backoff_limit != DEFAULT_BACKOFF_LIMIT,
                   "--scratch-size": scratch_size, "--scratch-class": scratch_class != DEFAULT_SCRATCH_CLASS,
                   "--scratch-empty-dir": scratch_empty_dir,
                   "--mlflow-image": mlflow_image, "--gcs-image": gcs_image}
        if any(changed.values()):
            option = next(name for name, value in changed.items() if value)
            raise InputError(None, f"{option}: --job-spec is submitted as it is; render it again to change the Job")
        version = find_version(job_spec, config_version, allow_dirty)
        job, config_map = read_job_spec(job_spec)
        job = with_config_version(job, version.commit)
        checked([doc for doc in (config_map, job) if doc], ["1.33"], job_spec)
        tags = run_tags(spec_config(job_spec, config_map), job, version.commit, version.dirty)
    else:
        text = read_text(config)
        settings = parse_config(text, config)
        version = find_version(config, config_version, allow_dirty)
        if settings.prefect_in_pod:
            submit_command(config, settings, list(files or []), version, deployment, api)
            return
        options = job_options(job_name, namespace, service_account, ttl, backoff_limit, scratch_size, scratch_class,
                              scratch_empty_dir, mlflow_image, gcs_image)
        config_map, job = checked(image_job(config, settings, text, list(files or []), options, version.commit), ["1.33"], config)
        tags = run_tags(settings, job, version.commit, version.dirty)
    request = JobRequest(job=job, config_map=config_map, credentials=credentials, poll_seconds=poll_seconds)
    run = with_prefect_api(create_job_run(deployment or DEFAULT_JOB_DEPLOYMENT, request, tags), api)
    print(f"{request.name}\t{run_url(run)}")


def submit_command(config: Path, settings, files: list[Path], version, deployment: str | None, api: str | None) -> None:
    """prefect_in_pod: a run-command run on the evalq-kubernetes pool; print its URL."""
    from workpools.cli import with_prefect_api
    from workpools.kubernetes.prepare import run_tags
    from workpools.kubernetes.runs import (
        DEFAULT_COMMAND_DEPLOYMENT,
        create_command_run,
        run_url,
    )
    from workpools.local.job import CommandJob

    values = command_job_variables(settings, files, version.commit)
    tags = run_tags(settings, {}, version.commit, version.dirty)
    command_manifests(config, settings, files, "evaluation", version.commit, ["1.33"], tags)
    job = CommandJob(argv=settings.args, label=f"{settings.image.rsplit('/', 1)[-1]}:{settings.image_tag}")
    run = with_prefect_api(create_command_run(deployment or DEFAULT_COMMAND_DEPLOYMENT, job, values, tags), api)
    print(run_url(run))


@app.command("logs")
@exit_on_input_error
def logs(
    job_name: str = typer.Argument(..., help="The Job's name, e.g. eval-merciful-crocodile."),
    since: str = typer.Option("1d", "--since", help="How far back: 30m, 12h, 3d, 2w."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the entries to this JSON file (else stdout)."),
    project: Optional[str] = typer.Option(None, "--project", help="Google Cloud project (default: GOOGLE_CLOUD_PROJECT or the credentials')."),
) -> None:
    """A Job's log entries from Cloud Logging, oldest first, as JSON (the old tool's get-job-logs)."""
    from flows.cloudlogging.client import make_client
    from flows.cloudlogging.read import parse_since
    from generate.jsonio import dump_json, write_atomic
    from workpools.kubernetes.jobspec import JOB_NAME as NAME_PATTERN
    from workpools.kubernetes.logs import read_job_logs

    if not NAME_PATTERN.match(job_name):
        raise InputError(None, f"JOB_NAME {job_name!r}: not a Kubernetes Job name (lowercase letters, digits and '-')")
    entries = read_job_logs(make_client(project), job_name, parse_since(since))
    if output is None:
        print(dump_json(entries), end="")
        return
    write_atomic(output, dump_json(entries))
    print(f"{len(entries)} entries -> {output}")


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
