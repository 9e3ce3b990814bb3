"""Render what the Kubernetes worker would create for a flow run, without a cluster.

Uses prefect-kubernetes' own job configuration (`worker.EvaluationJobConfiguration`, which
adds the config-files ConfigMap), so the manifests are exactly what the worker submits
(`pip install eval-jobqueue[kubernetes]`). `validate_manifests` checks them strictly against
the Kubernetes schema of the given versions (`kubernetes-validate`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

KUBERNETES_VERSIONS = ("1.30", "1.33")


class NoPrefectApi:
    """Stands in for a Prefect client when the template refers to no Prefect variable or block."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"the job template needs the Prefect API ({name}): it refers to a Prefect variable or block; pass a client"
        )


async def render_job_configuration(
    template: dict,
    values: dict,
    flow_run: Any,
    *,
    deployment: Any = None,
    flow: Any = None,
    work_pool: Any = None,
    client: Any = None,
):
    """The worker's job configuration for `flow_run` from a base job template and job variables."""
    from workpools.kubernetes.worker import EvaluationJobConfiguration

    configuration = await EvaluationJobConfiguration.from_template_and_values(
        template, values, client=client or NoPrefectApi()
    )
    configuration.prepare_for_flow_run(flow_run, deployment=deployment, flow=flow, work_pool=work_pool)
    return configuration


async def render_job_manifest(template: dict, values: dict, flow_run: Any, **context: Any) -> dict:
    """The Job manifest for `flow_run` from a base job template and job variables (`values`)."""
    return (await render_job_configuration(template, values, flow_run, **context)).job_manifest


def render_manifests(values: dict, name: str, tags: list[str]) -> list[dict]:
    """The ConfigMap (if any) and Job a flow run with job variables `values` would create, offline."""
    from prefect.client.schemas.objects import FlowRun

    from workpools.kubernetes import base_job_template

    run = FlowRun(id=uuid.uuid4(), name=name, flow_id=uuid.uuid4(), tags=tags)
    configuration = asyncio.run(render_job_configuration(base_job_template(), values, run))
    config_map = configuration.config_map_manifest()
    return ([config_map] if config_map else []) + [configuration.job_manifest]


def validate_manifests(manifests: list[dict], versions: tuple[str, ...] | list[str] = KUBERNETES_VERSIONS) -> str | None:
    """None when every manifest is strictly valid for every version, else the first problem."""
    import kubernetes_validate

    known = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    for version in versions:
        if ".".join(version.split(".")[:2]) not in known:
            return f"Kubernetes {version}: kubernetes-validate {kubernetes_validate.__version__} knows {min(known)} to {max(known)} only"
        for manifest in manifests:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(part) for part in exc.path) or "(top)"
                return f"{manifest.get('kind')} is not valid for Kubernetes {version}: {where}: {exc.message}"
            except kubernetes_validate.SchemaNotFoundError:
                return f"Kubernetes {version}: kubernetes-validate {kubernetes_validate.__version__} has no schema for {manifest.get('kind')}"
    return None
