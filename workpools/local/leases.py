"""GPU leases on Prefect global concurrency limits: one limit (of 1) per GPU.

Acquiring several GPUs is one atomic call (all or none; HTTP 423 when any is busy). The
server silently ignores unknown limit names, so the limits are created first and the
answer is checked. A lease is renewed while held and released on every exit path; if the
holder dies, the server takes the slots back when the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator
from uuid import UUID

from httpx import HTTPStatusError

LEASE_SECONDS = 60.0
"""The server rejects shorter leases."""
RENEW_SECONDS = 20.0

logger = logging.getLogger(__name__)


async def ensure_limits(client, names: list[str], limit: int = 1) -> None:
    """Create each limit (with `limit` slots) unless it exists."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    for name in names:
        try:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        except ObjectAlreadyExists:
            pass


async def busy_limits(client, names: list[str]) -> set[str]:
    """The limits among `names` whose slots are all taken."""
    busy = set()
    for name in names:
        limit = await client.read_global_concurrency_limit_by_name(name)
        if limit.active_slots >= limit.limit:
            busy.add(name)
    return busy


async def try_acquire(client, names: list[str], holder_run_id: UUID | None = None) -> UUID | None:
    """Lease one slot on every limit in `names` at once; None if any of them is busy."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder

    holder = None if holder_run_id is None else ConcurrencyLeaseHolder(type="flow_run", id=holder_run_id)
    try:
        response = await client.increment_concurrency_slots_with_lease(
            names=names, slots=1, mode="concurrency", lease_duration=LEASE_SECONDS, holder=holder
        )
    except HTTPStatusError as exc:
        if exc.response.status_code == 423:
            return None
        raise
    answer = response.json()
    lease_id = UUID(answer["lease_id"])
    granted = {limit["name"] for limit in answer["limits"]}
    if granted != set(names):
        await client.release_concurrency_slots_with_lease(lease_id)
        raise RuntimeError(f"concurrency limits missing on the server: {sorted(set(names) - granted)}")
    return lease_id


@asynccontextmanager
async def held(client, lease_id: UUID, renew_every: float = RENEW_SECONDS) -> AsyncIterator[UUID]:
    """Keep a lease renewed while the block runs; release it however the block ends."""
    renewer = asyncio.create_task(renew_forever(client, lease_id, renew_every))
    try:
        yield lease_id
    finally:
        renewer.cancel()
        await asyncio.shield(client.release_concurrency_slots_with_lease(lease_id))


async def renew_forever(client, lease_id: UUID, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await client.renew_concurrency_lease(lease_id, lease_duration=LEASE_SECONDS)
        except Exception as exc:  # keep trying: a lost lease is logged, the job keeps running
            logger.warning("could not renew GPU lease %s: %s", lease_id, exc)
