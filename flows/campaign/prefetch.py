"""How many episodes each pool should keep loading ahead: measured, not guessed (pure).

A new episode needs L seconds from dispatch to being ready (worker pick-up, process start,
simulator load); a server is held H seconds per episode. To never leave a server idle, a
pool needs about `capacity x L / H` episodes loading or waiting beyond its capacity, and at
least one per server (a server's next episode is meant for it: a pool with one episode ahead
for two servers leaves one of them to whoever comes first). The tuner keeps moving averages
of L and H per pool and answers that number, clamped to [floor, ceiling] per server: the
ceiling bounds how many loaded simulators (GPU memory) may wait. The same averages pace the
campaign's reads of its runs (`tick`): long episodes need them less often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TICKS_PER_HOLD = 20
"""The campaign reads its runs about this many times per episode: each read is one API call,
and with every server's next episode loaded ahead, a finished one is replaced well within a
twentieth of an episode."""
MAX_TICK_SECONDS = 2.0


@dataclass
class Average:
    """Exponential moving average; `None` until the first sample."""

    weight: float = 0.3
    value: float | None = None

    def add(self, sample: float) -> None:
        self.value = sample if self.value is None else (1 - self.weight) * self.value + self.weight * sample


@dataclass
class PrefetchTuner:
    floor: int = 1
    ceiling: int = 3
    ready: dict[str, Average] = field(default_factory=dict)
    held: dict[str, Average] = field(default_factory=dict)

    def ready_after(self, pool: str, seconds: float) -> None:
        """A dispatched episode became ready (waiting for or holding a server) after `seconds`."""
        self.ready.setdefault(pool, Average()).add(seconds)

    def held_for(self, pool: str, seconds: float) -> None:
        """An episode held its server for `seconds`."""
        if seconds > 0:
            self.held.setdefault(pool, Average()).add(seconds)

    def tick(self, floor: float) -> float:
        """Seconds between the campaign's reads of its runs: TICKS_PER_HOLD per episode of the
        shortest-holding pool, within [floor, MAX_TICK_SECONDS]; `floor` until one ended."""
        held = [average.value for average in self.held.values() if average.value is not None]
        if not held:
            return floor
        return max(floor, min(MAX_TICK_SECONDS, min(held) / TICKS_PER_HOLD))

    def prefetch(self, pool: str, capacity: int, servers: int = 1) -> int:
        ready, held = self.ready.get(pool), self.held.get(pool)
        if ready is None or held is None or ready.value is None or held.value is None:
            return self.floor * servers
        needed = math.ceil(capacity * ready.value / held.value)
        return max(self.floor * servers, min(self.ceiling * servers, needed))
