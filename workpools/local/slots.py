"""How many queued commands run at once on a machine (`evalq queue slots N`, task-spooler's `-S`).

A Prefect global concurrency limit per machine; every command leases one slot of it in the
same atomic lease as its GPUs, so a lowered limit holds new starts back and never races.
"""

from __future__ import annotations

from dataclasses import dataclass

from workpools.local import leases
from workpools.local.job import slots_limit

UNLIMITED = 1_000_000
"""The default: no limit but the GPUs."""


@dataclass(frozen=True)
class Slots:
    limit: int
    active: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.active)

    def describe(self) -> str:
        limit = "unlimited" if self.limit >= UNLIMITED else str(self.limit)
        return f"{limit} slots, {self.active} in use"


def parse_slots(text: str) -> int:
    """`4` -> 4, `unlimited` -> UNLIMITED; ValueError otherwise."""
    if text.strip().lower() in ("unlimited", "none", "inf"):
        return UNLIMITED
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"slots must be a positive integer or 'unlimited', got {text!r}")
    return int(text)


async def read_slots(client, host: str) -> Slots:
    """The machine's slot limit (created unlimited on first use) and how many are taken."""
    await leases.ensure_limits(client, [slots_limit(host)], limit=UNLIMITED)
    limit = await client.read_global_concurrency_limit_by_name(slots_limit(host))
    return Slots(limit.limit, limit.active_slots)


async def set_slots(client, host: str, count: int) -> Slots:
    """Change the machine's slot limit; running commands keep their slots."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    await leases.ensure_limits(client, [slots_limit(host)], limit=count)
    await client.update_global_concurrency_limit(slots_limit(host), GlobalConcurrencyLimitUpdate(limit=count))
    return await read_slots(client, host)
