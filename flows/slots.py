"""Leasing a slot on a policy server through Prefect global concurrency limits.

Each server has a limit (`evalq:server:<host>:<port>`, limit = capacity) and each pool one
more (`evalq:pool:<pool>`, limit = sum of capacities) that counts its busy slots. A slot
is one lease taken atomically on both; the server answers all-or-nothing.

Why not `prefect.concurrency.asyncio.concurrency()`: a blocking waiter there sleeps the
server's Retry-After (up to 30 s) and every failed try logs an ERROR. Here a waiting
episode reads its candidate servers' limits (cheap GETs), tries only those with a free
slot, and then sleeps until one of them releases a slot (`flows/slotwatch.py`: release
events, or a release in the same process) or `poll_seconds` pass (leases that expire
without a release). Woken, it tries the released server directly; an episode with more
alternatives lets the ones with fewer try first (`STAGGER_SECONDS` per extra server), so a
server goes to the episode that can use nothing else. A quarantined server (limit 0, see
`flows/quarantine.py`) is never tried: the waiter probes it when its back-off is over and
lifts the quarantine if it answers. Leases are renewed in the
background; a lease the server no longer knows (410) aborts the episode, since its server
may already be serving someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectNotFound

from flows.naming import pool_limit, server_limit
from flows.quarantine import NoLiveServer, Quarantine
from flows.retry import retrying, without_client_retries
from flows.slotwatch import SlotWatch, slot_watch
from flows.steering import Candidate, candidates
from generate.models import Job, Resources, Server

MIN_LEASE_SECONDS = 60.0
"""The Prefect server rejects shorter leases."""
STAGGER_SECONDS = 0.1
"""After a release, a waiter with k candidate servers waits (k - 1) x this before trying."""


class PoolNotApplied(Exception):
    """A pool or server has no concurrency limit: `evalq pools apply` was not run."""


class LeaseLost(Exception):
    """The server dropped our lease (expired while unreachable): the slot may be reused."""


@dataclass(frozen=True)
class Slot:
    pool: str
    server: Server
    lease_id: UUID
    acquired_at: float
    waited_seconds: float


def by_free_share(options: list[tuple[Candidate, int, int]], prefer: list[str] = ()) -> list[Candidate]:
    """Candidates with a free slot, least busy first; ties go to the servers in `prefer`'s
    order (the campaign's steering), then to earlier pools and servers."""
    rank = {address: position for position, address in enumerate(prefer)}
    free = [
        ((active / limit, rank.get(candidate.server.address, len(rank)), index), candidate)
        for index, (candidate, active, limit) in enumerate(options)
        if active < limit
    ]
    return [candidate for _, candidate in sorted(free, key=lambda item: item[0])]


class SlotLeaser:
    def __init__(
        self,
        client: PrefectClient,
        lease_seconds: float = MIN_LEASE_SECONDS,
        poll_seconds: float = 5.0,
        watch: SlotWatch | None = None,
        give_up_seconds: float | None = None,
    ):
        self.client = client
        self.lease_seconds = max(float(lease_seconds), MIN_LEASE_SECONDS)
        self.renew_seconds = self.lease_seconds / 3
        self.poll_seconds = poll_seconds
        """The safety poll while waiting: releases wake a waiter at once, expiries do not."""
        self._watch = watch
        self.quarantine = Quarantine(client)
        self.give_up_seconds = give_up_seconds
        """How long to wait while every candidate is quarantined before `NoLiveServer`; None: forever."""
        self.reads = 0
        """Occupancy reads made, for tests and benchmarks."""

    @property
    def watch(self) -> SlotWatch:
        if self._watch is None:
            self._watch = slot_watch()
        return self._watch

    async def _occupancy(self, candidate: Candidate) -> tuple[Candidate, int, int]:
        name = server_limit(candidate.server)
        self.reads += 1
        try:
            limit = await retrying(lambda: self.client.read_global_concurrency_limit_by_name(name))
        except ObjectNotFound:
            raise PoolNotApplied(f"no concurrency limit {name!r}: run `evalq pools apply`") from None
        return candidate, limit.active_slots, limit.limit

    async def try_acquire(self, candidate: Candidate, holder_id: UUID | None) -> UUID | None:
        """One non-blocking try; the lease id, or None when the server or pool is full (423)
        or the server is quarantined (its limit is 0: 422)."""
        names = [pool_limit(candidate.pool), server_limit(candidate.server)]
        holder = ConcurrencyLeaseHolder(type="flow_run", id=holder_id) if holder_id else None
        try:
            response = await retrying(lambda: self.client.increment_concurrency_slots_with_lease(
                names=names, slots=1, mode="concurrency", lease_duration=self.lease_seconds, holder=holder
            ))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (423, 422):
                return None
            raise
        body = response.json()
        lease_id = UUID(body["lease_id"])
        if {limit["name"] for limit in body["limits"]} != set(names):
            await self.client.release_concurrency_slots_with_lease(lease_id)
            raise PoolNotApplied(f"missing concurrency limits among {names}: run `evalq pools apply`")
        return lease_id

    async def acquire(
        self,
        job: Job,
        resources: Resources,
        holder_id: UUID | None = None,
        excluded: set[str] = frozenset(),
        prefer: list[str] = (),
    ) -> Slot:
        """Wait until a compatible server has a free slot, and lease it."""
        options = [c for c in candidates(job, resources) if c.server.address not in excluded]
        if not options:
            raise PoolNotApplied(f"{job.id}: no compatible server left in pools {job.resource_types}")
        started = time.monotonic()
        stagger = (len({c.server.address for c in options}) - 1) * STAGGER_SECONDS
        all_sick_since: float | None = None
        while True:
            with self.watch.watching(c.server.address for c in options) as wakeup:
                occupancy = await asyncio.gather(*(self._occupancy(candidate) for candidate in options))
                for candidate in by_free_share(list(occupancy), prefer):
                    if (lease_id := await self.try_acquire(candidate, holder_id)) is not None:
                        return Slot(candidate.pool, candidate.server, lease_id, time.time(), time.monotonic() - started)
                next_look, all_sick_since = await self._tend_quarantine(occupancy, all_sick_since)
                if next_look is None:
                    continue  # a quarantined server answered its probe: look again at once
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.event.wait(), min(self.poll_seconds * random.uniform(0.8, 1.2), next_look))
            released = [c for c in options if c.server.address in wakeup.addresses]
            if released:
                await asyncio.sleep(stagger)  # the episodes with fewer alternatives try first
                for candidate in released:
                    if (lease_id := await self.try_acquire(candidate, holder_id)) is not None:
                        return Slot(candidate.pool, candidate.server, lease_id, time.time(), time.monotonic() - started)

    async def _tend_quarantine(
        self, occupancy: list[tuple[Candidate, int, int]], all_sick_since: float | None
    ) -> tuple[float | None, float | None]:
        """Probe the quarantined candidates (limit 0) that are due.

        Returns (None, None) if one came back, else (the longest wait before the next look,
        since when every candidate is quarantined). Raises `NoLiveServer` once that lasted
        `give_up_seconds`.
        """
        sick = [candidate.server for candidate, _, limit in occupancy if limit == 0]
        if not sick:
            return self.poll_seconds, None
        lifted, next_probe = await self.quarantine.check(sick)
        for server in lifted:
            self.watch.released(server.address)  # this loop's other waiters too
        if lifted:
            return None, None
        if {server.address for server in sick} != {candidate.server.address for candidate, _, _ in occupancy}:
            return next_probe + 0.05, None
        all_sick_since = all_sick_since or time.monotonic()
        if self.give_up_seconds is None:
            return next_probe + 0.05, all_sick_since
        left = self.give_up_seconds - (time.monotonic() - all_sick_since)
        if left <= 0:
            lifted, _ = await self.quarantine.check(sick, force=True)  # a last look before giving up
            for server in lifted:
                self.watch.released(server.address)
            if lifted:
                return None, None
            raise NoLiveServer(sick[0], f"every compatible server quarantined for {self.give_up_seconds:.0f} s "
                                        f"({', '.join(server.address for server in sick)})")
        return min(next_probe + 0.05, left), all_sick_since

    async def release(self, slot: Slot, attempts: int = 12) -> bool:
        """Give the slot back; retried across a restarting API. False if it could not be."""
        for attempt in range(attempts):
            try:
                with without_client_retries():  # ours are quicker: a late release is a lost handoff
                    await self.client.release_concurrency_slots_with_lease(slot.lease_id)
                self.watch.released(slot.server.address)  # waiters in this process, at once
                return True
            except (httpx.TransportError, httpx.HTTPStatusError):
                await asyncio.sleep(min(2**attempt * 0.1, 5))
        return False

    async def renew_forever(self, slot: Slot, on_lost: Callable[[str], Awaitable[None] | None]) -> None:
        """Renew every third of the lease; tolerate an API that is briefly away."""
        expires = time.monotonic() + self.lease_seconds
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                await self.client.renew_concurrency_lease(slot.lease_id, self.lease_seconds)
                expires = time.monotonic() + self.lease_seconds
                continue
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in (404, 410):
                    await _maybe_await(on_lost(f"lease {slot.lease_id} on {slot.server.address} is gone"))
                    return
                failure = f"API answered {exc.response.status_code}"
            except httpx.TransportError:
                failure = "API unreachable"
            if time.monotonic() > expires:  # any failure, once the lease has run out, may have lost it
                await _maybe_await(on_lost(f"{failure} past the lease on {slot.server.address}"))
                return

    @contextlib.asynccontextmanager
    async def holding(self, slot: Slot):
        """Keep `slot` leased while the block runs; release it on every way out.

        If the lease is lost, the block is cancelled and `LeaseLost` raised instead.
        """
        body = asyncio.current_task()
        lost: list[str] = []

        def on_lost(reason: str) -> None:
            lost.append(reason)
            body.cancel()

        renewer = asyncio.create_task(self.renew_forever(slot, on_lost))
        try:
            yield slot
        except asyncio.CancelledError:
            if lost:
                if hasattr(body, "uncancel"):  # our own cancel, now a LeaseLost: withdraw it (3.11+)
                    body.uncancel()
                raise LeaseLost(lost[0]) from None
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not lost:
                await asyncio.shield(self.release(slot))


async def _maybe_await(value) -> None:
    if asyncio.iscoroutine(value):
        await value
