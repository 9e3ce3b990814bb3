"""Slots a run still held when it ended Crashed or Cancelled, or when its runner died: given back
at once.

An episode's lease outlasts an API outage (`EPISODE_SLOT` in `leaser.py`: 320 s), so a holder
that died without releasing (SIGKILL, the OOM killer, a lost node) would keep its server that
long. When the campaign settles a run that ended Crashed (the zombie automation, a runner's
safety net) or Cancelled, or finds its runner gone (`flows/campaign/orphans.py`), it gives back
the leases the run's slot events say it still holds,
and records each release as the episode would have (`evalq.slot.released`: waiters wake, pool
status drops the holder). A live run taken for dead learns it at its next renewal (its lease
is gone: `LeaseLost`) and stops playing, so a server serves beyond its capacity for at most a
renewal interval. A run that released its slot itself is skipped, or answered "no such lease".
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from prefect.events import emit_event

from flows.naming import SLOT_RELEASED
from flows.runtime.lease_engine import Leases
from flows.slots.events import SlotEvent, held_slots, run_slot_events_query
from flows.slots.leaser import EPISODE_SLOT
from flows.slots.pools import HOLDER_WINDOW, read_events


async def release_slots_of(client, flow_run_id: str, campaign: str, since: dt.datetime | None = None) -> list[str]:
    """Give back every lease the flow run still holds by its slot events since `since` (default:
    the holder window); the servers freed."""
    freed = []
    since = since or dt.datetime.now(dt.timezone.utc) - HOLDER_WINDOW
    for acquired in held_slots(await read_events(client, run_slot_events_query(flow_run_id, since))):
        if await Leases(client, EPISODE_SLOT).release(UUID(acquired.lease_id)):
            emit_event(**SlotEvent(
                name=SLOT_RELEASED, address=acquired.address, pool=acquired.pool, job_id=acquired.job_id,
                lease_id=acquired.lease_id, campaign=campaign, flow_run_id=flow_run_id,
            ).emit_arguments())
            freed.append(acquired.address)
    return freed
