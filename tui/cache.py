"""Values read from the API that change rarely, kept for a while instead of read every refresh."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable


class Cached:
    """Per-key values reused for `seconds` after they were read (a failed read is not kept)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._values: dict[str, tuple[float, Any]] = {}

    async def get(self, key: str, read: Callable[[], Awaitable[Any]]) -> Any:
        kept = self._values.get(key)
        if kept is not None and time.monotonic() - kept[0] < self.seconds:
            return kept[1]
        value = await read()
        self._values[key] = (time.monotonic(), value)
        return value
