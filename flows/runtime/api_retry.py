"""Waiting out the Prefect API: one rule for every call that must not fail on a hiccup or an outage.

SQLite answers `503 database is locked` at once when two transactions collide, a busy server
drops a connection, and a restarted or unreachable server refuses connections for a while:
none of it says anything about an episode, so none of it may cost one of its attempts.
Prefect's own client retries too slowly for the hot path (2, 4, 8... s: a handoff lost), too
briefly for an outage (about a minute, and a connection refused only on a client that has
connected before) and without a cap (a call may sleep 32 s after the server is back). So
`retrying` owns the timing: Prefect's retries off for the call (a context-local setting,
other calls keep theirs), then again after 50 ms, doubling, capped at `MAX_DELAY_SECONDS`,
until the outage has lasted `OUTAGE_BUDGET_SECONDS` (the caller may give a nearer deadline,
such as a lease's expiry, or none). Each call reports to `API_HEALTH`
(`flows/runtime/api_health.py`), which says once that the API went away and once that it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Awaitable, Callable, Iterator, TypeVar

import httpx

from flows.runtime.api_health import API_HEALTH, OUTAGE_BUDGET_SECONDS

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.05
"""The first wait: a lock collision clears in tens of milliseconds."""
MAX_DELAY_SECONDS = 2.0
"""The longest wait between tries: a server that is back is found within it."""


def is_transient(exc: BaseException) -> bool:
    """An API error worth retrying: no connection, or a 5xx such as SQLite's 503."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


_QUICK: dict[int, object] = {}


@contextlib.contextmanager
def without_client_retries() -> Iterator[None]:
    """Within this context (this task only), Prefect's client does not retry by itself."""
    from prefect.context import SettingsContext
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    current = SettingsContext.get()
    quick = _QUICK.get(id(current.settings))
    if quick is None:
        quick = _QUICK[id(current.settings)] = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
    with SettingsContext(profile=current.profile, settings=quick):
        yield


def delay(attempt: int) -> float:
    """Seconds before try `attempt + 1`: 50 ms doubling, capped at `MAX_DELAY_SECONDS`, jittered."""
    return min(FIRST_DELAY_SECONDS * 2**min(attempt, 16), MAX_DELAY_SECONDS) * random.uniform(0.8, 1.2)


async def retrying(
    call: Callable[[], Awaitable[T]], transient: Callable[[BaseException], bool] = is_transient,
    deadline: float | None = None, forever: bool = False,
) -> T:
    """`await call()`, again while it fails `transient`ly, until `deadline` (a `time.monotonic()`
    value; default: `OUTAGE_BUDGET_SECONDS` after the outage began) or, with `forever`, until it
    answers. The call must be safe to repeat. The last error is raised when time is up."""
    attempt, first_failure = 0, None
    while True:
        started = time.monotonic()
        try:
            with without_client_retries():
                result = await call()
        except Exception as exc:
            if not transient(exc):
                raise
            first_failure = first_failure or started
            API_HEALTH.failed(exc, first_failure)
            give_up_at = deadline if deadline is not None else API_HEALTH.outage_began(first_failure) + OUTAGE_BUDGET_SECONDS
            wait = delay(attempt)
            if not forever and time.monotonic() + wait > give_up_at:
                if deadline is None:
                    API_HEALTH.gave_up(exc)
                raise
            attempt += 1
            await asyncio.sleep(wait)
            continue
        API_HEALTH.answered(started)
        return result
