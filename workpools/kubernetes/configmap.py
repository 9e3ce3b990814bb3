"""An evaluation's config files as a ConfigMap mounted read-only under `/etc/configs` (pure).

The ConfigMap is named after the flow run, so each run's Job sees the files it was submitted
with; the worker makes the Job its owner, so Kubernetes deletes it with the Job.
"""

from __future__ import annotations

MOUNT_PATH = "/etc/configs"
VOLUME_NAME = "configs"
MAX_BYTES = 1_000_000
"""A ConfigMap holds at most 1 MiB (etcd's object limit); keep a margin for metadata."""


def config_map_name(flow_run_id: object) -> str:
    return f"evalq-configs-{flow_run_id}"


def config_map_manifest(name: str, namespace: str, files: dict[str, str], labels: dict[str, str]) -> dict:
    """The ConfigMap holding `files` (file name -> text)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": dict(files),
    }


def mount_config_map(job_manifest: dict, name: str) -> None:
    """Add the ConfigMap volume to the Job's pod and mount it read-only in its first container."""
    pod = job_manifest["spec"]["template"]["spec"]
    pod.setdefault("volumes", []).append({"name": VOLUME_NAME, "configMap": {"name": name}})
    container = pod["containers"][0]
    container.setdefault("volumeMounts", []).append({"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": True})


def owner_reference(job_name: str, job_uid: str) -> dict:
    """Makes the Job the ConfigMap's owner: deleting the Job deletes its ConfigMap."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}
