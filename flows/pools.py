"""Policy-server pools as Prefect global concurrency limits: apply them, read their status.

Prefect has no API that lists a limit's holders, so episodes emit `evalq.slot.acquired` /
`evalq.slot.released` events (`flows/slot_events.py`); `holders_of()` pairs them up by lease id. A
quarantined server's limit is 0 (`flows/quarantine.py`): applying the pools leaves it so until a
probe lifts it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from prefect.client.orchestration import PrefectClient
from prefect.events.filters import EventFilter
from prefect.exceptions import ObjectNotFound

from flows.naming import address_of_limit, pool_limit, server_limit
from flows.quarantine import QuarantineRecord, read_record
from flows.slot_events import Holder, holder_events_query, holders_from_events, parse_time  # noqa: F401  (re-exported)

EVENTS_PAGE = 50
"""The most events the API returns in one page."""
HOLDER_WINDOW = dt.timedelta(days=7)
"""How far back a server's slot events are read for its holders."""
from generate.models import Resources


@dataclass
class ServerStatus:
    address: str
    capacity: int
    busy: int
    holders: list[Holder] = field(default_factory=list)
    quarantine: QuarantineRecord | None = None
    """Set while the server is quarantined (its limit is 0)."""


@dataclass
class PoolStatus:
    name: str
    capacity: int
    busy: int
    servers: list[ServerStatus]

    @property
    def all_quarantined(self) -> bool:
        """No live server: the pool's episodes wait for a probe to find one back."""
        return bool(self.servers) and all(server.quarantine for server in self.servers)


def wanted_limits(resources: Resources) -> dict[str, int]:
    """Every limit name the resources need, with its limit."""
    limits: dict[str, int] = {}
    for pool in resources.pools:
        limits[pool_limit(pool)] = resources.capacity(pool)
        for server in resources.servers(pool):
            limits[server_limit(server)] = server.capacity
    return limits


async def apply_pools(client: PrefectClient, resources: Resources) -> dict[str, str]:
    """Create or update the limits; returns name -> `created` | `updated` | `unchanged`."""
    outcome: dict[str, str] = {}
    for name, limit in wanted_limits(resources).items():
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing.limit == limit and existing.active:
            outcome[name] = "unchanged"
            continue
        if existing is not None and existing.limit == 0 and await quarantined(client, name):
            outcome[name] = "quarantined"
            continue
        await client.upsert_global_concurrency_limit_by_name(name, limit)
        outcome[name] = "created" if existing is None else "updated"
    return outcome


async def quarantined(client: PrefectClient, name: str) -> QuarantineRecord | None:
    """The quarantine record of a server limit's server, while it is quarantined."""
    address = address_of_limit(name)
    record = await read_record(client, address) if address else None
    return record if record is not None and record.active else None


async def holders_of(client: PrefectClient, address: str, busy: int) -> list[Holder]:
    """The `busy` most recent holders of a server, from its latest slot events."""
    if busy <= 0:
        return []
    event_filter = EventFilter.model_validate(holder_events_query(address, HOLDER_WINDOW))
    page = await client.read_events(filter=event_filter, limit=EVENTS_PAGE)
    events = [event.model_dump(mode="json") for event in page.events]
    return holders_from_events(events)[-busy:]


async def pool_status(client: PrefectClient, resources: Resources, with_holders: bool = True) -> list[PoolStatus]:
    """Capacity, busy slots and holders of every pool and server."""
    result = []
    for pool in resources.pools:
        servers = []
        for server in resources.servers(pool):
            limit = await _read(client, server_limit(server))
            busy = limit.active_slots if limit else 0
            current = await holders_of(client, server.address, busy) if with_holders else []
            sick = await quarantined(client, limit.name) if limit is not None and limit.limit == 0 else None
            servers.append(ServerStatus(server.address, server.capacity, busy, current, sick))
        total = await _read(client, pool_limit(pool))
        result.append(PoolStatus(pool, resources.capacity(pool), total.active_slots if total else 0, servers))
    return result


async def _read(client: PrefectClient, name: str):
    try:
        return await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return None
