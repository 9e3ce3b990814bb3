"""What a Prefect server needs before evalq runs episodes on it: the local work pool, the
deployments of prefect.yaml on it, and the zombie automation, applied side by side."""

from __future__ import annotations

import asyncio

from flows.naming import LOCAL_WORK_POOL
from flows.runtime.zombies import install_zombie_automation

WORKER_KINDS = ("runner", "prefork")
"""How the local pool runs episodes: in one warm runner process, or a forked process each."""


async def ensure_local_pool(client, work_pool: str = LOCAL_WORK_POOL, kind: str = "runner") -> None:
    """The local work pool of `kind` (recreated if an older run left a pool of another type)."""
    from flows.naming import PREFORK_POOL_TYPE, RUNNER_POOL_TYPE
    from flows.runtime.work_pools import apply_work_pool

    pool_type = PREFORK_POOL_TYPE if kind == "prefork" else RUNNER_POOL_TYPE
    await apply_work_pool(client, work_pool, pool_type, replace_other_type=True)


async def prepare_api(kind: str = "runner", pools: tuple[tuple[str, str], ...] = ((LOCAL_WORK_POOL, "local"),)) -> None:
    """Each (work pool, prefect.yaml deployment name) of `pools` (a pool of `kind`, the
    deployments on it), and the zombie automation, side by side."""
    from prefect import get_client

    from flows.runtime.deployments import apply_deployments

    async def pool_and_deployments(client, work_pool: str, deployment: str) -> None:
        await ensure_local_pool(client, work_pool, kind)
        await apply_deployments(client, deployment, work_pool=work_pool)

    async with get_client() as client:
        await asyncio.gather(install_zombie_automation(),
                             *(pool_and_deployments(client, work_pool, deployment) for work_pool, deployment in pools))
