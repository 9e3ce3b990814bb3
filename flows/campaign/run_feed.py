"""What the campaign learns from Prefect's events instead of reading: its runs' state changes
and its pause switch and retry requests.

A background subscription (`EventFeed`) collects the events of one filter; the loop takes them
each tick. Prefect's `prefect.flow-run.<state>` events carry the new state's id (the event's),
type, name, message and timestamp (`FedState`), enough for every state a run passes through on
its way; a final one is read back unless the kind of job needs no more than the event says
(an episode that completed: its metrics are its result). Events are lost when a
subscription breaks (a restarting server, a reconnect that outruns the server's event
persister), so a feed counts its subscriptions: the loop reads everything once after each new
one and every `SAFETY_READ_SECONDS`, and reads at every tick, as before, while the feed is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

from prefect.client.schemas.objects import StateType

from flows.naming import campaign_tag, flow_run_id_of_resource_id

SAFETY_READ_SECONDS = 15.0
"""How often everything is read while the feed is live: bounds what a lost event can delay."""
RESUBSCRIBE_SECONDS = 2.0
CLOCK_MARGIN_SECONDS = 10.0
"""How far back a subscription starts: what this host's clock may run ahead of the server's."""
UNFINISHED_TYPES = frozenset({StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING,
                              StateType.PAUSED})
"""States always taken from their event as they are; a final one is read back unless the kind of
job says it need not be (`JobKind.takes_as_fed`)."""
logger = logging.getLogger("evalq.campaign.feed")


@dataclass(frozen=True)
class FedState:
    """A run's state as its state-change event tells it: what the loop reads of a state."""

    id: UUID
    type: StateType
    name: str
    message: str | None
    timestamp: dt.datetime | None


def state_of_event(event) -> tuple[UUID, FedState] | None:
    """(flow run id, its new state) from a `prefect.flow-run.*` event; None for any other."""
    resource = event.resource
    run_id = flow_run_id_of_resource_id(resource.id)
    state_type = resource.get("prefect.state-type")
    if run_id is None or not state_type or not event.event.startswith("prefect.flow-run."):
        return None
    try:
        stamp = resource.get("prefect.state-timestamp")
        state = FedState(id=event.id, type=StateType(state_type), name=resource.get("prefect.state-name") or "",
                         message=resource.get("prefect.state-message") or None,
                         timestamp=dt.datetime.fromisoformat(stamp) if stamp else None)
        return UUID(run_id), state
    except ValueError:
        return None


def newer(state, than) -> bool:
    """Whether `state` is later than `than` (a state read or fed before; None: nothing known)."""
    if than is None or state.id == than.id:
        return than is None
    if state.timestamp is None or than.timestamp is None:
        return True
    return state.timestamp >= than.timestamp


class EventFeed:
    """What `parse` makes of the events of one filter (None: skipped), collected in the background
    until `take`n. No backfill: whoever reads the feed reads for itself after each subscription."""

    def __init__(self, event_filter, what: str, parse: Callable[[object], object | None]):
        self.filter = event_filter
        self.what = what
        self.parse = parse
        self.subscriptions = 0
        """Subscriptions made so far: a new one may have missed events (read once)."""
        self.live = False
        self._items: list = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name=f"evalq-feed-{self.what}")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.live = False

    async def stop(self) -> None:
        self.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def take(self) -> list:
        items, self._items = self._items, []
        return items

    async def _listen(self) -> None:
        from prefect.events.clients import get_events_subscriber

        while True:
            try:
                subscriber = get_events_subscriber(filter=self.filter.model_copy(deep=True), reconnection_attempts=0)
                if hasattr(subscriber, "_backfill_since"):  # no replay of the last minute (thousands of events at scale),
                    # but a few seconds back: the live stream keeps events from `since` on, by the server's clock
                    subscriber._backfill_since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=CLOCK_MARGIN_SECONDS)
                async with subscriber:
                    self.subscriptions += 1
                    self.live = True
                    async for event in subscriber:
                        if (item := self.parse(event)) is not None:
                            self._items.append(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop reads instead meanwhile
                logger.debug("%s events unavailable (%s); subscribing again in %.0f s", self.what, exc, RESUBSCRIBE_SECONDS)
            self.live = False
            await asyncio.sleep(RESUBSCRIBE_SECONDS)


async def stop_feeds(*feeds: EventFeed) -> None:
    """Stop them all: every one is cancelled before any is waited for."""
    for feed in feeds:
        feed.cancel()
    await asyncio.gather(*(feed.stop() for feed in feeds), return_exceptions=True)


def campaign_runs_filter(campaign: str):
    """State changes of the campaign's runs (tagged with its tag)."""
    from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

    return EventFilter(event=EventNameFilter(prefix=["prefect.flow-run."]),
                       any_resource=EventAnyResourceFilter(id=[f"prefect.tag.{campaign_tag(campaign)}"]))


def variables_filter():
    """Every change of a Prefect Variable (few: the loop picks its own)."""
    from prefect.events.filters import EventFilter, EventNameFilter

    return EventFilter(event=EventNameFilter(prefix=["prefect.variable."]))


class ReadPacer:
    """When the loop must read for itself rather than trust a feed: after each new subscription,
    every `every` seconds while the feed is live, every `down_every` while it is down, and when
    a read is owed."""

    def __init__(self, feed: EventFeed | None, every: float = SAFETY_READ_SECONDS, down_every: float = 0.0):
        self.feed = feed
        self.every = every
        self.down_every = down_every
        self.read_at = float("-inf")
        self.read_subscription = -1

    def due(self) -> bool:
        feed = self.feed
        live = feed is not None and feed.live
        if live and feed.subscriptions != self.read_subscription:
            return True
        return time.monotonic() - self.read_at >= (self.every if live else self.down_every)

    def begin(self) -> tuple[float, int]:
        """A read starts: what it covers (pass it to `done` once the read succeeded)."""
        return time.monotonic(), self.feed.subscriptions if self.feed is not None else -1

    def done(self, covered: tuple[float, int]) -> None:
        self.read_at, self.read_subscription = covered

    def owe(self) -> None:
        """Read at the next look, whatever the feed says."""
        self.read_at = float("-inf")


HOLD_SECONDS = 60.0
"""How long a state of a run not (yet) in flight is kept: its creation may still be answering."""


class RunStates:
    """The latest state the loop knows of each run in flight, and what the feed adds to it."""

    def __init__(self) -> None:
        self.latest: dict[UUID, object] = {}
        self.held: dict[UUID, tuple[list[FedState], float]] = {}
        """Fed states not taken yet, by run, with when the first came."""

    def known(self, run_id: UUID, state) -> None:
        """`state` (read or fed) is the run's latest."""
        self.latest[run_id] = state

    def forget(self, run_id: UUID) -> None:
        self.latest.pop(run_id, None)

    def add(self, fed: list[tuple[UUID, FedState]]) -> None:
        """States from the feed, kept until `sort` hands them out (a failed read loses none)."""
        now = time.monotonic()
        for run_id, state in fed:
            states = self.held.setdefault(run_id, ([], now))[0]
            if all(known.id != state.id for known in states):  # a reconnection may repeat one
                states.append(state)

    def sort(self, in_flight, takes_as_fed=lambda state: False) -> tuple[list[tuple[UUID, FedState]], list[UUID]]:
        """The held states news to the loop, in the order they were entered: (states to apply as
        they are, runs to read back); `takes_as_fed(state)`: whether a final state is taken as it
        is too. A run to read back keeps its states from that one on until the read settles it;
        states of runs not in flight wait for them `HOLD_SECONDS`."""
        now = time.monotonic()
        apply, read = [], []
        for run_id, (states, came) in list(self.held.items()):
            if run_id not in in_flight:
                if now - came > HOLD_SECONDS:
                    del self.held[run_id]
                continue
            ordered = sorted(states, key=lambda state: state.timestamp or dt.datetime.min.replace(tzinfo=dt.timezone.utc))
            fresh = [state for state in ordered if newer(state, self.latest.get(run_id))]
            del self.held[run_id]
            for index, state in enumerate(fresh):
                if state.type not in UNFINISHED_TYPES and not takes_as_fed(state):
                    read.append(run_id)
                    self.held[run_id] = (fresh[index:], came)
                    break
                apply.append((run_id, state))
        return apply, read


def variable_of_event(event) -> tuple[str, frozenset[str]] | None:
    """(name, tags) of the variable a `prefect.variable.*` event is about."""
    if not event.event.startswith("prefect.variable."):
        return None
    payload = event.payload or {}
    return event.resource.get("prefect.resource.name") or str(payload.get("name", "")), frozenset(payload.get("tags") or ())


def concerns(variables: list[tuple[str, frozenset[str]]], names: set[str], tags: list[str]) -> bool:
    """Whether one of these changed variables is named in `names` or carries all of `tags`."""
    return any(name in names or set(tags) <= found for name, found in variables)
