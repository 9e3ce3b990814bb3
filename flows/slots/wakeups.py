"""Waking waiting episodes when a policy-server slot is released, instead of polling.

Every release is announced as an `evalq.slot.released` event (see `flows/episode.py`). One
subscription per event loop (a warm runner has one loop for all its episodes) fans those
events out to the episodes waiting for that server, and a release made in the same loop
wakes its waiters at once, without the round trip through the server. Waiters keep a slow
safety poll for leases that end without a release (a killed holder's lease expires); the
waiters of one loop share their reads of a server's limit (`occupancy`), so fifty episodes
waiting for one server read it about once a second, not ten times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import defaultdict
from typing import Awaitable, Callable, Iterable, Iterator, TypeVar

from flows.naming import SLOT_RELEASED

RESUBSCRIBE_SECONDS = 5.0
SHARED_READ_SECONDS = 1.0
"""How long one read of a server's limit answers the other waiters of the loop (a release there
forgets it at once)."""
T = TypeVar("T")
logger = logging.getLogger("evalq.slotwatch")


class Wakeup:
    """Set when a watched server releases a slot; remembers which ones did."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.addresses: list[str] = []

    def set(self, address: str) -> None:
        self.addresses.append(address)
        self.event.set()


class SlotWatch:
    """Release notifications by server address, for the episodes of one event loop."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[Wakeup]] = defaultdict(set)
        self._listener: asyncio.Task | None = None
        self._reads: dict[str, tuple[float, asyncio.Future]] = {}
        self.released_at: dict[str, float] = {}
        """Server address -> when (time.monotonic) this loop last saw a slot there released."""
        self.events_seen = 0
        self.occupancy_reads = 0
        """Reads of a limit actually sent (for tests and benchmarks)."""

    def released(self, address: str) -> None:
        """A slot on `address` was given back: wake whoever waits for it."""
        self._reads.pop(address, None)
        self.released_at[address] = time.monotonic()
        for waiter in list(self._waiters.get(address, ())):
            waiter.set(address)

    async def occupancy(self, address: str, read: Callable[[], Awaitable[T]]) -> T:
        """`read()` of `address`'s limit, shared with this loop's other waiters for
        SHARED_READ_SECONDS. Only a hint: a lease is still taken (or refused) by the server."""
        now = asyncio.get_running_loop().time()
        shared = self._reads.get(address)
        if shared is not None and now - shared[0] < SHARED_READ_SECONDS:
            try:
                return await asyncio.shield(shared[1])
            except Exception:  # another episode's read (its client may have closed): read ourselves
                self._reads.pop(address, None)
        self.occupancy_reads += 1
        future = asyncio.ensure_future(read())
        future.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, never "lost"
        self._reads[address] = (now, future)
        return await asyncio.shield(future)

    @contextlib.contextmanager
    def watching(self, addresses: Iterable[str]) -> Iterator[Wakeup]:
        """A wakeup set when one of `addresses` releases a slot; register it *before* reading
        occupancy, so that a release between the read and the wait is not missed."""
        self._ensure_listening()
        event = Wakeup()
        addresses = list(addresses)
        for address in addresses:
            self._waiters[address].add(event)
        try:
            yield event
        finally:
            for address in addresses:
                self._waiters[address].discard(event)
                if not self._waiters[address]:
                    del self._waiters[address]

    def _ensure_listening(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="evalq-slot-watch")

    async def _listen(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(name=[SLOT_RELEASED]))
        while True:
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    async for event in subscriber:
                        self.events_seen += 1
                        address = event.resource.get("evalq.server")
                        if address:
                            self.released(address)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no events stream: waiters still have their safety poll
                logger.debug("slot release events unavailable (%s); retrying in %.0f s", exc, RESUBSCRIBE_SECONDS)
                await asyncio.sleep(RESUBSCRIBE_SECONDS)


_watches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SlotWatch]" = weakref.WeakKeyDictionary()


def slot_watch() -> SlotWatch:
    """The watch of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = SlotWatch()
    return watch
