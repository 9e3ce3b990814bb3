"""Work pools on the Prefect server, found by type through Prefect's worker registry.

A work-pool type is a worker class (`prefect.workers.base.BaseWorker`) that Prefect registers
when it loads the `prefect.collections` entry points (pyproject.toml; ours live in
`workpools/`). `prefect worker start --type T` finds its worker that way, and so do the flows:
the local runtime and the grader create their pools from the type's default base job template
without importing `workpools/` (docs/architecture.md, "Layers"). Not to be confused with
`flows/slots/pools.py`, the policy-server pools.
"""

from __future__ import annotations

from copy import deepcopy
from importlib.metadata import entry_points

from generate.errors import InputError


def worker_class(pool_type: str):
    """The worker class Prefect has registered for `pool_type`.

    Loads only the `prefect.collections` entry point named after the type (ours are), else
    every collection, as `prefect worker start --type` does (seconds: prefect-kubernetes).
    """
    from prefect.utilities.dispatch import get_registry_for_type
    from prefect.workers.base import BaseWorker

    def registered():
        return (get_registry_for_type(BaseWorker) or {}).get(pool_type)

    if registered() is None:
        for entry in entry_points(group="prefect.collections", name=pool_type):
            entry.load()
    found = registered() or BaseWorker.get_worker_class_from_type(pool_type)
    if found is None:
        raise InputError(None, f"work-pool type {pool_type!r} is not registered with Prefect: "
                               "is eval-jobqueue installed (`pip install -e .`)?")
    return found


def base_job_template(pool_type: str) -> dict:
    """A fresh copy of the type's default base job template (`job_configuration` + `variables`)."""
    return deepcopy(worker_class(pool_type).get_default_base_job_template())


async def apply_work_pool(
    client, name: str, pool_type: str, template: dict | None = None, replace_other_type: bool = False
) -> str:
    """Create pool `name`, or update its base job template (`template`, else the type's
    default); returns "created" or "updated".

    A pool of that name but another type is an error, or, with `replace_other_type` (a pool
    that only evalq uses, like the embedded server's), deleted and created anew.
    """
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = base_job_template(pool_type) if template is None else template
    try:
        existing = await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
        return "created"
    if existing.type != pool_type and replace_other_type:
        await client.delete_work_pool(name)
        return await apply_work_pool(client, name, pool_type, template)
    if existing.type != pool_type:
        raise InputError(None, f"work pool {name!r} exists with type {existing.type!r}, not {pool_type!r}")
    await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
    return "updated"
