"""What `evalq workpools slurm-runners` and `evalq k8s runners` check before they start runners
on other nodes: the API URL the runners get is not this machine's loopback, and their pool is a
warm-runner pool on the server (a runner on a missing pool creates one and never gets work)."""

from __future__ import annotations

import asyncio

from flows.naming import RUNNER_POOL_TYPE
from flows.runtime.discovery import Found, pointed_at, require_prefect
from flows.runtime.host import is_loopback_url
from generate.errors import InputError


def refuse_loopback(runner_url: str, allow_loopback: bool) -> None:
    """One line when the runners would get a loopback URL, unless `--allow-loopback`."""
    if allow_loopback or not is_loopback_url(runner_url):
        return
    raise InputError(None, f"the runners would talk to {runner_url}, this machine's loopback, which other nodes cannot "
                           "reach: serve Prefect on an address they reach (`evalq server start --host 0.0.0.0`, or --api URL), "
                           "or pass --allow-loopback on a single-node cluster")


async def check_runner_pool(client, pool: str, api_url: str) -> None:
    """One line listing the pools of type evalq-runner when `pool` is not one of them."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterType

    pools = await client.read_work_pools(work_pool_filter=WorkPoolFilter(type=WorkPoolFilterType(any_=[RUNNER_POOL_TYPE])))
    names = sorted(found.name for found in pools)
    if pool in names:
        return
    raise InputError(None, f"--pool {pool}: no work pool of type {RUNNER_POOL_TYPE} by that name on {api_url} "
                           f"(pools of that type: {', '.join(names) or 'none'}; `evalq workpools apply --kind runner "
                           f"--name {pool}` creates one)")


def checked_runner_server(api: str | None, pool: str, allow_loopback: bool, runner_url: str | None = None) -> Found:
    """The server the rule finds, once the runners' URL (`runner_url`, else the server's URL for
    other nodes) is not loopback and `pool` is a warm-runner pool on it."""
    from prefect import get_client

    found = require_prefect(api)
    refuse_loopback(runner_url or found.for_other_nodes, allow_loopback)

    async def check() -> None:
        async with get_client() as client:
            await check_runner_pool(client, pool, found.api_url)

    with pointed_at(found.api_url):
        asyncio.run(check())
    return found
