"""Which job to submit next: pure logic, no I/O.

A job is anything with an `id` and the pools (`resource_types`) whose windows it may go
through (`Dispatchable`): an episode, whose pools are policy-server pools with servers to
steer it to, or a batch item, whose one pool is its work pool with no server behind it (a pool
not given servers is one server named after it).

Per pool at most `capacity + prefetch x servers` episodes are in flight: each server has its
next episode loaded while it plays one, and nobody holds a GPU for hours waiting. The next job comes from
the least-utilized pool, for the server of that pool with the fewest episodes meant for it
(per slot): so a pool whose general server has constrained work queued still feeds its
restricted server. For that server: requeued jobs first, then the most constrained (fewest
compatible servers: nothing else can take their work), then in order. The ticket names the
server, which the episode tries first. Global thresholds stop dispatch when `max_in_flight`
episodes are in flight and resume it once at most `resume_at` are (0: once all have ended),
as the batch submitter's `--stop_threshold` and `--resume_threshold` did; runs of others that
count against them (`others_in_flight`: the rest of a work pool, with `--count pool`) are added.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence


class Dispatchable(Protocol):
    """What the dispatcher needs of a job (`generate.models.Job`, `flows.batch.items.BatchItem`)."""

    @property
    def id(self) -> str: ...

    @property
    def resource_types(self) -> Sequence[str]:
        """The pools whose windows it may be dispatched through, in order of preference."""



@dataclass
class Ticket:
    """One dispatch of a job: which attempt, counted against which pool, meant for which server."""

    job: Dispatchable
    attempt: int
    pool: str
    server: str | None = None


@dataclass(eq=False, slots=True)
class _Entry:
    job: Dispatchable
    attempt: int
    taken: bool = False


@dataclass
class Dispatcher:
    capacity: dict[str, int]
    prefetch: int = 1
    max_in_flight: int | None = None
    resume_at: int | None = None
    """Stopped at `max_in_flight`, dispatch resumes once at most this many are in flight
    (default `max_in_flight - 1`: at once, no pause)."""
    in_flight: dict[str, int] = field(default_factory=dict)
    pool_prefetch: dict[str, int] = field(default_factory=dict)
    """Per-pool prefetch set by the campaign's tuner; `prefetch` per server where unset."""
    alternatives: Callable[[Dispatchable], int] = lambda job: 1
    """How many servers could run a job: the fewer, the sooner it is dispatched."""
    servers: dict[str, dict[str, int]] = field(default_factory=dict)
    """Pool -> its servers' capacities; a pool not listed is one server named after it."""
    compatible: Callable[[Dispatchable, str], list[str]] | None = None
    """The servers of a pool that can run a job (default: all of them)."""
    stopped: bool = False
    others_in_flight: int = 0
    """Runs in flight that are not this dispatcher's but count against the thresholds (with
    `--count pool`: the rest of the work pool's), as last read."""
    pending: int = 0
    meant_for: Counter = field(default_factory=Counter)
    """Server -> episodes in flight dispatched for it."""
    _queues: dict[tuple[str, str], list[tuple[tuple, _Entry]]] = field(default_factory=dict)
    _order: "itertools.count[int]" = field(default_factory=itertools.count)

    def __post_init__(self):
        for pool, capacity in self.capacity.items():
            self.in_flight.setdefault(pool, 0)
            self.servers.setdefault(pool, {pool: capacity})
            for server in self.servers[pool]:
                self._queues.setdefault((pool, server), [])

    def _servers_for(self, job: Dispatchable, pool: str) -> list[str]:
        return list(self.servers[pool]) if self.compatible is None else self.compatible(job, pool)

    def add(self, job: Dispatchable, attempt: int = 1, front: bool = False) -> None:
        """Queue a job for every server that may serve it (a requeue goes before everything else)."""
        entry = _Entry(job, attempt)
        key = (0 if front else 1, self.alternatives(job), next(self._order))
        for pool in job.resource_types:
            # No server of the pool can run it: dispatched all the same, the episode then stops the
            # campaign with a configuration error instead of leaving it pending forever.
            for server in self._servers_for(job, pool) or list(self.servers[pool])[:1]:
                heapq.heappush(self._queues[(pool, server)], (key, entry))
        self.pending += 1

    @property
    def total_in_flight(self) -> int:
        return sum(self.in_flight.values())

    def prefetch_for(self, pool: str) -> int:
        """Episodes `pool` keeps loading ahead: the tuner's number, else `prefetch` per server."""
        return self.pool_prefetch.get(pool, self.prefetch * len(self.servers[pool]))

    def window(self, pool: str) -> int:
        return self.capacity[pool] + self.prefetch_for(pool)

    def utilization(self, pool: str) -> float:
        return self.in_flight[pool] / self.capacity[pool]

    def _threshold_allows(self) -> bool:
        if self.max_in_flight is None:
            return True
        total = self.total_in_flight + self.others_in_flight
        resume_at = self.max_in_flight - 1 if self.resume_at is None else self.resume_at
        if self.stopped and total <= resume_at:
            self.stopped = False
        if not self.stopped and total >= self.max_in_flight:
            self.stopped = True
        return not self.stopped

    def _head(self, queue: list[tuple[tuple, _Entry]]) -> _Entry | None:
        while queue and queue[0][1].taken:
            heapq.heappop(queue)
        return queue[0][1] if queue else None

    def next(self) -> Ticket | None:
        """Take the next ticket, or None if every pool's window is full (or dispatch is stopped)."""
        if not self.pending or not self._threshold_allows():
            return None
        open_pools = [pool for pool in self.capacity if self.in_flight[pool] < self.window(pool)]
        for pool in sorted(open_pools, key=self.utilization):
            servers = self.servers[pool]
            for server in sorted(servers, key=lambda address: self.meant_for[address] / servers[address]):
                queue = self._queues[(pool, server)]
                entry = self._head(queue)
                if entry is not None:
                    heapq.heappop(queue)
                    entry.taken = True
                    self.pending -= 1
                    self.in_flight[pool] += 1
                    self.meant_for[server] += 1
                    return Ticket(entry.job, entry.attempt, pool, server)
        return None

    def landed(self, ticket: Ticket, server: str, pool: str) -> None:
        """The episode took a slot on `server` of `pool`: count it there, so the server (and
        pool window) it was meant for gets another episode if this one went elsewhere."""
        if ticket.server is not None and server != ticket.server:
            self.meant_for[ticket.server] -= 1
            self.meant_for[server] += 1
            ticket.server = server
        if pool != ticket.pool and pool in self.in_flight:
            self.in_flight[ticket.pool] -= 1
            self.in_flight[pool] += 1
            ticket.pool = pool

    def finished(self, ticket: Ticket) -> None:
        self.in_flight[ticket.pool] -= 1
        if ticket.server is not None:
            self.meant_for[ticket.server] -= 1

    def returned(self, ticket: Ticket) -> None:
        """A finished ticket in flight again (its run rerun from outside the campaign): counted
        against its pool and server as `next` counts a new one."""
        self.in_flight[ticket.pool] += 1
        if ticket.server is not None:
            self.meant_for[ticket.server] += 1
