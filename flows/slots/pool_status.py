"""Pool status, as `evalq pools status` and evaltui show it: per pool and server, capacity,
busy slots, holders, recent connection failures and quarantine. Pure: no Prefect.

`flows/slots/pools.py` (`pool_status`) reads the Prefect server and calls `pool_statuses` here;
evaltui (`tui/pools.py`) adds the episodes waiting per pool. Two views of the same data:
with a `Resources` (the CLI), its pools and servers as configured, even those without a limit
yet; without (evaltui), every evalq limit on the Prefect server, each server in the pool the
campaign's plan or its latest events name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flows.naming import (
    address_of_limit,
    pool_limit,
    pool_of_limit,
    server_limit_of_address,
)
from flows.slots.events import Holder
from flows.slots.quarantine_policy import QuarantineRecord
from generate.models import Resources

UNPOOLED = "(no pool)"
"""Shown for servers whose pool nobody named."""


@dataclass(frozen=True)
class ServerStatus:
    address: str
    pool: str
    capacity: int
    busy: int
    holders: list[Holder] = field(default_factory=list)
    unreachable_since: datetime | None = None
    """Last `evalq.server.unreachable` event in the recent window, if any."""
    quarantine: QuarantineRecord | None = None
    """Set while the server is quarantined (its limit is 0, `flows/slots/quarantine.py`): no new leases."""


@dataclass(frozen=True)
class PoolStatus:
    name: str
    capacity: int
    busy: int
    waiting: int = 0
    """Episodes loaded and waiting for a slot in this pool (evaltui counts them)."""
    servers: list[ServerStatus] = field(default_factory=list)

    @property
    def all_quarantined(self) -> bool:
        """No live server: the pool's episodes wait for a probe to find one back."""
        return bool(self.servers) and all(server.quarantine for server in self.servers)


Limits = dict[str, tuple[int, int]]
"""evalq global concurrency limits: name -> (limit, active slots)."""


def unrecorded_quarantine(address: str) -> QuarantineRecord:
    """A server whose limit is 0 without an active record (not yet written, or set by hand):
    it takes no leases all the same. `until` 0 tells readers there is no back-off to show."""
    return QuarantineRecord(address=address, since=0.0, until=0.0, reason="limit at 0")


def quarantined_addresses(limits: Limits) -> set[str]:
    """Servers whose limit is 0: the quarantine flag."""
    return {address for name, (limit, _) in limits.items() if limit == 0 and (address := address_of_limit(name))}


def server_layout(limits: Limits, resources: Resources | None, server_pools: dict[str, str]) -> list[tuple[str, str, int]]:
    """(address, pool, capacity) of every server to show: the resources' (in their order), else
    every server limit's (by address, its limit as capacity, its pool from `server_pools`)."""
    if resources is not None:
        return [(server.address, pool, server.capacity) for pool in resources.pools for server in resources.servers(pool)]
    found = {address: limit for name, (limit, _) in limits.items() if (address := address_of_limit(name))}
    return [(address, server_pools.get(address, ""), found[address]) for address in sorted(found)]


def pool_statuses(
    limits: Limits,
    layout: list[tuple[str, str, int]],
    holders: dict[str, list[Holder]],
    unreachable: dict[str, datetime],
    quarantine: dict[str, QuarantineRecord],
    resources: Resources | None = None,
) -> list[PoolStatus]:
    """The pools and their servers (`layout` from `server_layout`), busy slots from `limits`."""

    def active(name: str) -> int:
        return limits.get(name, (0, 0))[1]

    servers = [
        ServerStatus(address, pool, capacity, active(server_limit_of_address(address)), holders.get(address, []),
                     unreachable.get(address), quarantine.get(address))
        for address, pool, capacity in layout
    ]
    if resources is not None:
        return [PoolStatus(pool, resources.capacity(pool), active(pool_limit(pool)), 0, [s for s in servers if s.pool == pool])
                for pool in resources.pools]
    names = sorted({pool for name in limits if (pool := pool_of_limit(name)) is not None} | {s.pool for s in servers})
    result = []
    for pool in names:
        members = [s for s in servers if s.pool == pool]
        capacity, busy = limits.get(pool_limit(pool), (sum(s.capacity for s in members), sum(s.busy for s in members)))
        result.append(PoolStatus(pool or UNPOOLED, capacity, busy, 0, members))
    return result

