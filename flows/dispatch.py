"""Which episode to submit next: pure logic, no I/O.

Per pool at most `capacity + prefetch` episodes are in flight, so simulators load while
the servers are busy and nobody holds a GPU for hours waiting. The next job comes from
the least-utilized pool; within a pool, requeued jobs first, then the most constrained
(fewest compatible servers: nothing else can take their work), then in order. Global
thresholds stop dispatch at `max_in_flight` and resume it once in-flight falls below
`resume_below` (hysteresis, as in the batch submitter).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable

from generate.models import Job


@dataclass
class Ticket:
    """One dispatch of a job: which attempt, counted against which pool."""

    job: Job
    attempt: int
    pool: str


@dataclass(eq=False, slots=True)
class _Entry:
    job: Job
    attempt: int
    taken: bool = False


@dataclass
class Dispatcher:
    capacity: dict[str, int]
    prefetch: int = 1
    max_in_flight: int | None = None
    resume_below: int | None = None
    in_flight: dict[str, int] = field(default_factory=dict)
    pool_prefetch: dict[str, int] = field(default_factory=dict)
    """Per-pool prefetch set by the campaign's tuner; `prefetch` where unset."""
    alternatives: Callable[[Job], int] = lambda job: 1
    """How many servers could run a job: the fewer, the sooner it is dispatched."""
    stopped: bool = False
    pending: int = 0
    _queues: dict[str, list[tuple[tuple, _Entry]]] = field(default_factory=dict)
    _order: "itertools.count[int]" = field(default_factory=itertools.count)

    def __post_init__(self):
        for pool in self.capacity:
            self.in_flight.setdefault(pool, 0)
            self._queues.setdefault(pool, [])

    def add(self, job: Job, attempt: int = 1, front: bool = False) -> None:
        """Queue a job on every pool that may serve it (a requeue goes before everything else)."""
        entry = _Entry(job, attempt)
        key = (0 if front else 1, self.alternatives(job), next(self._order))
        for pool in job.resource_types:
            heapq.heappush(self._queues[pool], (key, entry))
        self.pending += 1

    @property
    def total_in_flight(self) -> int:
        return sum(self.in_flight.values())

    def window(self, pool: str) -> int:
        return self.capacity[pool] + self.pool_prefetch.get(pool, self.prefetch)

    def utilization(self, pool: str) -> float:
        return self.in_flight[pool] / self.capacity[pool]

    def _threshold_allows(self) -> bool:
        if self.max_in_flight is None:
            return True
        total = self.total_in_flight
        if self.stopped:
            resume = self.resume_below if self.resume_below is not None else self.max_in_flight
            self.stopped = total >= resume
        elif total >= self.max_in_flight:
            self.stopped = True
        return not self.stopped

    def _head(self, pool: str) -> _Entry | None:
        queue = self._queues[pool]
        while queue and queue[0][1].taken:
            heapq.heappop(queue)
        return queue[0][1] if queue else None

    def next(self) -> Ticket | None:
        """Take the next ticket, or None if every pool's window is full (or dispatch is stopped)."""
        if not self.pending or not self._threshold_allows():
            return None
        open_pools = [pool for pool in self.capacity if self.in_flight[pool] < self.window(pool)]
        for pool in sorted(open_pools, key=self.utilization):
            entry = self._head(pool)
            if entry is not None:
                heapq.heappop(self._queues[pool])
                entry.taken = True
                self.pending -= 1
                self.in_flight[pool] += 1
                return Ticket(entry.job, entry.attempt, pool)
        return None

    def finished(self, ticket: Ticket) -> None:
        self.in_flight[ticket.pool] -= 1
