"""The campaign's safety net for runs whose runner is gone, and its view of who serves the pool.

A runner that dies (SIGKILL, the OOM killer, a lost node, a pilot's time limit) leaves the runs
it held. Every `LIVENESS_SECONDS` the campaign reads who serves its episodes' work pool
(`flows/runtime/liveness.py`: two calls) and settles each run in flight whose claiming runner no
longer heartbeats (`verdict`, pure):
- Pending, claimed and never started: handed back (unforced Scheduled): no attempt is charged,
  any live runner takes it again;
- Cancelling: Cancelled, at once (the runner that would have stopped it is gone);
- Running, in one of the episode's phases: Completed if its metrics file exists (it played and
  wrote them; its runner died before saying so), else Crashed: requeued as any crash. A slot it
  still held on a policy server (by its slot events) is given back at once, rather than when
  its lease expires (60 s and more), so its requeued attempt need not wait.
A Pending run counts once it has been Pending for `ORPHAN_SECONDS` (a claim younger than the
reading may be a new runner's), and nothing is judged (nor said about who serves the pool) until
the API has answered for `GRACE_SECONDS` in a row: after an outage every runner reads dead until
its next heartbeat. The outage may be one the reading itself waited out (`retrying`), so the
process's view of the API (`API_HEALTH`) decides, not only the reading's own failures.
Before it acts, the run's history must still name that runner's claim last.

A Pending run names its runner in its message (`flows.naming.claim_message`); a started one in
its state history, which is read (one call per run, once) only when a runner of the pool has
just gone, at the first look, or for a run being cancelled: nothing per episode while every
runner lives. Runs claimed by a Prefect worker (process, SLURM, Kubernetes) name no runner: their
process outlives the worker, and the zombie automation watches them.
"""

from __future__ import annotations

import datetime as dt
import time
from enum import Enum
from typing import Callable
from uuid import UUID

from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Completed, Crashed, Scheduled

from flows.naming import claim_of_message
from flows.runtime.api_health import API_HEALTH
from flows.runtime.api_retry import is_transient
from flows.runtime.liveness import (
    RUNNER_HEARTBEAT_SECONDS,
    PoolService,
    read_pool_service,
)
from flows.slots.reclaim import release_slots_of

LIVENESS_SECONDS = 10.0
"""How often the campaign reads who serves its pool."""
ORPHAN_SECONDS = 30.0
"""How long a Pending run of a runner that reads dead is left alone first."""
GRACE_SECONDS = 3 * RUNNER_HEARTBEAT_SECONDS
"""After the campaign reaches the API again, every runner has heartbeated within this."""
SLOT_EVENTS_BEFORE = dt.timedelta(days=1)
"""How far before its current state a dead run's slot events are looked for (its lease renewals go on
while it plays, so a held lease may be as old as the episode timeout)."""


class Settle(str, Enum):
    HAND_BACK = "handed back"
    CANCEL = "cancelled"
    COMPLETE = "counted done (its metrics exist)"
    CRASH = "crashed and requeued"


def verdict(state_type: StateType, metrics_exist: bool, age: float) -> Settle | None:
    """What to do with a run whose runner is gone, `age` s in its state; None: not yet, or nothing."""
    if state_type == StateType.CANCELLING:
        return Settle.CANCEL
    if state_type == StateType.RUNNING:  # its runner, from its history, claimed it well before this reading
        return Settle.COMPLETE if metrics_exist else Settle.CRASH
    if state_type == StateType.PENDING and age >= ORPHAN_SECONDS:  # a runner this reading missed may have just claimed it
        return Settle.HAND_BACK
    return None


def settled_state(settle: Settle, runner: str):
    why = f"its runner {runner} is gone (no heartbeat)"
    return {
        Settle.HAND_BACK: lambda: Scheduled(message=f"handed back by the campaign: {why}"),
        Settle.CANCEL: lambda: Cancelled(message=f"cancelled; {why}"),
        Settle.COMPLETE: lambda: Completed(message=f"metrics written; {why}"),
        Settle.CRASH: lambda: Crashed(message=why),
    }[settle]()


class OrphanWatch:
    """Who serves the pool, who holds each run in flight, and the runs of the dead to settle."""

    def __init__(self, client, pool: str, queue: str | None, logger, metrics_exist: Callable[[UUID], bool],
                 campaign: str = ""):
        self.client, self.pool, self.queue, self.logger = client, pool, queue, logger
        self.campaign = campaign
        """Named in the `evalq.slot.released` events of the slots it gives back."""
        self.metrics_exist = metrics_exist
        self.service: PoolService | None = None
        """The latest reading (the stats line and status show it)."""
        self.states: dict[UUID, object] = {}
        self.since: dict[UUID, tuple[UUID, float]] = {}
        """Run -> (state id, when this campaign first saw it in that state: its own clock)."""
        self.owners: dict[UUID, str | None] = {}
        """Run -> the runner holding it (None: claimed by no runner of ours, or unknown)."""
        self.api_since: float | None = None
        self.live_before: set[str] | None = None
        self.departed = False
        """A runner of the pool went (or this is the first look) since runs' owners were last read."""

    def observe(self, run_id: UUID, state) -> None:
        """A state of a run in flight, as the campaign just read it."""
        self.states[run_id] = state
        if self.since.get(run_id, (None,))[0] != state.id:
            self.since[run_id] = (state.id, time.monotonic())
        if state.type == StateType.SCHEDULED:
            self.owners.pop(run_id, None)
        elif state.type == StateType.PENDING:
            claim = claim_of_message(state.message)
            self.owners[run_id] = claim[0] if claim else None

    def forget(self, run_id: UUID) -> None:
        for known in (self.states, self.since, self.owners):
            known.pop(run_id, None)

    async def check(self) -> None:
        """Read who serves the pool; settle the runs of runners gone."""
        now = time.monotonic()
        try:
            self.service = await read_pool_service(self.client, self.pool, self.queue,
                                                   self.service.pool_type if self.service else None)
        except Exception as exc:  # API away (judge nothing until it is back a while), or refused: never fatal
            if not is_transient(exc) and self.api_since is not None:
                self.logger.warning("Could not read who serves work pool %s: %s", self.pool, exc)
            self.api_since = None
            return
        if self.api_since is None:
            self.api_since = now
        live = set(self.service.live_workers)
        self.departed |= self.live_before is None or bool(self.live_before - live)
        self.live_before = live
        if not self.settled(now) or not self.service.exists:
            return
        departed, self.departed = self.departed, False
        for run_id, state in list(self.states.items()):
            try:
                owner = await self.owner(run_id, state, departed)
                if owner is None or self.service.alive(owner):
                    continue
                settle = verdict(state.type, self.metrics_exist(run_id), now - self.since[run_id][1])
                if settle is not None:
                    await self.settle(run_id, settle, owner)
            except ObjectNotFound:  # deleted meanwhile: the campaign's reads stop seeing it
                self.forget(run_id)
            except Exception as exc:  # the safety net must never stop a campaign: next time
                if not is_transient(exc):
                    self.logger.warning("Could not settle flow run %s of a runner gone: %s", run_id, exc)

    def settled(self, now: float) -> bool:
        """Whether the API has answered for `GRACE_SECONDS` in a row: long enough for every live
        runner to have heartbeated (and polled) since it was last away."""
        return (self.api_since is not None and now - self.api_since >= GRACE_SECONDS
                and not API_HEALTH.unavailable_within(now - GRACE_SECONDS, now))

    @property
    def settled_service(self) -> PoolService | None:
        """The latest reading of who serves the pool, unless it may be stale from an outage."""
        return self.service if self.settled(time.monotonic()) else None

    async def owner(self, run_id: UUID, state, departed: bool) -> str | None:
        """The runner holding a run; a started run's history is read when it may have just lost it."""
        if run_id in self.owners or state.type not in (StateType.RUNNING, StateType.CANCELLING):
            return self.owners.get(run_id)
        if not departed and state.type != StateType.CANCELLING:
            return None
        self.owners[run_id], _ = await self.claim_and_state(run_id)
        return self.owners[run_id]

    async def claim_and_state(self, run_id: UUID):
        """(The runner of the run's latest claim or None, its current state), from its history."""
        history = sorted(await self.client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
        claims = [claim_of_message(s.message) for s in history if s.type == StateType.PENDING]
        return (claims[-1][0] if claims and claims[-1] else None), (history[-1] if history else None)

    async def settle(self, run_id: UUID, settle: Settle, runner: str) -> None:
        """Settle a run of a runner gone, once its history confirms that runner still holds it."""
        holder, current = await self.claim_and_state(run_id)
        if holder != runner or current is None or current.type != self.states[run_id].type:
            self.owners[run_id] = holder  # handed back and claimed again meanwhile: look again next time
            return
        result = await self.client.set_flow_run_state(run_id, settled_state(settle, runner))
        accepted = result.status.value == "ACCEPT"
        if result.state is not None:
            self.observe(run_id, result.state)
        freed = []
        if accepted and settle in (Settle.CRASH, Settle.COMPLETE, Settle.CANCEL):  # it may have died holding a server
            freed = await release_slots_of(self.client, str(run_id), self.campaign, current.timestamp - SLOT_EVENTS_BEFORE)
        self.logger.warning("Flow run %s: its runner %s is gone (no heartbeat): %s%s", run_id, runner,
                            settle.value if accepted else f"left {result.state.name if result.state else 'as it is'}",
                            "; the policy-server slot it held given back" if freed else "")
