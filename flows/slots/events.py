"""Slot events: the only record of who holds which policy server.

Prefect lists no holders of a concurrency limit, so an episode emits `evalq.slot.acquired`
when it leases a slot and `evalq.slot.released` when it gives it back (and
`evalq.server.unreachable` when a server refused it), with the server as the event's resource.
`SlotEvent` is their one definition: the episode builds it (`flows/episode.py`), `tui/seed.py`
forges it, `held_slots` and `holders_from_events` read held slots back (`flows/slots/pools.py`,
evaltui, `flows/slots/reclaim.py`) and `server_events_query` and `run_slot_events_query` find a
server's or a run's events. Pure: no Prefect import.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable
from uuid import uuid4

from pydantic import BaseModel

from flows.naming import (
    SLOT_ACQUIRED,
    SLOT_RELEASED,
    address_of_resource_id,
    campaign_resource_id,
    flow_run_id_of_resource_id,
    flow_run_resource_id,
    server_resource_id,
)


class SlotEvent(BaseModel):
    """One slot (or unreachable-server) event, as emitted and as read back."""

    name: str
    """`SLOT_ACQUIRED`, `SLOT_RELEASED` or `SERVER_UNREACHABLE`."""
    address: str
    """The policy server, `host:port`: the event's resource."""
    pool: str = ""
    job_id: str = ""
    lease_id: str = ""
    campaign: str | None = None
    flow_run_id: str | None = None
    waited_seconds: float | None = None
    """Acquired: how long the episode waited for the slot."""
    reason: str | None = None
    """Unreachable: why the server was given up on."""
    occurred: dt.datetime | None = None
    """Set when read back; the emitter's clock when emitted."""

    def resource(self) -> dict[str, str]:
        resource = {"prefect.resource.id": server_resource_id(self.address), "evalq.server": self.address}
        if self.pool:
            resource["evalq.pool"] = self.pool
        return resource

    def related(self) -> list[dict[str, str]]:
        related = []
        if self.campaign:
            related.append({"prefect.resource.id": campaign_resource_id(self.campaign), "prefect.resource.role": "campaign"})
        if self.flow_run_id:
            related.append({"prefect.resource.id": flow_run_resource_id(self.flow_run_id), "prefect.resource.role": "flow-run"})
        return related

    def payload(self) -> dict:
        fields = {"job_id": self.job_id, "lease_id": self.lease_id, "waited_seconds": self.waited_seconds, "reason": self.reason}
        return {key: value for key, value in fields.items() if value not in (None, "")}

    def emit_arguments(self) -> dict:
        """Keyword arguments of `prefect.events.emit_event`."""
        return {"event": self.name, "resource": self.resource(), "related": self.related(), "payload": self.payload()}

    def as_json(self) -> dict:
        """The event as the API takes and returns it (`POST /events`, `/events/filter`)."""
        occurred = self.occurred or dt.datetime.now(dt.timezone.utc)
        return {"id": str(uuid4()), "occurred": occurred.isoformat(), **self.emit_arguments()}

    @classmethod
    def from_event(cls, event: dict) -> "SlotEvent":
        """Parse an event (a JSON dict from the API) back."""
        resource = event.get("resource") or {}
        payload = event.get("payload") or {}
        run = next((flow_run_id_of_resource_id(r.get("prefect.resource.id", "")) for r in event.get("related") or []
                    if flow_run_id_of_resource_id(r.get("prefect.resource.id", ""))), None)
        occurred = event.get("occurred")
        return cls(
            name=event.get("event", ""),
            address=resource.get("evalq.server") or address_of_resource_id(resource.get("prefect.resource.id", "")) or "",
            pool=resource.get("evalq.pool", ""),
            job_id=str(payload.get("job_id", "")),
            lease_id=str(payload.get("lease_id") or event.get("id") or ""),
            flow_run_id=run,
            waited_seconds=payload.get("waited_seconds"),
            reason=payload.get("reason"),
            occurred=parse_time(occurred) if occurred else None,
        )


def server_events_query(names: list[str], since: dt.datetime, until: dt.datetime, address: str | None = None) -> dict:
    """An `EventFilter` (as JSON) for these events of one server, or of every server, newest first."""
    resource = {"id": [server_resource_id(address)]} if address else {"id_prefix": [server_resource_id("")]}
    return {
        "occurred": {"since": since.isoformat(), "until": until.isoformat()},
        "event": {"name": names},
        "resource": resource,
        "order": "DESC",
    }


def run_slot_events_query(flow_run_id: str, since: dt.datetime) -> dict:
    """An `EventFilter` (as JSON) for one flow run's acquired and released events since `since`."""
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
    return {
        "occurred": {"since": since.isoformat(), "until": until.isoformat()},
        "event": {"name": [SLOT_ACQUIRED, SLOT_RELEASED]},
        "related": {"id": [flow_run_resource_id(flow_run_id)]},
        "order": "DESC",
    }


def holder_events_query(address: str, window: dt.timedelta) -> dict:
    """A server's acquired and released events of the last `window`."""
    now = dt.datetime.now(dt.timezone.utc)
    return server_events_query([SLOT_ACQUIRED, SLOT_RELEASED], now - window, now + dt.timedelta(minutes=1), address)


@dataclass(frozen=True)
class Holder:
    """Who holds a slot on a policy server, from `evalq.slot.acquired` events."""

    job_id: str
    flow_run_id: str
    since: dt.datetime
    lease_id: str = ""


def held_slots(events: Iterable[dict]) -> list[SlotEvent]:
    """The acquisitions of the leases still held, given slot events (JSON dicts), oldest first.

    A lease is held while its latest event is its acquisition. A holder killed before it could
    release (its lease expired) still looks held.
    """
    latest: dict[str, SlotEvent] = {}
    for event in map(SlotEvent.from_event, events):
        seen = latest.get(event.lease_id)
        if seen is None or seen.occurred <= event.occurred:
            latest[event.lease_id] = event
    return sorted((event for event in latest.values() if event.name == SLOT_ACQUIRED), key=lambda e: e.occurred)


def holders_from_events(events: Iterable[dict]) -> list[Holder]:
    """Slots still held, given one server's slot events (JSON dicts), oldest holder first
    (`held_slots`): callers keep only as many as the limit's busy count, newest first, so the
    count is exact and the names best effort."""
    return [Holder(job_id=event.job_id, flow_run_id=event.flow_run_id or "", since=event.occurred, lease_id=event.lease_id)
            for event in held_slots(events)]


def parse_time(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
