"""Sick policy servers: no new leases while a server refuses or drops connections.

An episode whose server fails (`ServerUnavailable`) quarantines it before anyone is told its
slot is free: the server's concurrency limit is set to 0, so the Prefect server itself refuses
every new lease on it (422) to every episode and runner of every campaign, and a Prefect Variable
per server (`evalq_quarantine_<host>_<port>`) records the back-off: how many times in a row
it failed, why, and until when nobody probes it. A waiting episode that has a quarantined
candidate probes it (a websocket connect) once the back-off has passed: an answer lifts the
quarantine (the limit back to the server's capacity), silence doubles the back-off (5 s,
10 s, 20 s ... 2 min). Both live on the Prefect server: a restarted campaign finds them.

Cost on the happy path: none. Episodes read each candidate's limit before leasing anyway,
and a limit of 0 is the quarantine flag; the variable is read only for quarantined servers.
The policy (back-off, records, what people read) is pure: `flows/slots/quarantine_policy.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Awaitable, Callable, Iterable
from uuid import UUID

import httpx

from flows.naming import (
    QUARANTINE_VARIABLE_PREFIX,
    SERVER_QUARANTINED,
    SERVER_RECOVERED,
    quarantine_variable,
    server_limit,
    server_resource_id,
)
from flows.slots.quarantine_policy import BACKOFF, Backoff, QuarantineRecord
from generate.models import Server

logger = logging.getLogger("evalq.quarantine")

PROBE_TIMEOUT_SECONDS = 3.0


async def read_record(client, address: str) -> QuarantineRecord | None:
    variable = await client.read_variable_by_name(quarantine_variable(address))
    if variable is None or not isinstance(variable.value, dict):
        return None
    with contextlib.suppress(ValueError):
        return QuarantineRecord.model_validate(variable.value)
    return None


async def write_record(client, record: QuarantineRecord) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    name, value = quarantine_variable(record.address), record.model_dump(mode="json")
    if await client.read_variable_by_name(name) is None:
        with contextlib.suppress(ObjectAlreadyExists):  # another episode wrote it meanwhile: ours wins below
            await client.create_variable(VariableCreate(name=name, value=value))
            return
    await client.update_variable(VariableUpdate(name=name, value=value))


async def read_records(client) -> dict[str, QuarantineRecord]:
    """Every server's quarantine record (lifted ones too), by address, in one or few calls."""
    from prefect.client.schemas.objects import Variable

    found: dict[str, QuarantineRecord] = {}
    offset, page = 0, 200
    while True:
        body = {"variables": {"name": {"like_": QUARANTINE_VARIABLE_PREFIX}}, "limit": page, "offset": offset}
        batch = Variable.model_validate_list((await client.request("POST", "/variables/filter", json=body)).json())
        for variable in batch:
            if variable.name.startswith(QUARANTINE_VARIABLE_PREFIX) and isinstance(variable.value, dict):
                with contextlib.suppress(ValueError):
                    record = QuarantineRecord.model_validate(variable.value)
                    found[record.address] = record
        if len(batch) < page:
            return found
        offset += page


async def set_server_limit(client, server: Server, limit: int) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    await client.update_global_concurrency_limit(server_limit(server), GlobalConcurrencyLimitUpdate(limit=limit))


async def probe(server: Server, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """Open (and close) a websocket to the server: None if it answered, else why not."""
    import websockets

    try:
        connection = await asyncio.wait_for(websockets.connect(server.url, open_timeout=timeout), timeout)
    except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
        return f"probe: {exc or type(exc).__name__}"
    with contextlib.suppress(Exception):
        await connection.close()
    return None


def _emit(name: str, server: Server, payload: dict) -> None:
    from prefect.events import emit_event

    with contextlib.suppress(Exception):  # an event is a record, never a reason to fail
        emit_event(event=name, resource={"prefect.resource.id": server_resource_id(server.address), "evalq.server": server.address},
                   payload=payload)


class Quarantine:
    """Quarantine, probe and lift servers through one Prefect client (one per leaser)."""

    def __init__(self, client, backoff: Backoff = BACKOFF, clock: Callable[[], float] = time.time,
                 prober: Callable[[Server], Awaitable[str | None]] = probe):
        self.client = client
        self.backoff = backoff
        self.clock = clock
        self.prober = prober
        self._known: dict[str, QuarantineRecord] = {}
        """Records read, so a waiter reads a server's record once per back-off, not per poll."""

    async def enter(self, server: Server, reason: str, lease_id: UUID | None = None) -> QuarantineRecord:
        """Quarantine `server`: give back our lease on it (`lease_id`), close it (limit 0),
        then record the back-off.

        The lease goes first, quietly (no waiter is woken): Prefect cannot release a slot of
        a limit at 0 (it divides by the limit), so a holder's slot must be back before. Other
        holders of a server with capacity > 1 get theirs back through Prefect's lease
        repossessor once the quarantine is lifted. When two holders fail at once and the other
        one has closed the server already, Prefect refuses our release: we open the limit
        again, give our slot back, and close it. Prefect has no release-and-close in one call:
        a waiter that looks in the gap between the two takes the slot, fails to connect in turn
        and goes elsewhere, with no attempt charged (its run counts on this server in reports).
        """
        if lease_id is not None:
            try:
                await self.client.release_concurrency_slots_with_lease(lease_id)
            except httpx.HTTPStatusError:  # another holder closed the server first
                await set_server_limit(self.client, server, server.capacity)
                await self.client.release_concurrency_slots_with_lease(lease_id)
        await set_server_limit(self.client, server, 0)
        record = self.backoff.enter(await read_record(self.client, server.address), server.address, reason, self.clock())
        await write_record(self.client, record)
        self._known[server.address] = record
        _emit(SERVER_QUARANTINED, server, {"reason": reason, "failures": record.failures, "until": record.until})
        logger.warning("Policy server %s quarantined for %.0f s: %s", server.address, record.until - record.since, reason)
        return record

    async def lift(self, server: Server, record: QuarantineRecord | None) -> None:
        """The limit back to the server's capacity, then the record marked lifted."""
        await set_server_limit(self.client, server, server.capacity)
        if record is not None:
            await write_record(self.client, self.backoff.lifted(record, self.clock()))
        self._known.pop(server.address, None)
        _emit(SERVER_RECOVERED, server, {"failures": record.failures if record else 0})
        logger.warning("Policy server %s answered a probe: quarantine lifted", server.address)

    async def check(self, servers: Iterable[Server], force: bool = False) -> tuple[list[Server], float]:
        """For quarantined servers (limit 0): probe those due (all of them with `force`), lift
        those that answer.

        Returns the servers lifted and the seconds until the next probe is due (inf if none).
        A limit at 0 without a record (a crash between the two writes) is probed at once.
        """
        lifted, wait = [], math.inf
        for server in {s.address: s for s in servers}.values():
            try:
                record = await self._check_one(server, force)
            except Exception as exc:  # noqa: BLE001 - an API hiccup: look again after the first back-off
                logger.warning("Could not check the quarantine of %s: %s", server.address, exc)
                wait = min(wait, self.backoff.first)
                continue
            if record is None:
                lifted.append(server)
            else:
                wait = min(wait, max(0.0, record.until - self.clock()))
        return lifted, wait

    async def _check_one(self, server: Server, force: bool = False) -> QuarantineRecord | None:
        """Probe `server` if due (or `force`); its record, or None if it answered and was lifted."""
        record = self._known.get(server.address)
        if force or record is None or record.probe_due(self.clock()):
            record = await read_record(self.client, server.address)  # someone may have probed it meanwhile
        if force or record is None or not record.active or record.probe_due(self.clock()):
            failure = await self.prober(server)
            if failure is None:
                await self.lift(server, record)
                return None
            if record is not None and record.active:
                record = self.backoff.probe_failed(record, failure, self.clock())
            else:
                record = self.backoff.enter(record, server.address, failure, self.clock())
            await write_record(self.client, record)
        self._known[server.address] = record
        return record


async def quarantine_server(client, server: Server, reason: str, lease_id: UUID | None = None) -> QuarantineRecord | None:
    """`Quarantine(client).enter(...)`, never raising: an episode must still end cleanly."""
    try:
        return await Quarantine(client).enter(server, reason, lease_id)
    except Exception as exc:  # noqa: BLE001 - the quarantine is a help, not the episode's fate
        logger.warning("Could not quarantine %s: %s", server.address, exc)
        return None


