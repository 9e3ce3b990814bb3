"""Retrying Prefect API calls across the hiccups a busy server has.

SQLite answers `503 database is locked` at once when two transactions collide, and a
restarting server refuses connections for a while: neither says anything about the
episode, so neither may cost one of its attempts. Prefect's client retries a 503 after 2,
4, 8... seconds; for the calls on the hot path (slot leases, idempotent run creation) that
is a handoff lost, so `retrying` turns the client's own retries off for the call (a
context-local setting, other calls keep theirs) and retries after tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Awaitable, Callable, Iterator, TypeVar

import httpx

T = TypeVar("T")


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


async def retrying(
    call: Callable[[], Awaitable[T]], attempts: int = 10, first_delay: float = 0.05,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """`await call()`, again after a short, jittered, doubling delay while it fails `transient`ly
    (10 tries over about 25 s). The call must be safe to repeat."""
    for attempt in range(attempts):
        try:
            with without_client_retries():
                return await call()
        except Exception as exc:
            if attempt == attempts - 1 or not transient(exc):
                raise
        await asyncio.sleep(first_delay * 2**attempt * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")
