"""Apply the deployments defined in `prefect.yaml` through the Prefect client.

`prefect deploy --all` reads the same file on a cluster; the embedded server of
`evalq demo` and `evalq campaign run` gets its `local` deployments from here, so the two
paths cannot drift apart. `use_installed_package` is the pull step `prefect deploy` writes
into every deployment (see prefect.yaml's `pull:`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.client.orchestration import PrefectClient
from prefect.utilities.callables import parameter_schema
from prefect.utilities.importtools import import_object

from generate.errors import InputError

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def use_installed_package() -> dict:
    """A deployment pull step that pulls nothing: the flows come from the installed
    eval-jobqueue package, so a run does not depend on the directory `prefect deploy` ran in
    (Prefect's default for `pull: null` is a `set_working_directory` step to that directory)."""
    return {}


def load_project(path: Path = PREFECT_YAML) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read deployments: {exc}") from None


def load_specs(path: Path = PREFECT_YAML) -> list[dict]:
    return list(load_project(path).get("deployments") or [])


async def apply_deployments(
    client: PrefectClient, name: str = "local", path: Path = PREFECT_YAML, work_pool: str | None = None,
    as_name: str | None = None,
) -> dict[str, str]:
    """Create or update every deployment called `name` (renamed `as_name`); returns `flow/deployment` -> id."""
    applied: dict[str, str] = {}
    project = load_project(path)
    for spec in project.get("deployments") or []:
        if spec.get("name") != name:
            continue
        flow = import_object(spec["entrypoint"])
        flow_id = await client.create_flow_from_name(flow.name)
        pool = spec.get("work_pool") or {}
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=as_name or name,
            entrypoint=spec["entrypoint"],
            description=spec.get("description"),
            tags=spec.get("tags") or [],
            parameters=spec.get("parameters") or {},
            work_pool_name=work_pool or pool.get("name"),
            work_queue_name=pool.get("work_queue_name"),
            job_variables=pool.get("job_variables") or {},
            parameter_openapi_schema=parameter_schema(flow.fn).model_dump_for_openapi(),
            enforce_parameter_schema=False,
            pull_steps=spec.get("pull", project.get("pull")) or None,
        )
        applied[f"{flow.name}/{as_name or name}"] = str(deployment_id)
    return applied
