"""Warm runners on Kubernetes GPU nodes: one Indexed Job, one `evalq runner` per pod (pure).

An Indexed Job, not a Deployment: a runner exits 0 after its idle timeout and its pod then
completes, which frees the GPU node (a Deployment would restart it, holding GPUs with no
work); a pod that fails is restarted in place (`restartPolicy: OnFailure`) up to
`backoffLimit`; deleting the Job sends SIGTERM, and each runner crashes the runs it holds so
the campaign requeues them. The same semantics as the SLURM job array of runners.

The container runs `evalq runner` from the image (which must have eval-jobqueue installed)
as an argv, no shell. Kubernetes expands `$(VAR)` in args: every `$` of a user value is
doubled, so only our `$(POD_NAME)` is expanded.
"""

from __future__ import annotations

import re
from typing import Optional

from pydantic import BaseModel, Field, field_validator, model_validator

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(|[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


class Toleration(BaseModel, extra="forbid"):
    key: str
    operator: str = Field(default="Exists", pattern="^(Exists|Equal)$")
    value: Optional[str] = None
    effect: Optional[str] = Field(default=None, pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")

    @classmethod
    def parse(cls, text: str) -> "Toleration":
        """`KEY[=VALUE][:EFFECT]`, e.g. `nvidia.com/gpu:NoSchedule` or `pool=gpu:NoExecute`."""
        spec, _, effect = text.partition(":")
        key, equals, value = spec.partition("=")
        return cls(key=key, operator="Equal" if equals else "Exists", value=value if equals else None,
                   effect=effect or None)


class RunnerJob(BaseModel, extra="forbid"):
    """The variables of the runners' manifest."""

    image: str = Field(min_length=1, description="Image with eval-jobqueue installed, `repo:tag` or `repo@sha256:...`.")
    pool: str = Field(min_length=1, description="Work pool of type evalq-runner.")
    work_queues: list[str] = Field(default_factory=list)
    replicas: int = Field(ge=1, le=1000, description="Runner pods (completions and parallelism of the Job).")
    slots: int = Field(ge=1, description="Flow runs each runner runs at once.")
    idle_timeout: float = Field(gt=0, description="A runner exits 0 (its pod completes) after this many idle seconds.")
    gpus: int = Field(default=1, ge=0, description=f"`{GPU_RESOURCE}` per pod.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=lambda: [Toleration(**t) for t in DEFAULT_TOLERATIONS])
    api_url: Optional[str] = Field(default=None, description="PREFECT_API_URL as a plain value...")
    api_url_secret: Optional[str] = Field(default=None, description="...or from this Secret, as `NAME` or `NAME:KEY`.")
    name: str = Field(default="evalq-runners", max_length=52, description="Job name (pods add a suffix).")
    namespace: str = Field(default="evalq")
    service_account_name: Optional[str] = None
    cpu_request: str = "4"
    memory_request: str = "16Gi"
    ttl_seconds_after_finished: int = Field(default=3600, ge=0)

    @field_validator("name", "namespace", "service_account_name")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) <= 63 and DNS_LABEL.fullmatch(value)):
            raise ValueError(f"{value!r} is not a DNS label (lower-case letters, digits and '-')")
        return value

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, selector: dict[str, str]) -> dict[str, str]:
        for key, value in selector.items():
            if not LABEL_KEY.fullmatch(key) or not (len(value) <= 63 and LABEL_VALUE.fullmatch(value)):
                raise ValueError(f"{key}={value} is not a node label")
        return selector

    @model_validator(mode="after")
    def _one_api_url(self) -> "RunnerJob":
        if (self.api_url is None) == (self.api_url_secret is None):
            raise ValueError("give the Prefect API URL either as a value or as a Secret, exactly one")
        return self

    def api_url_env(self) -> dict:
        if self.api_url is not None:
            return {"name": "PREFECT_API_URL", "value": self.api_url}
        secret, _, key = self.api_url_secret.partition(":")
        return {"name": "PREFECT_API_URL",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key or "PREFECT_API_URL"}}}

    def runner_args(self) -> list[str]:
        """`evalq runner ...`, each user value with `$` doubled so Kubernetes expands only `$(POD_NAME)`."""
        queues = [word for queue in self.work_queues for word in ("--work-queue", queue)]
        words = ["runner", "--pool", self.pool, *queues, "--slots", str(self.slots),
                 "--idle-timeout", f"{self.idle_timeout:g}"]
        return [word.replace("$", "$$") for word in words] + ["--name", "$(POD_NAME)"]


def manifest(job: RunnerJob) -> dict:
    """The Indexed Job of `job.replicas` runner pods."""
    labels = {"app.kubernetes.io/name": "evalq-runner", "app.kubernetes.io/instance": job.name}
    resources = {"requests": {"cpu": job.cpu_request, "memory": job.memory_request}}
    if job.gpus:
        resources["limits"] = {GPU_RESOURCE: job.gpus}
    container = {
        "name": "runner",
        "image": job.image,
        "command": ["evalq"],
        "args": job.runner_args(),
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            job.api_url_env(),
            {"name": "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "value": "30"},
        ],
        "resources": resources,
    }
    pod = {
        "restartPolicy": "OnFailure",
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "nodeSelector": job.node_selector,
        "tolerations": [t.model_dump(exclude_none=True) for t in job.tolerations],
    }
    if job.service_account_name:
        pod["serviceAccountName"] = job.service_account_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": labels,
                     "annotations": {"evalq.io/work-pool": job.pool}},
        "spec": {
            "completionMode": "Indexed",
            "completions": job.replicas,
            "parallelism": job.replicas,
            "backoffLimit": 2 * job.replicas,
            "ttlSecondsAfterFinished": job.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }
