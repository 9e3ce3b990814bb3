"""What a `kubernetes-job` flow run creates and follows (its one parameter), and job specs
rendered earlier (`evalq k8s submit --job-spec`) read back into one.

A job spec is the YAML `evalq k8s render` wrote (or the old GKE tool's `parse-job`): one Job
and at most one ConfigMap. `--config-version SHA` is written into the Job's `CONFIG_VERSION`,
and the tracking tags come from the `eval_config.yml` the ConfigMap carries.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pydantic import BaseModel, Field

from generate.errors import InputError
from generate.jsonio import read_text

SUBMITTED_KINDS = ("Job", "ConfigMap")


class JobRequest(BaseModel):
    """The manifests to create, and how to reach the cluster."""

    job: dict = Field(description="The Job manifest (named: the flow follows it by name).")
    config_map: dict | None = Field(None, description="Created before the Job, owned by it.")
    credentials: str | None = Field(
        None, description="A KubernetesCredentials block; default the in-cluster account, else the kubeconfig."
    )
    poll_seconds: int = Field(5, ge=1, description="How often the Job's status is read.")

    @property
    def name(self) -> str:
        return self.job["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.job["metadata"].get("namespace") or "default"


def read_job_spec(path: Path) -> tuple[dict, dict | None]:
    """The Job and ConfigMap (if any) of a rendered spec; `InputError` naming the file otherwise."""
    import yaml

    try:
        documents = [doc for doc in yaml.safe_load_all(read_text(path)) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(path, f"not valid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
    found: dict[str, list[dict]] = {kind: [] for kind in SUBMITTED_KINDS}
    for number, doc in enumerate(documents, start=1):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind not in found:
            raise InputError(path, f"document {number} is a {kind or 'document without a kind'}: a job spec holds one Job "
                                   "and its ConfigMap (apply anything else once with kubectl)")
        found[kind].append(doc)
    if len(found["Job"]) != 1 or len(found["ConfigMap"]) > 1:
        raise InputError(path, f"expected one Job and at most one ConfigMap, found {len(found['Job'])} and {len(found['ConfigMap'])}")
    job, config_map = found["Job"][0], (found["ConfigMap"] or [None])[0]
    if not (job.get("metadata") or {}).get("name"):
        raise InputError(path, "the Job has no metadata.name (the flow follows it by name)")
    namespaces = {(doc.get("metadata") or {}).get("namespace") or "default" for doc in (job, config_map) if doc}
    if len(namespaces) > 1:
        raise InputError(path, f"the Job and its ConfigMap are in different namespaces ({', '.join(sorted(namespaces))})")
    return job, config_map


def with_config_version(job: dict, commit: str) -> dict:
    """A copy of `job` recording `commit`: `CONFIG_VERSION` in its containers, the config-commit label."""
    from workpools.kubernetes.jobspec import label_value

    job = copy.deepcopy(job)
    pod = job["spec"]["template"]["spec"]
    containers = pod.get("containers") or []
    holders = [c for c in containers if any(e.get("name") == "CONFIG_VERSION" for e in c.get("env") or [])] or containers[:1]
    for container in holders:
        env = [e for e in container.get("env") or [] if e.get("name") != "CONFIG_VERSION"]
        container["env"] = env + [{"name": "CONFIG_VERSION", "value": commit}]
    for meta in (job["metadata"], job["spec"]["template"].setdefault("metadata", {})):
        meta.setdefault("labels", {})["evalq.io/config-commit"] = label_value(commit)
    return job


def spec_config(path: Path, config_map: dict | None):
    """The evaluation config in the spec's ConfigMap (`eval_config.yml`), if it has one."""
    from workpools.kubernetes.config import parse_config
    from workpools.kubernetes.jobspec import EVAL_CONFIG_KEY

    text = ((config_map or {}).get("data") or {}).get(EVAL_CONFIG_KEY)
    if text is None:
        return None
    try:
        return parse_config(text, path)
    except InputError as exc:
        raise InputError(path, f"{EVAL_CONFIG_KEY} of ConfigMap {config_map['metadata'].get('name')}: {exc.problem}") from None
