"""The Job and ConfigMap that run an organizer's image as it is (pure).

The shape is the old GKE tool's (its documentation's rendered Job): the image's own command in
container `eval` with `CONFIG_VERSION`, `CONFIG_PATH_GIT_REPO`, `HELM_CONFIG_PATH_GIT_REPO`,
`JOB_NAME` (and `MLFLOW_TRACKING_URI` with `mlflow_config`); the config as `eval_config.yml`
and its companion files (the run specs also as `run_specs.conf`) under `/etc/configs`; a
scratch volume at `/scratch`, filled first by an init container when `model_config` names a
model; the GPU, node selector and requests of `compute_config`. Prefect is not in the pod: the
`kubernetes-job` flow (`flow.py`) creates both and follows the Job.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from workpools.kubernetes.config import EvaluationConfig
from workpools.kubernetes.evaluation import GKE_ACCELERATOR_LABEL

DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_ACCOUNT = "kubernetes"
DEFAULT_TTL_SECONDS = 1800
DEFAULT_BACKOFF_LIMIT = 3
DEFAULT_SCRATCH_CLASS = "ssd"
DEFAULT_MLFLOW_IMAGE = (
    "europe-west4-docker.pkg.dev/neurips-llm-eff-challenge-2023/container-registry-neurips-2023/mlflow-skinny-gcp:da958c6a7e"
)
DEFAULT_GCS_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:slim"
"""The old tool's values (namespace, service account, TTL, backoff limit, scratch class, MLflow
image) and a public Google Cloud CLI image for `gs_uri`."""

EVAL_CONFIG_KEY = "eval_config.yml"
RUN_SPECS_KEY = "run_specs.conf"
CONFIGS_PATH = "/etc/configs"
SCRATCH_PATH = "/scratch"
CONTAINER_NAME = "eval"
INIT_CONTAINER_NAME = "init"
CONFIGS_VOLUME = "configs-volume"
SCRATCH_VOLUME = "scratch-volume"
MANAGED_BY = {"app.kubernetes.io/managed-by": "evalq"}
JOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class JobOptions(BaseModel):
    """Per-submission settings (command-line options); unset ones come from the config, else the defaults."""

    job_name: str = Field(description="`eval-<words>` by default; also the flow run's name.")
    namespace: str | None = None
    service_account: str | None = None
    ttl_seconds_after_finished: int = Field(DEFAULT_TTL_SECONDS, ge=0)
    backoff_limit: int = Field(DEFAULT_BACKOFF_LIMIT, ge=0)
    scratch_size: str | None = Field(None, description="Default: compute_config.scratch.")
    scratch_class: str | None = Field(DEFAULT_SCRATCH_CLASS, description="Storage class of the scratch claim; None: emptyDir.")
    mlflow_image: str = Field(DEFAULT_MLFLOW_IMAGE, min_length=1)
    gcs_image: str = Field(DEFAULT_GCS_IMAGE, min_length=1)

    @field_validator("job_name")
    @classmethod
    def kubernetes_name(cls, value: str) -> str:
        if not JOB_NAME.match(value):
            raise PydanticCustomError("name", "'{value}' is not a Kubernetes name: lowercase letters, digits and '-', "
                                      "at most 63, a letter or digit at each end", {"value": value})
        return value


class Origin(BaseModel):
    """Where the files came from: the commit and their paths in the repository."""

    config_version: str
    config_path: str
    run_specs_path: str | None = None


def new_job_name() -> str:
    """A readable, fresh Job name, `eval-<adjective>-<animal>` (the old tool's style)."""
    from prefect.utilities.names import generate_slug

    return f"eval-{generate_slug(2)}"


def label_value(text: str) -> str:
    """`text` as a valid label value (letters, digits, `-_.`, at most 63, alphanumeric ends)."""
    return LABEL_UNSAFE.sub("-", text.removeprefix("sha256:"))[:63].strip("-_.")


def job_labels(config: EvaluationConfig, origin: Origin) -> dict[str, str]:
    return {**MANAGED_BY, "evalq.io/image-tag": label_value(config.image_tag),
            "evalq.io/config-commit": label_value(origin.config_version)}


def job_manifests(
    config: EvaluationConfig, config_text: str, files: dict[str, str], run_specs: str | None,
    options: JobOptions, origin: Origin,
) -> list[dict]:
    """The ConfigMap and the Job for `config` (its text travels as `eval_config.yml`), with the
    companion `files` (name -> text); `run_specs` names the one also mounted as `run_specs.conf`."""
    namespace = options.namespace or config.namespace or DEFAULT_NAMESPACE
    labels = job_labels(config, origin)
    config_map_name = f"{options.job_name}-configs"
    data = {EVAL_CONFIG_KEY: config_text, **files}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": config_map_name, "namespace": namespace, "labels": labels}, "data": data}
    pod: dict = {}
    service_account = options.service_account or config.service_account or DEFAULT_SERVICE_ACCOUNT
    if service_account:
        pod["serviceAccountName"] = service_account
    compute = config.compute_config
    node_selector = {**compute.node_selector, **({GKE_ACCELERATOR_LABEL: compute.accelerator} if compute.accelerator else {})}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if compute.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    init = init_container(config, options)
    if init:
        pod["initContainers"] = [init]
    pod["containers"] = [eval_container(config, options, origin)]
    pod["volumes"] = [configs_volume(config_map_name, list(data), run_specs), scratch_volume(options.scratch_size or compute.scratch, options.scratch_class)]
    pod["restartPolicy"] = "Never"
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": options.job_name, "namespace": namespace, "labels": labels},
        "spec": {"ttlSecondsAfterFinished": options.ttl_seconds_after_finished, "backoffLimit": options.backoff_limit,
                 "template": {"metadata": {"labels": dict(labels)}, "spec": pod}},
    }
    return [config_map, job]


def environment(config: EvaluationConfig, options: JobOptions, origin: Origin) -> list[dict]:
    """What the image reads, then the config's own `env`."""
    values = {"CONFIG_PATH_GIT_REPO": origin.config_path}
    if origin.run_specs_path:
        values["HELM_CONFIG_PATH_GIT_REPO"] = origin.run_specs_path
    values.update(JOB_NAME=options.job_name, CONFIG_VERSION=origin.config_version)
    if config.mlflow_config:
        values["MLFLOW_TRACKING_URI"] = config.mlflow_config.tracking_uri
    values.update({key: value for key, value in config.env.items() if key not in values})
    return [{"name": key, "value": value} for key, value in values.items()]


def eval_container(config: EvaluationConfig, options: JobOptions, origin: Origin) -> dict:
    compute = config.compute_config
    limits: dict = {"memory": compute.memory}
    if compute.gpus:
        limits["nvidia.com/gpu"] = str(compute.gpus)
    if compute.cpu_limit:
        limits["cpu"] = compute.cpu_limit
    separator = "@" if config.image_tag.startswith("sha256:") else ":"
    container: dict = {"name": CONTAINER_NAME, "image": f"{config.image}{separator}{config.image_tag}"}
    if config.command:
        container["command"] = list(config.command)
    container["args"] = config.container_args
    container["env"] = environment(config, options, origin)
    if config.secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in config.secrets]
    container["resources"] = {"limits": limits, "requests": {"cpu": compute.cpu, "memory": compute.memory}}
    container["volumeMounts"] = [{"name": CONFIGS_VOLUME, "mountPath": CONFIGS_PATH, "readOnly": True},
                                 {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}]
    return container


def init_container(config: EvaluationConfig, options: JobOptions) -> dict | None:
    """Downloads the model into /scratch before the evaluation: `mlflow artifacts download`, or a GCS copy."""
    model = config.model
    if model is None or (model.mlflow_artifact is None and model.gs_uri is None):
        return None
    container: dict = {"name": INIT_CONTAINER_NAME}
    if model.mlflow_artifact is not None:
        artifact = model.mlflow_artifact
        container.update(
            image=options.mlflow_image,
            env=[{"name": "MLFLOW_TRACKING_URI", "value": config.mlflow_config.tracking_uri}],
            command=["mlflow"],
            args=["artifacts", "download", "-r", artifact.run_id, "-a", artifact.artifact_path, "-d", SCRATCH_PATH],
        )
    else:
        container.update(image=options.gcs_image, command=["gcloud"],
                         args=["storage", "cp", "--recursive", model.gs_uri, SCRATCH_PATH])
    container["volumeMounts"] = [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}]
    return container


def configs_volume(config_map_name: str, keys: list[str], run_specs: str | None) -> dict:
    """Every key as a file of its own name; the run specs also as `run_specs.conf`."""
    items = [{"key": key, "path": key} for key in keys]
    if run_specs and run_specs != RUN_SPECS_KEY:
        items.append({"key": run_specs, "path": RUN_SPECS_KEY})
    return {"name": CONFIGS_VOLUME, "configMap": {"name": config_map_name, "items": items}}


def scratch_volume(size: str, storage_class: str | None) -> dict:
    """An ephemeral claim of `size` on `storage_class` (deleted with the pod), or an `emptyDir`."""
    if storage_class is None:
        return {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": size}}
    claim = {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class, "resources": {"requests": {"storage": size}}}
    return {"name": SCRATCH_VOLUME, "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": {"type": "scratch-volume"}}, "spec": claim}}}
