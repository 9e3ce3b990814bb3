"""What evaltui shows about the servers episodes wait for: quarantined servers in the pools
view, and why an episode is not playing in its detail. Reads through `flows/quarantine.py`
and `flows/campaign_admin.py`, the same as `evalq pools status` and `evalq campaign status`.
"""

from __future__ import annotations

import dataclasses
import logging

from flows import naming
from flows.waiting import WaitExplanation
from tui.models import PoolsSnapshot

logger = logging.getLogger("evaltui.waiting")


async def mark_quarantined(client, snapshot: PoolsSnapshot, limits: dict[str, tuple[int, int]]) -> PoolsSnapshot:
    """The snapshot with each quarantined server's record (`limits`: name -> (limit, busy);
    a server limit at 0 is quarantined). One variables read, only when some server is."""
    from flows.quarantine import QuarantineRecord, read_records

    sick = {naming.address_of_limit(name) for name, (limit, _) in limits.items() if limit == 0} - {None}
    if not sick:
        return snapshot
    records = await read_records(client)

    def record_of(address: str) -> QuarantineRecord:
        record = records.get(address)
        return record if record is not None and record.active else QuarantineRecord(address=address, since=0.0, until=0.0, reason="limit at 0")

    pools = [
        dataclasses.replace(pool, servers=[dataclasses.replace(s, quarantine=record_of(s.address)) if s.address in sick else s
                                           for s in pool.servers])
        for pool in snapshot.pools
    ]
    return dataclasses.replace(snapshot, pools=pools)


async def why_waiting(client, run) -> WaitExplanation | None:
    """Why the episode run does not play yet (None when it plays, ended, or on any error:
    the detail screen shows the rest)."""
    from flows.campaign_admin import campaign_status

    campaign = naming.tag_value(run.tags, "campaign")
    if not campaign or run.state is None or run.state.is_final():
        return None
    try:
        status = await campaign_status(client, campaign, run_ids={str(run.id)}, most=1)
    except Exception as exc:  # noqa: BLE001 - an explanation is a help, never a reason to fail the screen
        logger.debug("why waiting: %s", exc)
        return None
    return status.explanations[0] if status.explanations else None
