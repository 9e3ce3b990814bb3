"""Retrying Prefect API calls across the hiccups a busy server has.

SQLite answers `503 database is locked` under write bursts, and a restarting server refuses
connections for a while: neither says anything about the episode, so neither may cost one
of its attempts.
"""

from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable, TypeVar

import httpx

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """An API error worth retrying: no connection, or a 5xx such as SQLite's 503."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = 6, first_delay: float = 0.2) -> T:
    """`await call()`, again after a jittered, doubling delay while it fails transiently."""
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
        await asyncio.sleep(first_delay * 2**attempt * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")
