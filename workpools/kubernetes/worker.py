"""The `evalq-kubernetes` worker: prefect-kubernetes' worker plus the evaluation's config files.

A flow run's `config_files` job variable (file name -> text) becomes a ConfigMap created just
before the Job, mounted under `/etc/configs` and owned by the Job. Everything else is
prefect-kubernetes' own `KubernetesWorker` (`prefect worker start --type evalq-kubernetes`).
"""

from __future__ import annotations

from typing import Any

from prefect_kubernetes.worker import (
    KubernetesWorker,
    KubernetesWorkerJobConfiguration,
    KubernetesWorkerVariables,
)
from pydantic import Field

from flows.naming import KUBERNETES_POOL_TYPE as WORK_POOL_TYPE
from workpools.kubernetes.configmap import (
    config_map_manifest,
    config_map_name,
    mount_config_map,
    owner_reference,
)


class EvaluationJobConfiguration(KubernetesWorkerJobConfiguration):
    """prefect-kubernetes' job configuration with the evaluation's config files."""

    config_files: dict[str, str] = Field(default_factory=dict)
    config_map: str | None = Field(None, description="Set per flow run when there are config files.")

    def prepare_for_flow_run(self, flow_run, *args: Any, **kwargs: Any) -> None:
        super().prepare_for_flow_run(flow_run, *args, **kwargs)
        if self.config_files:
            self.config_map = config_map_name(flow_run.id)
            mount_config_map(self.job_manifest, self.config_map)

    def config_map_manifest(self) -> dict | None:
        """The ConfigMap to create before the Job, if the run has config files."""
        if not self.config_map:
            return None
        labels = self.job_manifest["metadata"].get("labels", {})
        return config_map_manifest(self.config_map, self.namespace, self.config_files, labels)


class EvaluationVariables(KubernetesWorkerVariables):
    config_files: dict[str, str] = Field(
        default_factory=dict, description="Config files (name -> text) mounted under /etc/configs."
    )


class EvaluationKubernetesWorker(KubernetesWorker):
    """Creates the run's ConfigMap, then the Job (prefect-kubernetes), then hands the ConfigMap to the Job."""

    type = WORK_POOL_TYPE
    job_configuration = EvaluationJobConfiguration
    job_configuration_variables = EvaluationVariables
    _display_name = "Kubernetes (evalq evaluations)"
    _description = "prefect-kubernetes' worker plus evaluation config files as a ConfigMap."

    @classmethod
    def get_default_base_job_template(cls) -> dict:
        """`base-job-template.json`, so `prefect work-pool create --type evalq-kubernetes` gets it too."""
        from workpools.kubernetes import base_job_template

        return base_job_template()

    async def _create_job(self, configuration: EvaluationJobConfiguration, client):
        manifest = configuration.config_map_manifest()
        if manifest is None:
            return await super()._create_job(configuration, client)
        from kubernetes_asyncio.client import CoreV1Api

        core = CoreV1Api(client)
        await core.create_namespaced_config_map(configuration.namespace, manifest)
        try:
            job = await super()._create_job(configuration, client)
        except Exception:
            await core.delete_namespaced_config_map(manifest["metadata"]["name"], configuration.namespace)
            raise
        try:
            await core.patch_namespaced_config_map(
                manifest["metadata"]["name"], configuration.namespace,
                {"metadata": {"ownerReferences": [owner_reference(job.metadata.name, job.metadata.uid)]}},
            )
        except Exception as exc:  # noqa: BLE001 - the Job runs anyway; only cleanup is at stake
            self._logger.warning("ConfigMap %s keeps no owner (%s): delete it with the Job", manifest["metadata"]["name"], exc)
        return job
