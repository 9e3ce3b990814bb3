"""The pools panel's data: the pool-status service (`flows/slots/pools.py`, the same as `evalq pools
status`) read through the gateway's client, the servers placed in the pools the campaign's plan
names, plus what only evaltui shows: how many of the campaign's episodes wait per pool.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from flows import naming
from tui.gateway import Gateway, run_filter, run_tag
from tui.models import PoolsSnapshot


class PoolReads:
    """Pool and server status through `gateway`."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def snapshot(self) -> PoolsSnapshot:
        from flows.slots.pools import pool_status

        gateway = self.gateway
        await gateway.ensure_campaign()
        pools = await pool_status(await gateway.client(), server_pools=(await gateway.plan()).server_pools())
        waiting = await self.waiting_by_pool() if gateway.campaign else {}
        pools = [dataclasses.replace(pool, waiting=waiting.get(pool.name, 0)) for pool in pools]
        return PoolsSnapshot(pools, datetime.now(timezone.utc))

    async def waiting_by_pool(self, most: int = 2000) -> dict[str, int]:
        """Episodes waiting for a server, by pool: few under just-in-time dispatch, so read and
        grouped here (one query) rather than counted pool by pool."""
        waiting: dict[str, int] = {}
        flt = run_filter(self.gateway.tags(), types=["RUNNING"], names=[naming.WAITING_STATE])
        async for runs in self.gateway.run_pages(flt, most=most):
            for run in runs:
                pool = run_tag(run, "pool")
                waiting[pool] = waiting.get(pool, 0) + 1
        return waiting
