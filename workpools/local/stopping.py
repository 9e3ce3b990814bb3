"""A job notices by itself that it must stop: its flow run was cancelled or deleted, or SIGTERM came.

Workers only kill runs that never started (Prefect 3.8's worker leaves a running run
Cancelling for good), so the job polls its own flow run while it waits and while its
command runs. On a stop the job's body is cancelled: its `finally` blocks kill the
command's process group and release its GPU leases; then the flow ends Cancelled (or,
for a deleted run, quietly: there is nothing left to report to).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any, Awaitable
from uuid import UUID

logger = logging.getLogger(__name__)

DELETED = "deleted"
TERMINATED = "terminated"


@dataclass(frozen=True)
class Stopped:
    """Why the job stopped before its command ended by itself."""

    reason: str
    """`deleted`, `terminated` (SIGTERM) or the state name the run was moved to (e.g. Cancelling)."""

    @property
    def deleted(self) -> bool:
        return self.reason == DELETED

    def describe(self) -> str:
        if self.reason == TERMINATED:
            return "the job got SIGTERM"
        if self.reason == DELETED:
            return "its flow run was deleted"
        return f"its flow run went {self.reason}"


class StopRequested(Exception):
    """Raised inside the job when it learns it must stop (e.g. the server refused its Running state)."""

    def __init__(self, stopped: Stopped):
        super().__init__(stopped.describe())
        self.stopped = stopped


async def stop_reason(client, run_id: UUID) -> Stopped | None:
    """Why the run must stop now (cancelling, ended by someone else, deleted), or None."""
    from prefect.exceptions import ObjectNotFound

    try:
        run = await client.read_flow_run(run_id)
    except ObjectNotFound:
        return Stopped(DELETED)
    state = run.state
    if state is not None and (state.is_cancelling() or state.is_final()):
        return Stopped(state.name)
    return None


async def watch_run(client, run_id: UUID, every: float) -> Stopped:
    """Return once the run must stop; a failed read is retried (the server may be restarting)."""
    while True:
        await asyncio.sleep(every)
        try:
            stopped = await stop_reason(client, run_id)
        except Exception as exc:  # transport errors, 503s: keep the job, try again
            logger.debug("could not read flow run %s: %s", run_id, exc)
            continue
        if stopped is not None:
            return stopped


class SigtermListener:
    """While any is active, SIGTERM sets their events instead of raising Prefect's TerminationSignal.

    One handler per process (several jobs may share an event loop, e.g. in tests); it is
    installed by the first listener and the previous handler restored by the last. Only
    possible in the main thread; elsewhere the listener stays silent.
    """

    _events: set[asyncio.Event] = set()
    _previous: Any = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __enter__(self) -> "SigtermListener":
        cls = type(self)
        if not cls._events:
            try:
                previous = signal.getsignal(signal.SIGTERM)
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, cls._notify)
                cls._previous, cls._loop = previous, loop
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
                return self
        cls._events.add(self.event)
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        cls._events.discard(self.event)
        if not cls._events and cls._loop is not None:
            cls._loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, cls._previous if cls._previous is not None else signal.SIG_DFL)
            cls._loop = None

    @classmethod
    def _notify(cls) -> None:
        for event in cls._events:
            event.set()


async def run_unless_stopped(client, run_id: UUID | None, body: Awaitable, every: float) -> Any:
    """The body's result, or `Stopped` if the run was cancelled/deleted or SIGTERM came first.

    On a stop the body is cancelled and awaited, so its cleanup has finished when this returns.
    """
    from prefect.exceptions import ObjectNotFound

    work = asyncio.ensure_future(body)
    with SigtermListener() as sigterm:
        waiters = [asyncio.ensure_future(sigterm.event.wait())]
        if run_id is not None:
            waiters.append(asyncio.ensure_future(watch_run(client, run_id, every)))
        try:
            await asyncio.wait([work, *waiters], return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                try:
                    return work.result()
                except StopRequested as exc:
                    return exc.stopped
                except ObjectNotFound:
                    if run_id is not None and (await stop_reason(client, run_id)) == Stopped(DELETED):
                        return Stopped(DELETED)
                    raise
            stopped = next((w.result() for w in waiters[1:] if w.done()), Stopped(TERMINATED))
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return stopped
        finally:
            for waiter in waiters:
                waiter.cancel()
            if not work.done():  # we were cancelled ourselves: the body still cleans up
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
