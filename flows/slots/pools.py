"""Policy-server pools as Prefect global concurrency limits: apply them, and the one pool-status
service (`pool_status`) behind `evalq pools status` and evaltui's pools panel.

Prefect has no API that lists a limit's holders, so episodes emit `evalq.slot.acquired` /
`evalq.slot.released` events (`flows/slots/events.py`); `holders_of()` pairs them up by lease id. A
quarantined server's limit is 0 (`flows/slots/quarantine.py`): applying the pools leaves it so until a
probe lifts it. The status models and how they are put together are pure (`flows/slots/pool_status.py`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from prefect.client.orchestration import PrefectClient
from prefect.events.filters import EventFilter

from flows.naming import (
    SERVER_UNREACHABLE,
    address_of_limit,
    is_evalq_limit,
    pool_limit,
    server_limit,
    server_limit_of_address,
)
from flows.slots.events import (
    Holder,
    SlotEvent,
    holder_events_query,
    holders_from_events,
    server_events_query,
)
from flows.slots.pool_status import (
    Limits,
    PoolStatus,
    pool_statuses,
    quarantined_addresses,
    server_layout,
    unrecorded_quarantine,
)
from flows.slots.quarantine import read_record, read_records
from flows.slots.quarantine_policy import QuarantineRecord, pool_warnings
from generate.models import Resources

EVENTS_PAGE = 50
"""The most events the API returns in one page."""
LIMITS_PAGE = 200
APPLY_CONCURRENCY = 4
"""Limit writes in flight at once while applying the pools."""
HOLDER_WINDOW = dt.timedelta(days=7)
"""How far back a server's slot events are read for its holders: as long as a Prefect server
keeps events by default (PREFECT_SERVER_EVENTS_RETENTION_PERIOD), so no holder still on record
is missed. The page is read newest first, so a longer window costs nothing on a busy server."""
UNREACHABLE_WINDOW = dt.timedelta(minutes=10)
"""Servers that refused a connection this recently are flagged."""


def wanted_limits(resources: Resources) -> dict[str, int]:
    """Every limit name the resources need, with its limit."""
    limits: dict[str, int] = {}
    for pool in resources.pools:
        limits[pool_limit(pool)] = resources.capacity(pool)
        for server in resources.servers(pool):
            limits[server_limit(server)] = server.capacity
    return limits


async def apply_pools(client: PrefectClient, resources: Resources) -> dict[str, str]:
    """Create or update the limits; returns name -> `created` | `updated` | `unchanged` |
    `quarantined`.

    One paged read of every evalq limit, then only the writes needed, `APPLY_CONCURRENCY` at a
    time: a campaign's start pays a round trip or two, not three per limit."""
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists

    existing = {limit.name: (limit.limit, limit.active) for limit in await evalq_limits(client)}
    gate = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def apply(name: str, limit: int) -> str:
        current = existing.get(name)
        if current == (limit, True):
            return "unchanged"
        async with gate:
            if current is not None and current[0] == 0 and await quarantined(client, name):
                return "quarantined"
            if current is None:
                try:
                    await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
                    return "created"
                except ObjectAlreadyExists:  # another campaign created it meanwhile: update it below
                    pass
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
            return "updated"

    wanted = wanted_limits(resources)
    outcomes = await asyncio.gather(*(apply(name, limit) for name, limit in wanted.items()))
    return dict(zip(wanted, outcomes))


async def evalq_limits(client: PrefectClient) -> list:
    """Every evalq limit (pools and servers) as the API returns it, a page of 200 per call."""
    found, offset = [], 0
    while True:
        batch = await client.read_global_concurrency_limits(limit=LIMITS_PAGE, offset=offset)
        found += [limit for limit in batch if is_evalq_limit(limit.name)]
        if len(batch) < LIMITS_PAGE:
            return found
        offset += LIMITS_PAGE


async def quarantined(client: PrefectClient, name: str) -> QuarantineRecord | None:
    """The quarantine record of a server limit's server, while it is quarantined."""
    address = address_of_limit(name)
    record = await read_record(client, address) if address else None
    return record if record is not None and record.active else None


async def read_limits(client: PrefectClient) -> Limits:
    """Every evalq limit (pools and servers): name -> (limit, active slots)."""
    return {limit.name: (limit.limit, limit.active_slots) for limit in await evalq_limits(client)}


async def read_events(client: PrefectClient, query: dict) -> list[dict]:
    """One page (newest first) of the events matching `query`, as the API's JSON."""
    page = await client.read_events(filter=EventFilter.model_validate(query), limit=EVENTS_PAGE)
    return [event.model_dump(mode="json") for event in page.events]


async def holders_of(client: PrefectClient, address: str, busy: int) -> list[Holder]:
    """The `busy` most recent holders of a server, from its latest slot events."""
    if busy <= 0:
        return []
    return holders_from_events(await read_events(client, holder_events_query(address, HOLDER_WINDOW)))[-busy:]


async def unreachable_servers(client: PrefectClient, window: dt.timedelta = UNREACHABLE_WINDOW) -> list[SlotEvent]:
    """The servers' `evalq.server.unreachable` events of the last `window`, newest first."""
    now = dt.datetime.now(dt.timezone.utc)
    events = await read_events(client, server_events_query([SERVER_UNREACHABLE], now - window, now + dt.timedelta(minutes=1)))
    return [SlotEvent.from_event(event) for event in events]


async def quarantine_of(client: PrefectClient, limits: Limits) -> dict[str, QuarantineRecord]:
    """The quarantine of every server whose limit is 0: its active record, else
    `unrecorded_quarantine`. One variables read, only when some server is at 0."""
    sick = quarantined_addresses(limits)
    if not sick:
        return {}
    records = await read_records(client)
    return {address: record if (record := records.get(address)) is not None and record.active else unrecorded_quarantine(address)
            for address in sick}


async def quarantine_warnings(client: PrefectClient, resources: Resources, limits: Limits | None = None) -> list[str]:
    """`pool_warnings` (the campaign's stats line) read from the Prefect server: one limits
    read (none when `limits` are given), plus one variables read when some server of
    `resources` is at 0."""
    wanted = {server.address for pool in resources.pools for server in resources.servers(pool)}
    limits = {name: value for name, value in (limits if limits is not None else await read_limits(client)).items()
              if address_of_limit(name) in wanted}
    return pool_warnings(resources, await quarantine_of(client, limits), time.time())


async def pool_status(
    client: PrefectClient, resources: Resources | None = None, with_holders: bool = True,
    server_pools: dict[str, str] | None = None,
) -> list[PoolStatus]:
    """Capacity, busy slots, holders, connection failures and quarantine of every pool and server.

    With `resources`, its pools and servers; without, every evalq limit on the Prefect server,
    each server in the pool `server_pools` names, else the pool of its latest events. Reads:
    the limits (a call per 200), the recent unreachable events, an events page per busy server
    (`with_holders`), and the quarantine variables when some server is at 0.
    """
    limits = await read_limits(client)
    pools = dict(server_pools or {})
    unreachable: dict[str, dt.datetime] = {}
    for event in await unreachable_servers(client):  # newest first
        unreachable.setdefault(event.address, event.occurred)
        pools.setdefault(event.address, event.pool)
    busy = {address: limits.get(server_limit_of_address(address), (0, 0))[1]
            for address, _, _ in server_layout(limits, resources, pools)}
    held = [address for address, n in busy.items() if n and with_holders]
    pages = await asyncio.gather(*(read_events(client, holder_events_query(address, HOLDER_WINDOW)) for address in held))
    holders = {}
    for address, events in zip(held, pages):
        holders[address] = holders_from_events(events)[-busy[address]:]
        if events and not pools.get(address):
            pools[address] = SlotEvent.from_event(events[0]).pool
    layout = server_layout(limits, resources, pools)
    return pool_statuses(limits, layout, holders, unreachable, await quarantine_of(client, limits), resources)
