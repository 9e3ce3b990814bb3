"""Leasing a slot on a policy server through Prefect global concurrency limits.

Each server has a limit (`evalq:server:<host>:<port>`, limit = capacity) and each pool one
more (`evalq:pool:<pool>`, limit = sum of capacities) that counts its busy slots. A slot
is one lease taken atomically on both; the server answers all-or-nothing.

Why not `prefect.concurrency.asyncio.concurrency()`: a blocking waiter there sleeps the
server's Retry-After (up to 30 s) and every failed try logs an ERROR. Here a waiting
episode reads its candidate servers' limits (cheap GETs), tries only those with a free
slot, and then sleeps until one of them releases a slot (`flows/slots/wakeups.py`: release
events, or a release in the same process) or `poll_seconds` pass (leases that expire
without a release). Woken, it tries the released server directly; an episode with more
alternatives lets the ones with fewer try first (`STAGGER_SECONDS` per extra server), so a
server goes to the episode that can use nothing else. An episode the campaign meant for one
server (`prefer[0]`) takes another only once that one has been free for `patience_seconds`:
the episode meant for *it* may still be loading its simulator. A quarantined server (limit 0, see
`flows/slots/quarantine.py`) is never tried: the waiter probes it when its back-off is over and
lifts the quarantine if it answers. Taking, renewing and giving back a lease is the
lease engine's (`flows/runtime/lease_engine.py`) under `EPISODE_SLOT`: the lease outlasts an API
outage the episode waits out; a lost lease aborts the episode (`LeaseLost`), since its server may
already be serving someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, replace
from typing import AsyncContextManager
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound

from flows.naming import pool_limit, server_limit
from flows.runtime.api_health import OUTAGE_BUDGET_SECONDS
from flows.runtime.api_retry import retrying
from flows.runtime.lease_engine import (
    MIN_LEASE_SECONDS,
    RENEW_SECONDS,
    LeaseLost,
    LeasePolicy,
    Leases,
    LimitsMissing,
)
from flows.slots.quarantine import Quarantine
from flows.slots.quarantine_policy import NoLiveServer
from flows.slots.steering import Candidate, candidates
from flows.slots.wakeups import SlotWatch, slot_watch
from generate.models import Job, Resources, Server

EPISODE_LEASE_SECONDS = OUTAGE_BUDGET_SECONDS + RENEW_SECONDS
"""An episode's lease (320 s), renewed every 20 s: it outlasts an API outage of up to the budget,
so the episode plays through one on the slot it holds. A holder that dies without releasing keeps
its server that long, unless the campaign releases the leases of a run it finds Crashed
(`orphans.py`)."""
EPISODE_SLOT = LeasePolicy(lease_seconds=EPISODE_LEASE_SECONDS, lost_error=LeaseLost)
"""An episode's lease; lost, it cancels the episode."""
STAGGER_SECONDS = 0.1
"""After a release, a waiter with k candidate servers waits (k - 1) x this before trying."""
SAFETY_POLL_SECONDS = 20.0
"""How often a waiter looks without being woken: for leases that expire without a release (their
holder died and nobody gave them back) and releases whose event was lost. Every waiting episode
reads its servers' limits this often: on 30 s episodes half of all limit reads at 10 s."""
PATIENCE_SECONDS = 3.0
"""How long a server must have been free before an episode meant for another server takes it."""


class PoolNotApplied(Exception):
    """A pool or server has no concurrency limit: `evalq pools apply` was not run."""


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
        lease_seconds: float = EPISODE_LEASE_SECONDS,
        poll_seconds: float = SAFETY_POLL_SECONDS,
        watch: SlotWatch | None = None,
        give_up_seconds: float | None = None,
        policy: LeasePolicy | None = None,
        patience_seconds: float = PATIENCE_SECONDS,
    ):
        self.client = client
        self.leases = Leases(client, policy or replace(EPISODE_SLOT, lease_seconds=max(float(lease_seconds), MIN_LEASE_SECONDS)))
        """The lease engine, under `EPISODE_SLOT` with the lease asked for (at least 60 s)."""
        self.poll_seconds = poll_seconds
        """The safety poll while waiting: releases wake a waiter at once, expiries do not."""
        self._watch = watch
        self.quarantine = Quarantine(client)
        self.give_up_seconds = give_up_seconds
        """How long to wait while every candidate is quarantined before `NoLiveServer`; None: forever."""
        self.patience_seconds = patience_seconds
        """How long another server must have been free before an episode meant for one takes it."""
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
            limit = await self.watch.occupancy(candidate.server.address, lambda: retrying(
                lambda: self.client.read_global_concurrency_limit_by_name(name)))
        except ObjectNotFound:
            raise PoolNotApplied(f"no concurrency limit {name!r}: run `evalq pools apply`") from None
        return candidate, limit.active_slots, limit.limit

    async def try_acquire(self, candidate: Candidate, holder_id: UUID | None) -> UUID | None:
        """One non-blocking try; the lease id, or None when the server or pool is full (423)
        or the server is quarantined (its limit is 0: 422)."""
        names = [pool_limit(candidate.pool), server_limit(candidate.server)]
        try:
            return await self.leases.take(names, holder_id)
        except LimitsMissing as exc:
            raise PoolNotApplied(f"missing concurrency limits {exc.missing}: run `evalq pools apply`") from None

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
        meant_for = prefer[0] if prefer and prefer[0] in {c.server.address for c in options} else None
        all_sick_since: float | None = None
        while True:
            with self.watch.watching(c.server.address for c in options) as wakeup:
                occupancy = await asyncio.gather(*(self._occupancy(candidate) for candidate in options))
                if any(c.server.address == meant_for and limit == 0 for c, _, limit in occupancy):
                    meant_for = None  # quarantined: no episode will come for the others' sake
                waits = [(c, self._patient_for(c, meant_for, started)) for c in by_free_share(list(occupancy), prefer)]
                for candidate, wait in waits:
                    if wait <= 0 and (lease_id := await self.try_acquire(candidate, holder_id)) is not None:
                        return Slot(candidate.pool, candidate.server, lease_id, time.time(), time.monotonic() - started)
                next_look, all_sick_since = await self._tend_quarantine(occupancy, all_sick_since)
                if next_look is None:
                    continue  # a quarantined server answered its probe: look again at once
                patience = [wait for _, wait in waits if wait > 0]
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.event.wait(),
                                           min(self.poll_seconds * random.uniform(0.8, 1.2), next_look, *patience))
            released = [c for c in options if c.server.address in wakeup.addresses
                        and self._patient_for(c, meant_for, started) <= 0]
            if released:
                await asyncio.sleep(stagger)  # the episodes with fewer alternatives try first
                for candidate in released:
                    if (lease_id := await self.try_acquire(candidate, holder_id)) is not None:
                        return Slot(candidate.pool, candidate.server, lease_id, time.time(), time.monotonic() - started)

    def _patient_for(self, candidate: Candidate, meant_for: str | None, started: float) -> float:
        """Seconds before an episode meant for `meant_for` may take `candidate` (0 or less: now):
        another server must have been free, as far as this loop saw, for `patience_seconds`."""
        address = candidate.server.address
        if meant_for is None or address == meant_for:
            return 0.0
        free_since = max(started, self.watch.released_at.get(address, started))
        return free_since + self.patience_seconds - time.monotonic()

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

    async def release(self, slot: Slot) -> bool:
        """Give the slot back (retried across a restarting API) and wake this process's
        waiters for its server at once. False if it could not be."""
        return await self.leases.release(slot.lease_id, then=lambda: self.watch.released(slot.server.address))

    def holding(self, slot: Slot) -> AsyncContextManager[UUID]:
        """Keep `slot` leased while the block runs; release it on every way out.

        If the lease is lost, the block is cancelled and `LeaseLost` raised instead.
        """
        return self.leases.holding(slot.lease_id, slot.server.address,
                                   released=lambda: self.watch.released(slot.server.address))
