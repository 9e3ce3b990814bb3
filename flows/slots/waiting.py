"""Why an episode is not playing yet: pure logic, shared by `evalq campaign status` and evaltui.

From the episode's state, the servers it may use (capacity, busy slots, holders, quarantine)
and the other episodes waiting for a server, say in one line why it waits, and list its
servers. An episode waiting for a server gets a released one after the waiters that share
it and have fewer alternatives (the scarcest-first handoff of `flows/slots/leaser.py`), or as many
and waited longer: those are "ahead" of it. One not started names its work pool, whether a
live worker or runner polls it, and the command that starts one (`PoolService`); one claimed
names its runner, and whether that runner still heartbeats. No Prefect here: the reading is in
`flows/reports/`.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from flows.naming import LOADING_STATE, RUNNING_STATE, WAITING_STATE, claim_of_message
from flows.runtime.liveness import PoolService

NOT_STARTED_TYPES = ("SCHEDULED", "PENDING", "PAUSED")
FINAL_TYPES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
SHOWN_AHEAD = 5


class ServerView(BaseModel):
    """A policy server as a waiting episode sees it."""

    address: str
    capacity: int
    busy: int
    holders: list[str] = []
    """Job ids holding its slots (best effort, from slot events)."""
    quarantine: str | None = None
    """Why and until when it is quarantined (`flows.quarantine.quarantine_note`), if it is."""
    known: bool = True
    """False when it has no concurrency limit (`evalq pools apply` not run)."""

    @property
    def free(self) -> bool:
        return self.known and self.quarantine is None and self.busy < self.capacity

    def line(self) -> str:
        if not self.known:
            return f"{self.address}: no concurrency limit (run `evalq pools apply`)"
        if self.quarantine:
            return f"{self.address}: {self.quarantine}"
        if self.free:
            return f"{self.address}: free ({self.busy}/{self.capacity} busy)"
        held = f", held by {', '.join(self.holders)}" if self.holders else ""
        return f"{self.address}: busy {self.busy}/{self.capacity}{held}"


class Waiter(BaseModel):
    """An episode waiting for a server."""

    run_id: str
    job_id: str
    servers: list[str]
    """Addresses it may use."""
    since: dt.datetime | None = None
    """When it began to wait."""


class WaitExplanation(BaseModel):
    run_id: str
    job_id: str
    state: str
    reason: str
    """One line: why it is not playing."""
    servers: list[ServerView]
    ahead: list[str] = []
    """Job ids of the waiting episodes that get one of its servers before it."""

    def lines(self) -> list[str]:
        lines = [f"{self.job_id} [{self.state}]: {self.reason}"]
        lines += [f"    {server.line()}" for server in self.servers]
        if self.ahead:
            more = f" and {len(self.ahead) - SHOWN_AHEAD} more" if len(self.ahead) > SHOWN_AHEAD else ""
            lines.append(f"    ahead of it: {', '.join(self.ahead[:SHOWN_AHEAD])}{more}")
        return lines


def _rank(waiter: Waiter) -> tuple[int, dt.datetime]:
    latest = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return len(set(waiter.servers)), waiter.since or latest


def ahead_of(me: Waiter, others: list[Waiter]) -> list[Waiter]:
    """Waiters sharing a server with `me` that get it first: fewer alternatives, or as many
    and waiting longer."""
    mine = set(me.servers)
    return sorted((o for o in others if o.run_id != me.run_id and mine & set(o.servers) and _rank(o) < _rank(me)), key=_rank)


def waiting_reason(servers: list[ServerView], ahead: int) -> str:
    """Why an episode loaded and waiting for a server has none yet."""
    if not any(server.known for server in servers):
        return "none of the servers it may use has a concurrency limit: run `evalq pools apply`"
    sick = [s for s in servers if s.quarantine]
    if len(sick) == len(servers):
        return f"every server it may use ({len(servers)}) is quarantined: it waits until a probe finds one back"
    free = [s.address for s in servers if s.free]
    if free:
        return f"a slot is free on {', '.join(free)}: it takes it at its next look"
    busy = len(servers) - len(sick)
    parts = [f"all {len(servers)} servers it may use are busy" if not sick else
             f"{busy} of its {len(servers)} servers {'is' if busy == 1 else 'are'} busy, {len(sick)} quarantined"]
    parts.append(f"{ahead} episode{'s' if ahead != 1 else ''} wait{'s' if ahead == 1 else ''} ahead of it for them")
    return "; ".join(parts)


def not_started_reason(state_type: str, message: str | None, service: PoolService | None) -> str:
    """Why a run no worker started yet waits: who claimed it, or who serves its work pool."""
    if state_type == "PENDING":
        claim = claim_of_message(message)
        if claim is None:
            return "claimed by a worker, starting"
        if service is None or service.alive(claim[0]):
            return f"claimed by runner {claim[0]}, starting"
        return f"claimed by runner {claim[0]}, which is gone (no heartbeat): the campaign hands it back"
    if service is None:
        return "not started: waiting for a worker to take it (it needs no server yet)"
    if service.served:
        return f"not started: waiting for a worker to take it ({service.note()})"
    return f"not started: {service.note()}"


def explain(
    run_id: str, job_id: str, state_type: str, state_name: str, candidates: list[str],
    servers: dict[str, ServerView], waiters: list[Waiter], since: dt.datetime | None = None,
    message: str | None = None, service: PoolService | None = None,
) -> WaitExplanation | None:
    """Why the episode is not playing; None when it plays or has ended. `message` is its
    state's, `service` who serves its work pool (both help explain a run not started)."""
    if state_type in FINAL_TYPES or (state_type == "RUNNING" and state_name == RUNNING_STATE):
        return None
    views = [servers.get(a) or ServerView(address=a, capacity=0, busy=0, known=False) for a in dict.fromkeys(candidates)]
    ahead: list[str] = []
    if state_type in NOT_STARTED_TYPES:
        reason = not_started_reason(state_type, message, service)
    elif state_type == "CANCELLING":
        reason = "being cancelled"
    elif state_name == LOADING_STATE:
        reason = "loading its simulator: it asks for a server once loaded"
    elif state_name == WAITING_STATE:
        me = Waiter(run_id=run_id, job_id=job_id, servers=list(candidates), since=since)
        ahead = [w.job_id for w in ahead_of(me, waiters)]
        reason = waiting_reason(views, len(ahead))
    else:
        reason = f"in state {state_name or state_type}"
    return WaitExplanation(run_id=run_id, job_id=job_id, state=state_name or state_type, reason=reason, servers=views, ahead=ahead)
