"""GPU leases on Prefect global concurrency limits: one limit (of 1) per GPU.

Acquiring several GPUs (and a slot of the machine, `slots.py`) is one lease taken by the
lease engine (`flows/runtime/lease_engine.py`) under `GPU_LEASE`: all or none, renewed while held, released
on every exit path; if the holder dies, the server takes the slots back when the lease
expires. The server silently ignores unknown limit names, so the limits are created first.
"""

from __future__ import annotations

from flows.runtime.lease_engine import LeasePolicy

GPU_LEASE = LeasePolicy(lost_error=None)
"""A command's GPUs: 60 s, renewed every 20 s. A lost lease is logged and the command keeps
running: killing hours of training because the API was away is worse than a GPU shared for
the rest of its run (the scheduler also reads `nvidia-smi`)."""


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
