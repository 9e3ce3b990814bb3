"""Which queued jobs may start now: first in, first out, with backfill that cannot delay the head.

Pure: the caller reads the queue, the running commands, `nvidia-smi` and the leases; this
module decides. Every waiting job computes the same plan from the same facts and starts
only if the plan names it (the leases stay the final word if two views disagree).

The rule (EASY backfilling, with timeouts as the only promises):
- Jobs start in queue order while their GPUs (and a slot) are free.
- The first job that cannot start is the head. Its reservation is the earliest time at which
  enough of its GPUs are *guaranteed* free: running commands end at the latest at their start
  + timeout (+ the kill grace); a command without a timeout may never end.
- A later job may start before the head (backfill) only if it cannot push the head past that
  reservation: it has a timeout and is killed before the reservation, or it takes only GPUs
  (and slots) the head will not need then. When nothing guarantees the head a start (it waits
  on a command without a timeout), no job may take a GPU the head could use.
So a job asking for 2 GPUs is never overtaken forever by a stream of 1-GPU jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workpools.local.allocation import choose_gpus
from workpools.local.command import KILL_GRACE_SECONDS
from workpools.local.gpus import Gpu


@dataclass(frozen=True)
class Waiting:
    """A job in the GPU queue (dependencies met), in queue order."""

    key: str
    gpus: int
    pinned: tuple[int, ...] | None = None
    timeout: float | None = None
    free_threshold: float = 0.9
    visible: tuple[int, ...] | None = None
    """The only GPUs it may be given (TS_VISIBLE_DEVICES at submit); None: any."""

    def may_use(self, index: int) -> bool:
        return self.visible is None or index in self.visible


@dataclass(frozen=True)
class Holding:
    """A running command and the GPUs it holds; `ends_by` None: no timeout, may never end."""

    gpus: tuple[int, ...]
    ends_by: float | None


@dataclass(frozen=True)
class Reservation:
    """The head's promise: at `at` (inf: never guaranteed) it gets `gpus`."""

    at: float
    gpus: frozenset[int]


def plan_starts(
    queue: list[Waiting],
    holding: list[Holding],
    gpus: list[Gpu],
    leased: set[int],
    free_slots: int,
    now: float,
) -> dict[str, list[int]]:
    """The jobs of `queue` that start now, each with the GPU indices it should lease.

    `gpus` is what nvidia-smi reports, `leased` the GPUs someone holds a lease on, `free_slots`
    how many more commands may run at once (`evalq queue slots`).
    """
    starts: dict[str, list[int]] = {}
    holding = list(holding)
    taken: set[int] = set()
    reservation: Reservation | None = None
    spare_slots = free_slots  # slots a backfill may keep past the head's reservation
    for job in queue:
        if free_slots <= 0:
            break
        available = [gpu.index for gpu in gpus
                     if gpu.is_free(job.free_threshold) and gpu.index not in leased | taken and job.may_use(gpu.index)]
        if reservation is None:
            chosen = choose_gpus(job.gpus, available, set(), list(job.pinned) if job.pinned else None)
            if chosen is None:
                reservation = reserve(job, available, holding, gpus, free_slots, now)
                spare_slots = free_slots - 1  # the head's slot
                continue
        else:
            chosen = backfill(job, available, reservation, spare_slots, now)
            if chosen is None:
                continue
            if not ends_before(job, reservation, now):
                spare_slots -= 1
        starts[job.key] = chosen
        taken |= set(chosen)
        free_slots -= 1
        holding.append(Holding(tuple(chosen), now + job.timeout + KILL_GRACE_SECONDS if job.timeout else None))
    return starts


def ends_before(job: Waiting, reservation: Reservation, now: float) -> bool:
    """The job is killed (timeout + grace) before the head's reservation (never true without one)."""
    if job.timeout is None or math.isinf(reservation.at):
        return False
    return now + job.timeout + KILL_GRACE_SECONDS <= reservation.at


def backfill(job: Waiting, available: list[int], reservation: Reservation, spare_slots: int, now: float) -> list[int] | None:
    """GPUs for a job behind a blocked head, or None if starting it could delay the head."""
    pinned = list(job.pinned) if job.pinned else None
    if ends_before(job, reservation, now):
        return choose_gpus(job.gpus, available, set(), pinned)
    if spare_slots <= 0:
        return None
    return choose_gpus(job.gpus, [index for index in available if index not in reservation.gpus], set(), pinned)


def reserve(
    head: Waiting, available: list[int], holding: list[Holding], gpus: list[Gpu], free_slots: int, now: float
) -> Reservation:
    """The earliest time the running commands' timeouts guarantee the head its GPUs and a slot.

    The GPUs reserved are those freed by the running commands first, then the free ones, so
    that as many free GPUs as possible stay open for backfill.
    """
    pinned = list(head.pinned) if head.pinned else None
    ending = sorted((held for held in holding if held.ends_by is not None), key=lambda held: held.ends_by)
    freed: list[int] = []
    slots = free_slots
    for held in ending:  # each ending command gives back its GPUs and its slot
        freed += [index for index in held.gpus if index not in freed and head.may_use(index)]
        slots += 1
        pool = freed + [index for index in available if index not in freed]
        chosen = choose_gpus(head.gpus, pool, set(), pinned)
        if chosen is not None and slots > 0:
            return Reservation(max(held.ends_by, now), frozenset(chosen))
    could_use = pinned if pinned else [gpu.index for gpu in gpus if head.may_use(gpu.index)]
    return Reservation(math.inf, frozenset(could_use))
