"""What organizers keep per evaluation, mapped onto the Kubernetes pool's job variables and tags.

An organizer's config names the image and tag, the compute an episode needs and where the
config came from (its git commit). `job_variables()` turns it into the variables of
`base-job-template.json` (deployment or flow-run `job_variables`); `flow_run_tags()` into
provenance tags, so runs can be filtered by image tag and config commit in the Prefect UI.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"


class Compute(BaseModel):
    """Resources of one evaluation pod."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # `cpu: 8` means "8"

    gpus: int = Field(1, ge=0, description="`nvidia.com/gpu` count.")
    accelerator: str | None = Field(None, description="GKE accelerator type, e.g. `nvidia-l4`; becomes a node selector.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Further node labels to require.")
    cpu: str = Field("4", description="CPU request (Kubernetes quantity).")
    cpu_limit: str | None = Field(None, description="CPU limit; none by default (limits throttle).")
    memory: str = Field("16Gi", description="Memory request and limit.")
    scratch: str = Field("50Gi", description="Size limit of the scratch `emptyDir`.")


class KubernetesEvaluation(BaseModel):
    """One evaluation's settings, as organizers keep them next to their challenge config."""

    image: str = Field(description="Image repository, e.g. `ghcr.io/org/sim-eval`.")
    image_tag: str = Field(description="Tag or `sha256:` digest of the image.")
    namespace: str | None = None
    service_account: str | None = None
    compute: Compute = Field(default_factory=Compute)
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables.")
    secrets: list[str] = Field(default_factory=list, description="Secrets whose keys become environment variables.")
    git_commit: str | None = Field(None, description="Commit of the organizer's config: provenance.")
    tags: list[str] = Field(default_factory=list, description="Extra flow-run tags.")

    @property
    def image_ref(self) -> str:
        separator = "@" if self.image_tag.startswith("sha256:") else ":"
        return f"{self.image}{separator}{self.image_tag}"


def job_variables(evaluation: KubernetesEvaluation) -> dict:
    """Job variables for the Kubernetes pool's base job template (unset ones keep the pool default)."""
    compute = evaluation.compute
    node_selector = dict(compute.node_selector)
    if compute.accelerator:
        node_selector[GKE_ACCELERATOR_LABEL] = compute.accelerator
    variables: dict = {
        "image": evaluation.image_ref,
        "gpus": compute.gpus,
        "node_selector": node_selector,
        "cpu_request": compute.cpu,
        "memory_request": compute.memory,
        "memory_limit": compute.memory,
        "scratch_size": compute.scratch,
        "env_from": [{"secretRef": {"name": name}} for name in evaluation.secrets],
        "labels": provenance_labels(evaluation),
    }
    if evaluation.env:
        variables["env"] = dict(evaluation.env)
    optional = {
        "cpu_limit": compute.cpu_limit,
        "namespace": evaluation.namespace,
        "service_account_name": evaluation.service_account,
    }
    variables.update({key: value for key, value in optional.items() if value is not None})
    return variables


def provenance_labels(evaluation: KubernetesEvaluation) -> dict[str, str]:
    """Kubernetes labels on the Job and pod (the worker slugifies them to valid label values)."""
    labels = {"evalq.io/image-tag": evaluation.image_tag.removeprefix("sha256:")[:63]}
    if evaluation.git_commit:
        labels["evalq.io/config-commit"] = evaluation.git_commit
    return labels


def flow_run_tags(evaluation: KubernetesEvaluation) -> list[str]:
    """Provenance tags for the flow runs of this evaluation: image, tag, compute, config commit."""
    compute = evaluation.compute
    tags = [f"image:{evaluation.image}", f"image-tag:{evaluation.image_tag}"]
    if compute.accelerator:
        tags.append(f"accelerator:{compute.accelerator}")
    tags += [f"cpu:{compute.cpu}", f"memory:{compute.memory}"]
    if evaluation.git_commit:
        tags.append(f"config-commit:{evaluation.git_commit[:12]}")
    return tags + [tag for tag in evaluation.tags if tag not in tags]
