"""The pools panel's data: capacity and busy slots from the global concurrency limits, who holds
each server (slot events), which servers were unreachable lately or are quarantined, and how
many episodes wait per pool. Quarantine records are read through `flows/quarantine.py`, the same
as `evalq pools status`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone

from flows import naming
from flows.slot_events import (
    SlotEvent,
    holder_events_query,
    holders_from_events,
    server_events_query,
)
from tui.gateway import Gateway, run_filter, run_tag
from tui.models import PoolsSnapshot, PoolStatus, ServerStatus

UNREACHABLE_WINDOW = timedelta(minutes=10)
HOLDER_WINDOW = timedelta(days=2)


class PoolReads:
    """Pool and server status through `gateway`."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def limits(self) -> dict[str, tuple[int, int]]:
        """evalq global concurrency limits: name -> (limit, active slots)."""
        client = await self.gateway.client()
        found: dict[str, tuple[int, int]] = {}
        offset = 0
        while True:
            batch = await client.read_global_concurrency_limits(limit=200, offset=offset)
            for limit in batch:
                if naming.is_evalq_limit(limit.name):
                    found[limit.name] = (limit.limit, limit.active_slots)
            if len(batch) < 200:
                return found
            offset += 200

    async def snapshot(self) -> PoolsSnapshot:
        gateway = self.gateway
        await gateway.ensure_campaign()
        limits = await self.limits()
        server_pool = (await gateway.plan()).server_pools()
        since = datetime.now(timezone.utc)
        unreachable = await gateway.events(
            server_events_query([naming.SERVER_UNREACHABLE], since - UNREACHABLE_WINDOW, since + timedelta(minutes=1)), limit=50,
        )
        last_unreachable: dict[str, datetime] = {}
        for event in map(SlotEvent.from_event, unreachable):
            last_unreachable.setdefault(event.address, event.occurred)
            server_pool.setdefault(event.address, event.pool)

        servers = {naming.address_of_limit(name): value for name, value in limits.items() if naming.address_of_limit(name)}
        statuses = await asyncio.gather(*(
            self.server_status(address, server_pool.get(address, ""), capacity, busy, last_unreachable.get(address))
            for address, (capacity, busy) in sorted(servers.items())
        ))
        pool_names = sorted({naming.pool_of_limit(name) for name in limits if naming.pool_of_limit(name) is not None} | {s.pool for s in statuses})
        waiting = await self.waiting_by_pool() if gateway.campaign else {}
        result = []
        for pool in pool_names:
            wait = waiting.get(pool, 0)
            members = [s for s in statuses if s.pool == pool]
            capacity, busy = limits.get(naming.pool_limit(pool), (sum(s.capacity for s in members), sum(s.busy for s in members)))
            result.append(PoolStatus(pool or "(no pool)", capacity, busy, wait, members))
        return await mark_quarantined(await gateway.client(), PoolsSnapshot(result, datetime.now(timezone.utc)), limits)

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

    async def server_status(self, address: str, pool: str, capacity: int, busy: int, unreachable: datetime | None) -> ServerStatus:
        holders = []
        if busy:
            events = await self.gateway.events(holder_events_query(address, HOLDER_WINDOW), limit=max(20, 4 * capacity))
            holders = holders_from_events(events)[-busy:]
            if not pool and events:
                pool = SlotEvent.from_event(events[0]).pool
        return ServerStatus(address, pool, capacity, busy, holders, unreachable)


async def mark_quarantined(client, snapshot: PoolsSnapshot, limits: dict[str, tuple[int, int]]) -> PoolsSnapshot:
    """The snapshot with each quarantined server's record (`limits`: name -> (limit, busy);
    a server limit at 0 is quarantined). One variables read, only when some server is."""
    from flows.quarantine import QuarantineRecord, read_records

    sick = {naming.address_of_limit(name) for name, (limit, _) in limits.items() if limit == 0} - {None}
    if not sick:
        return snapshot
    records = await read_records(client)

    def record_of(address: str) -> QuarantineRecord:
        record = records.get(address)
        return record if record is not None and record.active else QuarantineRecord(address=address, since=0.0, until=0.0, reason="limit at 0")

    pools = [
        dataclasses.replace(pool, servers=[dataclasses.replace(s, quarantine=record_of(s.address)) if s.address in sick else s
                                           for s in pool.servers])
        for pool in snapshot.pools
    ]
    return dataclasses.replace(snapshot, pools=pools)
